//! Integration tests against the shared Caffe assets and OpenCV reference outputs.

mod backprop;
mod cli;
mod corpus;
mod golden;
mod gradients;
mod loaders;
mod net;
mod npy;
mod random;
mod reference;
mod roundtrip;
mod training;
