//! Datasets for SparkNet training.
//!
//! This crate will hold checksummed, memory-mapped record shards (a documented on-disk format with
//! an index and a footer), converters from image folders, Caffe list files, MNIST and CIFAR-10,
//! Caffe's `DataTransformer` semantics (scale, mean, crop, mirror), per-rank partitions, and a
//! parallel loader with bounded prefetch that fills reused `sparknet-tensor` batches.
//!
//! It never depends on `sparknet-net`.
//!
//! Nothing is implemented yet; see the project's issue tracker.
