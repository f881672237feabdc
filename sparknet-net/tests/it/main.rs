//! Integration tests against the shared Caffe assets and OpenCV reference outputs.

mod backprop;
mod bad_input;
mod cli;
mod corpus;
mod fuzz_smoke;
mod golden;
mod gradients;
mod loaders;
mod net;
mod npy;
mod random;
mod reference;
mod roundtrip;
mod training;
