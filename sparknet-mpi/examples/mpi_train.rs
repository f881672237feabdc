//! Multi-rank check of the trainer under MPI: the SparkNet loop and the distributed test pass.
//!
//! ```text
//! cargo build -p sparknet-mpi --features mpi --examples
//! mpirun --oversubscribe -n 4 target/debug/examples/mpi_train
//! ```
//!
//! 1. The loop ([`sparknet_mpi::trainer::train`]) over `MpiComm` with the least-squares worker
//!    of the trainer tests (`tests/trainer/lsq.rs`, plain SGD): rank 0's weights are broadcast, every rank steps on its own rows, and after
//!    each round every replica equals the mean of all replicas, which each rank also computes on
//!    its own by simulating every rank (to 1e-6: the library may sum in another order); with
//!    `--sync gradients` likewise for one worker on the union batch.
//! 2. LeNet with sparknet-net's solver ([`SolverWorker`]) on synthetic digits, 12 iterations in
//!    rounds of 4: after training every rank holds bit-identical weights (checked through a
//!    gather of each rank's buffer hash), and they differ from the initial ones.
//! 3. With the reference LeNet weights and the first 600 MNIST test images (when the assets are
//!    present, see `sparknet-testkit`): the test accuracy and loss summed over ranks' partitions
//!    equal what rank 0 computes alone on all 600.
//!
//! `cargo xtask mpi-test` runs it at 2 and 4 ranks. A failed check aborts the job through
//! `MPI_Abort` with a message naming the check, so `mpirun` exits non-zero.

use sparknet_mpi::bind::{FeedConfig, PhaseData, data_layers};
use sparknet_mpi::eval::{TestScores, evaluate};
use sparknet_mpi::plan::{TrainOptions, plan};
use sparknet_mpi::solver_worker::SolverWorker;
use sparknet_mpi::trainer::{LoopConfig, SyncMode, Worker, train};
use sparknet_mpi::{Collective, LocalComm, MpiComm, Result};
use sparknet_net::load::{read_caffemodel, read_net_prototxt};
use sparknet_net::{Net, NetConfig, Phase};

/// Rows per step on each rank.
const BATCH: usize = 4;

#[path = "../tests/trainer/lsq.rs"]
mod lsq;
use lsq::{Lsq, ROWS};

/// Rank `rank`'s learner in a group of `k`: its own rows, plain SGD at rate 0.2, and a start of
/// its own (only rank 0's survives the broadcast).
fn learner(rank: usize, k: usize) -> Lsq {
    let mut w = Lsq::partitioned(rank, k, BATCH);
    w.lr = 0.2;
    w.w.fill(rank as f32 + 0.1);
    w
}

/// Every rank's replica simulated on this rank, for `iters` iterations.
fn simulate(k: usize, tau: u64, iters: u64, sync: SyncMode) -> Vec<f32> {
    let mut reps: Vec<Lsq> = (0..k).map(|r| learner(r, k)).collect();
    let start = reps[0].w.clone();
    for r in &mut reps {
        r.w.clone_from(&start);
    }
    let mean = |vs: Vec<&Vec<f32>>| -> Vec<f32> {
        (0..lsq::DIM)
            .map(|j| vs.iter().map(|v| f64::from(v[j])).sum::<f64>() as f32 / k as f32)
            .collect()
    };
    let mut done = 0;
    while done < iters {
        if sync == SyncMode::Gradients {
            for r in &mut reps {
                r.compute_gradients().unwrap();
            }
            let g = mean(reps.iter().map(|r| &r.g).collect());
            for r in &mut reps {
                r.g.clone_from(&g);
                r.apply_gradients().unwrap();
            }
            done += 1;
        } else {
            let steps = tau.min(iters - done);
            for r in &mut reps {
                for _ in 0..steps {
                    r.step().unwrap();
                }
            }
            let w = mean(reps.iter().map(|r| &r.w).collect());
            for r in &mut reps {
                r.w.clone_from(&w);
            }
            done += steps;
        }
    }
    reps.swap_remove(0).w
}

fn check(comm: &MpiComm, ok: bool, what: impl FnOnce() -> String) {
    if !ok {
        let _ = comm.abort(&format!("mpi_train check failed on rank {}: {}", comm.rank(), what()));
    }
}

fn check_loop(comm: &MpiComm, tau: u64, iters: u64, sync: SyncMode) {
    let config = LoopConfig { tau, max_iter: iters, sync, display: 5, ..LoopConfig::default() };
    let mut worker = learner(comm.rank(), comm.size());
    let mut events = 0;
    let summary = train(comm, &mut worker, &config, &mut |e| events += usize::from(!e.tick));
    let summary = summary.unwrap_or_else(|e| {
        let _ = comm.abort(&format!("train failed: {e}"));
        unreachable!("MPI_Abort returned")
    });
    let want = simulate(comm.size(), tau, iters, sync);
    let close = worker.w.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-6 * (1.0 + b.abs()));
    check(comm, close, || format!("{sync:?} tau {tau}: {:?} vs simulated {want:?}", worker.w));
    check(comm, summary.iter == iters, || format!("iter {}", summary.iter));
    let test = summary.test.as_ref().map_or(0, |t| t.records);
    check(comm, test == ROWS as u64, || format!("tested {test} rows"));
    let reported = if comm.rank() == 0 { events >= 2 } else { events == 0 };
    check(comm, reported, || format!("{events} reports on rank {}", comm.rank()));
}

