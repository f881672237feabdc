//! The loop itself: one [`Trainer`] per rank, a method per kind of round (local steps then
//! averaging, gradient sync, history policy), the stop vote, and the reports.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Event, LoopConfig, Summary, SyncMode, Worker};
use crate::eval::TestScores;
use crate::outer::OuterOptimizer;
use crate::{Averager, Collective, Error, Result, StatePolicy};

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
    match Trainer::start(comm, worker, config, on_event).and_then(Trainer::run) {
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

/// What the ranks decided together at the end of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vote {
    /// Go on.
    Continue,
    /// The time budget is spent (rank 0's clock decides).
    OutOfTime,
    /// A stop was requested on some rank.
    Interrupt,
}

/// One rank's loop state: the worker, the averager, and what the next report covers.
struct Trainer<'a, C: ?Sized, W: ?Sized> {
    comm: &'a C,
    worker: &'a mut W,
    config: &'a LoopConfig,
    on_event: &'a mut dyn FnMut(&Event),
    averager: Averager,
    start: Instant,
    win: Window,
    rounds: u64,
    total_comm: Duration,
    lr: Option<f32>,
    last_loss: Option<f32>,
    /// The outer optimizer (`None` for SparkNet's plain average).
    outer: Option<OuterOptimizer>,
    /// The last `.solverstate` written (named when training diverges).
    last_good: Option<PathBuf>,
    /// The first non-finite step of this round: its iteration and what went non-finite.
    diverged: Option<(u64, String)>,
}

