//! libFuzzer target `shard`: the body is `sparknet_fuzz::data::shard` (shared with the workspace's
//! smoke test, which runs it on a fixed set of mutated inputs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sparknet_fuzz::data::shard(data));
