//! Criterion benchmarks for sparknet.
//!
//! Run them with `cargo bench -p sparknet-bench --bench <name>`; each benchmark reports a reference
//! measured in the same run (a `memcpy` of the same bytes, a peer implementation), so ratios are
//! meaningful on a noisy machine.
