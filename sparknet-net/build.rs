//! Compiles `proto/caffe.proto` with protox (no system `protoc`) and generates prost types.
//! The encoded descriptor set is kept for prost-reflect's text-format parser.

use prost::Message;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=proto/caffe.proto");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let fds = match protox::compile(["proto/caffe.proto"], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("proto/caffe.proto does not compile: {e}"),
    };
    std::fs::write(out.join("caffe_fds.bin"), fds.encode_to_vec()).expect("write descriptor set");
    prost_build::Config::new().compile_fds(fds).expect("prost code generation");
}
