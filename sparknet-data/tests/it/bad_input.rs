//! The bad-input corpus of the data readers (issue #16), generated here: every truncation and
//! many bit flips of a shard and of a manifest, IDX files with a wrong magic or length, CIFAR-10
//! batches of the wrong length, undecodable JPEGs (as source files and as records), mean files of
//! the wrong shape. Each must be an `Err` naming the file and, where there is one, the record; no
//! panic; and a failed conversion leaves no output behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use sparknet_data::convert::{cifar, images, mnist};
use sparknet_data::{
    BlobProto, ColorMode, Dataset, Decoder, Encoding, Error, Loader, LoaderConfig, Mean, MeanImage,
    Phase, Shard, TransformParams,
};

use crate::common::{Rec, only_shard, raw_records, write};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Bytes of an IDX3 image file of `n` images of `rows x cols`.
fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x0803, n, rows, cols] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend((0..n * rows * cols).map(|i| i as u8));
    b
}

/// Bytes of an IDX1 label file.
fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0x0801u32.to_be_bytes());
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

/// `n` CIFAR-10 records.
fn cifar_records(n: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..n {
        b.push((i % 10) as u8);
        b.extend((0..3 * 32 * 32).map(|k| (k + i) as u8));
    }
    b
}

fn one_shard_dataset(records: &[Rec], encoding: Encoding) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), encoding, 100, records);
    let shard = only_shard(dir.path(), &m);
    (dir, shard)
}

#[test]
fn every_truncation_of_a_shard_is_an_error_naming_it() {
    let (dir, shard) = one_shard_dataset(&raw_records(5), Encoding::RawU8);
    let bytes = std::fs::read(&shard).unwrap();
    for cut in 0..bytes.len() {
        let e = Shard::from_bytes(&shard, bytes[..cut].to_vec()).err().expect("cut must fail");
        assert!(e.to_string().starts_with(s(&shard)), "cut {cut}: {e}");
    }
    // Through the file system, a sample of the cuts.
    for cut in (0..bytes.len()).step_by(97) {
        std::fs::write(&shard, &bytes[..cut]).unwrap();
        let e = Dataset::open_mapped(dir.path()).err().expect("cut must fail");
        assert!(e.to_string().starts_with(s(&shard)), "cut {cut}: {e}");
    }
}

#[test]
fn every_bit_flip_of_a_shard_is_detected_or_changes_no_record() {
    let records = raw_records(5);
    let (_dir, shard) = one_shard_dataset(&records, Encoding::RawU8);
    let bytes = std::fs::read(&shard).unwrap();
    let (mut at_open, mut at_get, mut harmless) = (0, 0, 0);
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            let sh = match Shard::from_bytes(&shard, b) {
                Err(e) => {
                    assert!(e.to_string().starts_with(s(&shard)), "byte {i}: {e}");
                    at_open += 1;
                    continue;
                }
                Ok(sh) => sh,
            };
            let mut detected = false;
            for (j, (label, shape, payload)) in records.iter().enumerate() {
                match sh.get(j) {
                    Err(Error::CrcMismatch { path, record, .. }) => {
                        assert_eq!((&path, record), (&shard, j), "byte {i}");
                        detected = true;
                    }
                    Err(e) => panic!("byte {i}: record {j}: unexpected {e}"),
                    Ok(r) => assert_eq!(
                        (r.label, r.shape, r.payload),
                        (*label, *shape, &payload[..]),
                        "byte {i} ^ {mask:#x} changed record {j} undetected"
                    ),
                }
            }
            if detected { at_get += 1 } else { harmless += 1 }
        }
    }
    assert!(at_open > 0 && at_get > 0, "{at_open} at open, {at_get} at get, {harmless} in padding");
}

#[test]
fn truncated_or_flipped_manifests_are_named() {
    let (dir, _) = one_shard_dataset(&raw_records(3), Encoding::RawU8);
    let mpath = dir.path().join("manifest.json");
    let bytes = std::fs::read(&mpath).unwrap();
    for cut in 0..bytes.len() {
        std::fs::write(&mpath, &bytes[..cut]).unwrap();
        match Dataset::open_mapped(dir.path()) {
            Err(Error::Manifest { path, .. }) => assert_eq!(path, mpath),
            other => panic!("cut {cut}: expected a manifest error, got {:?}", other.err()),
        }
    }
    let mut errors = 0;
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x04;
        std::fs::write(&mpath, &b).unwrap();
        if let Err(e) = Dataset::open_mapped(dir.path()) {
            // The manifest itself, or the shard it now names.
            assert!(e.to_string().starts_with(s(dir.path())), "byte {i}: {e}");
            errors += 1;
        }
    }
    assert!(errors > bytes.len() / 2, "{errors} of {}", bytes.len());
}

