//! Integration tests against the shared Caffe assets and OpenCV reference outputs.

mod cli;
mod corpus;
mod net;
mod npy;
mod reference;
mod roundtrip;
