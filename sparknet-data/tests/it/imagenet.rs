//! `convert imagenet` on the 50 labelled ILSVRC-2012 val photos, bad input, the synthesizer, and
//! the real ImageNet mean file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use sparknet_data::convert::imagenet::{
    ImagenetOptions, ImagenetPlan, ImagenetSource, OnBad, SYNSETS_FILE,
};
use sparknet_data::convert::images::{Resize, jpeg_is_complete};
use sparknet_data::convert::synthetic_imagenet::{SynthOptions, synth_imagenet};
use sparknet_data::{
    BlobProto, ColorMode, Dataset, Decoder, Error, Loader, LoaderConfig, Mean, MeanImage, Phase,
    TransformParams, compute_mean_window,
};

fn assets(test: &str) -> Option<PathBuf> {
    sparknet_testkit::assets_dir(test)
}

fn none(_: sparknet_data::convert::imagenet::Split, _: u64) {}

/// `(file name, label)` of the 50 photos, from their `labels.txt`.
fn photo_labels(a: &Path) -> Vec<(String, u32)> {
    let text = std::fs::read_to_string(a.join("data/images/imagenet_val/labels.txt")).unwrap();
    let mut v: Vec<(String, u32)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (n, k) = l.trim().rsplit_once(' ').unwrap();
            (n.to_string(), k.parse().unwrap())
        })
        .collect();
    v.sort();
    v
}

