//! The bodies of sparknet's fuzz targets, one function per target. The same files are compiled
//! into the workspace's tests (`#[path]` modules in sparknet-net's and sparknet-data's `it`
//! binaries), which run every body on a deterministic set of mutated seeds, so a plain
//! `cargo test` exercises exactly what the fuzzer runs.

pub mod data;
pub mod mutate;
pub mod net;
