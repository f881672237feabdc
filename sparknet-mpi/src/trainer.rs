//! The SparkNet loop: `K` workers (ranks) each run `tau` local solver steps on their own data
//! partition, then replace their weights by the mean over workers, with one allreduce per round.
//!
//! The loop is written once against [`Collective`] (threads in one process, or one process per
//! rank under `mpirun`) and [`Worker`] (one replica: a solver with its data). Per rank:
//!
//! 1. Rank 0's weights and iteration count are broadcast, so every replica starts equal (random
//!    init from the fillers, `--weights` or `--resume` on rank 0).
//! 2. Each round: with [`SyncMode::Average`] (SparkNet), `tau` local steps and then one
//!    [`Averager`] round over the flat parameter buffer (with `K` > 1 the last step also
//!    multiplies the weights by `1 / K` in its update pass, [`Worker::step_scaled`], and the
//!    round is one allreduce-sum, [`Averager::average_prescaled`]); with [`SyncMode::Gradients`] (the paper's
//!    naive baseline, Horovod's scheme), one step whose gradients are averaged before the update.
//!    The first `warmup` iterations always use gradient sync (averaging from a random start can
//!    stall, SparkNet issue 140).
//! 3. At display and test points (round-aligned), rank 0 emits an [`Event`]: round, iteration,
//!    seconds of compute / allreduce / data wait / eval since the last event, mean loss over
//!    ranks and steps, learning rate, and (at test points) the test scores summed over ranks'
//!    test partitions. Rank 0 snapshots.
//! 4. A time budget or the iteration limit ends the loop; a final test gives the summary's
//!    `test_accuracy`. A stop request ([`LoopConfig::stop`], set on SIGINT/SIGTERM by the
//!    binary) ends it after the current round with a snapshot from rank 0.
//!
//! A rank whose step fails calls [`Collective::abort`], so its peers stop instead of waiting
//! (under MPI the whole job exits non-zero with that rank's message).
//!
//! Iterations are counted per worker, as in the paper: `max_iter` 300 with `K` = 2 means 300
//! steps on each worker (600 batches in all).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::eval::TestScores;
use crate::{Averager, Collective, Error, Result, StatePolicy};

/// How replicas are kept in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// SparkNet: `tau` local steps, then average the weights.
    #[default]
    Average,
    /// Average the gradients before every update (synchronous data-parallel SGD).
    Gradients,
}

impl std::str::FromStr for SyncMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<SyncMode> {
        match s {
            "average" => Ok(SyncMode::Average),
            "gradients" => Ok(SyncMode::Gradients),
            _ => Err(Error::Config(format!("--sync {s}: expected 'average' or 'gradients'"))),
        }
    }
}

/// The loop's settings (the solver's own settings, such as the learning rate, live in the worker).
#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// Local steps between averaging rounds (`tau`, at least 1).
    pub tau: u64,
    /// Weight averaging or gradient averaging.
    pub sync: SyncMode,
    /// Iterations of gradient sync before averaging starts.
    pub warmup: u64,
    /// Stop when a worker has done this many iterations.
    pub max_iter: u64,
    /// Emit a progress event every this many iterations (0: never).
    pub display: u64,
    /// Test every this many iterations (0: only at the end).
    pub test_interval: u64,
    /// Test before the first step (Caffe's `test_initialization`).
    pub test_initialization: bool,
    /// Snapshot every this many iterations (0: only at the end), on rank 0.
    pub snapshot: u64,
    /// Snapshot after the last iteration.
    pub snapshot_after_train: bool,
    /// Stop after the first round that ends past this wall time (decided by rank 0).
    pub time_budget: Option<Duration>,
    /// Added to every communication round (slow-network experiments).
    pub comm_delay: Duration,
    /// Set (by a SIGINT/SIGTERM handler) to stop after the current round: every rank reads its
    /// own, a stop on any rank stops every rank at the same round (whether the launcher signals
    /// one rank or all of them), rank 0 snapshots, and no final test runs.
    pub stop: Option<&'static AtomicBool>,
    /// What happens to the solver history (momentum, Adam moments) at each averaging round:
    /// kept per worker as SparkNet did (the default), zeroed, or averaged like the weights (one
    /// more allreduce per history set). BatchNorm statistics live in the parameter buffer and
    /// are always averaged.
    pub history: StatePolicy,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            tau: 1,
            sync: SyncMode::Average,
            warmup: 0,
            max_iter: 0,
            display: 0,
            test_interval: 0,
            test_initialization: false,
            snapshot: 0,
            snapshot_after_train: false,
            time_budget: None,
            comm_delay: Duration::ZERO,
            stop: None,
            history: StatePolicy::Local,
        }
    }
}

