//! `sparknet-train`: train Caffe nets with SparkNet's model averaging, or test them.
//!
//! ```text
//! sparknet-train                                   # the embedded default: LeNet on MNIST/synthetic
//! sparknet-train --solver lenet_solver.prototxt --train-data mnist-train --test-data mnist-test
//! sparknet-train --solver S --workers 4 --tau 10   # four in-process workers, average every 10 steps
//! mpirun -n 8 sparknet-train --solver S --tau 10   # built with --features mpi: one rank per process
//! sparknet-train --eval --model lenet_train_test.prototxt --weights lenet.caffemodel --test-data D
//! ```
//! JSON lines go to stdout (and `--log FILE`), a progress bar to stderr. SIGINT/SIGTERM stop the
//! run after the current round with a snapshot (exit status 130); a second one exits at once.
//! Under `mpirun` a signal to any rank stops every rank at the same round. Open MPI's `mpirun`
//! (4.1) passes SIGINT/SIGTERM on to the ranks `odls_base_sigkill_timeout` seconds (default 1)
//! after receiving it, sends SIGKILL as long again after that, and exits with status 1: a round
//! (plus the snapshot) that takes longer than that window loses the snapshot, so for such nets
//! raise it (`mpirun --mca odls_base_sigkill_timeout 30 ...`; the stop then begins that much
//! later too).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use sparknet_mpi::bind::{FeedConfig, PhaseData, data_layers};
use sparknet_mpi::eval::evaluate;
use sparknet_mpi::launch::{launcher_rank, run};
use sparknet_mpi::outer::{OuterConfig, OuterRule};
use sparknet_mpi::plan::{TrainOptions, check_outputs, parse_history, plan};
use sparknet_mpi::trainer::{Event, Summary, SyncMode};
use sparknet_mpi::{Error, LocalComm, Result, StatePolicy};
use sparknet_net::load::read_net_prototxt;
use sparknet_net::{Net, NetConfig, Phase};

/// Train or test Caffe nets with SparkNet's model averaging (K workers, tau local steps, then
/// average). Without arguments: LeNet on MNIST when found ($SPARKNET_DATA), else on synthetic
/// digits.
#[derive(Parser, Debug)]
#[command(name = "sparknet-train", version)]
struct Args {
    /// The solver prototxt; its relative paths resolve against the working directory, as in
    /// Caffe. Without it: the embedded default LeNet run.
    #[arg(long, value_name = "PROTOTXT")]
    solver: Option<PathBuf>,
    /// Training dataset directory (sparknet-data), replacing the TRAIN Data layers' source.
    #[arg(long, value_name = "DIR")]
    train_data: Option<PathBuf>,
    /// Test dataset directory (sparknet-data), replacing the TEST Data layers' source.
    #[arg(long, value_name = "DIR")]
    test_data: Option<PathBuf>,
    /// Initial weights (.caffemodel); with --eval, the weights to test.
    #[arg(long, value_name = "CAFFEMODEL", conflicts_with = "resume")]
    weights: Option<PathBuf>,
    /// Resume from a .solverstate snapshot.
    #[arg(long, value_name = "SOLVERSTATE")]
    resume: Option<PathBuf>,
    /// Iterations per worker (overrides the solver's max_iter).
    #[arg(long, value_name = "N")]
    max_iter: Option<u64>,
    /// Snapshot prefix (overrides the solver's snapshot_prefix).
    #[arg(long, value_name = "PREFIX")]
    snapshot_prefix: Option<String>,
    /// Also write the JSON lines to this file.
    #[arg(long, value_name = "FILE.jsonl")]
    log: Option<PathBuf>,
    /// In-process workers (threads); under mpirun each process is one worker instead.
    #[arg(long, default_value_t = 1, value_name = "K")]
    workers: usize,
    /// Local solver steps between averaging rounds.
    #[arg(long, default_value_t = 10, value_name = "T")]
    tau: u64,
    /// `average` (SparkNet: average the weights every tau steps) or `gradients` (average the
    /// gradients every step).
    #[arg(long, default_value = "average")]
    sync: SyncMode,
    /// Iterations of gradient averaging before weight averaging starts.
    #[arg(long, default_value_t = 0, value_name = "N")]
    warmup: u64,
    /// Solver history (momentum) at each averaging round: `local` (each worker keeps its own, as
    /// SparkNet did), `reset` (zeroed) or `average` (averaged like the weights).
    #[arg(long, default_value = "local", value_parser = parse_history)]
    history: StatePolicy,
    /// What an averaging round does with the replicas' mean: `average` (SparkNet), or an outer
    /// optimizer on the round's pseudo-gradient, `nesterov` (DiLoCo) or `sgd-momentum` (SlowMo).
    #[arg(long, default_value = "average")]
    outer: OuterRule,
    /// The outer learning rate (default: 0.7 for nesterov and sgd-momentum; 1 for average).
    #[arg(long, value_name = "LR")]
    outer_lr: Option<f32>,
    /// The outer momentum (default: 0.9 for nesterov and sgd-momentum; 0 for average).
    #[arg(long, value_name = "M")]
    outer_momentum: Option<f32>,
    /// Milliseconds added to every communication round (slow-network experiments).
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    comm_delay_ms: f64,
    /// Stop after the round that passes this many seconds of wall time.
    #[arg(long, value_name = "SECONDS")]
    time_budget: Option<f64>,
    /// Test a trained net (Caffe's `caffe test`) instead of training: needs --model and --weights.
    #[arg(long)]
    eval: bool,
    /// The net definition for --eval (its TEST phase is run).
    #[arg(long, value_name = "PROTOTXT")]
    model: Option<PathBuf>,
    /// Decode threads per data loader.
    #[arg(long, default_value_t = 2)]
    data_threads: usize,
    /// Stop at the first test whose accuracy reaches this fraction (e.g. 0.98); the summary's
    /// `reached_target` says whether it did.
    #[arg(long, value_name = "FRACTION")]
    target_accuracy: Option<f64>,
    /// Test every N iterations (overrides the solver's test_interval).
    #[arg(long, value_name = "N")]
    test_interval: Option<u64>,
    /// Report the training loss every N iterations (overrides the solver's display).
    #[arg(long, value_name = "N")]
    display: Option<u64>,
    /// Skip the test before the first iteration (the solver's test_initialization: false).
    #[arg(long)]
    no_test_initialization: bool,
    /// Images per batch and worker of the TRAIN Data layers (overrides data_param.batch_size).
    #[arg(long, value_name = "B")]
    batch_size: Option<usize>,
    /// The mean image (.binaryproto) for every Data layer that subtracts one (overrides
    /// transform_param.mean_file).
    #[arg(long, value_name = "BINARYPROTO")]
    mean_file: Option<PathBuf>,
}

