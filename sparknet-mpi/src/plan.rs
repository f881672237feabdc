//! What a training run is, resolved before anything starts: the solver and net (from files, or
//! the embedded default), the datasets, and the loop settings (the solver's, overridden by the
//! command line's [`TrainOptions`]). [`crate::launch`] runs a [`Plan`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use sparknet_net::Phase;
use sparknet_net::graph::{NetGraph, state_for};
use sparknet_net::load::{parse_net_text, parse_text, read_net_prototxt, read_solver_prototxt};
use sparknet_net::proto::{NetParameter, SolverParameter};

use crate::default_run::{self, LENET_NET, LENET_SOLVER};
use crate::trainer::{LoopConfig, SyncMode};
use crate::{Error, Result};

/// The command line's training options (flags override the solver's values).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainOptions {
    /// The solver prototxt (`None`: the embedded default LeNet run).
    pub solver: Option<PathBuf>,
    /// Training dataset, replacing the TRAIN Data layers' sources.
    pub train_data: Option<PathBuf>,
    /// Test dataset, replacing the TEST Data layers' sources.
    pub test_data: Option<PathBuf>,
    /// Initial weights (`.caffemodel`) for rank 0.
    pub weights: Option<PathBuf>,
    /// A `.solverstate` to resume from, on rank 0.
    pub resume: Option<PathBuf>,
    /// Iterations per worker, replacing the solver's `max_iter`.
    pub max_iter: Option<u64>,
    /// Replaces the solver's `snapshot_prefix`.
    pub snapshot_prefix: Option<String>,
    /// In-process workers (`--workers`), ignored under `mpirun`.
    pub workers: usize,
    /// Local steps per averaging round.
    pub tau: u64,
    /// Weight or gradient averaging.
    pub sync: SyncMode,
    /// Gradient-sync iterations before averaging.
    pub warmup: u64,
    /// Added to every communication round.
    pub comm_delay: Duration,
    /// Wall-time budget.
    pub time_budget: Option<Duration>,
    /// Solver history at averaging rounds (`--history local|reset|average`; `None`: local, as
    /// SparkNet kept it).
    pub history: Option<crate::StatePolicy>,
    /// The outer optimizer at averaging rounds (`--outer`, `--outer-lr`, `--outer-momentum`).
    pub outer: crate::outer::OuterConfig,
    /// Replaces the solver's `test_interval`.
    pub test_interval: Option<u64>,
    /// Replaces the solver's `display`.
    pub display: Option<u64>,
    /// Replaces the solver's `test_initialization`.
    pub test_initialization: Option<bool>,
    /// Stop at the first periodic test that reaches this accuracy (a fraction in `(0, 1]`).
    pub target_accuracy: Option<f64>,
    /// Replaces `data_param.batch_size` of the TRAIN phase's `Data` layers (per worker).
    pub batch_size: Option<usize>,
    /// Replaces the `mean_file` of every `Data` layer that has one.
    pub mean_file: Option<PathBuf>,
}

/// A resolved run.
#[derive(Debug)]
pub struct Plan {
    /// The solver, with `net_param` holding the net and the flags applied.
    pub solver: SolverParameter,
    /// The net (train and test phases).
    pub net: NetParameter,
    /// The TRAIN data override.
    pub train_data: Option<PathBuf>,
    /// The TEST data override.
    pub test_data: Option<PathBuf>,
    /// Initial weights.
    pub weights: Option<PathBuf>,
    /// Solver state to resume from.
    pub resume: Option<PathBuf>,
    /// The loop's settings.
    pub loop_config: LoopConfig,
    /// For the default run: which data it uses and how to get real data.
    pub note: Option<String>,
    /// Keeps the default run's converted datasets alive.
    pub scratch: Option<tempfile::TempDir>,
}

/// The net a solver names: `net` (a file, relative to the working directory as in Caffe) or
/// `net_param`; `train_net`/`train_net_param` when the test net is the same net.
///
/// # Errors
/// [`Error::Config`] when the solver names no net, or separate test nets; net read errors.
pub fn solver_net(solver: &SolverParameter, solver_path: &Path) -> Result<NetParameter> {
    if !solver.test_net.is_empty() || !solver.test_net_param.is_empty() {
        return Err(Error::Config(format!(
            "{}: separate test_net/test_net_param are not supported; give one net with \
             include {{ phase: TRAIN/TEST }} rules as `net`",
            solver_path.display()
        )));
    }
    if let Some(p) = &solver.net_param {
        return Ok(sparknet_net::upgrade::upgrade_net(p.clone(), solver_path)?);
    }
    if let Some(p) = &solver.train_net_param {
        return Ok(sparknet_net::upgrade::upgrade_net(p.clone(), solver_path)?);
    }
    match solver.net.as_deref().or(solver.train_net.as_deref()) {
        Some(file) => Ok(read_net_prototxt(file)?),
        None => Err(Error::Config(format!("{}: the solver names no net", solver_path.display()))),
    }
}

