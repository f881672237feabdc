//! The embedded default: the LeNet text and solver parse, bind to the data found (or the
//! synthetic digits), and the untrained net runs forward at chance level.

use std::path::Path;

use sparknet_mpi::LocalComm;
use sparknet_mpi::bind::{FeedConfig, PhaseData, data_layers};
use sparknet_mpi::default_run::{
    LENET_NET, LENET_SOLVER, SYNTHETIC_TEST, SYNTHETIC_TRAIN, prepare,
};
use sparknet_mpi::eval::evaluate;
use sparknet_net::load::{parse_net_text, parse_text};
use sparknet_net::proto::SolverParameter;
use sparknet_net::{Net, NetConfig, Phase};

#[test]
fn without_mnist_the_default_trains_on_synthetic_digits_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let found = prepare(Some(empty.path()), None, tmp.path()).unwrap();
    assert!(!found.mnist);
    assert!(found.note.contains("SPARKNET_DATA"), "{}", found.note);
    let train = sparknet_data::Dataset::open_mapped(&found.train).unwrap();
    let test = sparknet_data::Dataset::open_mapped(&found.test).unwrap();
    assert_eq!((train.len(), test.len()), (SYNTHETIC_TRAIN, SYNTHETIC_TEST));

    // The default net binds both phases to them and tests at chance level before training.
    let param = parse_net_text(LENET_NET, Path::new("lenet.prototxt")).unwrap();
    let train_specs = data_layers(&param, Phase::Train, Some(&found.train)).unwrap();
    assert_eq!((train_specs.len(), train_specs[0].batch_size), (1, 64));
    let specs = data_layers(&param, Phase::Test, Some(&found.test)).unwrap();
    let feed = FeedConfig { rank: 0, world: 1, shuffle: None, seed: 0, threads: 1 };
    let mut data = PhaseData::open(&specs, Phase::Test, feed).unwrap();
    let config = NetConfig {
        phase: Phase::Test,
        seed: Some(1),
        input_shapes: data.input_shapes(),
        ..NetConfig::default()
    };
    let mut net = Net::new(&param, config).unwrap();
    let scores = evaluate(&mut net, &mut data, &LocalComm::single()).unwrap();
    assert_eq!(scores.records, SYNTHETIC_TEST as u64);
    let (acc, loss) = (scores.accuracy().unwrap(), scores.get("loss").unwrap());
    assert!(acc < 0.35, "untrained accuracy {acc}");
    assert!((loss - 10f64.ln()).abs() < 0.5, "untrained loss {loss}");
}

#[test]
fn the_default_solver_parses_with_a_short_schedule() {
    let s: SolverParameter =
        parse_text("caffe.SolverParameter", LENET_SOLVER, Path::new("solver.prototxt")).unwrap();
    assert_eq!((s.max_iter(), s.test_interval(), s.lr_policy()), (1000, 250, "inv"));
    assert_eq!(s.base_lr(), 0.01);
}

/// IDX files (here 30 + 20 tiny ones, not gzipped) in `$SPARKNET_DATA` are converted on the fly.
#[test]
fn idx_files_in_sparknet_data_are_converted() {
    let data = tempfile::tempdir().unwrap();
    let write = |name: &str, magic: u32, n: u32, body: Vec<u8>, image: bool| {
        let mut b = magic.to_be_bytes().to_vec();
        b.extend(n.to_be_bytes());
        if image {
            b.extend(28u32.to_be_bytes());
            b.extend(28u32.to_be_bytes());
        }
        b.extend(body);
        std::fs::write(data.path().join(name), b).unwrap();
    };
    for (stem, n) in [("train", 30u32), ("t10k", 20)] {
        write(&format!("{stem}-images-idx3-ubyte"), 2051, n, vec![7; n as usize * 784], true);
        write(
            &format!("{stem}-labels-idx1-ubyte"),
            2049,
            n,
            (0..n as u8).map(|i| i % 10).collect(),
            false,
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let found = prepare(Some(data.path()), None, tmp.path()).unwrap();
    assert!(found.mnist && found.note.contains("MNIST"), "{}", found.note);
    assert_eq!(sparknet_data::Dataset::open_mapped(&found.train).unwrap().len(), 30);
    assert_eq!(sparknet_data::Dataset::open_mapped(&found.test).unwrap().len(), 20);
}
