//! `cargo xtask bench-scaling`: the paper's scaling experiments on data that trains here.
//!
//! For each net (LeNet on MNIST to 98%, CIFAR-10 quick to 60%) and each configuration (K
//! workers, tau local steps; K = 1 is the plain solver; `--sync gradients` beside it), one
//! `sparknet-train` run that stops at the first test reaching the target (SIGTERM, so the run
//! ends after the current round), at the per-run time budget, or at `max_iter`. From the
//! single-worker step time C and the iteration counts, SparkNet's cost model gives the
//! speedup over one worker as a function of the communication cost S:
//!
//! - naive data parallelism, the batch split over K workers: `N (C/K + S)` with N the
//!   single-worker iterations,
//! - SparkNet: `M (tau C + S)` with M the averaging rounds to the target,
//!
//! for S from 0 to 100 C; a few points are checked directly by runs with `--comm-delay-ms S`.
//! Every worker gets `--threads` compute threads (default 1, so a worker is one core as a
//! machine is in the paper's model; with K above the core count, wall times include waiting
//! for a core, iteration counts do not).
//!
//! The report (Markdown, JSON lines of every run, `summary.json`, SVG and PNG figures) goes
//! to `--out` (default `target/bench-scaling`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::flags::{Flags, absolute};
use crate::plot::{Figure, LineChart, Mark, Series, StackedBars, save};
use crate::report::{self, secs};
use crate::train::{self, Binaries, RunLog, RunSpec, Sync};

pub(crate) const USAGE: &str = "\
usage: cargo xtask bench-scaling [flags]

Iterations and time to a target accuracy for K workers and tau local steps (SparkNet), beside
per-step gradient sync, and the paper's speedup-vs-communication-cost figure from the measured
step time, with points checked by --comm-delay-ms runs.

  --nets lenet,cifar10_quick   nets (default lenet: LeNet/MNIST to 98%; cifar10_quick: CIFAR-10
                               quick to 60%, about 1.5-2 min of compute per run on 2 idle cores)
  --ranks 1,2,4                K values for every net (default: lenet 1,2; cifar10_quick 1,2)
  --tau 1,10,50                tau values for K > 1 (default: lenet 1,10,50; cifar10_quick 10)
  --naive-ranks 2,4            K values of the --sync gradients runs (default: lenet 2,
                               cifar10_quick 2; with --ranks: its K > 1)
  --budget SECONDS             wall-time budget per run (default: lenet 240, cifar10_quick 400)
  --max-iter N                 iteration cap per worker (default: lenet 10000, cifar10_quick 5000)
  --test-interval N            iterations between tests (default: lenet 100, cifar10_quick 200)
  --target ACC                 target test accuracy for every net (default 0.98 / 0.60)
  --threads T                  compute threads per worker (default 1)
  --check K,TAU                the configuration checked with delays (default 2,10)
  --check-delays 10,40         delays S of the checks, in multiples of C (default 10,40; none: 0)
  --full                       the issue's whole grid: K 1,2,4,8, tau 1,5,10,50,100, both nets,
                               naive K 2,4,8, budget 3600 s per run (hours on two cores)
  --smoke                      seconds-long CI configuration: synthetic digits, debug binaries
  --debug                      use debug binaries (default: release; --release with --smoke)
  --out DIR                    report directory (default target/bench-scaling)
";

/// A net of the experiment and how it is judged.
#[derive(Clone, Debug)]
struct NetCase {
    key: &'static str,
    title: &'static str,
    solver: PathBuf,
    net: PathBuf,
    mean: Option<PathBuf>,
    target: f64,
    ranks: Vec<usize>,
    taus: Vec<u64>,
    naive: Vec<usize>,
    budget: f64,
    max_iter: u64,
    test_interval: u64,
    train: PathBuf,
    test: PathBuf,
    data_note: String,
}

