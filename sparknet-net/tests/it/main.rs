//! Integration tests against the shared Caffe assets and OpenCV reference outputs.

mod cli;
mod corpus;
mod golden;
mod loaders;
mod net;
mod npy;
mod reference;
mod roundtrip;
