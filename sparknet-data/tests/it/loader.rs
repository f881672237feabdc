//! The parallel loader: order, determinism across thread counts, epochs, corrupt records, stats.

use std::sync::Arc;

use sparknet_data::{
    Dataset, Encoding, Error, Loader, LoaderConfig, OpenOptions, Phase, Shard, TransformParams,
};

use crate::common::{Rec, write};

/// `n` records of 1x6x6 whose pixels all equal the record index (mod 256) plus the column.
fn indexed(n: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| ((i % 7) as u32, [1, 6, 6], (0..36).map(|k| (i + k % 6) as u8).collect()))
        .collect()
}

fn open(dir: &std::path::Path) -> Arc<Dataset> {
    Arc::new(Dataset::open_mapped(dir).unwrap())
}

#[test]
fn sequential_test_batches_wrap_into_the_next_epoch() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), Encoding::RawU8, 4, &indexed(10));
    let config =
        LoaderConfig { batch_size: 4, threads: 2, phase: Phase::Test, ..Default::default() };
    let mut l = Loader::new(open(dir.path()), config).unwrap();
    assert_eq!(l.batch_shape(), [4, 1, 6, 6]);
    let mut seen = Vec::new();
    for b in 0..5 {
        let batch = l.next_batch().unwrap();
        assert_eq!(batch.shape(), [4, 1, 6, 6]);
        assert_eq!(batch.epoch(), (b * 4 / 10) as u64);
        for (slot, &i) in batch.indices().iter().enumerate() {
            assert_eq!(batch.labels()[slot], (i % 7) as u32);
            let img = &batch.data()[slot * 36..(slot + 1) * 36];
            assert_eq!(img[0], i as f32);
            assert_eq!(img[5], (i + 5) as f32);
        }
        seen.extend_from_slice(batch.indices());
    }
    let want: Vec<usize> = (0..20).map(|k| k % 10).collect();
    let last = l.next_batch().unwrap();
    let t = last.to_tensor().unwrap();
    assert_eq!(t.shape(), &[4, 1, 6, 6]);
    assert_eq!(t.to_vec(), last.data());
    let labels = last.labels_tensor().unwrap();
    assert_eq!(labels.to_vec(), last.labels().iter().map(|&x| x as f32).collect::<Vec<_>>());
    let mut dst = vec![0.0; 4 * 36];
    last.copy_to(&mut dst).unwrap();
    assert_eq!(dst, last.data());
    assert!(matches!(last.copy_to(&mut dst[1..]), Err(Error::InvalidArgument(_))));
    drop(last);
    assert_eq!(seen, want);
    let s = l.stats();
    assert_eq!(s.batches, 6);
    assert!(s.wait > std::time::Duration::ZERO);
}

#[test]
fn train_batches_are_identical_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), Encoding::RawU8, 8, &indexed(37));
    let run = |threads: usize| {
        let config = LoaderConfig {
            batch_size: 5,
            threads,
            prefetch: 3,
            phase: Phase::Train,
            transform: TransformParams {
                crop_size: 4,
                mirror: true,
                scale: 0.25,
                ..Default::default()
            },
            shuffle: Some(42),
            seed: 9,
            ..Default::default()
        };
        let mut l = Loader::new(open(dir.path()), config).unwrap();
        let mut all = Vec::new();
        for _ in 0..12 {
            let b = l.next_batch().unwrap();
            all.push((b.indices().to_vec(), b.labels().to_vec(), b.data().to_vec()));
        }
        all
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
    // Shuffled: the first epoch is a permutation of all records, not the identity.
    let first: Vec<usize> = one.iter().flat_map(|b| b.0.clone()).take(37).collect();
    let mut sorted = first.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..37).collect::<Vec<_>>());
    assert_ne!(first, sorted);
}

#[test]
fn ranks_split_each_epoch() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), Encoding::RawU8, 8, &indexed(24));
    let mut got = Vec::new();
    for rank in 0..3 {
        let config = LoaderConfig {
            batch_size: 4,
            phase: Phase::Test,
            shuffle: Some(1),
            rank,
            world: 3,
            ..Default::default()
        };
        let mut l = Loader::new(open(dir.path()), config).unwrap();
        for _ in 0..2 {
            got.extend_from_slice(l.next_batch().unwrap().indices());
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..24).collect::<Vec<_>>());
}

