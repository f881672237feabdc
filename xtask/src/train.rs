//! Driving `sparknet-train` and `sparknet-data` as processes: building them, binding a Caffe
//! solver and net to datasets through edited copies, running one (ranks, tau) configuration under
//! `mpirun` or with in-process workers, and reading its JSON lines back.
//!
//! xtask links no project crate: everything here goes through the binaries' command lines and the
//! JSON lines `sparknet-train` prints (`round`, `iter`, `loss`, `lr`, `accuracy`, `compute`,
//! `allreduce`, `data_wait`, `eval`, `seconds`, and a final `"event": "done"` line).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{cargo, mpi, project_root};

/// The two binaries, and how to start several ranks.
#[derive(Clone, Debug)]
pub(crate) struct Binaries {
    pub(crate) train: PathBuf,
    pub(crate) data: PathBuf,
    /// `Some` when `sparknet-train` was built with the `mpi` feature and `mpirun` is installed.
    pub(crate) mpi: Option<mpi::Mpi>,
    /// `release` or `debug`.
    pub(crate) profile: &'static str,
}

/// The cargo target directory (`$CARGO_TARGET_DIR` or `<root>/target`).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

/// Builds `sparknet-train` (with `--features sparknet-mpi/mpi` when MPI is installed) and
/// `sparknet-data` in one cargo call.
pub(crate) fn build(release: bool) -> Result<Binaries> {
    let mpi = mpi::detect()?;
    let mut cmd = cargo();
    cmd.args([
        "build",
        "-p",
        "sparknet-mpi",
        "-p",
        "sparknet-data",
        "--bin",
        "sparknet-train",
        "--bin",
        "sparknet-data",
    ]);
    if release {
        cmd.arg("--release");
    }
    if mpi.is_some() {
        cmd.args(["--features", "sparknet-mpi/mpi"]);
    }
    crate::exec(cmd)?;
    let profile = if release { "release" } else { "debug" };
    existing(profile, mpi)
}

/// The binaries already built under `target/<profile>` (`mpi` when they were built with it).
pub(crate) fn existing(profile: &'static str, mpi: Option<mpi::Mpi>) -> Result<Binaries> {
    let dir = target_dir().join(profile);
    let exe = |name: &str| {
        let p = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        if p.is_file() { Ok(p) } else { bail!("{} was not built", p.display()) }
    };
    Ok(Binaries { train: exe("sparknet-train")?, data: exe("sparknet-data")?, mpi, profile })
}