#[test]
fn idx_files_with_a_bad_magic_or_length_are_named_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = (dir.path().join("images.idx"), dir.path().join("labels.idx"));
    let out = dir.path().join("out");
    let convert = || mnist::convert_mnist(&images, &labels, &out, 10, None, &|_| {});
    std::fs::write(&labels, idx_labels(&[1, 2, 3])).unwrap();

    // Magic of a label file where images belong, raw and gzipped.
    let mut wrong = idx_images(3, 2, 2);
    wrong[3] = 0x01;
    for bytes in [wrong.clone(), gz(&wrong)] {
        std::fs::write(&images, bytes).unwrap();
        let e = convert().unwrap_err();
        assert!(matches!(&e, Error::BadSource { path, .. } if *path == images), "{e}");
        assert!(e.to_string().contains("magic 0x00000801, expected 0x00000803"), "{e}");
        assert!(!out.exists(), "no output");
    }
    // Truncated pixels; a header of zero-sized images.
    let good = idx_images(3, 2, 2);
    for (bytes, word) in
        [(good[..good.len() - 1].to_vec(), "header says 3 images"), (idx_images(3, 0, 2), "0x2")]
    {
        std::fs::write(&images, bytes).unwrap();
        let e = convert().unwrap_err();
        assert!(e.to_string().starts_with(s(&images)) && e.to_string().contains(word), "{e}");
        assert!(!out.exists());
    }
    // Labels: wrong magic, too short, a label above 9.
    std::fs::write(&images, &good).unwrap();
    let mut lw = idx_labels(&[1, 2, 3]);
    lw[3] = 0x03;
    for (bytes, word) in [
        (lw, "magic 0x00000803"),
        (idx_labels(&[1, 2, 3])[..9].to_vec(), "header says 3 labels"),
        (idx_labels(&[1, 12, 3]), "record 1: label 12"),
    ] {
        std::fs::write(&labels, bytes).unwrap();
        let e = convert().unwrap_err();
        assert!(e.to_string().starts_with(s(&labels)) && e.to_string().contains(word), "{e}");
        assert!(!out.exists());
    }
    // The command says the same and leaves nothing.
    let o = Command::new(env!("CARGO_BIN_EXE_sparknet-data"))
        .args(["convert", "mnist", "--images", s(&images), "--labels", s(&labels), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(s(&labels)) && err.contains("label 12"), "{err}");
    assert!(!out.exists());
    // And the good pair converts.
    std::fs::write(&labels, idx_labels(&[1, 2, 3])).unwrap();
    assert_eq!(convert().unwrap().records, 3);
}

#[test]
fn cifar_batches_of_the_wrong_length_are_named_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let test = dir.path().join("test_batch.bin");
    std::fs::write(&test, [cifar_records(2), vec![7; 5]].concat()).unwrap();
    let e = cifar::convert_cifar10(dir.path(), cifar::Split::Test, &out, 10, None, &|_| {})
        .unwrap_err();
    assert!(matches!(&e, Error::BadSource { path, .. } if *path == test), "{e}");
    assert!(e.to_string().contains("2 whole records and 5 bytes over"), "{e}");
    assert!(!out.exists());
    // A bad label names its record.
    let mut b = cifar_records(3);
    b[2 * cifar::RECORD_LEN] = 10;
    std::fs::write(&test, b).unwrap();
    let e = cifar::convert_cifar10(dir.path(), cifar::Split::Test, &out, 10, None, &|_| {})
        .unwrap_err();
    assert!(matches!(&e, Error::BadRecord { path, record: 2, .. } if *path == test), "{e}");
    assert!(!out.exists());

    // Train: the fourth of five batches is short; gzipped, so it is found while converting.
    for i in 1..=5 {
        let n = if i == 4 { 1 } else { 2 };
        let mut bytes = cifar_records(n);
        if i == 4 {
            bytes.pop();
        }
        std::fs::write(dir.path().join(format!("data_batch_{i}.bin.gz")), gz(&bytes)).unwrap();
    }
    let e = cifar::convert_cifar10(dir.path(), cifar::Split::Train, &out, 1, None, &|_| {})
        .unwrap_err();
    assert!(e.to_string().contains("data_batch_4.bin.gz"), "{e}");
    assert!(!out.exists(), "the abandoned conversion leaves no directory");
    // Raw batches are checked before anything is written.
    for i in 1..=5 {
        std::fs::remove_file(dir.path().join(format!("data_batch_{i}.bin.gz"))).unwrap();
        let len = if i == 4 { cifar::RECORD_LEN + 1 } else { cifar::RECORD_LEN };
        std::fs::write(dir.path().join(format!("data_batch_{i}.bin")), &cifar_records(2)[..len])
            .unwrap();
    }
    let e = cifar::convert_cifar10(dir.path(), cifar::Split::Train, &out, 1, None, &|_| {})
        .unwrap_err();
    assert!(e.to_string().contains("data_batch_4.bin"), "{e}");
    assert!(!out.exists());
}

/// A small valid JPEG.
fn jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 99]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90))
        .unwrap();
    out
}