/// What one solver step reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// The loss of the batch (before the update).
    pub loss: f32,
    /// The learning rate the update used.
    pub lr: f32,
}

/// One replica: a solver, its training data and its test data on this rank.
///
/// `params` is the flat buffer of every learnable value (BatchNorm statistics included), the same
/// length and order on every rank; the loop averages it in place and then calls
/// [`params_changed`](Worker::params_changed).
pub trait Worker {
    /// Iterations done so far.
    fn iter(&self) -> u64;
    /// Sets the iteration count (a replica joining rank 0's resumed run).
    fn set_iter(&mut self, iter: u64);
    /// The flat parameter buffer.
    ///
    /// # Errors
    /// When the buffer cannot be built (parameter shapes unknown).
    fn params(&mut self) -> Result<&mut [f32]>;
    /// Called after the loop overwrote [`params`](Worker::params) (broadcast, averaging).
    ///
    /// # Errors
    /// When the values cannot be put back into the net.
    fn params_changed(&mut self) -> Result<()>;
    /// One full solver step on the next training batch (forward, backward, update).
    ///
    /// # Errors
    /// Data, net or solver errors.
    fn step(&mut self) -> Result<StepOutcome>;
    /// [`step`](Worker::step), then every value of [`params`](Worker::params) multiplied by
    /// `scale`: the last local step of an averaging round over `K` > 1 workers, with
    /// `scale = 1 / K`, so that the round's allreduce-sum yields the mean
    /// ([`Averager::average_prescaled`]). The loop calls
    /// [`params_changed`](Worker::params_changed) after the allreduce, so an implementation may
    /// leave its net's view of the parameters stale here.
    ///
    /// The default runs the two passes; a worker whose update touches every parameter anyway
    /// should fuse the scaling into it (as [`SolverWorker`](crate::solver_worker::SolverWorker)
    /// does through sparknet-net's `Updater::apply_scaled`). Either way the result must equal
    /// `step` followed by the multiplication, bit for bit.
    ///
    /// # Errors
    /// As [`step`](Worker::step) and [`params`](Worker::params).
    fn step_scaled(&mut self, scale: f32) -> Result<StepOutcome> {
        let out = self.step()?;
        self.params()?.iter_mut().for_each(|w| *w *= scale);
        Ok(out)
    }
    /// Forward and backward on the next training batch, leaving the gradients in
    /// [`grads`](Worker::grads) without updating; returns the loss.
    ///
    /// # Errors
    /// Data, net or solver errors.
    fn compute_gradients(&mut self) -> Result<f32>;
    /// The flat gradient buffer, laid out as [`params`](Worker::params).
    ///
    /// # Errors
    /// As [`params`](Worker::params).
    fn grads(&mut self) -> Result<&mut [f32]>;
    /// The update from the gradients in [`grads`](Worker::grads) (after the loop averaged them);
    /// counts one iteration and returns the learning rate used.
    ///
    /// # Errors
    /// Solver errors.
    fn apply_gradients(&mut self) -> Result<f32>;
    /// Time spent waiting for training batches so far.
    fn data_wait(&self) -> Duration;
    /// Number of solver history buffers (1 for SGD's momentum, 2 for Adam; 0 when none).
    fn history_sets(&self) -> usize {
        0
    }
    /// History buffer `set`, laid out as [`params`](Worker::params).
    ///
    /// # Errors
    /// `set` out of range.
    fn history(&mut self, set: usize) -> Result<&mut [f32]> {
        Err(Error::Config(format!("this worker has no solver history set {set}")))
    }
    /// A test pass over this rank's test partition, reduced over `comm` (every rank calls it).
    ///
    /// # Errors
    /// Data, net and collective errors.
    fn test(&mut self, comm: &dyn Collective) -> Result<TestScores>;
    /// Writes a snapshot (rank 0 only) and returns the files written.
    ///
    /// # Errors
    /// I/O errors naming the file.
    fn snapshot(&mut self) -> Result<Vec<PathBuf>>;
    /// Writes a snapshot under `prefix` instead of the configured one: where the loop rescues
    /// the last snapshot of a run when the configured place cannot be written. The default has
    /// no other place and fails.
    ///
    /// # Errors
    /// I/O errors naming the file.
    fn snapshot_to(&mut self, prefix: &str) -> Result<Vec<PathBuf>> {
        Err(Error::Config(format!("this worker cannot snapshot to {prefix}")))
    }
    /// The configured snapshot prefix (its file name names the fallback snapshot).
    fn snapshot_prefix(&self) -> String {
        "snapshot".to_string()
    }
    /// Called once after a step whose loss was not finite: what went non-finite first (for a
    /// net, the first layer whose output did), in words, when the worker can tell.
    ///
    /// # Errors
    /// When the worker's state cannot be read.
    fn diagnose_non_finite(&mut self) -> Result<Option<String>> {
        Ok(None)
    }
}