/// Everything the command was asked for.
struct Options {
    nets: Vec<String>,
    ranks: Option<Vec<usize>>,
    taus: Option<Vec<u64>>,
    naive: Option<Vec<usize>>,
    budget: Option<f64>,
    max_iter: Option<u64>,
    test_interval: Option<u64>,
    target: Option<f64>,
    threads: usize,
    check: (usize, u64),
    check_delays: Vec<f64>,
    full: bool,
    smoke: bool,
    debug: bool,
    out: PathBuf,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut f = Flags::new("bench-scaling", args);
    if f.switch("-h") || f.switch("--help") {
        print!("{USAGE}");
        std::process::exit(0);
    }
    let full = f.switch("--full");
    let smoke = f.switch("--smoke");
    let release = f.switch("--release");
    let check = match f.list::<u64>("--check")? {
        None if smoke => (2, 5),
        None => (2, 10),
        Some(v) if v.len() == 2 && v[0] >= 2 && v[1] >= 1 => (v[0] as usize, v[1]),
        Some(v) => bail!("--check {v:?}: expected K,TAU with K >= 2"),
    };
    let o = Options {
        nets: f.list::<String>("--nets")?.unwrap_or_else(|| {
            if full { vec!["lenet".into(), "cifar10_quick".into()] } else { vec!["lenet".into()] }
        }),
        ranks: f.list("--ranks")?,
        taus: f.list("--tau")?,
        naive: f.list("--naive-ranks")?,
        budget: f.parsed("--budget")?,
        max_iter: f.parsed("--max-iter")?,
        test_interval: f.parsed("--test-interval")?,
        target: f.parsed("--target")?,
        threads: f.parsed("--threads")?.unwrap_or(1),
        check,
        check_delays: f
            .list::<f64>("--check-delays")?
            .unwrap_or_else(|| if smoke { vec![20.0] } else { vec![10.0, 40.0] }),
        full,
        smoke,
        debug: !release && (f.switch("--debug") || smoke),
        out: match f.path("--out")? {
            Some(p) => absolute(&p)?,
            None => train::target_dir().join(if smoke {
                "bench-scaling-smoke"
            } else {
                "bench-scaling"
            }),
        },
    };
    f.finish(USAGE)?;
    if o.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if o.ranks.iter().flatten().chain(o.naive.iter().flatten()).any(|&k| k == 0)
        || o.taus.iter().flatten().any(|&t| t == 0)
    {
        bail!("--ranks, --naive-ranks and --tau take positive integers");
    }
    if let Some(t) = o.target.filter(|t| !(0.0..=1.0).contains(t)) {
        bail!("--target {t}: expected an accuracy between 0 and 1");
    }
    Ok(o)
}

/// `cargo xtask bench-scaling`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    let bins = train::build(!opts.debug)?;
    let dir = run_with(&opts, &bins)?;
    if opts.smoke {
        report::check(&dir, &figure_names(&opts))?;
    }
    Ok(())
}

/// The smoke configuration, for CI, with binaries already built; returns the report directory.
pub(crate) fn smoke(bins: &Binaries, out: &Path) -> Result<PathBuf> {
    let args = vec!["--smoke".to_owned(), "--out".to_owned(), out.display().to_string()];
    let opts = parse(&args)?;
    let dir = run_with(&opts, bins)?;
    report::check(&dir, &figure_names(&opts))?;
    Ok(dir)
}

/// The figures a report of these options holds (for the check).
fn figure_names(opts: &Options) -> Vec<&'static str> {
    let mut v = Vec::new();
    for n in &opts.nets {
        if n == "lenet" {
            v.extend([
                "lenet-accuracy-vs-iterations",
                "lenet-accuracy-vs-time",
                "lenet-images-per-second",
                "lenet-breakdown",
                "lenet-speedup-vs-S-K2",
            ]);
        }
    }
    v
}