impl Binaries {
    /// `sparknet-data <args>`, echoed, failing with its output.
    pub(crate) fn data(&self, args: &[&std::ffi::OsStr]) -> Result<String> {
        let mut cmd = Command::new(&self.data);
        cmd.args(args);
        let line = format!("{cmd:?}");
        eprintln!("$ {line}");
        let out = cmd.output().with_context(|| format!("could not start {line}"))?;
        if !out.status.success() {
            bail!(
                "command failed ({}): {line}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `--help` text of `sparknet-data [sub...]` (empty when the command does not exist).
    pub(crate) fn data_help(&self, sub: &[&str]) -> String {
        let out = Command::new(&self.data).args(sub).arg("--help").output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => String::new(),
        }
    }

    /// `sparknet-train --version`.
    pub(crate) fn version(&self) -> String {
        Command::new(&self.train)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }
}

/// True when `dir` holds a sparknet-data dataset (its manifest).
pub(crate) fn is_dataset(dir: &Path) -> bool {
    dir.join("manifest.json").is_file()
}

/// Runs a converter unless `out` already holds a dataset (conversions are cached between runs).
pub(crate) fn convert_cached(bins: &Binaries, out: &Path, args: &[&std::ffi::OsStr]) -> Result<()> {
    if is_dataset(out) {
        eprintln!("dataset {} exists, reused", out.display());
        return Ok(());
    }
    if out.exists() {
        std::fs::remove_dir_all(out)
            .with_context(|| format!("removing the partial {}", out.display()))?;
    }
    let mut full: Vec<&std::ffi::OsStr> = args.to_vec();
    full.push("--out".as_ref());
    full.push(out.as_os_str());
    bins.data(&full)?;
    if !is_dataset(out) {
        bail!("the converter wrote no dataset manifest at {}", out.display());
    }
    Ok(())
}

/// Rewrites a prototxt: drops the top-level `key: value` lines for `keys` and appends
/// `replacements` (so the copy names each key once, with our value).
pub(crate) fn rewrite_solver(text: &str, replacements: &[(&str, String)]) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        let key = t.split(':').next().unwrap_or("").trim();
        if replacements.iter().any(|(k, _)| *k == key) && !line.starts_with([' ', '\t']) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("# set by cargo xtask\n");
    for (k, v) in replacements {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out
}

/// Rewrites a net prototxt's `mean_file` paths and (optionally) every `batch_size`.
pub(crate) fn rewrite_net(text: &str, mean_file: Option<&Path>, batch: Option<usize>) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        if let (Some(m), true) = (mean_file, t.starts_with("mean_file:")) {
            out.push_str(&format!("{indent}mean_file: {:?}\n", m.display().to_string()));
        } else if let (Some(b), true) = (batch, t.starts_with("batch_size:")) {
            out.push_str(&format!("{indent}batch_size: {b}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The first `batch_size` in a net prototxt (the TRAIN Data layer comes first in Caffe's files).
pub(crate) fn batch_size(text: &str) -> Option<usize> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("batch_size:").and_then(|v| v.trim().parse().ok()))
}

/// Weight averaging (SparkNet) or per-step gradient averaging (the naive baseline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sync {
    Average,
    Gradients,
}

/// One `sparknet-train` run.
#[derive(Clone, Debug)]
pub(crate) struct RunSpec {
    /// File-name-safe label, also the log's stem.
    pub(crate) name: String,
    pub(crate) solver: PathBuf,
    pub(crate) train_data: PathBuf,
    pub(crate) test_data: PathBuf,
    pub(crate) ranks: usize,
    pub(crate) tau: u64,
    pub(crate) sync: Sync,
    pub(crate) max_iter: Option<u64>,
    pub(crate) time_budget: Option<f64>,
    pub(crate) comm_delay_ms: f64,
    /// Compute threads per rank (`RAYON_NUM_THREADS`).
    pub(crate) threads: usize,
    /// `--target-accuracy`: the run ends at the first test that reaches this.
    pub(crate) target_accuracy: Option<f64>,
    /// `--mean-file`: the mean image for the net's Data layers that subtract one.
    pub(crate) mean_file: Option<PathBuf>,
}

/// What a run printed, and how it ended.
#[derive(Clone, Debug)]
pub(crate) struct RunLog {
    /// Every JSON line, in order.
    pub(crate) lines: Vec<Value>,
    pub(crate) log_file: PathBuf,
    /// The exact command line.
    pub(crate) command: String,
    /// Wall seconds of the whole process (start-up, data binding and net building included).
    pub(crate) process_seconds: f64,
    pub(crate) stopped_at_target: bool,
}

impl RunSpec {
    fn command(&self, bins: &Binaries, log: &Path) -> Command {
        let mut cmd = match &bins.mpi {
            Some(m) => {
                let mut c = Command::new(&m.mpirun);
                if m.open_mpi {
                    c.args(["--oversubscribe", "-x", "RAYON_NUM_THREADS"]);
                } else {
                    c.args(["-genv", "RAYON_NUM_THREADS", &self.threads.to_string()]);
                }
                c.args(["-n", &self.ranks.to_string()]).arg(&bins.train);
                c
            }
            None => {
                let mut c = Command::new(&bins.train);
                c.args(["--workers", &self.ranks.to_string()]);
                c
            }
        };
        // In-process workers share one pool: give it threads for all of them.
        let threads = if bins.mpi.is_some() { self.threads } else { self.threads * self.ranks };
        cmd.env("RAYON_NUM_THREADS", threads.to_string());
        cmd.arg("--solver").arg(&self.solver);
        cmd.arg("--train-data").arg(&self.train_data);
        cmd.arg("--test-data").arg(&self.test_data);
        cmd.args(["--tau", &self.tau.to_string()]);
        cmd.args(["--sync", if self.sync == Sync::Gradients { "gradients" } else { "average" }]);
        if let Some(n) = self.max_iter {
            cmd.args(["--max-iter", &n.to_string()]);
        }
        if let Some(b) = self.time_budget {
            cmd.args(["--time-budget", &format!("{b}")]);
        }
        if self.comm_delay_ms > 0.0 {
            cmd.args(["--comm-delay-ms", &format!("{:.3}", self.comm_delay_ms)]);
        }
        if let Some(t) = self.target_accuracy {
            cmd.args(["--target-accuracy", &format!("{t}")]);
        }
        if let Some(m) = &self.mean_file {
            cmd.arg("--mean-file").arg(m);
        }
        cmd.arg("--log").arg(log);
        cmd
    }
}

/// Renders a command as a shell line (environment first).
pub(crate) fn shell_line(cmd: &Command) -> String {
    let q = |s: &std::ffi::OsStr| {
        let s = s.to_string_lossy();
        if s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:+".contains(c)) {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    };
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), q(v))))
        .collect();
    parts.push(q(cmd.get_program()));
    parts.extend(cmd.get_args().map(q));
    parts.join(" ")
}

