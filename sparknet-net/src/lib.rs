//! Caffe models on candle.
//!
//! This crate will hold the Caffe importer: the project's own `caffe.proto` subset, loading of
//! `.prototxt` nets and solvers, binary `.caffemodel` weights (V1 and V2 formats) and `.binaryproto`
//! mean files, a parse -> IR -> build pipeline with one module per Caffe layer type, forward and
//! backward passes on candle devices (CPU, CUDA behind the `cuda` feature), Caffe's solvers, and
//! snapshots that Caffe can read back.
//!
//! It does not read datasets: a trainer binds each Data layer's top to batches it feeds, which keeps
//! this crate independent of `sparknet-data`.
//!
//! Nothing is implemented yet; see the project's issue tracker.