fn check_distributed_test(comm: &MpiComm) {
    let Some(assets) = sparknet_testkit::assets_dir("mpi_train distributed test") else { return };
    let tmp = tempfile::tempdir().expect("temp dir");
    let mnist = assets.join("data/mnist");
    let data = tmp.path().join("mnist-test");
    let converted = sparknet_data::convert::mnist::convert_mnist(
        &mnist.join("t10k-images-idx3-ubyte.gz"),
        &mnist.join("t10k-labels-idx1-ubyte.gz"),
        &data,
        4096,
        Some(600),
        &|_| {},
    );
    check(comm, converted.is_ok(), || format!("converting MNIST: {converted:?}"));
    let model = assets.join("models/lenet_mnist");
    let run = |c: &dyn Collective| -> Result<TestScores> {
        let param = read_net_prototxt(model.join("lenet_train_test.prototxt"))?;
        let specs = data_layers(&param, Phase::Test, Some(&data))?;
        let feed =
            FeedConfig { rank: c.rank(), world: c.size(), shuffle: None, seed: 0, threads: 1 };
        let mut phase = PhaseData::open(&specs, Phase::Test, feed)?;
        let input_shapes = phase.input_shapes();
        let config =
            NetConfig { phase: Phase::Test, seed: None, input_shapes, ..NetConfig::default() };
        let mut net = Net::new(&param, config)?;
        net.copy_from(&read_caffemodel(model.join("lenet_iter_10000.caffemodel"))?)?;
        evaluate(&mut net, &mut phase, c)
    };
    let all = run(comm);
    check(comm, all.is_ok(), || format!("distributed test: {all:?}"));
    let all = all.unwrap_or_else(|_| unreachable!("checked"));
    if comm.rank() == 0 {
        let alone = run(&LocalComm::single());
        check(comm, alone.is_ok(), || format!("single-process test: {alone:?}"));
        let alone = alone.unwrap_or_else(|_| unreachable!("checked"));
        let same = all.records == 600
            && (all.accuracy().unwrap_or(-1.0) - alone.accuracy().unwrap_or(-2.0)).abs() < 1e-6
            && (all.get("loss").unwrap_or(-1.0) - alone.get("loss").unwrap_or(-2.0)).abs() < 1e-6;
        check(comm, same, || format!("{} ranks: {all:?}, one process: {alone:?}", comm.size()));
        println!(
            "mpi_train: {} ranks, loop checks passed, distributed test accuracy {:.4} = single-process {:.4}",
            comm.size(),
            all.accuracy().unwrap_or(0.0),
            alone.accuracy().unwrap_or(0.0)
        );
    }
}

/// FNV-1a over the bits, as an exact fingerprint of a buffer.
fn fingerprint(v: &[f32]) -> f64 {
    let h = v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(x.to_bits())).wrapping_mul(0x0100_0000_01b3)
    });
    // 52 bits survive the trip through f64 exactly.
    (h >> 12) as f64
}

fn check_lenet(comm: &MpiComm) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("digits");
    let made = sparknet_data::convert::synthetic::convert_synthetic_digits(&data, 400, 3, 4096);
    check(comm, made.is_ok(), || format!("synthetic digits: {made:?}"));
    let net = sparknet_mpi::default_run::LENET_NET
        .replace("batch_size: 64", "batch_size: 8")
        .replace("batch_size: 100", "batch_size: 50");
    let net_path = tmp.path().join("lenet.prototxt");
    let solver = tmp.path().join("solver.prototxt");
    let written = std::fs::write(&net_path, net).and_then(|()| {
        std::fs::write(
            &solver,
            format!(
                "net: \"{}\"\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: \"fixed\"\nmax_iter: 12\nrandom_seed: 5\nsnapshot_after_train: false\n",
                net_path.display()
            ),
        )
    });
    check(comm, written.is_ok(), || format!("writing the solver: {written:?}"));
    let opts = TrainOptions {
        solver: Some(solver),
        train_data: Some(data.clone()),
        test_data: Some(data),
        tau: 4,
        ..TrainOptions::default()
    };
    let outcome = plan(&opts).and_then(|p| {
        let mut w = SolverWorker::new(&p, comm.rank(), comm.size(), 1)?;
        let before = fingerprint(w.params()?);
        let s = train(comm, &mut w, &p.loop_config, &mut |_| {})?;
        Ok((before, fingerprint(w.params()?), s))
    });
    let (before, after, summary) = outcome.unwrap_or_else(|e| {
        let _ = comm.abort(&format!("LeNet training failed: {e}"));
        unreachable!("MPI_Abort returned")
    });
    let all = comm.gather_f64(&[before, after], 0).unwrap_or_else(|e| {
        let _ = comm.abort(&format!("gather: {e}"));
        unreachable!("MPI_Abort returned")
    });
    if let Some(all) = all {
        let same = all.chunks(2).all(|c| c[1] == all[1]);
        check(comm, same, || format!("replicas differ after training: {all:?}"));
        check(comm, all[1] != all[0], || "training changed nothing".into());
        let acc = summary.test.as_ref().and_then(TestScores::accuracy).unwrap_or(0.0);
        check(comm, summary.iter == 12 && summary.rounds == 3, || format!("{summary:?}"));
        println!(
            "mpi_train: LeNet 12 iterations on {} ranks, replicas identical, accuracy {acc:.3}",
            comm.size()
        );
    }
}

fn main() {
    let comm = match MpiComm::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mpi_train: {e}");
            std::process::exit(1);
        }
    };
    for (tau, iters) in [(1, 6), (3, 10), (5, 17)] {
        check_loop(&comm, tau, iters, SyncMode::Average);
    }
    check_loop(&comm, 1, 8, SyncMode::Gradients);
    check_lenet(&comm);
    check_distributed_test(&comm);
    if comm.rank() == 0 {
        println!("mpi_train: {} ranks OK", comm.size());
    }
}
