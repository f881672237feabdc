//! Integration tests for sparknet-data (one binary; see each module).

mod common;
mod corruption;
mod properties;
mod roundtrip;
