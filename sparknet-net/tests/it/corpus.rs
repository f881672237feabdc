//! Every `.prototxt` under the shared assets (and the reference deploy nets) parses; every net
//! whose layers are supported builds in TRAIN and TEST and gets shapes inferred; the others fail
//! with an "unsupported" error naming the layer.

use std::path::{Path, PathBuf};

use sparknet_net::load::{read_net_prototxt, read_solver_prototxt};
use sparknet_net::{Net, NetConfig, Phase};

fn prototxts(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            prototxts(&p, out);
        } else if p.extension().is_some_and(|e| e == "prototxt") {
            out.push(p);
        }
    }
}

/// Nets that must fail, with the layer the error must name.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("mnist_siamese/mnist_siamese_train_test.prototxt", "layer 'loss' (type 'MTriangularLoss')"),
    (
        "hdf5_classification/nonlinear_auto_test.prototxt",
        "layer 'data': unsupported layer type 'HDF5Data'",
    ),
    (
        "hdf5_classification/nonlinear_auto_train.prototxt",
        "layer 'data': unsupported layer type 'HDF5Data'",
    ),
    ("hdf5_classification/train_val.prototxt", "layer 'data': unsupported layer type 'HDF5Data'"),
    (
        "hdf5_classification/nonlinear_train_val.prototxt",
        "layer 'data': unsupported layer type 'HDF5Data'",
    ),
    ("pycaffe/linreg.prototxt", "unsupported layer type 'Python'"),
    (
        "finetune_pascal_detection/pascal_finetune_trainval_test.prototxt",
        "unsupported layer type 'WindowData'",
    ),
    ("voc-fcn8s/train.prototxt", "unsupported layer type 'Python'"),
    ("voc-fcn8s/val.prototxt", "unsupported layer type 'Python'"),
];

fn is_solver(p: &Path) -> bool {
    p.file_name().unwrap().to_string_lossy().contains("solver")
}

#[test]
fn every_prototxt_parses_and_supported_nets_build() {
    let Some(assets) = sparknet_testkit::assets_dir("corpus") else { return };
    let mut files = Vec::new();
    prototxts(&assets, &mut files);
    if let Some(reference) = sparknet_testkit::reference_dir("corpus") {
        prototxts(&reference, &mut files);
    }
    assert!(files.len() > 80, "found only {} prototxt files", files.len());
    let (mut built, mut unsupported) = (0, 0);
    for path in &files {
        let shown = path.display().to_string();
        if is_solver(path) {
            read_solver_prototxt(path).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        let expected =
            UNSUPPORTED.iter().find(|(suffix, _)| shown.ends_with(suffix)).map(|(_, msg)| *msg);
        let result = read_net_prototxt(path).and_then(|net| {
            // Nets whose TEST data layers are selected by stage (mnist_autoencoder) get the first one.
            let stage: Vec<String> = net
                .layer
                .iter()
                .flat_map(|l| l.include.iter().flat_map(|r| r.stage.clone()))
                .take(1)
                .collect();
            for phase in [Phase::Train, Phase::Test] {
                let stages = if phase == Phase::Test { stage.clone() } else { Vec::new() };
                let config = NetConfig { phase, stages, seed: None, ..NetConfig::default() };
                let net = Net::new(&net, config)?;
                for info in net.layer_infos() {
                    if let (Some(p), false) = (&info.params, info.kind == "Split") {
                        assert!(
                            p.iter().all(|s| !s.is_empty() || info.kind == "Scale"),
                            "{shown}: {}",
                            info.name
                        );
                    }
                }
            }
            Ok(())
        });
        match (result, expected) {
            (Ok(()), None) => built += 1,
            (Err(e), Some(msg)) => {
                let text = e.to_string();
                assert!(text.contains("unsupported") && text.contains(msg), "{shown}: {text}");
                assert!(
                    !text.contains("MTriangularLoss") || text.contains(&shown),
                    "error names the file: {text}"
                );
                unsupported += 1;
            }
            (Ok(()), Some(_)) => panic!("{shown} was expected to fail"),
            (Err(e), None) => panic!("{shown}: {e}"),
        }
    }
    assert_eq!(unsupported, UNSUPPORTED.len());
    assert!(built >= 40, "only {built} nets built");
}

#[test]
fn deploy_nets_infer_every_shape() {
    let Some(assets) = sparknet_testkit::assets_dir("deploy_shapes") else { return };
    let cases = [
        ("prototxt/bvlc_caffe/models/bvlc_alexnet/deploy.prototxt", "prob", vec![10, 1000]),
        ("prototxt/bvlc_caffe/models/bvlc_googlenet/deploy.prototxt", "prob", vec![10, 1000]),
        ("prototxt/squeezenet/SqueezeNet_v1.1/deploy.prototxt", "prob", vec![10, 1000, 1, 1]),
        ("prototxt/resnet/ResNet-50-deploy.prototxt", "prob", vec![1, 1000]),
        ("prototxt/mobilenet_caffe/mobilenet_v2_deploy.prototxt", "prob", vec![1, 1000, 1, 1]),
        ("prototxt/fcn/voc-fcn8s/deploy.prototxt", "score", vec![1, 21, 500, 500]),
    ];
    for (file, blob, shape) in cases {
        let config = NetConfig { seed: None, ..NetConfig::default() };
        let net = Net::new(&read_net_prototxt(assets.join(file)).unwrap(), config).unwrap();
        assert_eq!(net.blob_shape(blob), Some(&shape), "{file}");
        for name in net.blob_names() {
            assert!(net.blob_shape(&name).is_some(), "{file}: blob '{name}' has no shape");
        }
    }
}
