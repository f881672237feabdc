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
