//! Integration tests for sparknet-data (one binary; see each module).

mod bad_input;
mod cli;
mod common;
mod converters;
mod corruption;
mod fuzz_smoke;
mod imagenet;
mod loader;
mod mean;
mod properties;
mod roundtrip;
mod transform;
