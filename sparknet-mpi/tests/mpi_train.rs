//! `mpirun -n 2 sparknet-train` (built with feature `mpi`) as a user runs it: SIGTERM or SIGINT to
//! `mpirun` ends the job within seconds after a snapshot written by rank 0 (complete files, no
//! temporary left behind), and a rank killed with SIGKILL ends the job non-zero within seconds.
//!
//! Without `mpirun` (or the launcher named by `MPIRUN`) on the `PATH` each test prints a SKIPPED
//! line and passes, unless `SPARKNET_REQUIRE_MPI=1` (as in CI), when it fails. The jobs run one
//! at a time (a lock), each rank with one compute thread, so that the time limits hold on a
//! small, shared machine.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use sparknet_data::convert::synthetic::convert_synthetic_digits;
use sparknet_mpi::default_run::LENET_NET;
use sparknet_net::load::{read_caffemodel, read_solverstate};

/// How long MPI start-up, data and the first test may take before the first JSON line.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long the job may take to end once signalled (or once a rank is killed).
const END_LIMIT: Duration = Duration::from_secs(15);

/// One job at a time.
static JOBS: Mutex<()> = Mutex::new(());

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The launcher and whether it is Open MPI's (which needs `--oversubscribe` for more ranks than
/// cores); `None` after a SKIPPED line when there is none and MPI is not required.
fn launcher(test: &str) -> Option<(PathBuf, bool)> {
    let name = std::env::var("MPIRUN").unwrap_or_else(|_| "mpirun".to_owned());
    let Some(mpirun) = which(&name) else {
        assert!(
            !matches!(std::env::var("SPARKNET_REQUIRE_MPI").as_deref(), Ok("1")),
            "SPARKNET_REQUIRE_MPI=1 but {name} is not on the PATH"
        );
        eprintln!("SKIPPED {test}: {name} not found on the PATH");
        return None;
    };
    let version = Command::new(&mpirun).arg("--version").output();
    let open_mpi =
        version.map(|o| String::from_utf8_lossy(&o.stdout).contains("Open MPI")).unwrap_or(false);
    Some((mpirun, open_mpi))
}

/// A small LeNet run in `dir`: batch 8 over 200 synthetic digits, tested at the start only,
/// averaging every 2 steps, with far more iterations than the test will let it do.
fn start_job(dir: &Path, mpirun: &Path, open_mpi: bool) -> Child {
    let data = dir.join("digits");
    convert_synthetic_digits(&data, 200, 7, 4096).unwrap();
    let net = LENET_NET
        .replace("batch_size: 64", "batch_size: 8")
        .replace("batch_size: 100", "batch_size: 50");
    std::fs::write(dir.join("lenet.prototxt"), net).unwrap();
    let solver = dir.join("solver.prototxt");
    std::fs::write(
        &solver,
        "net: \"lenet.prototxt\"\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: \"fixed\"\n\
         test_interval: 100000\nsnapshot_after_train: false\nrandom_seed: 3\n",
    )
    .unwrap();
    let mut cmd = Command::new(mpirun);
    if open_mpi {
        cmd.arg("--oversubscribe");
    }
    cmd.args(["-n", "2"]).arg(env!("CARGO_BIN_EXE_sparknet-train"));
    cmd.arg("--solver").arg(&solver).arg("--train-data").arg(&data).arg("--test-data").arg(&data);
    cmd.args(["--max-iter", "1000000", "--tau", "2", "--snapshot-prefix", "stopped"]);
    cmd.env("RAYON_NUM_THREADS", "1").current_dir(dir);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

/// A job of [`start_job`] that has printed its first line (the initial test at iteration 0).
struct Started {
    /// Held for the job's lifetime: one job at a time.
    _one_job: std::sync::MutexGuard<'static, ()>,
    tmp: tempfile::TempDir,
    child: Child,
    lines: Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

/// Starts the small job and waits for its first JSON line; `None` (after a SKIPPED line) without
/// a launcher.
fn started(test: &str) -> Option<Started> {
    let (mpirun, open_mpi) = launcher(test)?;
    let one_job = JOBS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().unwrap();
    let mut child = start_job(tmp.path(), &mpirun, open_mpi);
    let (lines, stderr) = pipes(&mut child);
    let Ok(first) = lines.recv_timeout(START_LIMIT) else {
        let status = wait_for(&mut child, Duration::ZERO);
        panic!("no JSON line within {START_LIMIT:?} ({status:?}): {}", stderr.join().unwrap());
    };
    assert_eq!(json(&first)["iter"], 0, "the initial test: {first}");
    Some(Started { _one_job: one_job, tmp, child, lines, stderr })
}

/// The job's stdout lines as they come, and its stderr once it is closed.
fn pipes(child: &mut Child) -> (Receiver<String>, std::thread::JoinHandle<String>) {
    let (tx, rx) = channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    (rx, err)
}

/// Waits up to `limit` for the job to end; on time-out kills it (and its ranks, through
/// mpirun's SIGTERM) and returns `None`.
fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            signal(child.id(), libc::SIGTERM);
            std::thread::sleep(Duration::from_secs(3));
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: `kill` has no memory-safety preconditions; `pid` is a process this test started
    // (mpirun, or one of its ranks) and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

/// The JSON lines still to come from an ended job (the launcher's own notes, if any reach
/// stdout, are skipped), until its stdout closes.
fn remaining(lines: &Receiver<String>) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        if line.starts_with('{') {
            out.push(json(&line));
        }
    }
    out
}

