//! Datasets for SparkNet training: checksummed, memory-mapped record shards, converters, Caffe's
//! data transforms, per-rank partitions and a parallel prefetching loader.
//!
//! ```
//! use sparknet_data::{ChannelOrder, Dataset, DatasetConfig, DatasetWriter, Encoding};
//!
//! let dir = tempfile::tempdir()?;
//! let config = DatasetConfig {
//!     encoding: Encoding::RawU8,
//!     channel_order: ChannelOrder::Gray,
//!     classes: vec!["zero".into(), "one".into()],
//!     shard_size: 2,
//! };
//! let mut w = DatasetWriter::create(dir.path(), config)?;
//! for i in 0..5u8 {
//!     w.append(u32::from(i % 2), [1, 2, 2], &[i, i, i, i])?;
//! }
//! let manifest = w.finish()?;
//! assert_eq!(manifest.shards.len(), 3);
//!
//! let ds = Dataset::open_mapped(dir.path())?;
//! let rec = ds.get(3)?; // borrowed from the memory map, CRC checked
//! assert_eq!((rec.label, rec.payload), (1, &[3u8, 3, 3, 3][..]));
//! assert_eq!(ds.partition(1, 2)?, 2..5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Brief overview
//! - [`DatasetWriter`] writes a dataset directory atomically; [`ShardWriter`] writes one shard.
//! - [`Dataset`] maps the shards and hands out [`Record`]s; [`Sampler`] and [`partition`] split
//!   and shuffle it per rank and epoch.
//! - [`Transformer`] applies Caffe's `DataTransformer` (crop, mirror, mean, scale);
//!   [`Loader`] runs it in parallel into reused [`Batch`] buffers.
//! - [`convert`] reads MNIST, CIFAR-10, image folders, Caffe list files and the ILSVRC-2012
//!   layout ([`convert::imagenet`]), and synthesizes digits and an ImageNet-like set
//!   ([`convert::synthetic_imagenet`]); [`compute_mean`] (and [`compute_mean_window`] for
//!   records of differing sizes) and [`BlobProto`] produce Caffe mean files. The `sparknet-data`
//!   binary wraps them all.
//!
//! # Dataset layout
//! A dataset is a directory holding `manifest.json` (see [`Manifest`]: format name and version,
//! encoding, channel order, common shape, class names, record count, and the shard files in order
//! with their record counts and sizes) and the shard files `shard-<generation>-<n>.spk`.
//!
//! # Shard format (version 1)
//! All integers little-endian. A header of 64 bytes (magic `SPKNDATA`, version, flags, record
//! count, encoding, payload alignment, index offset, header CRC-32C); the record payloads, each
//! starting at a multiple of 64 bytes (zero-padded), so `f32` and SIMD reads from the
//! page-aligned map are aligned; the index, one 40-byte entry per record (offset, length,
//! label, CRC-32C of the payload, shape `c, h, w`); and a 32-byte footer (index offset, record
//! count, CRC-32C of the index, magic `SPKNEND1`). The byte-level tables are in [`mod@format`].
//! Encodings: raw `u8` CHW, encoded JPEG/PNG bytes kept as given, `f32` CHW.
//!
//! Opening a shard checks the magic, version, header CRC, the file length the header implies,
//! the footer, the index CRC and every entry's bounds, alignment and order; [`Dataset::get`] then
//! checks the payload's CRC. Every failure is an [`Error`] naming the shard file and, for a record,
//! its index inside that file; nothing panics or reads out of bounds.
//!
//! # Channel order
//! Like Caffe, images decoded from JPEG/PNG (and raw records made from them) are BGR; CIFAR-10
//! keeps its file's RGB planes, as Caffe's `convert_cifar_data` does. The manifest records which.
//!
//! # Binary
//! `sparknet-data convert mnist|cifar10|images|imagenet`, `synth imagenet`, `compute-mean`
//! (alias `mean`), `inspect`, `verify`; run it with `--help`.
//!
//! This crate never depends on `sparknet-net`; mean files are written by the small protobuf codec
//! in [`proto`].

pub mod convert;
pub mod decode;
mod error;
pub mod format;
pub mod loader;
pub mod manifest;
pub mod mean;
pub mod proto;
pub mod reader;
pub mod sampler;
pub mod transform;
pub mod writer;

pub use decode::{ColorMode, Decoder, Pixels};
pub use error::{Error, Result};
pub use format::Encoding;
pub use loader::{Batch, BatchGuard, Loader, LoaderConfig, LoaderStats};
pub use manifest::{ChannelOrder, Manifest, ShardInfo};
pub use mean::{MeanReport, compute_mean, compute_mean_window};
pub use proto::BlobProto;
pub use reader::{Dataset, OpenOptions, Record, Shard, VerifyReport};
pub use sampler::{Sampler, SplitMix64, partition};
pub use transform::{Augment, Mean, MeanImage, Phase, TransformParams, Transformer};
pub use writer::{DatasetConfig, DatasetWriter, ShardWriter};

impl Dataset {
    /// The contiguous block of records `rank` of `world` owns (see [`partition`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `world == 0` or `rank >= world`.
    pub fn partition(&self, rank: usize, world: usize) -> Result<std::ops::Range<usize>> {
        partition(self.len(), rank, world)
    }
}