/// A record from rank 0: a report (one JSON line) at display, test and snapshot points, or a
/// progress tick after every other round.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// True for a progress tick: only `round`, `iter`, `loss` (rank 0's last step, not reduced)
    /// and `lr` are set, and nothing should be logged.
    pub tick: bool,
    /// Averaging rounds (or gradient-sync steps) completed.
    pub round: u64,
    /// Iterations per worker completed.
    pub iter: u64,
    /// Mean training loss over ranks and steps since the previous event (`None` before training).
    pub loss: Option<f64>,
    /// The learning rate of the last step.
    pub lr: Option<f32>,
    /// Seconds since the previous event in solver steps (minus data wait).
    pub compute: f64,
    /// Seconds in communication rounds (allreduce, including any configured delay).
    pub allreduce: f64,
    /// Seconds waiting for training data.
    pub data_wait: f64,
    /// Seconds testing.
    pub eval: f64,
    /// Wall seconds since the loop started.
    pub seconds: f64,
    /// Test scores, at test points.
    pub test: Option<TestScores>,
    /// Snapshot files written at this point.
    pub snapshot: Vec<PathBuf>,
    /// Problems that did not stop the run (a snapshot that failed and was retried, or written
    /// to a fallback path), in words naming the files.
    pub warnings: Vec<String>,
}