/// Where a run's solver, net and (for the default run) data come from.
struct Source {
    solver: SolverParameter,
    net: NetParameter,
    train_data: Option<PathBuf>,
    test_data: Option<PathBuf>,
    note: Option<String>,
    scratch: Option<tempfile::TempDir>,
}

/// The embedded LeNet run and the data it finds or makes (see [`default_run::prepare`]).
fn default_source() -> Result<Source> {
    let solver: SolverParameter =
        parse_text("caffe.SolverParameter", LENET_SOLVER, Path::new("<default solver>"))?;
    let net = parse_net_text(LENET_NET, Path::new("<default LeNet>"))?;
    let scratch =
        tempfile::tempdir().map_err(|source| Error::Io { path: std::env::temp_dir(), source })?;
    let env = |v: &str| std::env::var_os(v).map(PathBuf::from);
    let assets = env("SPARKNET_ASSETS").or_else(|| Some(PathBuf::from("../shared/assets")));
    let found =
        default_run::prepare(env("SPARKNET_DATA").as_deref(), assets.as_deref(), scratch.path())?;
    Ok(Source {
        solver,
        net,
        train_data: Some(found.train),
        test_data: Some(found.test),
        note: Some(found.note),
        scratch: Some(scratch),
    })
}

/// Resolves the options into a plan; for the default run, finds or makes its datasets (see
/// [`default_run::prepare`]).
///
/// # Errors
/// Unreadable solver or net, conflicting flags, dataset conversion errors.
pub fn plan(opts: &TrainOptions) -> Result<Plan> {
    if opts.weights.is_some() && opts.resume.is_some() {
        return Err(Error::Config("give --weights or --resume, not both".into()));
    }
    let Source { mut solver, net, mut train_data, mut test_data, note, scratch } =
        match &opts.solver {
            Some(path) => {
                let solver = read_solver_prototxt(path)?;
                let net = solver_net(&solver, path)?;
                Source { solver, net, train_data: None, test_data: None, note: None, scratch: None }
            }
            None => default_source()?,
        };
    if opts.train_data.is_some() {
        train_data.clone_from(&opts.train_data);
    }
    if opts.test_data.is_some() {
        test_data.clone_from(&opts.test_data);
    }
    if let Some(m) = opts.max_iter {
        solver.max_iter = Some(
            i32::try_from(m).map_err(|_| Error::Config(format!("--max-iter {m} is too large")))?,
        );
    }
    if let Some(p) = &opts.snapshot_prefix {
        solver.snapshot_prefix = Some(p.clone());
        // Asking for a prefix asks for the final snapshot (the default run has it off).
        solver.snapshot_after_train = Some(true);
    }
    let net = override_net(net, opts)?;
    let to_i32 = |v: u64, flag: &str| {
        i32::try_from(v).map_err(|_| Error::Config(format!("{flag} {v} is too large")))
    };
    if let Some(n) = opts.test_interval {
        solver.test_interval = Some(to_i32(n, "--test-interval")?);
    }
    if let Some(n) = opts.display {
        solver.display = Some(to_i32(n, "--display")?);
    }
    if let Some(b) = opts.test_initialization {
        solver.test_initialization = Some(b);
    }
    if let Some(t) = opts.target_accuracy {
        if !(t > 0.0 && t <= 1.0) {
            return Err(Error::Config(format!(
                "--target-accuracy {t}: expected a fraction in (0, 1], as the JSON's accuracy"
            )));
        }
        if solver.test_interval() <= 0 {
            return Err(Error::Config(
                "--target-accuracy needs periodic tests: the solver has no test_interval \
                 (give --test-interval N)"
                    .into(),
            ));
        }
    }
    solver.net_param = Some(net.clone());
    let nonneg = |v: i32| u64::try_from(v).unwrap_or(0);
    let loop_config = LoopConfig {
        tau: opts.tau.max(1),
        sync: opts.sync,
        warmup: opts.warmup,
        max_iter: nonneg(solver.max_iter()),
        display: nonneg(solver.display()),
        test_interval: nonneg(solver.test_interval()),
        test_initialization: solver.test_initialization(),
        target_accuracy: opts.target_accuracy,
        snapshot: nonneg(solver.snapshot()),
        snapshot_after_train: solver.snapshot_after_train(),
        time_budget: opts.time_budget,
        comm_delay: opts.comm_delay,
        stop: None,
        history: opts.history.unwrap_or(crate::StatePolicy::Local),
        outer: opts.outer,
        // A snapshot's outer state sits beside its solverstate, when the run that wrote it had one.
        outer_resume: opts
            .resume
            .as_deref()
            .filter(|_| !opts.outer.is_average())
            .map(crate::outer::OuterOptimizer::state_path)
            .filter(|p| p.is_file()),
    };
    Ok(Plan {
        solver,
        net,
        train_data,
        test_data,
        weights: opts.weights.clone(),
        resume: opts.resume.clone(),
        loop_config,
        note,
        scratch,
    })
}