fn assets() -> PathBuf {
    let raw = std::env::var_os("SPARKNET_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| "../shared/assets".into());
    if raw.is_absolute() { raw } else { crate::project_root().join(raw) }
}

/// Converts (or reuses) the net's datasets; returns (train, test, what was used).
fn prepare_data(
    bins: &Binaries,
    key: &str,
    smoke: bool,
) -> Result<Option<(PathBuf, PathBuf, String)>> {
    let cache = train::target_dir().join("xtask-data");
    let a = assets();
    let os = |p: &Path| p.as_os_str().to_owned();
    match key {
        "lenet" if smoke => {
            let (tr, te) =
                (cache.join("synthetic-digits-512"), cache.join("synthetic-digits-256-test"));
            train::convert_cached(
                bins,
                &tr,
                &[
                    "convert".as_ref(),
                    "synthetic-digits".as_ref(),
                    "--count".as_ref(),
                    "512".as_ref(),
                ],
            )?;
            train::convert_cached(
                bins,
                &te,
                &[
                    "convert".as_ref(),
                    "synthetic-digits".as_ref(),
                    "--count".as_ref(),
                    "256".as_ref(),
                    "--seed".as_ref(),
                    "7".as_ref(),
                ],
            )?;
            Ok(Some((
                tr,
                te,
                "sparknet-data's synthetic digits (512 train, 256 test; smoke configuration)"
                    .into(),
            )))
        }
        "lenet" => {
            let m = a.join("data/mnist");
            let f = |n: &str| m.join(n);
            if !f("train-images-idx3-ubyte.gz").is_file() {
                eprintln!("MNIST not found under {}: LeNet runs on synthetic digits", m.display());
                let (tr, te) = (
                    cache.join("synthetic-digits-60000"),
                    cache.join("synthetic-digits-10000-test"),
                );
                train::convert_cached(
                    bins,
                    &tr,
                    &[
                        "convert".as_ref(),
                        "synthetic-digits".as_ref(),
                        "--count".as_ref(),
                        "60000".as_ref(),
                    ],
                )?;
                train::convert_cached(
                    bins,
                    &te,
                    &[
                        "convert".as_ref(),
                        "synthetic-digits".as_ref(),
                        "--count".as_ref(),
                        "10000".as_ref(),
                        "--seed".as_ref(),
                        "7".as_ref(),
                    ],
                )?;
                return Ok(Some((
                    tr,
                    te,
                    format!("synthetic digits: MNIST was not found under {}", m.display()),
                )));
            }
            let (tr, te) = (cache.join("mnist-train"), cache.join("mnist-test"));
            let (ti, tl) =
                (os(&f("train-images-idx3-ubyte.gz")), os(&f("train-labels-idx1-ubyte.gz")));
            train::convert_cached(
                bins,
                &tr,
                &[
                    "convert".as_ref(),
                    "mnist".as_ref(),
                    "--images".as_ref(),
                    &ti,
                    "--labels".as_ref(),
                    &tl,
                ],
            )?;
            let (vi, vl) =
                (os(&f("t10k-images-idx3-ubyte.gz")), os(&f("t10k-labels-idx1-ubyte.gz")));
            train::convert_cached(
                bins,
                &te,
                &[
                    "convert".as_ref(),
                    "mnist".as_ref(),
                    "--images".as_ref(),
                    &vi,
                    "--labels".as_ref(),
                    &vl,
                ],
            )?;
            Ok(Some((tr, te, format!("MNIST (60,000 train, 10,000 test) from {}", m.display()))))
        }
        "cifar10_quick" => {
            let c = a.join("data/cifar10");
            if !c.join("data_batch_1.bin.gz").is_file() && !c.join("data_batch_1.bin").is_file() {
                eprintln!("SKIPPED cifar10_quick: CIFAR-10 not found under {}", c.display());
                return Ok(None);
            }
            let (tr, te) = (cache.join("cifar10-train"), cache.join("cifar10-test"));
            let ci = os(&c);
            train::convert_cached(
                bins,
                &tr,
                &[
                    "convert".as_ref(),
                    "cifar10".as_ref(),
                    "--input".as_ref(),
                    &ci,
                    "--split".as_ref(),
                    "train".as_ref(),
                ],
            )?;
            train::convert_cached(
                bins,
                &te,
                &[
                    "convert".as_ref(),
                    "cifar10".as_ref(),
                    "--input".as_ref(),
                    &ci,
                    "--split".as_ref(),
                    "test".as_ref(),
                ],
            )?;
            Ok(Some((tr, te, format!("CIFAR-10 (50,000 train, 10,000 test) from {}", c.display()))))
        }
        other => bail!("unknown net `{other}` (known: lenet, cifar10_quick)"),
    }
}

fn case(bins: &Binaries, key: &str, o: &Options) -> Result<Option<NetCase>> {
    let a = assets();
    let Some((train, test, data_note)) = prepare_data(bins, key, o.smoke)? else { return Ok(None) };
    let (full_ranks, full_taus, full_naive) =
        (vec![1, 2, 4, 8], vec![1, 5, 10, 50, 100], vec![2, 4, 8]);
    let mut c = match key {
        "lenet" => NetCase {
            key: "lenet",
            title: "LeNet on MNIST",
            solver: a.join("models/lenet_mnist/lenet_solver.prototxt"),
            net: a.join("models/lenet_mnist/lenet_train_test.prototxt"),
            mean: None,
            target: 0.98,
            ranks: vec![1, 2],
            taus: vec![1, 10, 50],
            naive: vec![2],
            budget: 240.0,
            max_iter: 10_000,
            test_interval: 100,
            train,
            test,
            data_note,
        },
        _ => NetCase {
            key: "cifar10_quick",
            title: "CIFAR-10 quick",
            solver: a.join("models/cifar10_quick/cifar10_quick_solver.prototxt"),
            net: a.join("models/cifar10_quick/cifar10_quick_train_test.prototxt"),
            mean: Some(a.join("models/cifar10_quick/mean.binaryproto")),
            target: 0.60,
            ranks: vec![1, 2],
            taus: vec![10],
            naive: vec![2],
            budget: 400.0,
            max_iter: 5_000,
            test_interval: 200,
            train,
            test,
            data_note,
        },
    };
    if o.full {
        c.ranks = full_ranks;
        c.taus = full_taus;
        c.naive = full_naive;
        c.budget = 3600.0;
    }
    if o.smoke {
        c.title = "LeNet on synthetic digits (smoke)";
        c.target = 0.8;
        c.ranks = vec![1, 2];
        c.taus = vec![5];
        c.naive = vec![2];
        c.budget = 60.0;
        c.max_iter = 60;
        c.test_interval = 10;
    }
    if let Some(v) = &o.ranks {
        c.ranks.clone_from(v);
    }
    if let Some(v) = &o.taus {
        c.taus.clone_from(v);
    }
    c.naive = match &o.naive {
        Some(v) => v.clone(),
        None if o.ranks.is_some() => c.ranks.iter().copied().filter(|&k| k > 1).collect(),
        None => c.naive,
    };
    if let Some(v) = o.budget {
        c.budget = v;
    }
    if let Some(v) = o.max_iter {
        c.max_iter = v;
    }
    if let Some(v) = o.test_interval {
        c.test_interval = v.max(1);
    }
    if let Some(v) = o.target {
        c.target = v;
    }
    for p in [&c.solver, &c.net] {
        if !p.is_file() {
            bail!("{} not found (set SPARKNET_ASSETS to the shared assets)", p.display());
        }
    }
    Ok(Some(c))
}

/// Writes the solver and net copies bound to this experiment; returns the solver copy.
fn bind(c: &NetCase, config: &Path, snapshots: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(config).with_context(|| format!("creating {}", config.display()))?;
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    // The net is used as it is (its mean file is given with --mean-file).
    let net =
        std::path::absolute(&c.net).with_context(|| format!("resolving {}", c.net.display()))?;
    let solver = config.join(format!("{}_solver.prototxt", c.key));
    let text = train::rewrite_solver(
        &read(&c.solver)?,
        &[
            ("net", format!("{:?}", net.display().to_string())),
            ("test_interval", c.test_interval.to_string()),
            ("test_initialization", "false".into()),
            ("display", c.test_interval.to_string()),
            ("max_iter", c.max_iter.to_string()),
            ("snapshot", "0".into()),
            ("snapshot_prefix", format!("{:?}", snapshots.join(c.key).display().to_string())),
            ("snapshot_after_train", "false".into()),
            ("solver_mode", "CPU".into()),
        ],
    );
    std::fs::write(&solver, text).with_context(|| format!("writing {}", solver.display()))?;
    Ok(solver)
}

fn label(ranks: usize, tau: u64, sync: Sync, delay_c: f64) -> String {
    let mut s = match (ranks, sync) {
        (1, _) => "K=1".to_owned(),
        (k, Sync::Gradients) => format!("K={k} gradient sync"),
        (k, Sync::Average) => format!("K={k} tau={tau}"),
    };
    if delay_c > 0.0 {
        let _ = write!(s, " S={delay_c}C");
    }
    s
}

fn file_name(net: &str, ranks: usize, tau: u64, sync: Sync, delay_c: f64) -> String {
    let mut s = match (ranks, sync) {
        (1, _) => format!("{net}-k1"),
        (k, Sync::Gradients) => format!("{net}-k{k}-gradients"),
        (k, Sync::Average) => format!("{net}-k{k}-tau{tau}"),
    };
    if delay_c > 0.0 {
        let _ = write!(s, "-delay{delay_c}C");
    }
    s
}

/// A finished run with its place in the grid.
struct Done {
    label: String,
    ranks: usize,
    tau: u64,
    sync: Sync,
    delay_c: f64,
    delay_ms: f64,
    log: RunLog,
}

/// What one net's runs measured.
struct NetResult {
    case: NetCase,
    batch: usize,
    runs: Vec<Done>,
}

fn run_with(o: &Options, bins: &Binaries) -> Result<PathBuf> {
    let load_at_start = report::load_average();
    report::git_commit(); // fixed now: the commit the runs start from
    let started = report::now_utc();
    let out = o.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let runs_dir = out.join("runs");
    if runs_dir.exists() {
        std::fs::remove_dir_all(&runs_dir)
            .with_context(|| format!("clearing {}", runs_dir.display()))?;
    }
    let snapshots = train::target_dir().join("xtask-snapshots");
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for key in &o.nets {
        let Some(c) = case(bins, key, o)? else {
            skipped.push(key.clone());
            continue;
        };
        let solver = bind(&c, &out.join("config"), &snapshots)?;
        let batch =
            train::batch_size(&std::fs::read_to_string(&c.net).unwrap_or_default()).unwrap_or(0);
        let spec = |ranks: usize, tau: u64, sync: Sync, delay_ms: f64, name: String| RunSpec {
            name,
            solver: solver.clone(),
            train_data: c.train.clone(),
            test_data: c.test.clone(),
            ranks,
            tau,
            sync,
            max_iter: None,
            time_budget: Some(c.budget),
            comm_delay_ms: delay_ms,
            threads: o.threads,
            target_accuracy: Some(c.target),
            mean_file: c.mean.clone(),
        };
        let mut done = Vec::new();
        let mut grid: Vec<(usize, u64, Sync)> = Vec::new();
        for &k in &c.ranks {
            if k == 1 {
                grid.push((1, 1, Sync::Average));
            } else {
                grid.extend(c.taus.iter().map(|&t| (k, t, Sync::Average)));
            }
        }
        grid.extend(c.naive.iter().filter(|&&k| k > 1).map(|&k| (k, 1, Sync::Gradients)));
        // The reference (K = 1) first: its step time sizes the delays of the checks.
        if !grid.contains(&(1, 1, Sync::Average)) {
            grid.insert(0, (1, 1, Sync::Average));
        }
        grid.sort_by_key(|g| g.0 != 1);
        for (k, tau, sync) in grid {
            let log = train::run(
                bins,
                &spec(k, tau, sync, 0.0, file_name(c.key, k, tau, sync, 0.0)),
                &runs_dir,
                &crate::project_root(),
            )?;
            done.push(Done {
                label: label(k, tau, sync, 0.0),
                ranks: k,
                tau,
                sync,
                delay_c: 0.0,
                delay_ms: 0.0,
                log,
            });
        }
        // Checks of the cost model with a real communication delay (first net only: they cost
        // M * S seconds each).
        let reference_c = done.first().and_then(|d| d.log.step_seconds());
        if key == &o.nets[0]
            && let Some(step) = reference_c
        {
            let (k, tau) = o.check;
            // The delay adds about M * S to the S = 0 run's time: the budget grows by as much.
            let rounds = done
                .iter()
                .find(|d| d.ranks == k && d.tau == tau && d.sync == Sync::Average)
                .and_then(|d| d.log.reached(c.target))
                .map_or(0.0, |p| p.round as f64);
            for &d in o.check_delays.iter().filter(|&&d| d > 0.0) {
                let ms = d * step * 1000.0;
                let name = file_name(c.key, k, tau, Sync::Average, d);
                let mut spec = spec(k, tau, Sync::Average, ms, name);
                spec.time_budget = Some(c.budget + 1.5 * rounds * ms / 1000.0);
                let log = train::run(bins, &spec, &runs_dir, &crate::project_root())?;
                done.push(Done {
                    label: label(k, tau, Sync::Average, d),
                    ranks: k,
                    tau,
                    sync: Sync::Average,
                    delay_c: d,
                    delay_ms: ms,
                    log,
                });
            }
        }
        results.push(NetResult { case: c, batch, runs: done });
    }
    let _ = std::fs::remove_dir_all(&snapshots);
    if results.is_empty() {
        bail!("no net could run (skipped: {})", skipped.join(", "));
    }
    write_report(o, bins, &out, &results, &skipped, &load_at_start, &started)?;
    eprintln!("\nbench-scaling report: {}", out.join("report.md").display());
    Ok(out)
}

/// One model curve: (label, K, tau or 0 for naive, speedup points (S/C, speedup)).
type Curve = (String, usize, u64, Vec<(f64, f64)>);

/// The cost model of one net: speedup curves over S/C in 0..=100.
struct Model {
    c: f64,
    n1: u64,
    curves: Vec<Curve>,
}

fn model(r: &NetResult) -> Option<Model> {
    let base = r.runs.iter().find(|d| d.ranks == 1)?;
    let c = base.log.step_seconds()?;
    let n1 = base.log.reached(r.case.target)?.iter;
    let s_grid: Vec<f64> = (0..=100).map(f64::from).collect();
    let serial = n1 as f64 * c;
    let mut curves = Vec::new();
    let mut ks: Vec<usize> = r.runs.iter().map(|d| d.ranks).filter(|&k| k > 1).collect();
    ks.sort_unstable();
    ks.dedup();
    for &k in &ks {
        let pts =
            s_grid.iter().map(|&s| (s, serial / (n1 as f64 * (c / k as f64 + s * c)))).collect();
        curves.push((format!("naive K={k}: N1 (C/K + S)"), k, 0, pts));
        for d in
            r.runs.iter().filter(|d| d.ranks == k && d.sync == Sync::Average && d.delay_c == 0.0)
        {
            let Some(p) = d.log.reached(r.case.target) else { continue };
            let m = p.round as f64;
            let pts =
                s_grid.iter().map(|&s| (s, serial / (m * (d.tau as f64 * c + s * c)))).collect();
            curves.push((
                format!("SparkNet K={k} tau={}: M (tau C + S), M={}", d.tau, p.round),
                k,
                d.tau,
                pts,
            ));
        }
    }
    Some(Model { c, n1, curves })
}

fn line_figures(r: &NetResult) -> Vec<(String, Figure)> {
    let key = r.case.key;
    let runs: Vec<&Done> = r.runs.iter().collect();
    let series = |f: &dyn Fn(&crate::train::Point) -> f64| {
        crate::plot::accuracy_series(runs.iter().map(|d| (d.label.as_str(), &d.log)), f)
    };
    let mut figs = vec![
        (
            format!("{key}-accuracy-vs-iterations"),
            Figure::Lines(LineChart {
                title: format!("{}: test accuracy against iterations per worker", r.case.title),
                x_label: "iterations per worker".into(),
                y_label: "test accuracy".into(),
                series: series(&|p| p.iter as f64),
                zoom_y: true,
            }),
        ),
        (
            format!("{key}-accuracy-vs-time"),
            Figure::Lines(LineChart {
                title: format!("{}: test accuracy against wall time", r.case.title),
                x_label: "wall seconds (tests included)".into(),
                y_label: "test accuracy".into(),
                series: series(&|p| p.wall),
                zoom_y: true,
            }),
        ),
    ];
    // Images per second against ranks: one line per tau, one for gradient sync.
    let mut taus: Vec<(Sync, u64)> = r
        .runs
        .iter()
        .filter(|d| d.delay_c == 0.0 && d.ranks > 1)
        .map(|d| (d.sync, d.tau))
        .collect();
    taus.sort_by_key(|t| (t.0 == Sync::Gradients, t.1));
    taus.dedup();
    let k1 = r.runs.iter().find(|d| d.ranks == 1);
    let ips = |d: &Done| {
        let last = d.log.points().last().copied().unwrap_or_default();
        (last.train_seconds() > 0.0)
            .then(|| (d.ranks * r.batch) as f64 * last.iter as f64 / last.train_seconds())
    };
    let mut s_ips = Vec::new();
    for (i, (sync, tau)) in taus.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> =
            k1.and_then(&ips).map(|v| vec![(1.0, v)]).unwrap_or_default();
        for d in r
            .runs
            .iter()
            .filter(|d| d.delay_c == 0.0 && d.ranks > 1 && d.sync == *sync && d.tau == *tau)
        {
            if let Some(v) = ips(d) {
                pts.push((d.ranks as f64, v));
            }
        }
        let name = if *sync == Sync::Gradients {
            "gradient sync".to_owned()
        } else {
            format!("tau={tau}")
        };
        s_ips.push(Series { name, points: pts, mark: Mark::Line, color: i });
    }
    figs.push((
        format!("{key}-images-per-second"),
        Figure::Lines(LineChart {
            title: format!("{}: training images/s (all workers) against ranks", r.case.title),
            x_label: "ranks K".into(),
            y_label: "images / s (tests excluded)".into(),
            series: s_ips,
            zoom_y: false,
        }),
    ));
    let (mut comp, mut comm, mut wait) = (Vec::new(), Vec::new(), Vec::new());
    for d in &runs {
        let (c, a, w) = d.log.per_round();
        comp.push(c);
        comm.push(a);
        wait.push(w);
    }
    figs.push((
        format!("{key}-breakdown"),
        Figure::Bars(StackedBars {
            title: format!("{}: seconds per round (rank 0)", r.case.title),
            y_label: "seconds per round".into(),
            categories: runs.iter().map(|d| d.label.replace(" gradient sync", " grad")).collect(),
            parts: vec![
                ("compute".into(), comp),
                ("allreduce (incl. delay)".into(), comm),
                ("data wait".into(), wait),
            ],
        }),
    ));
    figs
}