/// JSON lines to stdout and, optionally, a log file.
#[derive(Debug)]
struct JsonLog {
    file: Option<Mutex<(PathBuf, File)>>,
}

impl JsonLog {
    /// Logs to stdout, and to `path` when given (created or truncated).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be created.
    fn new(path: Option<&Path>) -> Result<JsonLog> {
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
    fn write(&self, value: &serde_json::Value) -> Result<()> {
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

fn eval(args: &Args) -> Result<()> {
    let model = args
        .model
        .as_deref()
        .ok_or_else(|| Error::Config("--eval needs --model PROTOTXT".into()))?;
    let weights = args
        .weights
        .as_deref()
        .ok_or_else(|| Error::Config("--eval needs --weights CAFFEMODEL".into()))?;
    let param = read_net_prototxt(model)?;
    let specs = data_layers(&param, Phase::Test, args.test_data.as_deref())?;
    let feed = FeedConfig { rank: 0, world: 1, shuffle: None, seed: 0, threads: args.data_threads };
    let mut data = PhaseData::open(&specs, Phase::Test, feed)?;
    let config = NetConfig {
        phase: Phase::Test,
        seed: None,
        input_shapes: data.input_shapes(),
        ..NetConfig::default()
    };
    let mut net = Net::new(&param, config)?;
    net.copy_from_file(weights)?;
    let scores = evaluate(&mut net, &mut data, &LocalComm::single())?;
    let mut line = serde_json::Map::new();
    line.insert("event".into(), "test".into());
    line.extend(scores.to_json());
    line.insert("seconds".into(), serde_json::json!(scores.seconds));
    println!("{}", serde_json::Value::Object(line));
    Ok(())
}

fn outer_config(args: &Args) -> Result<OuterConfig> {
    let base = match args.outer {
        OuterRule::Average => OuterConfig::default(),
        rule => OuterConfig { rule, ..OuterConfig::diloco() },
    };
    if args.outer == OuterRule::Average
        && (args.outer_lr.is_some() || args.outer_momentum.is_some())
    {
        return Err(Error::Config(
            "--outer-lr and --outer-momentum need --outer nesterov or sgd-momentum".into(),
        ));
    }
    Ok(OuterConfig {
        lr: args.outer_lr.unwrap_or(base.lr),
        momentum: args.outer_momentum.unwrap_or(base.momentum),
        ..base
    })
}

fn options(args: &Args) -> Result<TrainOptions> {
    let seconds = |s: f64, flag: &str| {
        Duration::try_from_secs_f64(s)
            .map_err(|_| Error::Config(format!("{flag} {s}: expected a non-negative number")))
    };
    if args.workers == 0 {
        return Err(Error::Config("--workers must be at least 1".into()));
    }
    if args.tau == 0 {
        return Err(Error::Config("--tau must be at least 1".into()));
    }
    Ok(TrainOptions {
        solver: args.solver.clone(),
        train_data: args.train_data.clone(),
        test_data: args.test_data.clone(),
        weights: args.weights.clone(),
        resume: args.resume.clone(),
        max_iter: args.max_iter,
        snapshot_prefix: args.snapshot_prefix.clone(),
        workers: args.workers,
        tau: args.tau,
        sync: args.sync,
        warmup: args.warmup,
        comm_delay: seconds(args.comm_delay_ms / 1000.0, "--comm-delay-ms")?,
        time_budget: args.time_budget.map(|s| seconds(s, "--time-budget")).transpose()?,
        history: Some(args.history),
        outer: outer_config(args)?,
        test_interval: args.test_interval,
        display: args.display,
        test_initialization: args.no_test_initialization.then_some(false),
        target_accuracy: args.target_accuracy,
        batch_size: args.batch_size,
        mean_file: args.mean_file.clone(),
    })
}

/// The JSON line of an event (reports only; ticks move the progress bar).
fn event_line(e: &Event) -> serde_json::Value {
    let mut v = e.to_json();
    if let Some(m) = v.as_object_mut() {
        let kind = if e.test.is_some() { "test" } else { "train" };
        m.insert("event".into(), kind.into());
    }
    v
}

fn summary_line(s: &Summary, opts: &TrainOptions) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("event".into(), "done".into());
    m.insert("test_accuracy".into(), s.test.as_ref().and_then(|t| t.accuracy()).into());
    m.insert("test_loss".into(), s.test.as_ref().and_then(|t| t.get("loss")).into());
    m.insert("iter".into(), s.iter.into());
    m.insert("rounds".into(), s.rounds.into());
    m.insert("workers".into(), s.workers.into());
    m.insert("tau".into(), opts.tau.into());
    m.insert("sync".into(), format!("{:?}", opts.sync).to_lowercase().into());
    m.insert("seconds".into(), s.seconds.into());
    m.insert("allreduce".into(), s.allreduce.into());
    m.insert("stopped_by_time".into(), s.stopped_by_time.into());
    m.insert("reached_target".into(), s.reached_target.into());
    m.insert("interrupted".into(), s.interrupted.into());
    serde_json::Value::Object(m)
}

fn progress_bar(max_iter: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(max_iter);
    let style = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} it ({per_sec}, eta {eta}) {msg}",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar
}

/// Set by the first SIGINT/SIGTERM: the loop snapshots after the current round and stops.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe operations: an atomic swap, and `_exit` on the second signal.
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe and ends the process without running any Rust code.
        unsafe { libc::_exit(130) };
    }
}

