//! The SparkNet loop: `K` workers (ranks) each run `tau` local solver steps on their own data
//! partition, then replace their weights by the mean over workers, with one allreduce per round.
//!
//! The loop is written once against [`Collective`] (threads in one process, or one process per
//! rank under `mpirun`) and [`Worker`] (one replica: a solver with its data). Per rank:
//!
//! 1. Rank 0's weights and iteration count are broadcast, so every replica starts equal (random
//!    init from the fillers, `--weights` or `--resume` on rank 0).
//! 2. Each round: with [`SyncMode::Average`] (SparkNet), `tau` local steps and then one
//!    [`Averager`](crate::Averager) round over the flat parameter buffer (with `K` > 1 the last step also
//!    multiplies the weights by `1 / K` in its update pass, [`Worker::step_scaled`], and the
//!    round is one allreduce-sum, [`Averager::average_prescaled`](crate::Averager::average_prescaled)); with [`SyncMode::Gradients`] (the paper's
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
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::eval::TestScores;
use crate::outer::OuterConfig;
use crate::{Collective, Error, Result, StatePolicy};

mod events;
mod round;

pub use events::{Event, Summary};
pub use round::train;

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
    /// Stop at the first periodic test whose accuracy reaches this value (a fraction, as the
    /// JSON's `accuracy`); the run then ends as if `max_iter` were reached there (final snapshot,
    /// no second test). `None`: run to `max_iter`.
    pub target_accuracy: Option<f64>,
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
    /// What an averaging round does with the replicas' mean: SparkNet's plain average (the
    /// default, bit for bit), or an outer optimizer on the round's pseudo-gradient.
    pub outer: OuterConfig,
    /// The outer optimizer's state to resume from (a snapshot's `.outerstate`).
    pub outer_resume: Option<PathBuf>,
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
            target_accuracy: None,
            snapshot: 0,
            snapshot_after_train: false,
            time_budget: None,
            comm_delay: Duration::ZERO,
            stop: None,
            history: StatePolicy::Local,
            outer: OuterConfig::default(),
            outer_resume: None,
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
    /// One full solver step on the next training batch (forward, backward, update). The
    /// default is [`compute_gradients`](Worker::compute_gradients) then
    /// [`apply_gradients`](Worker::apply_gradients).
    ///
    /// # Errors
    /// Data, net or solver errors.
    fn step(&mut self) -> Result<StepOutcome> {
        let loss = self.compute_gradients()?;
        let lr = self.apply_gradients()?;
        Ok(StepOutcome { loss, lr })
    }
    /// [`step`](Worker::step), then every value of [`params`](Worker::params) multiplied by
    /// `scale`: the last local step of an averaging round over `K` > 1 workers, with
    /// `scale = 1 / K`, so that the round's allreduce-sum yields the mean
    /// ([`Averager::average_prescaled`](crate::Averager::average_prescaled)). The loop calls
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
    /// Ranges of [`params`](Worker::params) that are not learned by gradient (BatchNorm
    /// statistics, blobs with `lr_mult: 0`): an outer optimizer only averages them. Default:
    /// none.
    ///
    /// # Errors
    /// As [`params`](Worker::params).
    fn plain_ranges(&mut self) -> Result<Vec<std::ops::Range<usize>>> {
        Ok(Vec::new())
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
    /// Called once after a step whose loss or weights were not finite: what went non-finite
    /// first (for a net, the first layer whose output did), in words, when the worker can tell.
    ///
    /// # Errors
    /// When the worker's state cannot be read.
    fn diagnose_non_finite(&mut self) -> Result<Option<String>> {
        Ok(None)
    }
}
