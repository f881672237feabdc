//! No run is lost (issue #16), through the `sparknet-train` binary: what a run writes is checked
//! before the first iteration, failed snapshots are retried and rescued to a fallback path,
//! non-finite training stops naming the iteration and the layer, and a run killed with SIGKILL
//! and resumed from its last snapshot follows the uninterrupted run's trajectory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sparknet_data::convert::synthetic::convert_synthetic_digits;
use sparknet_mpi::default_run::LENET_NET;

/// LeNet (batch 8 for training, 50 for testing) with `extra_layers` spliced in before the first
/// convolution, and an SGD solver with `settings`.
fn solver(dir: &Path, settings: &str, extra_layers: &str) -> PathBuf {
    let net = LENET_NET
        .replace("batch_size: 64", "batch_size: 8")
        .replace("batch_size: 100", "batch_size: 50");
    let net = match net.find("layer {\n  name: \"conv1\"") {
        Some(at) if !extra_layers.is_empty() => {
            format!("{}{extra_layers}\n{}", &net[..at], &net[at..])
        }
        _ => net,
    };
    let net_path = dir.join("lenet.prototxt");
    std::fs::write(&net_path, net).unwrap();
    let path = dir.join("solver.prototxt");
    let lr = if settings.contains("base_lr") { "" } else { "base_lr: 0.01\n" };
    let text = format!(
        "net: \"{}\"\n{lr}momentum: 0.9\nweight_decay: 0.0005\nlr_policy: \"inv\"\n\
         gamma: 0.0001\npower: 0.75\nrandom_seed: 5\ntest_interval: 0\n{settings}",
        net_path.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn digits(dir: &Path) -> PathBuf {
    let data = dir.join("digits");
    convert_synthetic_digits(&data, 160, 9, 4096).unwrap();
    data
}

fn train(cwd: &Path, solver: &Path, data: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sparknet-train"));
    c.current_dir(cwd).env("RAYON_NUM_THREADS", "1").arg("--solver").arg(solver);
    c.arg("--train-data").arg(data).arg("--test-data").arg(data).arg("--data-threads").arg("1");
    c.args(args);
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn lines(text: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(text).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_missing_snapshot_directory_and_log_directory_are_created_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let (sv, data) = (solver(tmp.path(), "max_iter: 4\n", ""), digits(tmp.path()));
    let prefix = tmp.path().join("snaps/deep/lenet");
    let log = tmp.path().join("logs/run.jsonl");
    let o = train(tmp.path(), &sv, &data, &["--snapshot-prefix", s(&prefix), "--log", s(&log)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for ext in ["caffemodel", "solverstate"] {
        assert!(tmp.path().join(format!("snaps/deep/lenet_iter_4.{ext}")).is_file());
    }
    assert_eq!(lines(&std::fs::read(&log).unwrap()).last().unwrap()["event"], "done");
}

#[test]
fn an_unwritable_snapshot_prefix_fails_before_the_first_iteration() {
    let tmp = tempfile::tempdir().unwrap();
    let (sv, data) = (solver(tmp.path(), "max_iter: 400\n", ""), digits(tmp.path()));
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let prefix = blocker.join("lenet");
    let o = train(tmp.path(), &sv, &data, &["--snapshot-prefix", s(&prefix)]).output().unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("snapshot prefix") && err.contains(s(&blocker)), "{err}");
    assert!(
        lines(&o.stdout).is_empty(),
        "no iteration ran: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn failed_snapshots_are_retried_reported_and_the_last_one_rescued() {
    let tmp = tempfile::tempdir().unwrap();
    let (sv, data) = (solver(tmp.path(), "max_iter: 4\nsnapshot: 2\n", ""), digits(tmp.path()));
    let snaps = tmp.path().join("snaps");
    // Directories where the iteration-2 and final caffemodels belong: both writes fail (the
    // prefix itself is writable, so the check before training passes).
    for it in [2, 4] {
        std::fs::create_dir_all(snaps.join(format!("lenet_iter_{it}.caffemodel/x"))).unwrap();
    }
    let rescue_tmp = tmp.path().join("tmp");
    std::fs::create_dir_all(&rescue_tmp).unwrap();
    let log = tmp.path().join("run.jsonl");
    let prefix = snaps.join("lenet");
    let args = ["--snapshot-prefix", s(&prefix), "--log", s(&log), "--tau", "2"];
    let o = train(tmp.path(), &sv, &data, &args).env("TMPDIR", &rescue_tmp).output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "the run is not lost: {err}");
    assert!(
        err.contains("snapshot at iteration 2 failed twice")
            && err.contains("lenet_iter_2.caffemodel")
            && err.contains("training goes on"),
        "{err}"
    );
    let rescued: Vec<PathBuf> = std::fs::read_dir(&rescue_tmp)
        .unwrap()
        .map(|e| e.unwrap().path().join("lenet_iter_4.solverstate"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(rescued.len(), 1, "{err}");
    assert!(err.contains(s(&rescued[0].with_extension("caffemodel"))), "prints the path: {err}");
    let warned: Vec<_> = lines(&std::fs::read(&log).unwrap())
        .into_iter()
        .filter(|l| l.get("warning").is_some())
        .collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
    // The rescued snapshot resumes.
    let o = train(tmp.path(), &sv, &data, &["--resume", s(&rescued[0]), "--max-iter", "6"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lines(&o.stdout).last().unwrap()["iter"], 6);
}

#[test]
fn a_non_finite_output_stops_the_run_naming_iteration_and_layer() {
    let tmp = tempfile::tempdir().unwrap();
    // log(x - 2) of pixels in [0, 1): NaN from the first forward on.
    let bad = "layer { name: \"bad_log\" type: \"Log\" bottom: \"data\" top: \"data\"\n\
               log_param { shift: -2 } }";
    let (sv, data) = (solver(tmp.path(), "max_iter: 50\n", bad), digits(tmp.path()));
    let o = train(tmp.path(), &sv, &data, &["--snapshot-prefix", s(&tmp.path().join("lenet"))])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("training diverged at iteration 1: "), "{err}");
    assert!(err.contains("layer 'bad_log' (Log)"), "{err}");
    assert!(err.contains("no snapshot was written"), "{err}");
    let written: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".caffemodel"))
        .collect();
    assert!(written.is_empty(), "non-finite weights are never snapshotted: {written:?}");
}

#[test]
fn diverging_training_names_the_last_good_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = "max_iter: 300\nsnapshot: 1\nbase_lr: 1000\n";
    let (sv, data) = (solver(tmp.path(), settings, ""), digits(tmp.path()));
    let prefix = tmp.path().join("lenet");
    let o = train(tmp.path(), &sv, &data, &["--snapshot-prefix", s(&prefix), "--tau", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "lr 1000 diverges");
    let err = stderr(&o);
    assert!(err.contains("training diverged at iteration") && err.contains("layer '"), "{err}");
    let at = err.find("the last good snapshot is ").expect("a snapshot was written") + 26;
    let named = PathBuf::from(err[at..].split_whitespace().next().unwrap());
    assert!(named.is_file(), "{}", named.display());
    let state = sparknet_net::load::read_solverstate(&named).unwrap();
    let model = sparknet_net::load::read_caffemodel(named.with_extension("caffemodel")).unwrap();
    let finite =
        model.layer.iter().flat_map(|l| &l.blobs).flat_map(|b| &b.data).all(|x| x.is_finite());
    assert!(finite, "the last good snapshot (iteration {}) holds finite weights", state.iter());
}

/// The `train` JSON lines' (iter, loss) after iteration `from`.
fn losses(out: &[u8], from: u64) -> Vec<(u64, String)> {
    lines(out)
        .into_iter()
        .filter(|l| l["event"] == "train" && l["iter"].as_u64().unwrap() > from)
        .map(|l| (l["iter"].as_u64().unwrap(), l["loss"].to_string()))
        .collect()
}

#[test]
fn a_run_killed_mid_round_and_resumed_follows_the_uninterrupted_trajectory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = digits(tmp.path());
    let sv = solver(tmp.path(), "max_iter: 30\nsnapshot: 10\ndisplay: 2\n", "");
    for (workers, history) in [("1", "local"), ("2", "average")] {
        let run = |name: &str| tmp.path().join(format!("{name}-{workers}/lenet"));
        let common = ["--workers", workers, "--tau", "2", "--history", history];
        // Uninterrupted.
        let whole = run("whole");
        let mut args = common.to_vec();
        args.extend(["--snapshot-prefix", s(&whole)]);
        let a = train(tmp.path(), &sv, &data, &args).output().unwrap();
        assert!(a.status.success(), "{}", stderr(&a));

        // Killed (SIGKILL) as soon as the iteration-10 snapshot is there, in a longer run.
        let killed = run("killed");
        let mut args = common.to_vec();
        args.extend(["--snapshot-prefix", s(&killed), "--max-iter", "1000"]);
        let mut child = train(tmp.path(), &sv, &data, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let state = PathBuf::from(format!("{}_iter_10.solverstate", killed.display()));
        let t = Instant::now();
        while !state.is_file() {
            assert!(t.elapsed() < Duration::from_secs(300), "no snapshot at iteration 10");
            assert!(child.try_wait().unwrap().is_none(), "the run ended before it was killed");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();

        // Resumed from that snapshot, to the same end.
        let mut args = common.to_vec();
        args.extend(["--snapshot-prefix", s(&killed), "--resume", s(&state), "--max-iter", "30"]);
        let b = train(tmp.path(), &sv, &data, &args).output().unwrap();
        assert!(b.status.success(), "{}", stderr(&b));
        let (want, got) = (losses(&a.stdout, 10), losses(&b.stdout, 10));
        assert_eq!(want.len(), 10, "{want:?}");
        assert_eq!(got, want, "K = {workers}: the losses after the resume");
        let end = |p: &Path| std::fs::read(format!("{}_iter_30.caffemodel", p.display())).unwrap();
        assert!(end(&whole) == end(&killed), "K = {workers}: the final weights differ");
    }
}