fn synsets(a: &Path) -> Vec<String> {
    std::fs::read_to_string(a.join("models/ilsvrc12/synsets.txt"))
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// A train tree `train/<wnid>/<photo>` of the 50 photos, each under its label's synset.
fn train_tree(a: &Path, root: &Path) -> PathBuf {
    let wnids = synsets(a);
    let train = root.join("train");
    for (name, label) in photo_labels(a) {
        let dir = train.join(&wnids[label as usize]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(a.join("data/images/imagenet_val").join(&name), dir.join(&name)).unwrap();
    }
    train
}

#[test]
fn ilsvrc_val_photos_convert_with_caffe_labels_and_shorter_side_256() {
    let Some(a) = assets("imagenet_val_photos") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let train = train_tree(&a, tmp.path());
    let src = ImagenetSource {
        train: Some(train.clone()),
        val: Some(a.join("data/images/imagenet_val")),
        val_labels: Some(a.join("data/images/imagenet_val/labels.txt")),
        synsets: Some(a.join("models/ilsvrc12/synsets.txt")),
    };
    let plan = ImagenetPlan::scan(&src).unwrap();
    assert_eq!(plan.counts(), (50, 50));
    assert_eq!(plan.synsets, synsets(&a));
    let out = tmp.path().join("out");
    let r = plan.convert(&out, &ImagenetOptions::default(), &none).unwrap();
    assert_eq!(r.skipped(), 0);

    let labels = photo_labels(&a);
    let val = Dataset::open_mapped(&out.join("val")).unwrap();
    assert_eq!(val.len(), 50);
    assert_eq!(val.manifest().classes.len(), 1000);
    let mut d = Decoder::new();
    for (i, (name, label)) in labels.iter().enumerate() {
        let rec = val.get(i).unwrap();
        assert_eq!(rec.label, *label, "val record {i} ({name})");
        // The photos are 227x227: the shorter side goes to 256, so 256x256, re-encoded.
        assert_eq!(rec.shape, [3, 256, 256], "{name}");
        let px = d.pixels(&rec, ColorMode::Native).unwrap();
        assert_eq!((px.c, px.h, px.w), (3, 256, 256));
        assert!(jpeg_is_complete(rec.payload));
    }

    // Train: the labels come from the folders through the synset list, shuffled.
    let tr = Dataset::open_mapped(&out.join("train")).unwrap();
    assert_eq!(tr.len(), 50);
    let mut got: Vec<u32> = tr.iter().map(|r| r.unwrap().label).collect();
    let in_class_order: Vec<u32> = {
        let wnids = synsets(&a);
        let mut v: Vec<(String, u32)> =
            labels.iter().map(|(_, k)| (wnids[*k as usize].clone(), *k)).collect();
        v.sort();
        v.into_iter().map(|(_, k)| k).collect()
    };
    assert_ne!(got, in_class_order, "train records are shuffled");
    got.sort_unstable();
    let mut want: Vec<u32> = labels.iter().map(|(_, k)| *k).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    let written = std::fs::read_to_string(out.join(SYNSETS_FILE)).unwrap();
    assert_eq!(written.lines().collect::<Vec<_>>(), synsets(&a));

    // Without a resize, the JPEG bytes are kept as they are.
    let keep = tmp.path().join("keep");
    let src = ImagenetSource { train: None, ..src };
    let opts = ImagenetOptions { resize: Resize::None, ..Default::default() };
    ImagenetPlan::scan(&src).unwrap().convert(&keep, &opts, &none).unwrap();
    let kv = Dataset::open_mapped(&keep.join("val")).unwrap();
    for (i, (name, _)) in labels.iter().enumerate() {
        let file = std::fs::read(a.join("data/images/imagenet_val").join(name)).unwrap();
        assert_eq!(kv.get(i).unwrap().payload, &file[..], "{name} stored as is");
        assert_eq!(kv.get(i).unwrap().shape, [3, 227, 227]);
    }
    assert!(!keep.join("train").exists());

    // The training path over the converted shards: decode, random 227 crop, mirror, subtract
    // the real ImageNet mean (256x256, the records' size), on two loader threads.
    let mean = MeanImage::read(&a.join("models/ilsvrc12/imagenet_mean.binaryproto")).unwrap();
    let config = LoaderConfig {
        batch_size: 8,
        threads: 2,
        phase: Phase::Train,
        transform: TransformParams {
            crop_size: 227,
            mirror: true,
            mean: Mean::File(mean),
            ..Default::default()
        },
        shuffle: Some(1),
        ..Default::default()
    };
    let mut loader = Loader::new(Arc::new(val), config).unwrap();
    for _ in 0..3 {
        let b = loader.next_batch().unwrap();
        assert_eq!(b.shape(), [8, 3, 227, 227]);
        let mean_abs = b.data().iter().map(|v| v.abs()).sum::<f32>() / b.data().len() as f32;
        assert!(b.data().iter().all(|v| v.is_finite() && v.abs() <= 256.0));
        assert!(mean_abs > 5.0 && mean_abs < 120.0, "mean |x - mean| = {mean_abs}");
    }
}

/// A small tree of two synsets for the bad-input tests: `n01/` two good photos, `n02/` one good
/// photo and one truncated copy.
fn bad_tree(a: &Path, root: &Path) -> (PathBuf, PathBuf) {
    let photos = a.join("data/images/imagenet_val");
    let names: Vec<String> = photo_labels(a).into_iter().map(|(n, _)| n).take(3).collect();
    let train = root.join("train");
    for (dir, name) in [("n01", &names[0]), ("n01", &names[1]), ("n02", &names[2])] {
        std::fs::create_dir_all(train.join(dir)).unwrap();
        std::fs::copy(photos.join(name), train.join(dir).join(name)).unwrap();
    }
    let whole = std::fs::read(photos.join(&names[2])).unwrap();
    let cut = train.join("n02/cut.JPEG");
    std::fs::write(&cut, &whole[..whole.len() * 2 / 3]).unwrap();
    (train, cut)
}

#[test]
fn truncated_jpeg_fails_naming_file_and_class_or_is_skipped_and_counted() {
    let Some(a) = assets("imagenet_bad_input") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (train, cut) = bad_tree(&a, tmp.path());
    let src = ImagenetSource { train: Some(train.clone()), ..Default::default() };
    let out = tmp.path().join("out");
    let e = ImagenetPlan::scan(&src)
        .unwrap()
        .convert(&out, &ImagenetOptions::default(), &none)
        .unwrap_err();
    match &e {
        Error::BadImage { path, class, reason } => {
            assert_eq!((path, class.as_str()), (&cut, "n02"));
            assert!(reason.contains("truncated"), "{reason}");
        }
        e => panic!("expected BadImage, got {e}"),
    }
    assert!(e.to_string().contains("cut.JPEG") && e.to_string().contains("n02"), "{e}");
    assert!(Dataset::open_mapped(&out.join("train")).is_err(), "nothing committed");
    assert!(!out.join(SYNSETS_FILE).exists());
    // No stray temporary files either.
    let left: Vec<_> = std::fs::read_dir(out.join("train"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // An empty file and a non-image are named the same way.
    std::fs::write(train.join("n01/empty.JPEG"), b"").unwrap();
    let opts = ImagenetOptions { on_bad: OnBad::Skip, ..Default::default() };
    let r = ImagenetPlan::scan(&src).unwrap().convert(&out, &opts, &none).unwrap();
    let t = r.train.as_ref().unwrap();
    assert_eq!((t.manifest.records, t.skipped.len(), r.skipped()), (3, 2, 2));
    let named: Vec<String> = t.skipped.iter().map(|e| e.to_string()).collect();
    assert!(named.iter().any(|m| m.contains("empty.JPEG") && m.contains("class n01")), "{named:?}");
    assert!(named.iter().any(|m| m.contains("cut.JPEG") && m.contains("class n02")), "{named:?}");
    assert_eq!(Dataset::open_mapped(&out.join("train")).unwrap().len(), 3);
}

#[test]
fn val_labels_by_index_or_synset_and_unlabelled_files() {
    let Some(a) = assets("imagenet_val_labels") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (train, cut) = bad_tree(&a, tmp.path());
    std::fs::remove_file(&cut).unwrap();
    let val = tmp.path().join("val");
    std::fs::create_dir_all(&val).unwrap();
    let photo = a.join("data/images/imagenet_val").join(&photo_labels(&a)[5].0);
    for n in ["v1.JPEG", "v2.JPEG", "v3.JPEG"] {
        std::fs::copy(&photo, val.join(n)).unwrap();
    }
    // v1 by index, v2 by synset id; v3 has no line; a line for a missing file is ignored.
    let labels = tmp.path().join("val.txt");
    std::fs::write(&labels, "v1.JPEG 1\nv2.JPEG n01\ngone.JPEG 0\n").unwrap();
    let src = ImagenetSource {
        train: Some(train),
        val: Some(val.clone()),
        val_labels: Some(labels.clone()),
        synsets: None,
    };
    let plan = ImagenetPlan::scan(&src).unwrap();
    assert_eq!(plan.unlabelled, vec![val.join("v3.JPEG")]);
    let out = tmp.path().join("out");
    let e = plan.clone().convert(&out, &ImagenetOptions::default(), &none).unwrap_err();
    assert!(e.to_string().contains("v3.JPEG") && e.to_string().contains("label"), "{e}");
    let opts = ImagenetOptions { on_bad: OnBad::Skip, ..Default::default() };
    let r = plan.convert(&out, &opts, &none).unwrap();
    assert_eq!(r.val.as_ref().unwrap().skipped.len(), 1);
    let v = Dataset::open_mapped(&out.join("val")).unwrap();
    assert_eq!((v.get(0).unwrap().label, v.get(1).unwrap().label), (1, 0));
    assert_eq!(v.manifest().classes, vec!["n01", "n02"]);

    // Labels outside the class list are errors naming the line.
    std::fs::write(&labels, "v1.JPEG 2\n").unwrap();
    let e = ImagenetPlan::scan(&src).unwrap_err();
    assert!(e.to_string().contains("line 1") && e.to_string().contains("out of range"), "{e}");
    std::fs::write(&labels, "v1.JPEG n99\n").unwrap();
    assert!(ImagenetPlan::scan(&src).unwrap_err().to_string().contains("n99"));
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sparknet-data"))
}

#[test]
fn cli_convert_imagenet_on_bad_flag_and_compute_mean() {
    let Some(a) = assets("imagenet_cli") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (train, _cut) = bad_tree(&a, tmp.path());
    // A photo that is not square, so the records differ in size.
    std::fs::copy(
        a.join("data/images/caffe_examples/fish-bike.jpg"),
        train.join("n01/fish-bike.JPEG"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = |on_bad: &str| {
        bin()
            .args(["convert", "imagenet", "--train"])
            .arg(&train)
            .arg("--out")
            .arg(&out)
            .args(["--on-bad", on_bad])
            .output()
            .unwrap()
    };
    let fail = run("fail");
    let err = String::from_utf8_lossy(&fail.stderr);
    assert!(
        !fail.status.success() && err.contains("cut.JPEG") && err.contains("class n02"),
        "{err}"
    );
    assert!(!out.join("train/manifest.json").exists());
    let skip = run("skip");
    let (so, se) = (String::from_utf8_lossy(&skip.stdout), String::from_utf8_lossy(&skip.stderr));
    assert!(skip.status.success(), "{se}");
    assert!(so.contains("train: 4 records") && so.contains("1 skipped"), "{so}");
    assert!(se.contains("skipped:") && se.contains("cut.JPEG"), "{se}");
    let ds = Dataset::open_mapped(&out.join("train")).unwrap();
    let shapes: Vec<[u32; 3]> = ds.iter().map(|r| r.unwrap().shape).collect();
    assert!(shapes.contains(&[3, 256, 381]), "fish-bike 481x323 -> 381x256: {shapes:?}");
    assert!(shapes.iter().all(|s| s[1].min(s[2]) == 256));

    // compute-mean: sizes differ, so the central 256x256 window of each record.
    let mean = tmp.path().join("mean.binaryproto");
    let m =
        bin().arg("compute-mean").arg(out.join("train")).arg("--out").arg(&mean).output().unwrap();
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    assert!(String::from_utf8_lossy(&m.stderr).contains("central 256x256"));
    let blob = BlobProto::read(&mean).unwrap();
    assert_eq!(blob.shape, vec![1, 3, 256, 256]);
    let lib = compute_mean_window(&ds, Some((256, 256)), false, &|_| {}).unwrap();
    assert_eq!(blob, lib.blob);
    // An explicit window, smaller.
    let m = bin()
        .arg("compute-mean")
        .arg(out.join("train"))
        .args(["--center", "100,50", "--out"]) // W,H
        .arg(&mean)
        .output()
        .unwrap();
    assert!(m.status.success());
    assert_eq!(BlobProto::read(&mean).unwrap().shape, vec![1, 3, 50, 100]);
}

#[test]
fn synthetic_imagenet_is_deterministic_in_the_converter_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = SynthOptions {
        classes: 5,
        per_class: 6,
        val_per_class: 2,
        seed: 3,
        shard_size: 7,
        ..Default::default()
    };
    let a = tmp.path().join("a");
    let r = synth_imagenet(&a, &opts, &none).unwrap();
    assert_eq!(r.synsets.len(), 5);
    // The same set on one thread.
    let b = tmp.path().join("b");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| synth_imagenet(&b, &opts, &none)).unwrap();
    for split in ["train", "val"] {
        let (da, db) = (
            Dataset::open_mapped(&a.join(split)).unwrap(),
            Dataset::open_mapped(&b.join(split)).unwrap(),
        );
        assert_eq!(da.len(), if split == "train" { 30 } else { 10 });
        let mut hist = [0usize; 5];
        for i in 0..da.len() {
            let (x, y) = (da.get(i).unwrap(), db.get(i).unwrap());
            assert_eq!((x.label, x.payload), (y.label, y.payload));
            assert_eq!(x.shape, [3, 256, 256]);
            hist[x.label as usize] += 1;
        }
        assert!(hist.iter().all(|&n| n == da.len() / 5), "{hist:?}");
    }
    let tr = Dataset::open_mapped(&a.join("train")).unwrap();
    assert_eq!(tr.shards().len(), 5, "30 records in shards of 7");
    let first: Vec<u32> = (0..5).map(|i| tr.get(i).unwrap().label).collect();
    assert_ne!(first, vec![0, 1, 2, 3, 4], "train is shuffled");
    assert_eq!(
        std::fs::read_to_string(a.join(SYNSETS_FILE)).unwrap().lines().collect::<Vec<_>>(),
        r.synsets
    );
    // Another seed, other images.
    let c = tmp.path().join("c");
    synth_imagenet(&c, &SynthOptions { seed: 4, ..opts }, &none).unwrap();
    let dc = Dataset::open_mapped(&c.join("val")).unwrap();
    let da = Dataset::open_mapped(&a.join("val")).unwrap();
    assert_ne!(da.get(0).unwrap().payload, dc.get(0).unwrap().payload);
    // The loader reads it as it reads a converted set.
    let config = LoaderConfig {
        batch_size: 4,
        transform: TransformParams { crop_size: 227, mirror: true, ..Default::default() },
        ..Default::default()
    };
    let mut l = Loader::new(Arc::new(tr), config).unwrap();
    assert_eq!(l.next_batch().unwrap().shape(), [4, 3, 227, 227]);
}

#[test]
fn the_real_imagenet_mean_reads_and_writes_back_byte_for_byte() {
    let Some(a) = assets("imagenet_mean_file") else { return };
    let path = a.join("models/ilsvrc12/imagenet_mean.binaryproto");
    let blob = BlobProto::read(&path).unwrap();
    assert_eq!(blob.shape, vec![1, 3, 256, 256]);
    // Per-channel means of the BVLC mean: B 104.0, G 116.7, R 122.7.
    let plane = 256 * 256;
    let ch: Vec<f64> = (0..3)
        .map(|c| {
            blob.data[c * plane..(c + 1) * plane].iter().map(|&v| v as f64).sum::<f64>()
                / plane as f64
        })
        .collect();
    for (got, want) in ch.iter().zip([104.0, 116.7, 122.7]) {
        assert!((got - want).abs() < 0.1, "{ch:?}");
    }
    // The same values as pycaffe's ilsvrc_2012_mean.npy (float64, 3x256x256).
    let npy = sparknet_tensor::npy::read_npy::<f64>(a.join("models/ilsvrc12/ilsvrc_2012_mean.npy"))
        .unwrap();
    assert_eq!(npy.shape(), &[3, 256, 256]);
    let nv = npy.to_vec();
    assert!(blob.data.iter().zip(&nv).all(|(&f, &d)| f == d as f32));
    // Written back, the file is byte-identical to Caffe's.
    let original = std::fs::read(&path).unwrap();
    assert_eq!(blob.encode(), original);
    let tmp = tempfile::tempdir().unwrap();
    let again = tmp.path().join("m.binaryproto");
    blob.write(&again).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), original);
    let m = MeanImage::read(&again).unwrap();
    assert_eq!((m.c, m.h, m.w), (3, 256, 256));
}
