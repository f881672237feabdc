//! The `sparknet-net` binary: `inspect` on every shared net, `forward` against a reference case,
//! `time --json`, `export`, `classify`.

use std::path::Path;
use std::process::{Command, Output};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparknet-net")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn inspect_exits_zero_on_supported_nets_and_names_unsupported_layers() {
    let Some(assets) = sparknet_testkit::assets_dir("cli_inspect") else { return };
    let ok = [
        "models/lenet_mnist/lenet.prototxt",
        "models/lenet_mnist/lenet_train_test.prototxt",
        "models/cifar10_quick/cifar10_quick_train_test.prototxt",
        "models/resnet20_cifar10/res20_cifar_train_test.prototxt",
        "prototxt/bvlc_caffe/models/bvlc_googlenet/train_val.prototxt",
        "prototxt/fcn/voc-fcn8s/deploy.prototxt",
    ];
    for f in ok {
        let o = bin(&["inspect", s(&assets.join(f))]);
        assert!(o.status.success(), "{f}: {}", text(&o));
    }
    let o = bin(&[
        "inspect",
        s(&assets.join("models/lenet_mnist/lenet_train_test.prototxt")),
        "--data-shape",
        "data=100,1,28,28",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["total_params"], 431080);
    assert_eq!(v["shapes_complete"], true);
    for (f, layer) in [
        ("models/mnist_siamese/mnist_siamese_train_test.prototxt", "layer 'loss'"),
        ("prototxt/bvlc_caffe/examples/pycaffe/linreg.prototxt", "layer 'loss'"),
        ("prototxt/bvlc_caffe/examples/hdf5_classification/train_val.prototxt", "layer 'data'"),
    ] {
        let o = bin(&["inspect", s(&assets.join(f))]);
        assert!(!o.status.success());
        let t = text(&o);
        assert!(t.contains("unsupported") && t.contains(layer), "{f}: {t}");
        assert!(t.contains(f.rsplit('/').next().unwrap()), "names the file: {t}");
    }
}

#[test]
fn forward_writes_reference_blobs() {
    let (Some(assets), Some(reference)) = (
        sparknet_testkit::assets_dir("cli_forward"),
        sparknet_testkit::reference_dir("cli_forward"),
    ) else {
        return;
    };
    let case = reference.join("forward/mtcnn_det2");
    let out = tempfile::tempdir().unwrap();
    let input = format!("data={}", s(&case.join("input_data.npy")));
    let o = bin(&[
        "forward",
        "--model",
        s(&assets.join("models/mtcnn/det2.prototxt")),
        "--weights",
        s(&assets.join("models/mtcnn/det2.caffemodel")),
        "--input",
        &input,
        "--blobs",
        "conv5-2,prob1",
        "--out",
        s(out.path()),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for blob in ["conv5-2", "prob1"] {
        let (shape, got) = crate::npy::read_f32(&out.path().join(format!("{blob}.npy")));
        let (want_shape, want) = crate::npy::read_f32(&case.join(format!("out_{blob}.npy")));
        assert_eq!(shape, want_shape);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-4 * scale), "{blob}");
    }
}

#[test]
fn time_json_export_and_classify() {
    let Some(assets) = sparknet_testkit::assets_dir("cli_time") else { return };
    let model = assets.join("models/cifar10_quick/cifar10_quick_train_test.prototxt");
    let o = bin(&[
        "time",
        "--model",
        s(&model),
        "--phase",
        "train",
        "--data-shape",
        "data=4,3,32,32",
        "--batch",
        "4",
        "--iterations",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(last["forward_ms"].as_f64().unwrap() > 0.0);
    assert!(last.get("forward_backward_ms").is_some());
    assert!(last["train_step_ms"].as_f64().unwrap() > 0.0);

    let dir = tempfile::tempdir().unwrap();
    let deploy = assets.join("models/cifar10_quick/cifar10_quick.prototxt");
    let weights = assets.join("models/cifar10_quick/cifar10_quick_iter_5000.caffemodel");
    for ext in ["safetensors", "caffemodel"] {
        let to = dir.path().join(format!("w.{ext}"));
        let o = bin(&["export", "--model", s(&deploy), "--weights", s(&weights), "--to", s(&to)]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(std::fs::metadata(&to).unwrap().len() > 300_000);
    }
    let png = assets.join("data/images/cifar10_style_samples/truck10.png");
    let o = bin(&[
        "classify",
        "--model",
        s(&deploy),
        "--weights",
        s(&weights),
        "--image",
        s(&png),
        "--rgb",
        "--mean-file",
        s(&assets.join("models/cifar10_quick/mean.binaryproto")),
        "--labels",
        s(&assets.join("data/cifar10/batches.meta.txt")),
        "--top",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["top"].as_array().unwrap().len(), 3);
    let p0 = v["top"][0]["prob"].as_f64().unwrap();
    assert!(p0 > 0.0 && p0 <= 1.0);
}
