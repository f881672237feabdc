//! Integration tests for sparknet-data (one binary; see each module).

mod cli;
mod common;
mod converters;
mod corruption;
mod imagenet;
mod loader;
mod mean;
mod properties;
mod roundtrip;
mod transform;