#[test]
fn corrupt_record_stops_the_loader_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), Encoding::RawU8, 100, &indexed(12));
    let shard = dir.path().join(&m.shards[0].file);
    let at = Shard::open(&shard, &OpenOptions::new()).unwrap().entry(5).unwrap().offset as usize;
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[at + 3] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();

    let config = LoaderConfig { batch_size: 4, phase: Phase::Test, ..Default::default() };
    let mut l = Loader::new(open(dir.path()), config.clone()).unwrap();
    assert!(l.next_batch().is_ok());
    match l.next_batch() {
        Err(Error::CrcMismatch { path, record, .. }) => {
            assert_eq!((path, record), (shard.clone(), 5))
        }
        Err(e) => panic!("expected CrcMismatch, got {e}"),
        Ok(_) => panic!("expected CrcMismatch, got a batch"),
    }

    let mut l =
        Loader::new(open(dir.path()), LoaderConfig { skip_corrupt: true, ..config }).unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend_from_slice(l.next_batch().unwrap().indices());
    }
    // Record 5's slot is refilled by the next record of the stream (8); the stream then goes on.
    assert_eq!(seen, vec![0, 1, 2, 3, 4, 8, 6, 7, 9, 10, 11, 0]);
    assert_eq!(l.stats().skipped, 1);
}

#[test]
fn bad_configurations_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), Encoding::RawU8, 8, &indexed(3));
    let ds = open(dir.path());
    let bad =
        |c: LoaderConfig| matches!(Loader::new(ds.clone(), c), Err(Error::InvalidArgument(_)));
    assert!(bad(LoaderConfig { batch_size: 0, ..Default::default() }));
    assert!(bad(LoaderConfig { threads: 0, ..Default::default() }));
    assert!(bad(LoaderConfig { rank: 3, world: 3, ..Default::default() }));
    assert!(
        bad(LoaderConfig { rank: 0, world: 4, ..Default::default() }),
        "rank 0 of 4 gets none of 3 records"
    );
    let crop = TransformParams { crop_size: 7, ..Default::default() };
    assert!(matches!(
        Loader::new(ds.clone(), LoaderConfig { transform: crop, ..Default::default() }),
        Err(Error::BadRecord { record: 0, ref reason, .. }) if reason.contains("crop_size 7")
    ));
}

#[test]
fn undecodable_jpeg_names_shard_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut good = Vec::new();
    let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 7]));
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut good), image::ImageFormat::Png)
        .unwrap();
    let recs: Vec<Rec> = vec![
        (0, [3, 8, 8], good.clone()),
        (1, [3, 8, 8], b"\x89PNG\r\n\x1a\n broken".to_vec()),
        (0, [3, 8, 8], good),
    ];
    let m = write(dir.path(), Encoding::Encoded, 2, &recs);
    let config = LoaderConfig { batch_size: 3, phase: Phase::Test, ..Default::default() };
    let mut l = Loader::new(open(dir.path()), config).unwrap();
    match l.next_batch() {
        Err(Error::BadRecord { path, record, reason }) => {
            assert_eq!((path, record), (dir.path().join(&m.shards[0].file), 1));
            assert!(reason.contains("decode"), "{reason}");
        }
        Err(e) => panic!("expected BadRecord, got {e}"),
        Ok(_) => panic!("expected BadRecord, got a batch"),
    }
    let ds = open(dir.path());
    let e = sparknet_data::compute_mean(&ds, false, &|_| {}).unwrap_err();
    assert!(matches!(e, Error::BadRecord { record: 1, .. }), "{e}");
    let report = sparknet_data::compute_mean(&ds, true, &|_| {}).unwrap();
    assert_eq!((report.records, report.skipped.len()), (2, 1));
    // PNG decodes to BGR: the first pixel of channel 0 is the blue value 7.
    assert_eq!(report.blob.data[0], 7.0);
}

#[test]
fn a_loader_started_at_an_offset_reads_what_the_full_stream_would() {
    // A resumed run starts its loader `iter * batch` records in (issue #16's resume).
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), Encoding::RawU8, 4, &indexed(10));
    for shuffle in [None, Some(3)] {
        let config = LoaderConfig { batch_size: 3, shuffle, ..Default::default() };
        let mut full = Loader::new(open(dir.path()), config.clone()).unwrap();
        let mut stream = Vec::new();
        for _ in 0..8 {
            let b = full.next_batch().unwrap();
            stream.extend(b.indices().iter().map(|&i| (b.epoch(), i)));
        }
        for start in [0usize, 1, 6, 9, 10, 14] {
            let mut l = Loader::new_at(open(dir.path()), config.clone(), start as u64).unwrap();
            let b = l.next_batch().unwrap();
            let got: Vec<usize> = b.indices().to_vec();
            let want: Vec<usize> = stream[start..start + 3].iter().map(|&(_, i)| i).collect();
            assert_eq!(got, want, "shuffle {shuffle:?}, start {start}");
            assert_eq!(b.epoch(), (start / 10) as u64, "start {start}");
        }
    }
}