/// Runs one configuration, writing `<runs>/<name>.jsonl` (the binary's `--log`) and
/// `<runs>/<name>.stderr.txt`.
pub(crate) fn run(bins: &Binaries, spec: &RunSpec, runs: &Path, cwd: &Path) -> Result<RunLog> {
    std::fs::create_dir_all(runs).with_context(|| format!("creating {}", runs.display()))?;
    let log_file = runs.join(format!("{}.jsonl", spec.name));
    let err_file = runs.join(format!("{}.stderr.txt", spec.name));
    let _ = std::fs::remove_file(&log_file);
    let mut cmd = spec.command(bins, &log_file);
    let command = shell_line(&cmd);
    eprintln!("$ {command}");
    let stderr = std::fs::File::create(&err_file)
        .with_context(|| format!("creating {}", err_file.display()))?;
    cmd.current_dir(cwd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
    let t = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("could not start {command}"))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading sparknet-train's output")?;
        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
        print_progress(spec, &v);
        lines.push(v);
    }
    let status = child.wait().context("waiting for sparknet-train")?;
    let process_seconds = t.elapsed().as_secs_f64();
    // The summary line says whether `--target-accuracy` ended the run.
    let stopped = lines
        .iter()
        .rev()
        .find(|v| v["event"] == "done")
        .is_some_and(|d| d.get("reached_target").and_then(Value::as_bool).unwrap_or(false));
    if !status.success() {
        let tail = std::fs::read_to_string(&err_file).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "run {} failed ({status}): {command}\n{}\n(stderr in {})",
            spec.name,
            tail.join("\n"),
            err_file.display()
        );
    }
    if lines.is_empty() {
        bail!(
            "run {} printed no JSON lines: {command} (stderr in {})",
            spec.name,
            err_file.display()
        );
    }
    // A run stopped by a signal may not have flushed its log file: write what we read.
    let mut f = std::fs::File::create(&log_file)
        .with_context(|| format!("writing {}", log_file.display()))?;
    for l in &lines {
        writeln!(f, "{l}").with_context(|| format!("writing {}", log_file.display()))?;
    }
    Ok(RunLog { lines, log_file, command, process_seconds, stopped_at_target: stopped })
}

fn print_progress(spec: &RunSpec, v: &Value) {
    if let Some(a) = v.get("accuracy").and_then(Value::as_f64) {
        eprintln!(
            "  {}: iter {} accuracy {:.4} at {:.1} s",
            spec.name,
            v.get("iter").and_then(Value::as_u64).unwrap_or(0),
            a,
            v.get("seconds").and_then(Value::as_f64).unwrap_or(0.0)
        );
    }
}

/// One report line of a run, with running totals.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Point {
    pub(crate) round: u64,
    pub(crate) iter: u64,
    pub(crate) accuracy: Option<f64>,
    /// Wall seconds since the loop started (`seconds`).
    pub(crate) wall: f64,
    /// Running sums of `compute`, `allreduce`, `data_wait`, `eval`.
    pub(crate) compute: f64,
    pub(crate) allreduce: f64,
    pub(crate) data_wait: f64,
    pub(crate) eval: f64,
    /// This line's own window (seconds since the previous line).
    pub(crate) d_compute: f64,
    pub(crate) d_allreduce: f64,
    pub(crate) d_data_wait: f64,
    /// Rounds since the previous line.
    pub(crate) d_rounds: u64,
}

impl Point {
    /// Training seconds so far: compute + allreduce + data wait (tests excluded).
    pub(crate) fn train_seconds(&self) -> f64 {
        self.compute + self.allreduce + self.data_wait
    }
}

impl RunLog {
    /// The report lines (train and test events) with running totals.
    pub(crate) fn points(&self) -> Vec<Point> {
        let mut out: Vec<Point> = Vec::new();
        let mut acc = Point::default();
        for v in &self.lines {
            if v.get("event").and_then(Value::as_str) == Some("done") {
                continue;
            }
            let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            let round = v.get("round").and_then(Value::as_u64).unwrap_or(acc.round);
            let p = Point {
                round,
                iter: v.get("iter").and_then(Value::as_u64).unwrap_or(acc.iter),
                accuracy: v.get("accuracy").and_then(Value::as_f64),
                wall: f("seconds"),
                compute: acc.compute + f("compute"),
                allreduce: acc.allreduce + f("allreduce"),
                data_wait: acc.data_wait + f("data_wait"),
                eval: acc.eval + f("eval"),
                d_compute: f("compute"),
                d_allreduce: f("allreduce"),
                d_data_wait: f("data_wait"),
                d_rounds: round.saturating_sub(acc.round),
            };
            acc = p;
            out.push(p);
        }
        out
    }

