//! Testing trained nets: `sparknet-train --eval` on the reference LeNet weights and the MNIST
//! test set, and the distributed test pass against the single-process one.

use std::process::Command;

use sparknet_mpi::bind::{FeedConfig, PhaseData, data_layers};
use sparknet_mpi::eval::evaluate;
use sparknet_mpi::{LocalComm, LocalGroup};
use sparknet_net::load::{read_caffemodel, read_net_prototxt};
use sparknet_net::{Net, NetConfig, Phase};

use crate::mnist_test_set;

/// OpenCV's count on the full t10k set with these weights (`../shared/reference/accuracy.json`).
const LENET_CORRECT: f64 = 9908.0;

#[test]
fn eval_binary_reproduces_lenet_reference_accuracy() {
    let Some(assets) = sparknet_testkit::assets_dir("eval_binary_lenet") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = mnist_test_set(&assets, tmp.path(), None);
    let model = assets.join("models/lenet_mnist");
    let out = Command::new(env!("CARGO_BIN_EXE_sparknet-train"))
        .arg("--eval")
        .arg("--model")
        .arg(model.join("lenet_train_test.prototxt"))
        .arg("--weights")
        .arg(model.join("lenet_iter_10000.caffemodel"))
        .arg("--test-data")
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sparknet-train --eval failed: {stderr}");
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["records"], 10_000, "{line}");
    let accuracy = line["accuracy"].as_f64().unwrap();
    assert!((accuracy - LENET_CORRECT / 10_000.0).abs() < 1e-6, "accuracy {accuracy}, want 0.9908");
    assert!(line["loss"].as_f64().unwrap() < 0.05, "{line}");
}

#[test]
fn eval_binary_names_missing_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_sparknet-train"))
        .args(["--eval", "--weights", "w.caffemodel"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));
}

/// Three ranks, each testing its own partition of 1000 images (batches of 100 that do not divide
/// the partitions: 334/333/333), report what one process reports on all 1000 (the per-batch
/// accuracies are `f32`, so to 1e-6, not bit for bit).
#[test]
fn distributed_test_accuracy_equals_single_process() {
    let Some(assets) = sparknet_testkit::assets_dir("distributed_test_accuracy") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = mnist_test_set(&assets, tmp.path(), Some(1000));
    let model = assets.join("models/lenet_mnist");
    let param = read_net_prototxt(model.join("lenet_train_test.prototxt")).unwrap();
    let weights = read_caffemodel(model.join("lenet_iter_10000.caffemodel")).unwrap();
    let specs = data_layers(&param, Phase::Test, Some(&data)).unwrap();
    let run = |comm: &dyn sparknet_mpi::Collective| {
        let feed = FeedConfig {
            rank: comm.rank(),
            world: comm.size(),
            shuffle: None,
            seed: 0,
            threads: 1,
        };
        let mut phase = PhaseData::open(&specs, Phase::Test, feed).unwrap();
        let input_shapes = phase.input_shapes();
        let config =
            NetConfig { phase: Phase::Test, seed: None, input_shapes, ..NetConfig::default() };
        let mut net = Net::new(&param, config).unwrap();
        net.copy_from(&weights).unwrap();
        evaluate(&mut net, &mut phase, comm).unwrap()
    };
    let single = run(&LocalComm::single());
    assert_eq!(single.records, 1000);
    let correct = single.accuracy().unwrap() * 1000.0;
    assert!((correct - correct.round()).abs() < 1e-3 && correct >= 980.0, "{single:?}");
    let ranks = LocalGroup::new(3).unwrap().run(|comm| run(&comm)).unwrap();
    for scores in ranks {
        assert_eq!(scores.records, 1000);
        let acc = scores.accuracy().unwrap();
        assert!((acc - single.accuracy().unwrap()).abs() < 1e-6, "{acc} vs {single:?}");
        let loss = scores.get("loss").unwrap();
        assert!((loss - single.get("loss").unwrap()).abs() < 1e-6);
    }
}