fn speedup_figures(r: &NetResult, m: &Model) -> Vec<(String, Figure)> {
    let mut ks: Vec<usize> = m.curves.iter().map(|c| c.1).collect();
    ks.dedup();
    let serial = m.n1 as f64 * m.c;
    ks.into_iter()
        .map(|k| {
            let mut series: Vec<Series> = m
                .curves
                .iter()
                .filter(|c| c.1 == k)
                .enumerate()
                .map(|(i, c)| Series {
                    name: c.0.clone(),
                    points: c.3.clone(),
                    mark: Mark::Line,
                    color: i,
                })
                .collect();
            for (j, d) in r.runs.iter().filter(|d| d.ranks == k && d.delay_c > 0.0).enumerate() {
                if let Some(p) = d.log.reached(r.case.target) {
                    let color = series
                        .iter()
                        .position(|s| s.name.contains(&format!("tau={}:", d.tau)))
                        .unwrap_or(j);
                    series.push(Series {
                        name: format!(
                            "measured: tau={} with --comm-delay-ms {:.0} (S={}C)",
                            d.tau, d.delay_ms, d.delay_c
                        ),
                        points: vec![(d.delay_c, serial / p.train_seconds())],
                        mark: Mark::Points,
                        color,
                    });
                }
            }
            (
                format!("{}-speedup-vs-S-K{k}", r.case.key),
                Figure::Lines(LineChart {
                    title: format!(
                        "{}: speedup over one worker, K={k} (C = {:.1} ms)",
                        r.case.title,
                        m.c * 1000.0
                    ),
                    x_label: "communication cost per round S, in units of the step time C".into(),
                    y_label: "speedup over one worker".into(),
                    series,
                    zoom_y: false,
                }),
            )
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    o: &Options,
    bins: &Binaries,
    out: &Path,
    results: &[NetResult],
    skipped: &[String],
    load_at_start: &str,
    started: &str,
) -> Result<()> {
    let mut md = String::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invoked = if args.first().is_some_and(|a| a == "bench-scaling") {
        format!("cargo xtask {}", args.join(" "))
    } else {
        format!("cargo xtask bench-scaling {}", if o.smoke { "--smoke" } else { "" })
    };
    let _ = writeln!(
        md,
        "# bench-scaling: iterations and time to a target accuracy, and the speedup model\n"
    );
    let _ = writeln!(
        md,
        "Made by `{}` (started {started}, finished {}).\n",
        invoked.trim(),
        report::now_utc()
    );
    let _ = writeln!(
        md,
        "Each run is one `sparknet-train` process{}; it stops at the first test reaching the target (SIGTERM from \
         xtask, so the run ends after the current round), at its time budget (`--time-budget`) or at `max_iter`. \
         Iterations are per worker; K = 1 is the plain solver. Every worker has {} compute thread(s) \
         (`RAYON_NUM_THREADS`). **This machine was shared with other jobs while the runs were made** (load averages \
         below): wall times are noisy and runs with more ranks than cores wait for a core; iteration counts do not \
         depend on the load.\n",
        if bins.mpi.is_some() {
            " under `mpirun --oversubscribe -n K`"
        } else {
            " with `--workers K` in-process workers"
        },
        o.threads
    );
    md.push_str(&report::environment(bins, load_at_start));
    let mut summary = Vec::new();
    for r in results {
        let c = &r.case;
        let _ = writeln!(md, "\n## {}\n", c.title);
        let _ = writeln!(md, "- data: {}", c.data_note);
        let _ = writeln!(
            md,
            "- recipe: `{}` (Caffe's solver and net; batch {} per worker) with the data layers bound to the \
             converted shards; copies as run: `config/{}_solver.prototxt`, `config/{}_train_test.prototxt`",
            c.solver.display(),
            r.batch,
            c.key,
            c.key
        );
        let _ = writeln!(
            md,
            "- stopping rule: test accuracy >= {:.2} (tested every {} iterations, rounded to round ends), budget {} s per run, max_iter {}\n",
            c.target, c.test_interval, c.budget, c.max_iter
        );
        let _ = writeln!(
            md,
            "| run | K | tau | sync | iterations to target | rounds | train s to target | wall s to target | best accuracy | images/s | step ms (rank 0) | per round: compute / allreduce / data wait s | log |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let mut runs_json = Vec::new();
        for d in &r.runs {
            let reached = d.log.reached(c.target);
            let last = d.log.points().last().copied().unwrap_or_default();
            let ips = (last.train_seconds() > 0.0)
                .then(|| (d.ranks * r.batch) as f64 * last.iter as f64 / last.train_seconds());
            let (pc, pa, pw) = d.log.per_round();
            let log_rel =
                d.log.log_file.strip_prefix(out).unwrap_or(&d.log.log_file).display().to_string();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | [{}]({}) |",
                d.label,
                d.ranks,
                if d.sync == Sync::Gradients || d.ranks == 1 {
                    "-".to_owned()
                } else {
                    d.tau.to_string()
                },
                if d.sync == Sync::Gradients { "gradients" } else { "average" },
                reached
                    .map(|p| p.iter.to_string())
                    .unwrap_or_else(|| format!("not reached ({} done)", last.iter)),
                reached.map(|p| p.round.to_string()).unwrap_or_else(|| "-".into()),
                reached.map(|p| secs(p.train_seconds())).unwrap_or_else(|| "-".into()),
                reached.map(|p| secs(p.wall)).unwrap_or_else(|| "-".into()),
                d.log.best_accuracy().map(|a| format!("{a:.4}")).unwrap_or_else(|| "-".into()),
                ips.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into()),
                d.log
                    .step_seconds()
                    .map(|s| format!("{:.1}", s * 1000.0))
                    .unwrap_or_else(|| "-".into()),
                secs(pc),
                secs(pa),
                secs(pw),
                log_rel,
                log_rel
            );
            runs_json.push(json!({
                "label": d.label, "ranks": d.ranks, "tau": d.tau,
                "sync": if d.sync == Sync::Gradients { "gradients" } else { "average" },
                "comm_delay_ms": d.delay_ms, "delay_in_c": d.delay_c,
                "reached": reached.is_some(),
                "iter_to_target": reached.map(|p| p.iter), "rounds_to_target": reached.map(|p| p.round),
                "train_seconds_to_target": reached.map(|p| p.train_seconds()), "wall_seconds_to_target": reached.map(|p| p.wall),
                "best_accuracy": d.log.best_accuracy(), "images_per_second": ips, "step_seconds": d.log.step_seconds(),
                "per_round": {"compute": pc, "allreduce": pa, "data_wait": pw},
                "process_seconds": d.log.process_seconds, "stopped_at_target": d.log.stopped_at_target,
                "command": d.log.command, "log": log_rel,
            }));
        }
        let mut figs = line_figures(r);
        let m = model(r);
        let mut model_json = serde_json::Value::Null;
        match &m {
            Some(m) => {
                let _ = writeln!(
                    md,
                    "\n### Speedup against communication cost\n\nFrom this run's single-worker step time C = {:.2} ms \
                     (compute per iteration of the K = 1 run) and N1 = {} iterations to the target: the paper's cost \
                     model gives the time to the target as `N1 (C/K + S)` for naive data parallelism (the batch split \
                     over K workers, so the serial iteration count) and `M (tau C + S)` for SparkNet (M rounds to the \
                     target, measured above at S = 0), and the speedup as `N1 C` divided by that, for S from 0 to 100 C. \
                     The gradient-sync runs above keep each worker's batch (K times the batch in all), so their \
                     iteration counts are not N1; they are measured beside the model, not part of it. The model \
                     leaves out the real allreduce, which the runs include.\n",
                    m.c * 1000.0,
                    m.n1
                );
                let multi: Vec<f64> = r
                    .runs
                    .iter()
                    .filter(|d| d.ranks > 1)
                    .filter_map(|d| d.log.step_seconds())
                    .collect();
                if let Some(max) = multi.iter().copied().reduce(f64::max)
                    && max > 1.25 * m.c
                {
                    let min = multi.iter().copied().fold(max, f64::min);
                    let _ = writeln!(
                        md,
                        "Note: a worker's step took {:.1}-{:.1} ms in the K > 1 runs against C = {:.1} ms alone:                          the ranks did not each have a free core (other jobs, or more ranks than cores). The model                          with C assumes they do; the column with each run's own step time shows the time model                          apart from that.\n",
                        min * 1000.0,
                        max * 1000.0,
                        m.c * 1000.0
                    );
                }
                let checks: Vec<&Done> = r.runs.iter().filter(|d| d.delay_c > 0.0).collect();
                if !checks.is_empty() {
                    let _ = writeln!(
                        md,
                        "Checked directly: the configuration run again with `--comm-delay-ms S` added to every round.\n"
                    );
                    let _ = writeln!(
                        md,
                        "| run | S (ms) | rounds to target | measured train s | model `M (tau C + S)`, M and C of the S = 0 runs | model with this run's own M and step time | measured speedup | model speedup |"
                    );
                    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
                    for d in checks {
                        let base = r.runs.iter().find(|b| {
                            b.delay_c == 0.0
                                && b.ranks == d.ranks
                                && b.tau == d.tau
                                && b.sync == d.sync
                        });
                        let base_m =
                            base.and_then(|b| b.log.reached(c.target)).map(|p| p.round as f64);
                        let s = d.delay_ms / 1000.0;
                        let pred = base_m.map(|bm| bm * (d.tau as f64 * m.c + s));
                        let reached = d.log.reached(c.target);
                        let own = reached
                            .zip(d.log.step_seconds())
                            .map(|(p, st)| p.round as f64 * (d.tau as f64 * st + s));
                        let serial = m.n1 as f64 * m.c;
                        let _ = writeln!(
                            md,
                            "| {} | {:.1} | {} | {} | {} | {} | {} | {} |",
                            d.label,
                            d.delay_ms,
                            reached
                                .map(|p| p.round.to_string())
                                .unwrap_or_else(|| "not reached".into()),
                            reached.map(|p| secs(p.train_seconds())).unwrap_or_else(|| "-".into()),
                            pred.map(secs).unwrap_or_else(|| "-".into()),
                            own.map(secs).unwrap_or_else(|| "-".into()),
                            reached
                                .map(|p| format!("{:.2}", serial / p.train_seconds()))
                                .unwrap_or_else(|| "-".into()),
                            pred.map(|t| format!("{:.2}", serial / t))
                                .unwrap_or_else(|| "-".into()),
                        );
                    }
                    md.push('\n');
                }
                model_json = json!({
                    "step_seconds_c": m.c, "n1": m.n1,
                    "curves": m.curves.iter().map(|c| json!({"label": c.0, "ranks": c.1, "tau": c.2, "points": c.3})).collect::<Vec<_>>(),
                });
                figs.extend(speedup_figures(r, m));
            }
            None => {
                let _ = writeln!(
                    md,
                    "\nNo speedup model: the K = 1 run did not reach the target, so N1 is unknown.\n"
                );
            }
        }
        md.push_str("\n### Figures\n\n");
        for (stem, fig) in &figs {
            save(fig, out, stem)?;
            let _ = writeln!(md, "![{stem}]({stem}.svg)\n\n([PNG]({stem}.png))\n");
        }
        summary.push(json!({
            "net": c.key, "title": c.title, "target": c.target, "batch_per_worker": r.batch,
            "test_interval": c.test_interval, "budget_seconds": c.budget, "max_iter": c.max_iter,
            "data": c.data_note, "runs": runs_json, "model": model_json,
            "figures": figs.iter().map(|f| f.0.clone()).collect::<Vec<_>>(),
        }));
    }
    if !skipped.is_empty() {
        let _ = writeln!(md, "\nSkipped (data not found): {}\n", skipped.join(", "));
    }
    let _ = writeln!(
        md,
        "\n## Reproducing\n\n```sh\n{}\n```\n\nEvery run's exact command line is in `summary.json` (`command`), its JSON lines in `runs/`, its stderr beside them. The whole grid of the issue (K 1,2,4,8, tau 1,5,10,50,100, both nets, naive K 2,4,8): `cargo xtask bench-scaling --full` (hours on two cores).",
        invoked.trim()
    );
    let md_path = out.join("report.md");
    std::fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;
    let sum_path = out.join("summary.json");
    let summary = json!({"command": invoked.trim(), "git_commit": report::git_commit(), "started": started, "nets": summary});
    std::fs::write(&sum_path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", sum_path.display()))?;
    Ok(())
}
