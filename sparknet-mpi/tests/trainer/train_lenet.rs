//! Training real nets through the SparkNet loop: LeNet with sparknet-net's solver on synthetic
//! digits (always available) and on MNIST (when the assets are present), in process and through
//! the `sparknet-train` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use sparknet_data::convert::synthetic::{convert_synthetic_digits, render_digit};
use sparknet_data::{ChannelOrder, DatasetConfig, DatasetWriter, Encoding};
use sparknet_mpi::bind::{FeedConfig, PhaseData, data_layers};
use sparknet_mpi::default_run::LENET_NET;
use sparknet_mpi::plan::{TrainOptions, plan};
use sparknet_mpi::solver_worker::SolverWorker;
use sparknet_mpi::trainer::{LoopConfig, SyncMode, Worker, train};
use sparknet_mpi::{Collective, LocalComm, LocalGroup, StatePolicy};
use sparknet_net::solver::Solver;
use sparknet_net::{NetConfig, Phase};

/// Writes the default LeNet with batch sizes `train`/`test` and a solver around it.
fn lenet_solver(dir: &Path, train: u32, test: u32, solver: &str) -> PathBuf {
    let net = LENET_NET
        .replace("batch_size: 64", &format!("batch_size: {train}"))
        .replace("batch_size: 100", &format!("batch_size: {test}"));
    let net_path = dir.join("lenet.prototxt");
    std::fs::write(&net_path, net).unwrap();
    let path = dir.join("solver.prototxt");
    // No final snapshot into the working directory unless a test asks for one.
    let text = format!("net: \"{}\"\nsnapshot_after_train: false\n{solver}", net_path.display());
    std::fs::write(&path, text).unwrap();
    path
}

const SGD: &str = "base_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\nlr_policy: \"inv\"\n\
                   gamma: 0.0001\npower: 0.75\nmax_iter: 12\nrandom_seed: 3\n";

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn one_worker_with_any_tau_equals_the_plain_solver_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("digits");
    convert_synthetic_digits(&data, 200, 5, 4096).unwrap();
    let opts = TrainOptions {
        solver: Some(lenet_solver(tmp.path(), 8, 50, SGD)),
        train_data: Some(data.clone()),
        test_data: Some(data.clone()),
        tau: 1,
        ..TrainOptions::default()
    };
    let p = plan(&opts).unwrap();

    // The plain solver, fed by the same loader.
    let specs = data_layers(&p.net, Phase::Train, Some(&data)).unwrap();
    let feed = FeedConfig { rank: 0, world: 1, shuffle: None, seed: 3, threads: 1 };
    let mut batches = PhaseData::open(&specs, Phase::Train, feed).unwrap();
    let mut param = p.solver.clone();
    param.test_iter.clear();
    let config = NetConfig { input_shapes: batches.input_shapes(), ..NetConfig::default() };
    let mut plain = Solver::from_param(&param, config).unwrap();
    for _ in 0..12 {
        plain.step(&[batches.next_inputs(None).expect("batch")]).unwrap();
    }
    let want = bits(plain.net_mut().param_data().unwrap());

    for tau in [1, 5, 12] {
        let mut worker = SolverWorker::new(&p, 0, 1, 1).unwrap();
        let config = LoopConfig { tau, ..p.loop_config.clone() };
        let s = train(&LocalComm::single(), &mut worker, &config, &mut |_| {}).unwrap();
        assert_eq!(s.iter, 12);
        let got = bits(worker.solver().net_mut().param_data().unwrap());
        assert!(got == want, "tau {tau}: parameters differ from the plain solver run");
        assert!(s.test.is_some_and(|t| t.records == 200));
    }
}