/// True while `pid` is a live (not zombie) `sparknet-train` process.
fn alive(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let exe = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(exe).ends_with("sparknet-train")
}

/// SIGTERM or SIGINT to mpirun: Open MPI forwards it to every rank; each rank's handler sets its
/// stop flag, the ranks agree to stop after the current round, rank 0 snapshots and the job ends.
fn signal_snapshots_and_ends_the_job(sig: libc::c_int, test: &str) {
    let Some(Started { _one_job, tmp, mut child, lines, stderr }) = started(test) else {
        return;
    };
    let signalled = Instant::now();
    signal(child.id(), sig);
    let status = wait_for(&mut child, END_LIMIT);
    let took = signalled.elapsed();
    let rest = remaining(&lines);
    let stderr = stderr.join().unwrap();
    let Some(status) = status else {
        panic!("still running {END_LIMIT:?} after signal {sig}: {stderr}")
    };
    eprintln!("{test}: job ended with {status} {took:.2?} after signal {sig}");
    let done =
        rest.last().unwrap_or_else(|| panic!("no line after the signal ({status}): {stderr}"));
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(done["interrupted"], true, "{done}");
    assert_eq!(done["workers"], 2, "{done}");
    let iter = done["iter"].as_u64().unwrap();
    assert!(
        iter > 0 && iter.is_multiple_of(2) && iter < 1_000_000,
        "stopped at a round end: {done}"
    );
    // Exit status 130 from every rank; mpirun passes a rank's non-zero status on.
    assert!(!status.success(), "an interrupted job does not report success: {status}");
    // The snapshot: both files listed, complete (they parse, at the stopping iteration), and no
    // temporary file left behind (each was written to a temporary, then renamed).
    let snap = rest.iter().find_map(|l| l.get("snapshot")).expect("a snapshot report");
    let model = tmp.path().join(format!("stopped_iter_{iter}.caffemodel"));
    let state = tmp.path().join(format!("stopped_iter_{iter}.solverstate"));
    assert_eq!(snap[0], format!("stopped_iter_{iter}.caffemodel"), "{snap}");
    assert_eq!(snap[1], format!("stopped_iter_{iter}.solverstate"), "{snap}");
    let weights = read_caffemodel(&model).unwrap();
    assert!(weights.layer.iter().any(|l| l.name() == "conv1" && !l.blobs.is_empty()));
    let saved = read_solverstate(&state).unwrap();
    assert_eq!(saved.iter(), i32::try_from(iter).unwrap());
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with('~')), "temporary files left: {names:?}");
    let snapshots = names.iter().filter(|n| n.starts_with("stopped_iter_")).count();
    assert_eq!(snapshots, 2, "one snapshot, from rank 0 only: {names:?}");
}

#[test]
fn sigterm_to_mpirun_snapshots_and_ends_the_job() {
    signal_snapshots_and_ends_the_job(libc::SIGTERM, "sigterm_to_mpirun");
}

#[test]
fn sigint_to_mpirun_snapshots_and_ends_the_job() {
    signal_snapshots_and_ends_the_job(libc::SIGINT, "sigint_to_mpirun");
}

/// The parent pid of `pid`, from `/proc/<pid>/stat` (the field after the parenthesised name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The `sparknet-train` processes below `root` (Open MPI starts them as mpirun's children, MPICH
/// as its grandchildren), with their rank when the launcher put it in the environment.
fn ranks_below(root: u32) -> Vec<(u32, Option<u32>)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if !alive(pid) {
            continue;
        }
        let mut up = parent_of(pid);
        for _ in 0..3 {
            match up {
                Some(p) if p == root => {
                    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                    let rank = env.split(|&b| b == 0).find_map(|kv| {
                        let kv = String::from_utf8_lossy(kv);
                        ["OMPI_COMM_WORLD_RANK=", "PMI_RANK="]
                            .iter()
                            .find_map(|k| kv.strip_prefix(k).and_then(|v| v.parse().ok()))
                    });
                    found.push((pid, rank));
                    break;
                }
                Some(p) if p > 1 => up = parent_of(p),
                _ => break,
            }
        }
    }
    found
}

