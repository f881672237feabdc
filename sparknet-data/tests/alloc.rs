//! Once warm, the loader allocates nothing per batch (raw records: no decoder allocations either).
//!
//! A separate test binary, because it installs a counting global allocator and must not share
//! the process with other tests allocating concurrently.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sparknet_data::{
    ChannelOrder, Dataset, DatasetConfig, DatasetWriter, Encoding, Loader, LoaderConfig, Mean,
    Phase, TransformParams,
};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged,
// so `System`'s guarantees carry over; the counter is a side effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded verbatim; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` via `alloc`/`realloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded verbatim; `ptr` was allocated by `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let ds = Arc::new(Dataset::open(dir.path()).unwrap());
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
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let batches = 200;
    for _ in 0..batches {
        checksum += loader.next_batch().unwrap().data()[0] as f64;
    }
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    let per_batch = (after - before) as f64 / batches as f64;
    eprintln!("{} allocations in {batches} warm batches (checksum {checksum})", after - before);
    assert!(per_batch < 0.05, "{per_batch} allocations per warm batch");
}
