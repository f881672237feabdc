//! libFuzzer target `prototxt`: the body is `sparknet_fuzz::net::prototxt` (shared with the workspace's
//! smoke test, which runs it on a fixed set of mutated inputs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sparknet_fuzz::net::prototxt(data));