/// Two ranks with batch 4 and gradient sync against one worker with batch 8 whose batch `t` is
/// rank 0's batch `t` followed by rank 1's (plain SGD, fixed rate), over 10 steps.
#[test]
fn gradient_sync_of_two_ranks_equals_one_worker_on_the_doubled_batch() {
    let (b, steps, half) = (4usize, 10usize, 40usize);
    let tmp = tempfile::tempdir().unwrap();
    let digit = |i: usize| ((i * 7 % 10) as u8, render_digit((i * 7 % 10) as u8, 9, i as u64));
    let write = |dir: &Path, order: &[usize]| {
        let config = DatasetConfig {
            encoding: Encoding::RawU8,
            channel_order: ChannelOrder::Gray,
            classes: (0..10).map(|d| d.to_string()).collect(),
            shard_size: 1000,
        };
        let mut w = DatasetWriter::create(dir, config).unwrap();
        for &i in order {
            let (label, px) = digit(i);
            w.append(u32::from(label), [1, 28, 28], &px).unwrap();
        }
        w.finish().unwrap();
    };
    let split = tmp.path().join("split");
    write(&split, &(0..2 * half).collect::<Vec<_>>());
    let union: Vec<usize> = (0..steps)
        .flat_map(|t| (t * b..(t + 1) * b).chain(half + t * b..half + (t + 1) * b))
        .collect();
    let joined = tmp.path().join("joined");
    write(&joined, &union);

    let sgd = "base_lr: 0.05\nlr_policy: \"fixed\"\nmax_iter: 10\nrandom_seed: 4\n";
    let two = tempfile::tempdir().unwrap();
    let one = tempfile::tempdir().unwrap();
    let opts = |dir: &Path, batch: u32, data: &Path| TrainOptions {
        solver: Some(lenet_solver(dir, batch, 20, sgd)),
        train_data: Some(data.to_path_buf()),
        test_data: Some(data.to_path_buf()),
        sync: SyncMode::Gradients,
        tau: 1,
        ..TrainOptions::default()
    };
    let p2 = plan(&opts(two.path(), b as u32, &split)).unwrap();
    let ranks = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            let mut w = SolverWorker::new(&p2, comm.rank(), 2, 1).unwrap();
            train(&comm, &mut w, &p2.loop_config, &mut |_| {}).unwrap();
            w.solver().net_mut().param_data().unwrap().to_vec()
        })
        .unwrap();
    let p1 = plan(&opts(one.path(), 2 * b as u32, &joined)).unwrap();
    let mut single = SolverWorker::new(&p1, 0, 1, 1).unwrap();
    for _ in 0..steps {
        single.step().unwrap();
    }
    let want = single.solver().net_mut().param_data().unwrap().to_vec();
    assert_eq!(bits(&ranks[0]), bits(&ranks[1]), "replicas identical");
    let worst = ranks[0].iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-5, "largest difference {worst}");
    let mut fresh = SolverWorker::new(&p1, 0, 1, 1).unwrap();
    let init = fresh.solver().net_mut().param_data().unwrap().to_vec();
    let moved = init.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert!(moved > 1000, "the parameters trained ({moved} changed)");
}

fn train_bin(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sparknet-train"));
    c.current_dir(cwd);
    c
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The README's first command on a machine without MNIST: synthetic digits, said so on stderr.
#[test]
fn no_arguments_train_the_default_lenet_on_synthetic_digits() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let log = tmp.path().join("run.jsonl");
    let out = train_bin(tmp.path())
        .env("SPARKNET_DATA", empty.path())
        .env("SPARKNET_ASSETS", tmp.path().join("none"))
        .args(["--max-iter", "30", "--log"])
        .arg(&log)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("synthetic digits") && stderr.contains("SPARKNET_DATA"), "{stderr}");
    let lines = json_lines(&out.stdout);
    let done = lines.last().unwrap();
    assert_eq!((done["event"].as_str(), done["iter"].as_u64()), (Some("done"), Some(30)));
    assert!(done["test_accuracy"].as_f64().unwrap() > 0.2, "{done}");
    assert!(lines[0]["event"] == "test" && lines[0]["iter"] == 0, "test_initialization");
    let logged = std::fs::read(&log).unwrap();
    assert_eq!(json_lines(&logged), lines, "--log holds the same lines");
    let files: Vec<_> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 1, "no snapshots without --snapshot-prefix: {files:?}");
}

