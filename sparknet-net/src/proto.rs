//! Generated prost types for the project's `proto/caffe.proto`, plus the text-format parser.
//!
//! Every message mirrors the Caffe message of the same name: field names, numbers and defaults
//! are Caffe's (prost accessors such as `conv.bias_term()` apply the `[default = ...]` values).

#![allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/caffe.rs"));

/// The encoded `FileDescriptorSet` of `caffe.proto` (for prost-reflect).
pub(crate) const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/caffe_fds.bin"));
