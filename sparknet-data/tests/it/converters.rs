//! Converters against the real MNIST / CIFAR-10 files and the shared photos.

use std::io::Read;
use std::path::Path;

use sparknet_data::convert::images::{self, ImageOptions, Resize};
use sparknet_data::convert::{cifar, mnist};
use sparknet_data::{ChannelOrder, Dataset, Encoding, Error};

use crate::common::data_dir;

/// Gunzips a file independently of the crate's reader.
fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

fn noop(_: u64) {}

#[test]
fn mnist_test_set_reproduces_the_idx_bytes() {
    let Some(data) = data_dir("mnist_converter") else { return };
    let (imgs, labs) = (
        data.join("mnist/t10k-images-idx3-ubyte.gz"),
        data.join("mnist/t10k-labels-idx1-ubyte.gz"),
    );
    let out = tempfile::tempdir().unwrap();
    let m = mnist::convert_mnist(&imgs, &labs, out.path(), 4000, None, &noop).unwrap();
    assert_eq!((m.records, m.shards.len(), m.shape), (10_000, 3, Some([1, 28, 28])));
    assert_eq!(
        (m.encoding, m.channel_order, m.classes.len()),
        (Encoding::RawU8, ChannelOrder::Gray, 10)
    );
    let raw_i = gunzip(&imgs);
    let raw_l = gunzip(&labs);
    assert_eq!(&raw_i[..4], &[0, 0, 8, 3]);
    let ds = Dataset::open_mapped(out.path()).unwrap();
    for i in 0..ds.len() {
        let r = ds.get(i).unwrap();
        assert_eq!(r.payload, &raw_i[16 + i * 784..16 + (i + 1) * 784], "pixels of record {i}");
        assert_eq!(r.label, raw_l[8 + i] as u32, "label of record {i}");
    }
    // The first test digit is a 7 (a well-known fact about t10k).
    assert_eq!(ds.get(0).unwrap().label, 7);
}

#[test]
fn mnist_rejects_mismatched_files() {
    let Some(data) = data_dir("mnist_mismatch") else { return };
    let out = tempfile::tempdir().unwrap();
    let e = mnist::convert_mnist(
        &data.join("mnist/t10k-labels-idx1-ubyte.gz"),
        &data.join("mnist/t10k-labels-idx1-ubyte.gz"),
        out.path(),
        10,
        None,
        &noop,
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::BadSource { ref reason, .. } if reason.contains("0x00000803")),
        "{e}"
    );
}

#[test]
fn cifar10_test_batch_reproduces_the_binary_bytes() {
    let Some(data) = data_dir("cifar_converter") else { return };
    let out = tempfile::tempdir().unwrap();
    let m = cifar::convert_cifar10(
        &data.join("cifar10"),
        cifar::Split::Test,
        out.path(),
        3000,
        None,
        &noop,
    )
    .unwrap();
    assert_eq!((m.records, m.shards.len(), m.shape), (10_000, 4, Some([3, 32, 32])));
    assert_eq!(m.channel_order, ChannelOrder::Rgb);
    assert_eq!(m.classes[0], "airplane");
    let raw = gunzip(&data.join("cifar10/test_batch.bin.gz"));
    assert_eq!(raw.len(), 10_000 * 3073);
    let ds = Dataset::open_mapped(out.path()).unwrap();
    let mut hist = [0usize; 10];
    for i in 0..ds.len() {
        let r = ds.get(i).unwrap();
        let src = &raw[i * 3073..(i + 1) * 3073];
        assert_eq!(r.label, src[0] as u32, "label of record {i}");
        assert_eq!(r.payload, &src[1..], "pixels of record {i}");
        hist[r.label as usize] += 1;
    }
    assert_eq!(hist, [1000; 10], "the CIFAR-10 test set is balanced");
}

#[test]
fn cifar10_train_subset_and_missing_files() {
    let Some(data) = data_dir("cifar_train_subset") else { return };
    let out = tempfile::tempdir().unwrap();
    let m = cifar::convert_cifar10(
        &data.join("cifar10"),
        cifar::Split::Train,
        out.path(),
        500,
        Some(1200),
        &noop,
    )
    .unwrap();
    assert_eq!(m.records, 1200);
    let raw = gunzip(&data.join("cifar10/data_batch_1.bin.gz"));
    let ds = Dataset::open_mapped(out.path()).unwrap();
    let r = ds.get(1199).unwrap();
    assert_eq!((r.label, r.payload), (raw[1199 * 3073] as u32, &raw[1199 * 3073 + 1..1200 * 3073]));
    let empty = tempfile::tempdir().unwrap();
    let e = cifar::convert_cifar10(empty.path(), cifar::Split::Test, out.path(), 10, None, &noop)
        .unwrap_err();
    assert!(e.to_string().contains("test_batch.bin"), "{e}");
}

