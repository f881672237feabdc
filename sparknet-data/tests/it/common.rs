//! Shared helpers: writing small datasets and locating the shared assets.

use std::path::{Path, PathBuf};

use sparknet_data::{ChannelOrder, DatasetConfig, DatasetWriter, Encoding, Manifest};

/// One record to write: label, shape, payload.
pub type Rec = (u32, [u32; 3], Vec<u8>);

/// Writes `records` into `dir` with no class limit.
pub fn write(dir: &Path, encoding: Encoding, shard_size: usize, records: &[Rec]) -> Manifest {
    let config = DatasetConfig {
        encoding,
        channel_order: ChannelOrder::Bgr,
        classes: Vec::new(),
        shard_size,
    };
    let mut w = DatasetWriter::create(dir, config).unwrap();
    for (label, shape, payload) in records {
        w.append(*label, *shape, payload).unwrap();
    }
    w.finish().unwrap()
}

/// `n` raw records of shape 3x4x5 with distinct contents.
pub fn raw_records(n: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| {
            let payload = (0..60).map(|k| (i * 7 + k * 13) as u8).collect();
            ((i % 10) as u32, [3, 4, 5], payload)
        })
        .collect()
}

/// The shared data directory (`<assets>/data`), or `None` after a SKIPPED line.
pub fn data_dir(test: &str) -> Option<PathBuf> {
    sparknet_testkit::assets_dir(test).map(|a| a.join("data"))
}

/// The single shard file of a one-shard dataset.
pub fn only_shard(dir: &Path, m: &Manifest) -> PathBuf {
    assert_eq!(m.shards.len(), 1);
    dir.join(&m.shards[0].file)
}