/// The command line's changes to the net's `Data` layers: `--batch-size` on the TRAIN phase's,
/// `--mean-file` on every one that names a mean file.
///
/// # Errors
/// [`Error::Config`] when the flag has nothing to change (no TRAIN `Data` layer, no layer with a
/// `mean_file`) or a zero batch size; errors of the TRAIN graph.
fn override_net(mut net: NetParameter, opts: &TrainOptions) -> Result<NetParameter> {
    if let Some(b) = opts.batch_size {
        let batch = u32::try_from(b).ok().filter(|&b| b > 0).ok_or_else(|| {
            Error::Config(format!("--batch-size {b}: expected 1 to {}", u32::MAX))
        })?;
        let graph = NetGraph::build(&net, Some(&state_for(Phase::Train)))?;
        let train: Vec<&str> =
            graph.layers.iter().filter(|n| n.kind == "Data").map(|n| n.param.name()).collect();
        if train.is_empty() {
            return Err(Error::Config(format!(
                "--batch-size: net '{}' has no Data layer in the TRAIN phase",
                net.name()
            )));
        }
        let train: Vec<String> = train.into_iter().map(str::to_string).collect();
        for layer in net.layer.iter_mut().filter(|l| train.iter().any(|n| n == l.name())) {
            layer.data_param.get_or_insert_with(Default::default).batch_size = Some(batch);
        }
    }
    if let Some(m) = &opts.mean_file {
        let file = m.to_string_lossy().into_owned();
        let mut changed = 0;
        for layer in net.layer.iter_mut().filter(|l| l.r#type() == "Data") {
            if let Some(tp) = layer.transform_param.as_mut().filter(|t| t.mean_file.is_some()) {
                tp.mean_file = Some(file.clone());
                changed += 1;
            } else if let Some(dp) = layer.data_param.as_mut().filter(|d| d.mean_file.is_some()) {
                dp.mean_file = Some(file.clone());
                changed += 1;
            }
        }
        if changed == 0 {
            return Err(Error::Config(format!(
                "--mean-file: no Data layer of net '{}' names a mean_file to replace",
                net.name()
            )));
        }
    }
    Ok(net)
}

/// Checks, before the first iteration, that rank 0 can write what the run will write: the
/// snapshot directory (created when missing; a probe file is written and removed). Snapshots can
/// be written by any run (a stop signal asks for one), so it is always checked.
///
/// # Errors
/// [`Error::Config`] naming the snapshot prefix and what blocks it.
pub fn check_outputs(plan: &Plan) -> Result<()> {
    let prefix = plan.solver.snapshot_prefix();
    let probe = PathBuf::from(format!("{prefix}_iter_0.caffemodel"));
    sparknet_net::load::ensure_writable(&probe).map_err(|e| {
        Error::Config(format!(
            "snapshot prefix '{prefix}' cannot be written: {e} (choose another with \
             --snapshot-prefix DIR/NAME)"
        ))
    })
}

/// Parses `--history`: `local`, `reset` or `average`.
///
/// # Errors
/// [`Error::Config`] for anything else.
pub fn parse_history(s: &str) -> Result<crate::StatePolicy> {
    match s {
        "local" => Ok(crate::StatePolicy::Local),
        "reset" => Ok(crate::StatePolicy::Reset),
        "average" => Ok(crate::StatePolicy::Averaged),
        _ => Err(Error::Config(format!("--history {s}: expected 'local', 'reset' or 'average'"))),
    }
}