fn install_stop_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only touches an atomic and calls
        // `_exit`, so it is sound to run at any point of the program; `signal` has no other
        // preconditions.
        unsafe { libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

fn train_cmd(args: &Args) -> Result<bool> {
    let opts = options(args)?;
    let mut plan = plan(&opts)?;
    install_stop_handler();
    plan.loop_config.stop = Some(&STOP);
    // Under mpirun only rank 0 reports (and owns the log file).
    let root = launcher_rank() == 0;
    if let Some(note) = plan.note.as_ref().filter(|_| root) {
        eprintln!("sparknet-train: {note}");
    }
    // Everything the run will write is checked before the first iteration.
    let log = JsonLog::new(args.log.as_deref().filter(|_| root))?;
    if root {
        check_outputs(&plan)?;
    }
    let bar = progress_bar(plan.loop_config.max_iter);
    if !root {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let on_event = |e: &Event| {
        bar.set_position(e.iter);
        if let Some(l) = e.loss {
            bar.set_message(format!("loss {l:.4}"));
        }
        // `suspend`, not `println`: the latter prints nothing when stderr is not a terminal.
        for w in &e.warnings {
            bar.suspend(|| eprintln!("sparknet-train: warning: {w}"));
        }
        if !e.tick
            && let Err(err) = log.write(&event_line(e))
        {
            bar.suspend(|| eprintln!("sparknet-train: {err}"));
        }
    };
    // Written as soon as the loop ends (under MPI before finalising, see `run`).
    let summary_written = std::cell::RefCell::new(Ok(()));
    let on_summary = |s: &Summary| {
        bar.finish_and_clear();
        *summary_written.borrow_mut() = log.write(&summary_line(s, &opts));
    };
    let (_, summary) = run(&plan, args.workers, args.data_threads, &on_event, &on_summary)?;
    bar.finish_and_clear();
    summary_written.into_inner()?;
    Ok(summary.interrupted)
}

fn main() -> ExitCode {
    let args = Args::parse();
    sparknet_net::malloc::keep_freed_memory();
    let result = if args.eval { eval(&args).map(|()| false) } else { train_cmd(&args) };
    match result {
        // Stopped by SIGINT/SIGTERM after its snapshot: the shell's code for an interrupt.
        Ok(true) => ExitCode::from(130),
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sparknet-train: {e}");
            ExitCode::FAILURE
        }
    }
}