    /// The final `done` line.
    pub(crate) fn done(&self) -> Option<&Value> {
        self.lines.iter().rev().find(|v| v.get("event").and_then(Value::as_str) == Some("done"))
    }

    /// The first test point at or above `target`.
    pub(crate) fn reached(&self, target: f64) -> Option<Point> {
        self.points().into_iter().find(|p| p.accuracy.is_some_and(|a| a >= target))
    }

    /// The best test accuracy seen.
    pub(crate) fn best_accuracy(&self) -> Option<f64> {
        self.points()
            .iter()
            .filter_map(|p| p.accuracy)
            .fold(None, |m, a| Some(m.map_or(a, |m: f64| m.max(a))))
    }

    /// Seconds of compute per iteration per worker (rank 0's solver steps).
    pub(crate) fn step_seconds(&self) -> Option<f64> {
        let pts = self.points();
        let last = pts.last()?;
        (last.iter > 0).then(|| last.compute / last.iter as f64)
    }

    /// Per-round mean of (compute, allreduce, data wait) in seconds, over rounds that had steps.
    pub(crate) fn per_round(&self) -> (f64, f64, f64) {
        let pts = self.points();
        let rounds: u64 = pts.iter().map(|p| p.d_rounds).sum();
        if rounds == 0 {
            return (0.0, 0.0, 0.0);
        }
        let n = rounds as f64;
        let last = pts.last().copied().unwrap_or_default();
        (last.compute / n, last.allreduce / n, last.data_wait / n)
    }
}

/// Reads a JSON-lines file back (every non-empty line must parse).
pub(crate) fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solver_rewrite_replaces_top_level_keys_once() {
        let text =
            "net: \"a.prototxt\"\ntest_iter: 100\n# comment\nbase_lr: 0.01\nmax_iter: 10000\n";
        let out =
            rewrite_solver(text, &[("net", "\"/x/b.prototxt\"".into()), ("max_iter", "5".into())]);
        assert!(!out.contains("a.prototxt"));
        assert_eq!(out.matches("max_iter").count(), 1);
        assert!(out.contains("net: \"/x/b.prototxt\"") && out.contains("base_lr: 0.01"));
    }

    #[test]
    fn net_rewrite_sets_mean_and_batch() {
        let text = "layer {\n  transform_param {\n    mean_file: \"x.binaryproto\"\n  }\n  data_param {\n    batch_size: 256\n  }\n}\n";
        assert_eq!(batch_size(text), Some(256));
        let out = rewrite_net(text, Some(Path::new("/m/mean.binaryproto")), Some(8));
        assert!(out.contains("    mean_file: \"/m/mean.binaryproto\"\n"), "{out}");
        assert!(out.contains("    batch_size: 8\n") && !out.contains("256"));
    }

    #[test]
    fn points_accumulate_the_windows() {
        let lines = [
            r#"{"event":"train","round":2,"iter":20,"compute":1.0,"allreduce":0.5,"data_wait":0.1,"eval":0,"seconds":1.7}"#,
            r#"{"event":"test","round":4,"iter":40,"compute":1.0,"allreduce":0.5,"data_wait":0.1,"eval":0.3,"seconds":3.6,"accuracy":0.9}"#,
            r#"{"event":"done","iter":40,"test_accuracy":0.9}"#,
        ];
        let spec = RunSpec {
            name: "t".into(),
            solver: PathBuf::new(),
            train_data: PathBuf::new(),
            test_data: PathBuf::new(),
            ranks: 2,
            tau: 10,
            sync: Sync::Average,
            max_iter: None,
            time_budget: None,
            comm_delay_ms: 0.0,
            threads: 1,
            target_accuracy: None,
            mean_file: None,
        };
        let _ = spec;
        let log = RunLog {
            lines: lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect(),
            log_file: PathBuf::new(),
            command: String::new(),
            process_seconds: 4.0,
            stopped_at_target: false,
        };
        let p = log.reached(0.85).unwrap();
        assert_eq!((p.round, p.iter), (4, 40));
        assert!((p.train_seconds() - 3.2).abs() < 1e-9);
        assert!((log.step_seconds().unwrap() - 0.05).abs() < 1e-12);
        let (c, a, d) = log.per_round();
        assert!((c - 0.5).abs() < 1e-12 && (a - 0.25).abs() < 1e-12 && (d - 0.05).abs() < 1e-12);
        assert_eq!(log.best_accuracy(), Some(0.9));
        assert!(log.done().is_some());
    }
}
