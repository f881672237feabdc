//! Resolving a run: the solver's net and schedule, flags over solver values, conflicting flags.

use std::time::Duration;

use sparknet_mpi::Error;
use sparknet_mpi::launch::threads_per_rank;
use sparknet_mpi::plan::{TrainOptions, plan};
use sparknet_mpi::trainer::SyncMode;

const NET: &str = r#"name: "tiny"
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "train-set" batch_size: 8 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"#;

fn solver(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let net = dir.join("tiny.prototxt");
    std::fs::write(&net, NET).unwrap();
    let path = dir.join("solver.prototxt");
    let text = format!(
        "net: \"{}\"\nbase_lr: 0.1\nmax_iter: 40\ndisplay: 5\ntest_interval: 20\nsnapshot: 10\n{extra}",
        net.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_solver_gives_the_schedule_and_flags_override_it() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        solver: Some(solver(tmp.path(), "snapshot_prefix: \"tiny\"")),
        tau: 5,
        workers: 2,
        sync: SyncMode::Gradients,
        comm_delay: Duration::from_millis(3),
        ..TrainOptions::default()
    };
    let p = plan(&opts).unwrap();
    assert_eq!(p.net.name(), "tiny");
    assert_eq!(p.solver.net_param.as_ref().unwrap().layer.len(), 3);
    let c = &p.loop_config;
    assert_eq!((c.max_iter, c.display, c.test_interval, c.snapshot, c.tau), (40, 5, 20, 10, 5));
    assert_eq!((c.sync, c.comm_delay), (SyncMode::Gradients, Duration::from_millis(3)));
    assert!(c.test_initialization && c.snapshot_after_train, "Caffe's defaults");
    assert_eq!(p.train_data, None, "no flag: the layers' own sources");

    let opts = TrainOptions {
        max_iter: Some(7),
        snapshot_prefix: Some("other".into()),
        train_data: Some("elsewhere".into()),
        ..opts
    };
    let p = plan(&opts).unwrap();
    assert_eq!((p.loop_config.max_iter, p.solver.snapshot_prefix()), (7, "other"));
    assert_eq!(p.train_data.as_deref(), Some(std::path::Path::new("elsewhere")));
}

#[test]
fn conflicting_or_unsupported_settings_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let path = solver(tmp.path(), "");
    let opts = TrainOptions {
        solver: Some(path),
        weights: Some("w.caffemodel".into()),
        resume: Some("s.solverstate".into()),
        ..TrainOptions::default()
    };
    assert!(matches!(plan(&opts).unwrap_err(), Error::Config(m) if m.contains("--resume")));
    let path = solver(tmp.path(), "test_net: \"t.prototxt\"");
    let opts = TrainOptions { solver: Some(path), ..TrainOptions::default() };
    assert!(matches!(plan(&opts).unwrap_err(), Error::Config(m) if m.contains("test_net")));
    let opts = TrainOptions {
        solver: Some(tmp.path().join("missing.prototxt")),
        ..TrainOptions::default()
    };
    assert!(plan(&opts).unwrap_err().to_string().contains("missing.prototxt"));
}

#[test]
fn ranks_share_the_cores() {
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(threads_per_rank(1), cores);
    assert_eq!(threads_per_rank(cores * 4), 1, "oversubscribed ranks get one thread each");
}

const NET_WITH_MEAN: &str = r#"name: "meaned"
layer { name: "train" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { mean_file: "old.binaryproto" } data_param { source: "a" batch_size: 8 } }
layer { name: "test" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { mean_file: "old.binaryproto" } data_param { source: "b" batch_size: 50 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"#;

#[test]
fn schedule_and_data_layer_flags_override_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("meaned.prototxt");
    std::fs::write(&net, NET_WITH_MEAN).unwrap();
    let path = tmp.path().join("solver.prototxt");
    std::fs::write(&path, format!("net: \"{}\"\nmax_iter: 40\ntest_interval: 20\n", net.display()))
        .unwrap();
    let opts = TrainOptions {
        solver: Some(path),
        test_interval: Some(7),
        display: Some(3),
        test_initialization: Some(false),
        target_accuracy: Some(0.5),
        batch_size: Some(16),
        mean_file: Some("new.binaryproto".into()),
        ..TrainOptions::default()
    };
    let p = plan(&opts).unwrap();
    let c = &p.loop_config;
    assert_eq!((c.test_interval, c.display, c.test_initialization), (7, 3, false));
    assert_eq!(c.target_accuracy, Some(0.5));
    let layer = |name: &str| p.net.layer.iter().find(|l| l.name() == name).unwrap();
    // The TRAIN batch changes; the TEST batch (with test_iter, the test set's coverage) does not.
    assert_eq!(layer("train").data_param.as_ref().unwrap().batch_size(), 16);
    assert_eq!(layer("test").data_param.as_ref().unwrap().batch_size(), 50);
    for name in ["train", "test"] {
        let tp = layer(name).transform_param.as_ref().unwrap();
        assert_eq!(tp.mean_file.as_deref(), Some("new.binaryproto"), "{name}");
    }
    // The solver the workers build carries the changed net.
    let carried = p.solver.net_param.as_ref().unwrap();
    assert_eq!(carried.layer[0].data_param.as_ref().unwrap().batch_size(), 16);
}

#[test]
fn data_layer_flags_with_nothing_to_change_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base = TrainOptions { solver: Some(solver(tmp.path(), "")), ..TrainOptions::default() };
    let err = |opts: TrainOptions| match plan(&opts).unwrap_err() {
        Error::Config(m) => m,
        e => panic!("expected a config error, got {e}"),
    };
    let m = err(TrainOptions { mean_file: Some("m.binaryproto".into()), ..base.clone() });
    assert!(m.contains("--mean-file") && m.contains("tiny"), "{m}");
    let m = err(TrainOptions { batch_size: Some(0), ..base.clone() });
    assert!(m.contains("--batch-size 0"), "{m}");
    let m = err(TrainOptions { target_accuracy: Some(98.0), ..base.clone() });
    assert!(m.contains("fraction"), "{m}");
    let m = err(TrainOptions { target_accuracy: Some(0.9), test_interval: Some(0), ..base });
    assert!(m.contains("test_interval"), "{m}");
}
