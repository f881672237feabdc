//! Once warm, the loader allocates nothing per batch (raw records: no decoder allocations either).
//!
//! A separate test binary, because it installs a counting global allocator and must not share
//! the process with other tests allocating concurrently.

use std::sync::Arc;

use sparknet_testkit::alloc::{CountingAllocator, total_allocations};

use sparknet_data::{
    ChannelOrder, Dataset, DatasetConfig, DatasetWriter, Encoding, Loader, LoaderConfig, Mean,
    Phase, TransformParams,
};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn warm_loader_allocates_nothing_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = DatasetConfig {
        encoding: Encoding::RawU8,
        channel_order: ChannelOrder::Bgr,
        classes: Vec::new(),
        shard_size: 16,
    };
    let mut w = DatasetWriter::create(dir.path(), config).unwrap();
    for i in 0..64u32 {
        let payload: Vec<u8> = (0..3 * 16 * 16).map(|k| (k as u32 * 7 + i) as u8).collect();
        w.append(i % 5, [3, 16, 16], &payload).unwrap();
    }
    w.finish().unwrap();
    let ds = Arc::new(Dataset::open_mapped(dir.path()).unwrap());
    let transform = TransformParams {
        crop_size: 12,
        mirror: true,
        scale: 0.5,
        mean: Mean::Values(vec![100.0, 110.0, 120.0]),
        ..Default::default()
    };
    let config = LoaderConfig {
        batch_size: 8,
        threads: 2,
        prefetch: 2,
        phase: Phase::Train,
        transform,
        shuffle: Some(3),
        ..Default::default()
    };
    let mut loader = Loader::new(ds, config).unwrap();
    let mut checksum = 0f64;
    // Warm up past the first epoch boundary (8 batches per epoch), so every buffer and every
    // thread-local has been used once.
    for _ in 0..24 {
        checksum += loader.next_batch().unwrap().data()[0] as f64;
    }
    let before = total_allocations();
    let batches = 200;
    for _ in 0..batches {
        checksum += loader.next_batch().unwrap().data()[0] as f64;
    }
    let after = total_allocations();
    let per_batch = (after - before) as f64 / batches as f64;
    eprintln!("{} allocations in {batches} warm batches (checksum {checksum})", after - before);
    assert!(per_batch < 0.05, "{per_batch} allocations per warm batch");
}