/// Issue 6: a killed rank ends the job with a non-zero exit within seconds (here a real training
/// run, rank 1 killed with SIGKILL while rank 0 trains and waits for it in the next allreduce).
#[test]
fn a_killed_rank_ends_the_training_job_non_zero_within_seconds() {
    let Some(Started { _one_job, tmp: _tmp, mut child, lines, stderr }) = started("killed_rank")
    else {
        return;
    };
    let ranks = ranks_below(child.id());
    assert_eq!(ranks.len(), 2, "two sparknet-train ranks under mpirun: {ranks:?}");
    let (victim, _) = ranks
        .iter()
        .copied()
        .find(|(_, rank)| *rank == Some(1))
        .unwrap_or_else(|| *ranks.iter().max().unwrap());
    let killed = Instant::now();
    signal(victim, libc::SIGKILL);
    let status = wait_for(&mut child, END_LIMIT);
    let took = killed.elapsed();
    let stderr = stderr.join().unwrap();
    let Some(status) = status else {
        panic!("still running {END_LIMIT:?} after SIGKILL: {stderr}")
    };
    eprintln!("killed_rank: job ended with {status} {took:.2?} after SIGKILL to pid {victim}");
    assert!(!status.success(), "the job must fail when a rank dies: {stderr}");
    let rest = remaining(&lines);
    assert!(!rest.iter().any(|l| l["event"] == "done"), "no summary from a broken job: {rest:?}");
    std::thread::sleep(Duration::from_millis(500));
    let left: Vec<u32> = ranks.iter().map(|r| r.0).filter(|&pid| alive(pid)).collect();
    assert!(left.is_empty(), "ranks left running: {left:?}");
}

/// Issue 6's end-to-end check under MPI: `mpirun -n 2 sparknet-train`, LeNet, tau = 10, 300
/// iterations per rank on each rank's half of MNIST: at least 95% on the MNIST test set (the
/// accuracy summed over the ranks' test partitions).
#[test]
fn mpirun_two_ranks_reach_95_percent_on_mnist_in_300_iterations() {
    const TEST: &str = "mpirun_two_ranks_mnist";
    let Some(assets) = sparknet_testkit::assets_dir(TEST) else { return };
    let Some((mpirun, open_mpi)) = launcher(TEST) else { return };
    let _one_job = JOBS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().unwrap();
    let mnist = assets.join("data/mnist");
    let mut sets = Vec::new();
    for set in ["train", "t10k"] {
        let out = tmp.path().join(format!("mnist-{set}"));
        sparknet_data::convert::mnist::convert_mnist(
            &mnist.join(format!("{set}-images-idx3-ubyte.gz")),
            &mnist.join(format!("{set}-labels-idx1-ubyte.gz")),
            &out,
            4096,
            None,
            &|_| {},
        )
        .unwrap();
        sets.push(out);
    }
    std::fs::write(tmp.path().join("lenet.prototxt"), LENET_NET).unwrap();
    let solver = tmp.path().join("solver.prototxt");
    std::fs::write(
        &solver,
        "net: \"lenet.prototxt\"\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\n\
         lr_policy: \"inv\"\ngamma: 0.0001\npower: 0.75\nmax_iter: 300\nrandom_seed: 1\n\
         test_initialization: false\nsnapshot_after_train: false\n",
    )
    .unwrap();
    let mut cmd = Command::new(&mpirun);
    if open_mpi {
        cmd.arg("--oversubscribe");
    }
    cmd.args(["-n", "2"]).arg(env!("CARGO_BIN_EXE_sparknet-train"));
    cmd.arg("--solver").arg(&solver).arg("--train-data").arg(&sets[0]);
    cmd.arg("--test-data").arg(&sets[1]).args(["--tau", "10"]);
    cmd.env("RAYON_NUM_THREADS", "1").current_dir(tmp.path());
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let done = json(stdout.lines().last().expect("a summary line"));
    assert_eq!((done["workers"].as_u64(), done["iter"].as_u64()), (Some(2), Some(300)), "{done}");
    let acc = done["test_accuracy"].as_f64().unwrap();
    eprintln!("{TEST}: test accuracy {acc}");
    assert!(acc >= 0.95, "test accuracy {acc} after 300 iterations per rank: {done}");
}
