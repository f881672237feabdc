//! What `sparknet-train` runs: the solver and net (from files, or the embedded default), the
//! datasets, the loop settings (the solver's, overridden by flags), the JSON-lines log, and the
//! workers (in-process threads, or this process as one MPI rank), each with its own thread pool.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sparknet_net::load::{parse_net_text, parse_text, read_net_prototxt, read_solver_prototxt};
use sparknet_net::proto::{NetParameter, SolverParameter};

use crate::default_run::{self, LENET_NET, LENET_SOLVER};
use crate::trainer::{Event, LoopConfig, Summary, SyncMode, Worker, train};
use crate::{Collective, Error, LocalGroup, Result};

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

/// Resolves the options into a plan; for the default run, finds or makes its datasets (see
/// [`default_run::prepare`]).
///
/// # Errors
/// Unreadable solver or net, conflicting flags, dataset conversion errors.
pub fn plan(opts: &TrainOptions) -> Result<Plan> {
    if opts.weights.is_some() && opts.resume.is_some() {
        return Err(Error::Config("give --weights or --resume, not both".into()));
    }
    let (mut solver, net, mut train_data, mut test_data, note, scratch) = match &opts.solver {
        Some(path) => {
            let solver = read_solver_prototxt(path)?;
            let net = solver_net(&solver, path)?;
            (solver, net, opts.train_data.clone(), opts.test_data.clone(), None, None)
        }
        None => {
            let solver: SolverParameter =
                parse_text("caffe.SolverParameter", LENET_SOLVER, Path::new("<default solver>"))?;
            let net = parse_net_text(LENET_NET, Path::new("<default LeNet>"))?;
            let scratch = tempfile::tempdir()
                .map_err(|source| Error::Io { path: std::env::temp_dir(), source })?;
            let env = |v: &str| std::env::var_os(v).map(PathBuf::from);
            let assets = env("SPARKNET_ASSETS").or_else(|| Some(PathBuf::from("../shared/assets")));
            let found = default_run::prepare(
                env("SPARKNET_DATA").as_deref(),
                assets.as_deref(),
                scratch.path(),
            )?;
            (solver, net, Some(found.train), Some(found.test), Some(found.note), Some(scratch))
        }
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
        snapshot: nonneg(solver.snapshot()),
        snapshot_after_train: solver.snapshot_after_train(),
        time_budget: opts.time_budget,
        comm_delay: opts.comm_delay,
        stop: None,
        history: opts.history.unwrap_or(crate::StatePolicy::Local),
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

/// Compute threads for each of `ranks` ranks sharing this machine: the cores divided among them
/// (at least 1), so oversubscribed ranks do not fight over cores.
pub fn threads_per_rank(ranks: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cores / ranks.max(1)).max(1)
}

/// Ranks of this MPI job on this node, from the launcher's environment (Open MPI, MPICH/Hydra,
/// Slurm); `None` outside a launcher.
pub fn local_ranks_from_env() -> Option<usize> {
    ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// This process's rank as the MPI launcher announces it (0 outside a launcher), known before MPI
/// is initialised (for deciding which process logs).
pub fn launcher_rank() -> usize {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// True when started by an MPI launcher (`mpirun`/`mpiexec`/`srun`).
pub fn under_mpi_launcher() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// Runs the loop on this rank with `make` building its worker, on the current thread (its
/// kernels use the current rayon pool: for one MPI rank per process, size the global pool with
/// [`threads_per_rank`]).
///
/// # Errors
/// Worker construction (after aborting the group) and loop errors.
pub fn run_rank<C, W, F>(
    comm: &C,
    config: &LoopConfig,
    make: F,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Summary>
where
    C: Collective,
    W: Worker,
    F: FnOnce(&C) -> Result<W>,
{
    let mut worker = match make(comm) {
        Ok(w) => w,
        Err(e) => {
            if comm.size() > 1 {
                let _ = comm.abort(&format!("rank {}: {e}", comm.rank()));
            }
            return Err(e);
        }
    };
    train(comm, &mut worker, config, on_event)
}

/// `K` in-process workers on threads, each in its own rayon pool of `threads_per_rank(K)`
/// compute threads; rank 0 reports to `on_event`. Returns rank 0's summary.
///
/// # Errors
/// The lowest rank's error.
pub fn run_local<W, F>(
    workers: usize,
    config: &LoopConfig,
    make: F,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<Summary>
where
    W: Worker,
    F: Fn(&dyn Collective) -> Result<W> + Sync,
{
    let threads = threads_per_rank(workers);
    let make = &make;
    let results = LocalGroup::new(workers)?.run(|comm| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("sparknet-compute-{i}"))
            .build()
            .map_err(|e| Error::Config(format!("cannot start {threads} compute threads: {e}")))?;
        pool.install(move || {
            let mut report = |e: &Event| on_event(e);
            run_rank(&comm, config, |c: &crate::LocalComm| make(c), &mut report)
        })
    })?;
    let mut first_err = None;
    let mut summary = None;
    for r in results {
        match r {
            Ok(s) => {
                summary.get_or_insert(s);
            }
            // Prefer the failing rank's own error over its peers' "aborted by".
            Err(e @ Error::Aborted { .. }) => {
                first_err.get_or_insert(e);
            }
            // The lowest failing rank's own error (rank 0 knows the last snapshot).
            Err(e) => {
                if first_err.as_ref().is_none_or(|f| matches!(f, Error::Aborted { .. })) {
                    first_err = Some(e);
                }
            }
        }
    }
    match (first_err, summary) {
        (Some(e), _) => Err(e),
        (None, Some(s)) => Ok(s),
        (None, None) => Err(Error::EmptyGroup),
    }
}

/// JSON lines to stdout and, optionally, a log file.
#[derive(Debug)]
pub struct JsonLog {
    file: Option<Mutex<(PathBuf, File)>>,
}

impl JsonLog {
    /// Logs to stdout, and to `path` when given (created or truncated).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be created.
    pub fn new(path: Option<&Path>) -> Result<JsonLog> {
        let file = path
            .map(|p| {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
                }
                File::create(p)
                    .map(|f| Mutex::new((p.to_path_buf(), f)))
                    .map_err(|source| Error::Io { path: p.to_path_buf(), source })
            })
            .transpose()?;
        Ok(JsonLog { file })
    }

    /// Writes one line.
    ///
    /// # Errors
    /// [`Error::Io`] naming the log file.
    pub fn write(&self, value: &serde_json::Value) -> Result<()> {
        let line = value.to_string();
        println!("{line}");
        if let Some(m) = &self.file {
            let mut g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (path, file) = &mut *g;
            writeln!(file, "{line}").map_err(|source| Error::Io { path: path.clone(), source })?;
        }
        Ok(())
    }
}
