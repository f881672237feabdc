//! Integration tests against the shared Caffe assets and OpenCV reference outputs.

mod corpus;
mod npy;
mod reference;
mod roundtrip;