/// Snapshot at the end, then `--resume` continues from its iteration.
#[test]
fn resume_continues_from_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("digits");
    convert_synthetic_digits(&data, 100, 6, 4096).unwrap();
    let solver = lenet_solver(tmp.path(), 8, 50, &format!("{SGD}display: 5\n"));
    let run = |extra: &[&str]| {
        let out = train_bin(tmp.path())
            .arg("--solver")
            .arg(&solver)
            .arg("--train-data")
            .arg(&data)
            .arg("--test-data")
            .arg(&data)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        json_lines(&out.stdout)
    };
    let first = run(&["--max-iter", "10", "--snapshot-prefix", "snap", "--tau", "5"]);
    assert_eq!(first.last().unwrap()["iter"], 10);
    let state = tmp.path().join("snap_iter_10.solverstate");
    assert!(state.is_file() && tmp.path().join("snap_iter_10.caffemodel").is_file());
    let second = run(&["--resume", "snap_iter_10.solverstate", "--max-iter", "15", "--tau", "5"]);
    let done = second.last().unwrap();
    assert_eq!((done["iter"].as_u64(), done["rounds"].as_u64()), (Some(15), Some(1)), "{done}");
    assert!(
        second.iter().all(|l| l["iter"].as_u64().unwrap() >= 10),
        "nothing before the snapshot"
    );
    assert!(done["test_accuracy"].as_f64().is_some(), "{done}");
}

#[test]
fn a_rank_without_data_ends_the_run_with_its_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("digits");
    convert_synthetic_digits(&data, 2, 6, 4096).unwrap();
    let solver = lenet_solver(tmp.path(), 2, 2, SGD);
    let out = train_bin(tmp.path())
        .arg("--solver")
        .arg(&solver)
        .arg("--train-data")
        .arg(&data)
        .arg("--test-data")
        .arg(&data)
        .args(["--workers", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("of 3 has no records in a dataset of 2"), "{stderr}");
}

/// Issue 6's end-to-end check in process: 2 workers, tau = 10, 300 iterations each on MNIST.
#[test]
fn two_workers_reach_95_percent_on_mnist_in_300_iterations() {
    let Some(assets) = sparknet_testkit::assets_dir("two_workers_mnist") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let solver = lenet_solver(
        tmp.path(),
        64,
        100,
        "base_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\nlr_policy: \"inv\"\ngamma: 0.0001\n\
         power: 0.75\nmax_iter: 300\nrandom_seed: 1\ntest_initialization: false\n",
    );
    let out = train_bin(tmp.path())
        .env("SPARKNET_ASSETS", &assets)
        .arg("--solver")
        .arg(&solver)
        .args(["--workers", "2", "--tau", "10"])
        .arg("--train-data")
        .arg(crate::mnist_set(&assets, tmp.path(), "train", None))
        .arg("--test-data")
        .arg(crate::mnist_set(&assets, tmp.path(), "t10k", None))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done = json_lines(&out.stdout).pop().unwrap();
    assert_eq!((done["workers"].as_u64(), done["iter"].as_u64()), (Some(2), Some(300)));
    let acc = done["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.95, "test accuracy {acc} after 300 iterations per worker: {done}");
}

/// SIGTERM: the run stops after the current round, snapshots, and exits with status 130.
#[test]
fn sigterm_snapshots_and_exits_130() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("digits");
    convert_synthetic_digits(&data, 100, 7, 4096).unwrap();
    let solver = lenet_solver(tmp.path(), 8, 50, &format!("{SGD}test_interval: 100000\n"));
    let mut child = train_bin(tmp.path())
        .arg("--solver")
        .arg(&solver)
        .arg("--train-data")
        .arg(&data)
        .arg("--test-data")
        .arg(&data)
        .args(["--max-iter", "1000000", "--tau", "2", "--snapshot-prefix", "stopped"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // The initial test's line: the loop is running.
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["iter"], 0);
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: `kill` with a valid signal number has no memory-safety preconditions; the pid is
    // our own child, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let rest: Vec<serde_json::Value> =
        lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let done = rest.last().unwrap();
    assert_eq!(done["interrupted"], true, "{done}");
    let iter = done["iter"].as_u64().unwrap();
    assert!(
        iter > 0 && iter.is_multiple_of(2) && iter < 1_000_000,
        "stopped at a round end: {done}"
    );
    let snap = rest.iter().find_map(|l| l.get("snapshot")).expect("a snapshot report");
    assert_eq!(snap[0], format!("stopped_iter_{iter}.caffemodel"));
    assert!(tmp.path().join(format!("stopped_iter_{iter}.solverstate")).is_file());
}

/// `--history`: momentum kept per worker (differs between the two), zeroed, or averaged
/// (identical) after the last round.
#[test]
fn solver_history_policy_at_averaging_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("digits");
    convert_synthetic_digits(&data, 64, 8, 4096).unwrap();
    let solver = lenet_solver(tmp.path(), 4, 32, SGD);
    for policy in [StatePolicy::Local, StatePolicy::Reset, StatePolicy::Averaged] {
        let opts = TrainOptions {
            solver: Some(solver.clone()),
            train_data: Some(data.clone()),
            test_data: Some(data.clone()),
            max_iter: Some(6),
            tau: 3,
            history: Some(policy),
            ..TrainOptions::default()
        };
        let p = plan(&opts).unwrap();
        let hist = LocalGroup::new(2)
            .unwrap()
            .run(|comm| {
                let mut w = SolverWorker::new(&p, comm.rank(), 2, 1).unwrap();
                train(&comm, &mut w, &p.loop_config, &mut |_| {}).unwrap();
                assert_eq!(w.history_sets(), 1, "SGD keeps one momentum buffer");
                w.history(0).unwrap().to_vec()
            })
            .unwrap();
        let zero = |h: &[f32]| h.iter().all(|&x| x == 0.0);
        match policy {
            StatePolicy::Local => assert!(bits(&hist[0]) != bits(&hist[1]) && !zero(&hist[0])),
            StatePolicy::Reset => assert!(zero(&hist[0]) && zero(&hist[1])),
            StatePolicy::Averaged => assert!(bits(&hist[0]) == bits(&hist[1]) && !zero(&hist[0])),
        }
    }
}