/// JPEGs no decoder can read: no frame header, garbage after the start marker, a cut inside
/// the headers.
fn broken_jpegs() -> Vec<Vec<u8>> {
    let good = jpeg();
    let sos = good.windows(2).position(|w| w == [0xff, 0xda]).unwrap();
    vec![
        vec![0xff, 0xd8, 0xff, 0xd9],
        [&[0xff, 0xd8][..], &[0x13; 64]].concat(),
        good[..sos / 2].to_vec(),
    ]
}

#[test]
fn undecodable_jpeg_sources_are_named_by_file_and_class_and_write_nothing() {
    for (k, broken) in broken_jpegs().into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        std::fs::create_dir_all(root.join("cat")).unwrap();
        std::fs::write(root.join("cat/a.jpg"), jpeg()).unwrap();
        let bad = root.join("cat/b.jpg");
        std::fs::write(&bad, broken).unwrap();
        let (items, classes) = images::scan_folders(&root).unwrap();
        let out = dir.path().join("out");
        for encoded in [true, false] {
            let opts = images::ImageOptions { encoded, ..Default::default() };
            let e = images::convert_images(items.clone(), classes.clone(), &out, &opts, &|_| {})
                .unwrap_err();
            assert!(
                matches!(&e, Error::BadImage { path, class, .. } if *path == bad && class == "cat"),
                "jpeg {k}, encoded {encoded}: {e}"
            );
            assert!(!out.exists(), "jpeg {k}: no output");
        }
    }
}

#[test]
fn undecodable_jpeg_records_are_named_by_shard_and_record() {
    let mut records: Vec<Rec> = vec![(0, [3, 8, 8], jpeg())];
    records.extend(broken_jpegs().into_iter().map(|b| (1, [3, 8, 8], b)));
    let (dir, shard) = one_shard_dataset(&records, Encoding::Encoded);
    let ds = Arc::new(Dataset::open_mapped(dir.path()).unwrap());
    let mut d = Decoder::new();
    assert!(d.pixels(&ds.get(0).unwrap(), ColorMode::Native).is_ok());
    for j in 1..records.len() {
        assert!(d.pixels(&ds.get(j).unwrap(), ColorMode::Native).is_err(), "record {j}");
    }
    // The loader names the shard and the first bad record.
    let config =
        LoaderConfig { batch_size: 2, threads: 1, phase: Phase::Test, ..Default::default() };
    let mut l = Loader::new(ds, config).unwrap();
    let e = l.next_batch().err().expect("record 1 is undecodable");
    assert!(matches!(&e, Error::BadRecord { path, record: 1, .. } if *path == shard), "{e}");
}

#[test]
fn mean_files_of_the_wrong_shape_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mean = dir.path().join("mean.binaryproto");
    for (blob, word) in [
        (BlobProto { shape: vec![3, 4], data: vec![0.0; 12] }, "[3, 4]"),
        (BlobProto { shape: vec![1, 0, 4, 4], data: vec![] }, "[1, 0, 4, 4]"),
    ] {
        blob.write(&mean).unwrap();
        let e = MeanImage::read(&mean).unwrap_err();
        assert!(matches!(&e, Error::BadSource { path, .. } if *path == mean), "{e}");
        assert!(e.to_string().contains(word), "{e}");
    }
    let good = BlobProto::mean(3, 4, 5, vec![1.0; 60]).encode();
    let mut complete = 0;
    for cut in 0..good.len() {
        std::fs::write(&mean, &good[..cut]).unwrap();
        match MeanImage::read(&mean) {
            Err(e) => assert!(e.to_string().starts_with(s(&mean)), "cut {cut}: {e}"),
            // Means are written as Caffe writes them (the legacy 4-D fields, then the data, no
            // `shape`): every cut loses data, so none may read as a whole mean.
            Ok(m) => {
                assert_eq!((m.c, m.h, m.w, m.data), (3, 4, 5, vec![1.0; 60]), "cut {cut}");
                complete += 1;
            }
        }
    }
    assert_eq!(complete, 0, "no cut is a whole mean");
    std::fs::write(&mean, &good).unwrap();
    assert_eq!(MeanImage::read(&mean).unwrap().data, vec![1.0; 60], "the whole file reads");
    // A mean of another shape than the records fails when the loader starts, naming the record.
    let (dir, shard) = one_shard_dataset(&raw_records(4), Encoding::RawU8); // 3x4x5
    let ds = Arc::new(Dataset::open_mapped(dir.path()).unwrap());
    for (c, h, w) in [(3, 5, 4), (1, 4, 5)] {
        let m = MeanImage { c, h, w, data: vec![0.0; c * h * w] };
        let config = LoaderConfig {
            batch_size: 2,
            transform: TransformParams { mean: Mean::File(m), ..Default::default() },
            ..Default::default()
        };
        let e = Loader::new(ds.clone(), config).err().expect("mean does not fit");
        assert!(
            matches!(&e, Error::BadRecord { path, record: 0, reason }
                if *path == shard && reason.contains("mean image")),
            "{e}"
        );
    }
}