impl Event {
    /// The event as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("round".into(), self.round.into());
        m.insert("iter".into(), self.iter.into());
        if let Some(l) = self.loss {
            m.insert("loss".into(), l.into());
        }
        if let Some(lr) = self.lr {
            m.insert("lr".into(), f64::from(lr).into());
        }
        for (k, v) in [
            ("compute", self.compute),
            ("allreduce", self.allreduce),
            ("data_wait", self.data_wait),
            ("eval", self.eval),
            ("seconds", self.seconds),
        ] {
            m.insert(k.into(), serde_json::json!(v));
        }
        if let Some(t) = &self.test {
            if let Some(a) = t.accuracy() {
                m.insert("accuracy".into(), a.into());
            }
            m.insert("test".into(), serde_json::Value::Object(t.to_json()));
        }
        if !self.snapshot.is_empty() {
            let files: Vec<String> =
                self.snapshot.iter().map(|p| p.display().to_string()).collect();
            m.insert("snapshot".into(), files.into());
        }
        if !self.warnings.is_empty() {
            m.insert("warning".into(), self.warnings.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

/// The end of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Workers (ranks) in the group.
    pub workers: usize,
    /// Iterations per worker done.
    pub iter: u64,
    /// Rounds done.
    pub rounds: u64,
    /// The final test (`None` when the net has no test data).
    pub test: Option<TestScores>,
    /// Wall seconds of the whole loop.
    pub seconds: f64,
    /// Total seconds in communication.
    pub allreduce: f64,
    /// True when the time budget ended the run before `max_iter`.
    pub stopped_by_time: bool,
    /// True when [`LoopConfig::stop`] ended the run (after a snapshot, without a final test).
    pub interrupted: bool,
}

#[derive(Default)]
struct Window {
    loss: f64,
    steps: u64,
    compute: Duration,
    comm: Duration,
    eval: Duration,
    data_wait_at: Duration,
    warnings: Vec<String>,
}

/// Rank 0's snapshots, written so that a run is never lost: a failed write is retried once;
/// mid-run a second failure becomes a warning and training goes on (the state is still in
/// memory, the next snapshot tries again); the last snapshot of a run (final or on a stop) then
/// goes to [`sparknet_net::load::fallback_path`] instead, and only when that fails too is the
/// run an error.
fn snapshot_safely<W: Worker + ?Sized>(
    worker: &mut W,
    last: bool,
    win: &mut Window,
    last_good: &mut Option<PathBuf>,
) -> Result<Vec<PathBuf>> {
    let iter = worker.iter();
    let mut keep = |files: Vec<PathBuf>| {
        if let Some(state) =
            files.iter().find(|f| f.extension().is_some_and(|e| e == "solverstate"))
        {
            *last_good = Some(state.clone());
        }
        Ok(files)
    };
    let first = match worker.snapshot() {
        Ok(files) => return keep(files),
        Err(e) => e,
    };
    std::thread::sleep(Duration::from_millis(200));
    let second = match worker.snapshot() {
        Ok(files) => {
            win.warnings.push(format!(
                "snapshot at iteration {iter} failed once ({first}); the retry wrote it"
            ));
            return keep(files);
        }
        Err(e) => e,
    };
    if !last {
        win.warnings.push(format!(
            "snapshot at iteration {iter} failed twice: {second}; training goes on and the \
             next snapshot tries again"
        ));
        return Ok(Vec::new());
    }
    let prefix = worker.snapshot_prefix();
    let fallback = sparknet_net::load::fallback_path(std::path::Path::new(&prefix))
        .map_err(Error::from)
        .and_then(|p| worker.snapshot_to(&p.to_string_lossy()));
    match fallback {
        Ok(files) => {
            let shown: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            win.warnings.push(format!(
                "could not write the snapshot at iteration {iter}: {second} (retried once); \
                 it was written to {} instead",
                shown.join(" and ")
            ));
            keep(files)
        }
        Err(fallback) => {
            Err(Error::SnapshotLost { primary: Box::new(second), fallback: Box::new(fallback) })
        }
    }
}

/// The first non-finite step's iteration and description, kept until the round's check.
type Diverged = Option<(u64, String)>;

/// After a step: records the first step whose loss or updated weights are not finite, with the
/// worker's diagnosis (the first layer whose output went non-finite), so that the report names
/// that step and that layer rather than the round's end, when everything is NaN. The weights
/// check is one read-only pass over the parameter buffer per step (a NaN loss can hide behind a
/// clamped softmax loss, so the loss alone is not enough).
fn note_step<W: Worker + ?Sized>(worker: &mut W, loss: f32, bad: &mut Diverged) -> Result<()> {
    if bad.is_some() {
        return Ok(());
    }
    let weights_ok = worker.params()?.iter().all(|w| w.is_finite());
    if loss.is_finite() && weights_ok {
        return Ok(());
    }
    let what = if loss.is_finite() {
        "the weights are not finite after the update".to_string()
    } else {
        format!("the loss is {loss}")
    };
    let what = match worker.diagnose_non_finite()? {
        Some(d) => format!("{what}; the first non-finite output: {d}"),
        None => what,
    };
    *bad = Some((worker.iter(), what));
    Ok(())
}

/// At the end of a round: a non-finite loss seen in it, or non-finite weights (after the
/// averaging, so every rank decides alike), stop the run.
fn check_finite<W: Worker + ?Sized>(
    worker: &mut W,
    bad: &mut Diverged,
    last_good: &Option<PathBuf>,
) -> Result<()> {
    if let Some((iter, what)) = bad.take() {
        return Err(Error::NonFinite { iter, what, last_snapshot: last_good.clone() });
    }
    if let Some(i) = worker.params()?.iter().position(|w| !w.is_finite()) {
        let value = worker.params()?[i];
        let what = match worker.diagnose_non_finite()? {
            Some(d) => format!("the weights are not finite after the round: {d}"),
            None => format!("parameter value {i} of the flat buffer is {value}"),
        };
        return Err(Error::NonFinite {
            iter: worker.iter(),
            what,
            last_snapshot: last_good.clone(),
        });
    }
    Ok(())
}

/// Runs the SparkNet loop for this rank; every rank of `comm` must call it with the same
/// `config`. `on_event` is called on rank 0 only. A rank that fails aborts the group.
///
/// # Errors
/// The first error of this rank (after aborting the group), or the abort of a peer.
pub fn train<C, W>(
    comm: &C,
    worker: &mut W,
    config: &LoopConfig,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Summary>
where
    C: Collective,
    W: Worker + ?Sized,
{
    match run(comm, worker, config, on_event) {
        Ok(s) => Ok(s),
        Err(e @ Error::Aborted { .. }) => Err(e),
        Err(e) => {
            if comm.size() > 1 {
                // MPI: does not return. In process: peers' collectives now fail instead of waiting.
                let _ = comm.abort(&format!("rank {}: {e}", comm.rank()));
            }
            Err(e)
        }
    }
}

fn crossed(before: u64, after: u64, every: u64) -> bool {
    every > 0 && after / every > before / every
}

fn run<C, W>(
    comm: &C,
    worker: &mut W,
    config: &LoopConfig,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Summary>
where
    C: Collective,
    W: Worker + ?Sized,
{
    if config.tau == 0 {
        return Err(Error::Config("--tau must be at least 1".into()));
    }
    let start = Instant::now();
    let root = comm.rank() == 0;
    let multi = comm.size() > 1;
    if multi {
        let mut iter = worker.iter().to_le_bytes();
        comm.broadcast_bytes(&mut iter, 0)?;
        worker.set_iter(u64::from_le_bytes(iter));
        comm.broadcast(worker.params()?, 0)?;
        worker.params_changed()?;
    }
    let mut averager = Averager::new(0).with_comm_delay(config.comm_delay);
    // The same factor `Collective::all_reduce_mean`'s default applies after the sum.
    let inv_k = 1.0 / comm.size() as f32;
    let mut win = Window { data_wait_at: worker.data_wait(), ..Window::default() };
    let (mut rounds, mut total_comm, mut lr) = (0u64, Duration::ZERO, None);
    let mut stopped_by_time = false;
    let mut last_loss = None;
    let mut last_good: Option<PathBuf> = None;
    let mut diverged: Diverged = None;
    if config.test_initialization && config.test_interval > 0 {
        let t = Instant::now();
        let scores = worker.test(comm)?;
        win.eval += t.elapsed();
        emit(comm, worker, &mut win, rounds, None, Some(scores), Vec::new(), start, on_event)?;
    }
    while worker.iter() < config.max_iter {
        let before = worker.iter();
        let gradient_sync = config.sync == SyncMode::Gradients || before < config.warmup;
        if gradient_sync {
            let t = Instant::now();
            let loss = worker.compute_gradients()?;
            win.compute += t.elapsed();
            if multi || !config.comm_delay.is_zero() {
                let stats = averager.average(comm, worker.grads()?)?;
                win.comm += stats.comm;
                total_comm += stats.comm;
            }
            let t = Instant::now();
            lr = Some(worker.apply_gradients()?);
            win.compute += t.elapsed();
            win.loss += f64::from(loss);
            win.steps += 1;
            last_loss = Some(loss);
            note_step(worker, loss, &mut diverged)?;
        } else {
            // Local steps up to the round's end, not past max_iter nor into the warmup rule.
            let steps = config.tau.min(config.max_iter - before);
            let t = Instant::now();
            for i in 0..steps {
                // Over K > 1 workers the last step also multiplies the weights by 1 / K (fused
                // into the update's pass), so that the round's allreduce-sum is the mean.
                let out = if multi && i + 1 == steps {
                    worker.step_scaled(inv_k)?
                } else {
                    worker.step()?
                };
                win.loss += f64::from(out.loss);
                win.steps += 1;
                lr = Some(out.lr);
                last_loss = Some(out.loss);
                note_step(worker, out.loss, &mut diverged)?;
            }
            win.compute += t.elapsed();
            if multi || !config.comm_delay.is_zero() {
                let stats = if multi {
                    averager.average_prescaled(comm, worker.params()?)?
                } else {
                    averager.average(comm, worker.params()?)?
                };
                worker.params_changed()?;
                win.comm += stats.comm;
                total_comm += stats.comm;
                for set in 0..worker.history_sets() {
                    match config.history {
                        StatePolicy::Local => {}
                        StatePolicy::Reset => worker.history(set)?.fill(0.0),
                        StatePolicy::Averaged => {
                            let stats = averager.average(comm, worker.history(set)?)?;
                            win.comm += stats.comm;
                            total_comm += stats.comm;
                        }
                    }
                }
            }
        }
        rounds += 1;
        check_finite(worker, &mut diverged, &last_good)?;
        let after = worker.iter();
        let last = after >= config.max_iter;
        // [time budget spent (rank 0's clock decides), stop requested (on any rank)], summed
        // over ranks so that every rank takes the same decision.
        let mut stop = [0f64; 2];
        if root && config.time_budget.is_some_and(|b| start.elapsed() >= b) {
            stop[0] = 1.0;
        }
        if config.stop.is_some_and(|f| f.load(Ordering::SeqCst)) {
            stop[1] = 1.0;
        }
        if (config.time_budget.is_some() || config.stop.is_some()) && multi {
            comm.all_reduce_sum_f64(&mut stop)?;
        }
        stopped_by_time = stop[0] > 0.0 && stop[1] == 0.0 && !last;
        if stop[1] > 0.0 {
            let files = if root {
                snapshot_safely(worker, true, &mut win, &mut last_good)?
            } else {
                Vec::new()
            };
            emit(comm, worker, &mut win, rounds, lr, None, files, start, on_event)?;
            return Ok(Summary {
                workers: comm.size(),
                iter: after,
                rounds,
                test: None,
                seconds: start.elapsed().as_secs_f64(),
                allreduce: total_comm.as_secs_f64(),
                stopped_by_time: false,
                interrupted: true,
            });
        }
        let end = last || stopped_by_time;
        let test_now = crossed(before, after, config.test_interval) && !end;
        let snap_now = crossed(before, after, config.snapshot) && !end;
        let display_now = crossed(before, after, config.display);
        let mut files = Vec::new();
        if snap_now && root {
            files = snapshot_safely(worker, false, &mut win, &mut last_good)?;
        }
        if test_now || display_now {
            let scores = if test_now {
                let t = Instant::now();
                let s = worker.test(comm)?;
                win.eval += t.elapsed();
                Some(s)
            } else {
                None
            };
            emit(comm, worker, &mut win, rounds, lr, scores, files, start, on_event)?;
        } else if snap_now {
            // Every rank takes part (the loss reduction is a collective), not only rank 0,
            // which alone holds the files or the warning of a failed snapshot.
            emit(comm, worker, &mut win, rounds, lr, None, files, start, on_event)?;
        } else if root {
            on_event(&Event {
                tick: true,
                round: rounds,
                iter: after,
                loss: last_loss.map(f64::from),
                lr,
                compute: 0.0,
                allreduce: 0.0,
                data_wait: 0.0,
                eval: 0.0,
                seconds: start.elapsed().as_secs_f64(),
                test: None,
                snapshot: Vec::new(),
                warnings: Vec::new(),
            });
        }
        if end {
            break;
        }
    }
    let t = Instant::now();
    let test = match worker.test(comm) {
        Ok(s) => Some(s),
        Err(Error::NoTestData) => None,
        Err(e) => return Err(e),
    };
    win.eval += t.elapsed();
    let files = if root && config.snapshot_after_train {
        snapshot_safely(worker, true, &mut win, &mut last_good)?
    } else {
        Vec::new()
    };
    emit(comm, worker, &mut win, rounds, lr, test.clone(), files, start, on_event)?;
    Ok(Summary {
        workers: comm.size(),
        iter: worker.iter(),
        rounds,
        test,
        seconds: start.elapsed().as_secs_f64(),
        allreduce: total_comm.as_secs_f64(),
        stopped_by_time,
        interrupted: false,
    })
}

/// Reduces the window's loss over ranks (a collective: every rank calls it) and reports on rank 0.
#[allow(clippy::too_many_arguments)]
fn emit<C, W>(
    comm: &C,
    worker: &mut W,
    win: &mut Window,
    round: u64,
    lr: Option<f32>,
    test: Option<TestScores>,
    snapshot: Vec<PathBuf>,
    start: Instant,
    on_event: &mut dyn FnMut(&Event),
) -> Result<()>
where
    C: Collective,
    W: Worker + ?Sized,
{
    let mut loss = [win.loss, win.steps as f64];
    if comm.size() > 1 {
        comm.all_reduce_sum_f64(&mut loss)?;
    }
    let wait = worker.data_wait();
    let data_wait = wait.saturating_sub(win.data_wait_at);
    if comm.rank() == 0 {
        on_event(&Event {
            tick: false,
            round,
            iter: worker.iter(),
            loss: (loss[1] > 0.0).then(|| loss[0] / loss[1]),
            lr,
            compute: win.compute.saturating_sub(data_wait).as_secs_f64(),
            allreduce: win.comm.as_secs_f64(),
            data_wait: data_wait.as_secs_f64(),
            eval: win.eval.as_secs_f64(),
            seconds: start.elapsed().as_secs_f64(),
            test,
            snapshot,
            warnings: std::mem::take(&mut win.warnings),
        });
    }
    *win = Window { data_wait_at: wait, ..Window::default() };
    Ok(())
}