/// The trainer's prescaled rounds (SolverWorker's fused `step_scaled`, then one allreduce-sum)
/// against the divide-after rounds they replaced (plain steps, then `Averager::average`): bit
/// for bit for K = 2 (momentum, weight decay, the whole LeNet buffer), within a few rounding
/// errors for K = 3.
#[test]
fn prescaled_lenet_rounds_equal_divide_after_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("digits");
    convert_synthetic_digits(&data, 60, 9, 4096).unwrap();
    let solver = lenet_solver(tmp.path(), 4, 20, SGD);
    let (tau, iters) = (3u64, 8u64);
    for k in [2usize, 3] {
        let opts = TrainOptions {
            solver: Some(solver.clone()),
            train_data: Some(data.clone()),
            test_data: Some(data.clone()),
            max_iter: Some(iters),
            tau,
            ..TrainOptions::default()
        };
        let p = plan(&opts).unwrap();
        let run = |prescaled: bool| {
            LocalGroup::new(k)
                .unwrap()
                .run(|comm| {
                    let mut w = SolverWorker::new(&p, comm.rank(), k, 1).unwrap();
                    if prescaled {
                        train(&comm, &mut w, &p.loop_config, &mut |_| {}).unwrap();
                    } else {
                        comm.broadcast(w.params().unwrap(), 0).unwrap();
                        w.params_changed().unwrap();
                        let mut averager = sparknet_mpi::Averager::new();
                        while w.iter() < iters {
                            for _ in 0..tau.min(iters - w.iter()) {
                                w.step().unwrap();
                            }
                            averager.average(&comm, w.params().unwrap()).unwrap();
                            w.params_changed().unwrap();
                        }
                    }
                    w.solver().net_mut().param_data().unwrap().to_vec()
                })
                .unwrap()
        };
        let (new, old) = (run(true), run(false));
        assert_eq!(bits(&new[0]), bits(&new[k - 1]), "K={k}: replicas identical");
        if k == 2 {
            assert!(bits(&new[0]) == bits(&old[0]), "K=2: prescaled rounds differ");
        } else {
            let scale = old[0].iter().fold(0f32, |m, x| m.max(x.abs()));
            let gap = new[0].iter().zip(&old[0]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(gap <= 1e-6 * scale, "K=3: largest difference {gap} (largest weight {scale})");
        }
    }
}
