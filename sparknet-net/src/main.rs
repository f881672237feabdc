//! The `sparknet-net` command line (inspect, forward, classify, time, export).
fn main() {}
