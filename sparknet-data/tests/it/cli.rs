//! The `sparknet-data` binary end to end on the MNIST test set.

use std::process::Command;

use sparknet_data::{BlobProto, Dataset};

use crate::common::data_dir;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sparknet-data"))
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn convert_inspect_mean_verify_and_dump() {
    let Some(data) = data_dir("cli") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ds_dir = tmp.path().join("mnist");
    ok(bin()
        .args(["convert", "mnist", "--shard-size", "3000", "--images"])
        .arg(data.join("mnist/t10k-images-idx3-ubyte.gz"))
        .arg("--labels")
        .arg(data.join("mnist/t10k-labels-idx1-ubyte.gz"))
        .arg("--out")
        .arg(&ds_dir));
    let json: serde_json::Value =
        serde_json::from_str(&ok(bin().arg("inspect").arg(&ds_dir).arg("--json"))).unwrap();
    assert_eq!(json["records"], 10_000);
    assert_eq!(json["shards"], 4);
    assert_eq!(json["encoding"], "raw_u8");
    assert_eq!(json["shape"], serde_json::json!([1, 28, 28]));
    let hist: Vec<u64> = serde_json::from_value(json["histogram"].clone()).unwrap();
    assert_eq!(hist.iter().sum::<u64>(), 10_000);
    assert_eq!(hist[1], 1135, "t10k holds 1135 ones");

    let png = tmp.path().join("r0.png");
    ok(bin().arg("inspect").arg(&ds_dir).args(["--dump", "0", "--out"]).arg(&png));
    let ds = Dataset::open_mapped(&ds_dir).unwrap();
    assert_eq!(image::open(&png).unwrap().to_luma8().as_raw(), ds.get(0).unwrap().payload);

    let mean = tmp.path().join("mean.binaryproto");
    ok(bin().arg("mean").arg(&ds_dir).arg("--out").arg(&mean));
    let blob = BlobProto::read(&mean).unwrap();
    assert_eq!(blob.shape, vec![1, 1, 28, 28]);
    let avg = blob.data.iter().sum::<f32>() / 784.0;
    assert!((avg - 33.79).abs() < 0.1, "MNIST test mean intensity is about 33.79, got {avg}");

    assert!(ok(bin().arg("verify").arg(&ds_dir)).contains("10000 records, 0 corrupt"));
    // Damage one payload byte: verify fails and names the shard; --skip-corrupt reports the count.
    let shard = ds_dir.join(&ds.manifest().shards[1].file);
    let at = ds.shards()[1].entry(2).unwrap().offset as usize;
    drop(ds);
    let mut b = std::fs::read(&shard).unwrap();
    b[at] ^= 1;
    std::fs::write(&shard, b).unwrap();
    let out = bin().arg("verify").arg(&ds_dir).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("record 2")
            && err.contains(&*shard.to_string_lossy()),
        "{err}"
    );
    let out = bin().arg("verify").arg(&ds_dir).arg("--skip-corrupt").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("10000 records, 1 corrupt"));
    let out = bin()
        .arg("mean")
        .arg(&ds_dir)
        .arg("--out")
        .arg(&mean)
        .arg("--skip-corrupt")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 corrupt records skipped"));
}

#[test]
fn convert_images_and_cifar10_through_the_binary() {
    let Some(data) = data_dir("cli_images") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    for (class, file) in [
        ("cat", "caffe_examples/cat.jpg"),
        ("cat", "caffe_examples/cat_gray.jpg"),
        ("face", "mtcnn_faces/test1.jpg"),
    ] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        let name = std::path::Path::new(file).file_name().unwrap();
        std::fs::copy(data.join("images").join(file), root.join(class).join(name)).unwrap();
    }
    let out = tmp.path().join("raw");
    ok(bin().args(["convert", "images", "--root"]).arg(&root).arg("--out").arg(&out).args([
        "--resize",
        "16,12",
        "--raw",
        "--shuffle",
        "--seed",
        "3",
        "--shard-size",
        "2",
    ]));
    let ds = Dataset::open_mapped(&out).unwrap();
    assert_eq!((ds.len(), ds.shards().len(), ds.manifest().shape), (3, 2, Some([3, 12, 16])));
    assert_eq!(ds.manifest().classes, vec!["cat", "face"]);
    let mut labels: Vec<u32> = ds.iter().map(|r| r.unwrap().label).collect();
    labels.sort_unstable();
    assert_eq!(labels, vec![0, 0, 1]);
    let bad = bin()
        .args(["convert", "images", "--root"])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .args(["--resize", "16x12"])
        .output()
        .unwrap();
    assert!(!bad.status.success());

    let cifar = tmp.path().join("cifar");
    ok(bin()
        .args(["convert", "cifar10", "--split", "test", "--input"])
        .arg(data.join("cifar10"))
        .arg("--out")
        .arg(&cifar));
    let text = ok(bin().arg("inspect").arg(&cifar));
    assert!(
        text.contains("records:   10000") && text.contains("airplane") && text.contains("3x32x32"),
        "{text}"
    );
}