impl<'a, C, W> Trainer<'a, C, W>
where
    C: Collective,
    W: Worker + ?Sized,
{
    /// Checks the settings and makes every replica start from rank 0's weights and iteration.
    fn start(
        comm: &'a C,
        worker: &'a mut W,
        config: &'a LoopConfig,
        on_event: &'a mut dyn FnMut(&Event),
    ) -> Result<Self> {
        if config.tau == 0 {
            return Err(Error::Config("--tau must be at least 1".into()));
        }
        let start = Instant::now();
        if comm.size() > 1 {
            let mut iter = worker.iter().to_le_bytes();
            comm.broadcast_bytes(&mut iter, 0)?;
            worker.set_iter(u64::from_le_bytes(iter));
            comm.broadcast(worker.params()?, 0)?;
            worker.params_changed()?;
        }
        let win = Window { data_wait_at: worker.data_wait(), ..Window::default() };
        let outer = if config.outer.is_average() {
            None
        } else {
            let plain = worker.plain_ranges()?;
            let mut outer = OuterOptimizer::new(config.outer, worker.params()?.len(), plain);
            if let Some(state) = &config.outer_resume {
                outer.load(state)?;
            }
            Some(outer)
        };
        Ok(Trainer {
            comm,
            worker,
            config,
            on_event,
            averager: Averager::new().with_comm_delay(config.comm_delay),
            start,
            win,
            rounds: 0,
            total_comm: Duration::ZERO,
            lr: None,
            last_loss: None,
            outer,
            last_good: None,
            diverged: None,
        })
    }

    fn multi(&self) -> bool {
        self.comm.size() > 1
    }

    fn root(&self) -> bool {
        self.comm.rank() == 0
    }

    /// True when a round communicates: more than one worker, or a configured delay (a single
    /// worker then still pays the slow network, as the paper's experiments assume).
    fn communicates(&self) -> bool {
        self.multi() || !self.config.comm_delay.is_zero()
    }

    /// The loop: rounds until `max_iter`, the time budget or a stop request, then the final
    /// test and snapshot.
    fn run(mut self) -> Result<Summary> {
        let config = self.config;
        if config.test_initialization && config.test_interval > 0 {
            let scores = self.test()?;
            self.report(Some(scores), Vec::new())?;
        }
        let mut stopped_by_time = false;
        while self.worker.iter() < config.max_iter {
            let before = self.worker.iter();
            if config.sync == SyncMode::Gradients || before < config.warmup {
                self.gradient_round()?;
            } else {
                self.local_round(config.tau.min(config.max_iter - before))?;
            }
            self.rounds += 1;
            self.check_finite()?;
            let after = self.worker.iter();
            let last = after >= config.max_iter;
            match self.vote()? {
                Vote::Interrupt => return self.interrupted(),
                Vote::OutOfTime => stopped_by_time = !last,
                Vote::Continue => {}
            }
            let end = last || stopped_by_time;
            if let Some(scores) = self.round_events(before, after, end)?
                && config.target_accuracy.is_some_and(|t| scores.accuracy() >= Some(t))
            {
                return self.finish_at_target(scores);
            }
            if end {
                break;
            }
        }
        self.finish(stopped_by_time)
    }

    /// The paper's naive baseline: one step whose gradients are averaged before the update.
    fn gradient_round(&mut self) -> Result<()> {
        let t = Instant::now();
        let loss = self.worker.compute_gradients()?;
        self.win.compute += t.elapsed();
        if self.communicates() {
            let stats = self.averager.average(self.comm, self.worker.grads()?)?;
            self.add_comm(stats.comm);
        }
        let t = Instant::now();
        self.lr = Some(self.worker.apply_gradients()?);
        self.win.compute += t.elapsed();
        self.count_step(loss);
        self.note_step(loss)?;
        Ok(())
    }

    /// SparkNet's round: `steps` local steps, then the weights averaged with one allreduce.
    /// Over `K` > 1 workers the last step also multiplies the weights by `1 / K` (fused into the
    /// update's pass), so that the allreduce-sum is the mean.
    fn local_round(&mut self, steps: u64) -> Result<()> {
        let inv_k = 1.0 / self.comm.size() as f32;
        if let Some(outer) = &mut self.outer {
            outer.begin_round(self.worker.params()?);
        }
        let t = Instant::now();
        for i in 0..steps {
            let out = if self.multi() && i + 1 == steps {
                self.worker.step_scaled(inv_k)?
            } else {
                self.worker.step()?
            };
            self.lr = Some(out.lr);
            self.count_step(out.loss);
            self.note_step(out.loss)?;
        }
        self.win.compute += t.elapsed();
        if self.communicates() {
            let stats = if self.multi() {
                self.averager.average_prescaled(self.comm, self.worker.params()?)?
            } else {
                self.averager.average(self.comm, self.worker.params()?)?
            };
            self.add_comm(stats.comm);
            self.average_history()?;
        }
        if let Some(outer) = &mut self.outer {
            outer.apply(self.worker.params()?);
        }
        if self.communicates() || self.outer.is_some() {
            self.worker.params_changed()?;
        }
        Ok(())
    }

    /// The solver history at an averaging round, as [`LoopConfig::history`] says.
    fn average_history(&mut self) -> Result<()> {
        for set in 0..self.worker.history_sets() {
            match self.config.history {
                StatePolicy::Local => {}
                StatePolicy::Reset => self.worker.history(set)?.fill(0.0),
                StatePolicy::Averaged => {
                    let stats = self.averager.average(self.comm, self.worker.history(set)?)?;
                    self.add_comm(stats.comm);
                }
            }
        }
        Ok(())
    }

    /// [time budget spent (rank 0's clock), stop requested (on any rank)], summed over ranks so
    /// that every rank takes the same decision.
    fn vote(&mut self) -> Result<Vote> {
        let config = self.config;
        let mut stop = [0f64; 2];
        if self.root() && config.time_budget.is_some_and(|b| self.start.elapsed() >= b) {
            stop[0] = 1.0;
        }
        if config.stop.is_some_and(|f| f.load(Ordering::SeqCst)) {
            stop[1] = 1.0;
        }
        if (config.time_budget.is_some() || config.stop.is_some()) && self.multi() {
            self.comm.all_reduce_sum_f64(&mut stop)?;
        }
        Ok(if stop[1] > 0.0 {
            Vote::Interrupt
        } else if stop[0] > 0.0 {
            Vote::OutOfTime
        } else {
            Vote::Continue
        })
    }

    /// The display, test and snapshot points this round crossed (none of the last two at the
    /// end: the final test and snapshot follow), or a progress tick. Returns the scores when it
    /// tested.
    fn round_events(&mut self, before: u64, after: u64, end: bool) -> Result<Option<TestScores>> {
        let config = self.config;
        let test_now = crossed(before, after, config.test_interval) && !end;
        let snap_now = crossed(before, after, config.snapshot) && !end;
        let display_now = crossed(before, after, config.display);
        let files = if snap_now && self.root() { self.snapshot(false)? } else { Vec::new() };
        if test_now || display_now {
            let scores = if test_now { Some(self.test()?) } else { None };
            self.report(scores.clone(), files)?;
            Ok(scores)
        } else if snap_now {
            // Every rank takes part (the loss reduction is a collective), not only rank 0,
            // which alone holds the files or the warning of a failed snapshot.
            self.report(None, files)?;
            Ok(None)
        } else {
            self.tick();
            Ok(None)
        }
    }

    /// A periodic test reached the target accuracy: the run ends there, with the final snapshot
    /// (when asked for) and those scores as the final test. Every rank computes the same
    /// (reduced) scores, so every rank stops at the same round.
    fn finish_at_target(mut self, scores: TestScores) -> Result<Summary> {
        if self.config.snapshot_after_train {
            let files = if self.root() { self.snapshot(true)? } else { Vec::new() };
            // Every rank: the report reduces the loss window.
            self.report(None, files)?;
        }
        let mut summary = self.summary(Some(scores), false, false);
        summary.reached_target = true;
        Ok(summary)
    }

    /// A stop request: rank 0 snapshots, no final test.
    fn interrupted(mut self) -> Result<Summary> {
        let files = if self.root() { self.snapshot(true)? } else { Vec::new() };
        self.report(None, files)?;
        Ok(self.summary(None, false, true))
    }

    /// The final test (when the net has test data) and snapshot.
    fn finish(mut self, stopped_by_time: bool) -> Result<Summary> {
        let test = match self.test() {
            Ok(s) => Some(s),
            Err(Error::NoTestData) => None,
            Err(e) => return Err(e),
        };
        let files = if self.root() && self.config.snapshot_after_train {
            self.snapshot(true)?
        } else {
            Vec::new()
        };
        self.report(test.clone(), files)?;
        Ok(self.summary(test, stopped_by_time, false))
    }

    fn summary(&self, test: Option<TestScores>, by_time: bool, interrupted: bool) -> Summary {
        Summary {
            workers: self.comm.size(),
            iter: self.worker.iter(),
            rounds: self.rounds,
            test,
            seconds: self.start.elapsed().as_secs_f64(),
            allreduce: self.total_comm.as_secs_f64(),
            stopped_by_time: by_time,
            reached_target: false,
            interrupted,
        }
    }

    /// Rank 0's snapshot, written so that a run is never lost: a failed write is retried once;
    /// mid-run a second failure becomes a warning and training goes on (the state is still in
    /// memory, the next snapshot tries again); the `last` snapshot of a run (final or on a stop)
    /// then goes to [`sparknet_net::load::fallback_path`] instead, and only when that fails too
    /// is the run an error. The outer optimizer's state is written beside the model file.
    fn snapshot(&mut self, last: bool) -> Result<Vec<PathBuf>> {
        let iter = self.worker.iter();
        let first = match self.worker.snapshot() {
            Ok(files) => return self.keep(files),
            Err(e) => e,
        };
        std::thread::sleep(Duration::from_millis(200));
        let second = match self.worker.snapshot() {
            Ok(files) => {
                self.win.warnings.push(format!(
                    "snapshot at iteration {iter} failed once ({first}); the retry wrote it"
                ));
                return self.keep(files);
            }
            Err(e) => e,
        };
        if !last {
            self.win.warnings.push(format!(
                "snapshot at iteration {iter} failed twice: {second}; training goes on and the \
                 next snapshot tries again"
            ));
            return Ok(Vec::new());
        }
        let prefix = self.worker.snapshot_prefix();
        let fallback = sparknet_net::load::fallback_path(std::path::Path::new(&prefix))
            .map_err(Error::from)
            .and_then(|p| self.worker.snapshot_to(&p.to_string_lossy()));
        match fallback {
            Ok(files) => {
                let shown: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                self.win.warnings.push(format!(
                    "could not write the snapshot at iteration {iter}: {second} (retried once); \
                     it was written to {} instead",
                    shown.join(" and ")
                ));
                self.keep(files)
            }
            Err(fallback) => {
                Err(Error::SnapshotLost { primary: Box::new(second), fallback: Box::new(fallback) })
            }
        }
    }

    /// Records a written snapshot (the last good solverstate) and adds the outer state beside it.
    fn keep(&mut self, mut files: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
        if let Some(state) =
            files.iter().find(|f| f.extension().is_some_and(|e| e == "solverstate"))
        {
            self.last_good = Some(state.clone());
        }
        if let (Some(outer), Some(model)) = (&self.outer, files.first()) {
            let path = OuterOptimizer::state_path(model);
            outer.save(&path)?;
            files.push(path);
        }
        Ok(files)
    }

    /// After a step: records the first step whose loss or updated weights are not finite, with
    /// the worker's diagnosis (the first layer whose output went non-finite), so that the report
    /// names that step and that layer rather than the round's end, when everything is NaN. The
    /// weights check is one read-only pass over the parameter buffer per step (a NaN loss can
    /// hide behind a clamped softmax loss, so the loss alone is not enough).
    fn note_step(&mut self, loss: f32) -> Result<()> {
        if self.diverged.is_some() {
            return Ok(());
        }
        let weights_ok = self.worker.params()?.iter().all(|w| w.is_finite());
        if loss.is_finite() && weights_ok {
            return Ok(());
        }
        let what = if loss.is_finite() {
            "the weights are not finite after the update".to_string()
        } else {
            format!("the loss is {loss}")
        };
        let what = match self.worker.diagnose_non_finite()? {
            Some(d) => format!("{what}; the first non-finite output: {d}"),
            None => what,
        };
        self.diverged = Some((self.worker.iter(), what));
        Ok(())
    }

    /// At the end of a round: a non-finite loss seen in it, or non-finite weights (after the
    /// averaging, so every rank decides alike), stop the run.
    fn check_finite(&mut self) -> Result<()> {
        let last_snapshot = self.last_good.clone();
        if let Some((iter, what)) = self.diverged.take() {
            return Err(Error::NonFinite { iter, what, last_snapshot });
        }
        if let Some(i) = self.worker.params()?.iter().position(|w| !w.is_finite()) {
            let value = self.worker.params()?[i];
            let what = match self.worker.diagnose_non_finite()? {
                Some(d) => format!("the weights are not finite after the round: {d}"),
                None => format!("parameter value {i} of the flat buffer is {value}"),
            };
            return Err(Error::NonFinite { iter: self.worker.iter(), what, last_snapshot });
        }
        Ok(())
    }

    fn test(&mut self) -> Result<TestScores> {
        let t = Instant::now();
        let scores = self.worker.test(self.comm);
        self.win.eval += t.elapsed();
        scores
    }

    fn count_step(&mut self, loss: f32) {
        self.win.loss += f64::from(loss);
        self.win.steps += 1;
        self.last_loss = Some(loss);
    }

    fn add_comm(&mut self, d: Duration) {
        self.win.comm += d;
        self.total_comm += d;
    }

    /// Rank 0's progress tick (nothing reduced, nothing logged).
    fn tick(&mut self) {
        if !self.root() {
            return;
        }
        (self.on_event)(&Event {
            tick: true,
            round: self.rounds,
            iter: self.worker.iter(),
            loss: self.last_loss.map(f64::from),
            lr: self.lr,
            compute: 0.0,
            allreduce: 0.0,
            data_wait: 0.0,
            eval: 0.0,
            seconds: self.start.elapsed().as_secs_f64(),
            test: None,
            snapshot: Vec::new(),
            warnings: Vec::new(),
        });
    }

    /// Reduces the window's loss over ranks (a collective: every rank calls it) and reports on
    /// rank 0; the next window starts.
    fn report(&mut self, test: Option<TestScores>, snapshot: Vec<PathBuf>) -> Result<()> {
        let mut loss = [self.win.loss, self.win.steps as f64];
        if self.multi() {
            self.comm.all_reduce_sum_f64(&mut loss)?;
        }
        let wait = self.worker.data_wait();
        let data_wait = wait.saturating_sub(self.win.data_wait_at);
        if self.root() {
            (self.on_event)(&Event {
                tick: false,
                round: self.rounds,
                iter: self.worker.iter(),
                loss: (loss[1] > 0.0).then(|| loss[0] / loss[1]),
                lr: self.lr,
                compute: self.win.compute.saturating_sub(data_wait).as_secs_f64(),
                allreduce: self.win.comm.as_secs_f64(),
                data_wait: data_wait.as_secs_f64(),
                eval: self.win.eval.as_secs_f64(),
                seconds: self.start.elapsed().as_secs_f64(),
                test,
                snapshot,
                warnings: std::mem::take(&mut self.win.warnings),
            });
        }
        self.win = Window { data_wait_at: wait, ..Window::default() };
        Ok(())
    }
}