/// A class-per-folder tree: `a/` holds two JPEGs, `b/` a PNG and a corrupt "JPEG".
fn photo_tree(data: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("a")).unwrap();
    std::fs::create_dir_all(root.path().join("b")).unwrap();
    let src = data.join("images");
    std::fs::copy(src.join("caffe_examples/cat.jpg"), root.path().join("a/1.jpg")).unwrap();
    std::fs::copy(src.join("caffe_examples/fish-bike.jpg"), root.path().join("a/2.jpg")).unwrap();
    std::fs::copy(src.join("cifar10_style_samples/dog10.png"), root.path().join("b/1.png"))
        .unwrap();
    root
}

#[test]
fn image_folders_encoded_keep_bytes_and_raw_store_bgr() {
    let Some(data) = data_dir("image_folders") else { return };
    let root = photo_tree(&data);
    let (items, classes) = images::scan_folders(root.path()).unwrap();
    assert_eq!(classes, vec!["a", "b"]);
    assert_eq!(items.iter().map(|i| i.label).collect::<Vec<_>>(), vec![0, 0, 1]);

    let enc = tempfile::tempdir().unwrap();
    let r = images::convert_images(
        items.clone(),
        classes.clone(),
        enc.path(),
        &ImageOptions::default(),
        &noop,
    )
    .unwrap();
    assert_eq!((r.manifest.records, r.manifest.encoding), (3, Encoding::Encoded));
    let ds = Dataset::open_mapped(enc.path()).unwrap();
    assert_eq!(
        ds.get(0).unwrap().payload,
        &std::fs::read(root.path().join("a/1.jpg")).unwrap()[..]
    );
    let cat = image::open(root.path().join("a/1.jpg")).unwrap();
    assert_eq!(ds.get(0).unwrap().shape, [3, cat.height(), cat.width()]);

    let raw = tempfile::tempdir().unwrap();
    let opts = ImageOptions {
        encoded: false,
        resize: Resize::Exact { width: 16, height: 12 },
        ..Default::default()
    };
    let r = images::convert_images(items, classes, raw.path(), &opts, &noop).unwrap();
    assert_eq!(
        (r.manifest.shape, r.manifest.channel_order),
        (Some([3, 12, 16]), ChannelOrder::Bgr)
    );
    let ds = Dataset::open_mapped(raw.path()).unwrap();
    let want = cat.resize_exact(16, 12, image::imageops::FilterType::Triangle).to_rgb8();
    let got = ds.get(0).unwrap().payload;
    for (x, y, p) in want.enumerate_pixels() {
        let i = (y * 16 + x) as usize;
        assert_eq!(
            [got[i], got[192 + i], got[384 + i]],
            [p[2], p[1], p[0]],
            "BGR planes at ({x}, {y})"
        );
    }
}

#[test]
fn list_file_shuffle_shorter_side_and_corrupt_images() {
    let Some(data) = data_dir("image_list") else { return };
    let root = photo_tree(&data);
    std::fs::write(root.path().join("b/broken.jpg"), b"\xff\xd8\xff not a jpeg at all").unwrap();
    let list = root.path().join("list.txt");
    std::fs::write(&list, "a/1.jpg 0\na/2.jpg 3\nb/1.png 1\nb/broken.jpg 2\n").unwrap();
    let (items, classes) = images::read_list(root.path(), &list).unwrap();
    assert_eq!(classes.len(), 4);
    let out = tempfile::tempdir().unwrap();
    let opts = ImageOptions { resize: Resize::ShorterSide(20), ..Default::default() };
    let e = images::convert_images(items.clone(), classes.clone(), out.path(), &opts, &noop)
        .unwrap_err();
    match e {
        Error::BadImage { path, class, .. } => {
            assert_eq!((path, class.as_str()), (root.path().join("b/broken.jpg"), "2"))
        }
        e => panic!("expected BadImage, got {e}"),
    }
    assert!(Dataset::open_mapped(out.path()).is_err(), "nothing committed after a failure");
    let opts = ImageOptions { skip_corrupt: true, shuffle: Some(5), ..opts };
    let r =
        images::convert_images(items.clone(), classes.clone(), out.path(), &opts, &noop).unwrap();
    assert_eq!((r.manifest.records, r.skipped.len()), (3, 1));
    let ds = Dataset::open_mapped(out.path()).unwrap();
    let mut labels = Vec::new();
    for i in 0..3 {
        let rec = ds.get(i).unwrap();
        assert_eq!(rec.shape[1].min(rec.shape[2]), 20, "shorter side 20");
        labels.push(rec.label);
    }
    // The same seed gives the same order.
    let again = tempfile::tempdir().unwrap();
    images::convert_images(items, classes, again.path(), &opts, &noop).unwrap();
    let ds2 = Dataset::open_mapped(again.path()).unwrap();
    assert_eq!(labels, (0..3).map(|i| ds2.get(i).unwrap().label).collect::<Vec<_>>());
    let bad_list = root.path().join("bad.txt");
    std::fs::write(&bad_list, "a/1.jpg zero\n").unwrap();
    let e = images::read_list(root.path(), &bad_list).unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
}

#[test]
fn shorter_side_target_sizes() {
    assert_eq!(images::target_size(Resize::ShorterSide(256), 500, 375), (341, 256));
    assert_eq!(images::target_size(Resize::ShorterSide(256), 375, 500), (256, 341));
    assert_eq!(images::target_size(Resize::None, 3, 4), (3, 4));
}
