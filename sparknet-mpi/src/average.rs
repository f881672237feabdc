//! SparkNet's model averaging: after every `tau` local solver steps, each of the `K` workers
//! replaces its weights by the mean of all workers' weights, with one allreduce per round over
//! the flat parameter buffer, in place (BatchNorm statistics live in that buffer, so they are
//! averaged with the weights). The solver history has its own [`StatePolicy`], applied by the
//! trainer ([`crate::trainer::LoopConfig::history`]).

use std::time::{Duration, Instant};

use crate::{Collective, Result};

/// What happens to the solver history (momentum, Adam moments) at an averaging round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatePolicy {
    /// Replaced by the mean over workers, like the weights.
    Averaged,
    /// Left as each worker has it.
    Local,
    /// Set to zero on every worker.
    Reset,
}

/// Timings of one averaging round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundStats {
    /// The number of values that went through the allreduce.
    pub elements: usize,
    /// Wall time of the communication round: the allreduce, the division by `K`, packing when
    /// any, and the configured delay (the trainer's `allreduce` seconds).
    pub comm: Duration,
    /// The part of `comm` that was the artificial [`comm_delay`](Averager::with_comm_delay).
    pub delay: Duration,
}

/// Averages replicas' weights over a [`Collective`]: one allreduce per round, then a division by
/// the number of workers; no allocation per round.
///
/// ```
/// use sparknet_mpi::{Averager, Collective, LocalGroup};
///
/// let means = LocalGroup::new(2)?.run(|comm| {
///     let mut weights = vec![comm.rank() as f32; 3]; // worker 0: zeros, worker 1: ones
///     Averager::new().average(&comm, &mut weights).map(|_stats| weights)
/// })?;
/// for weights in means {
///     assert_eq!(weights?, [0.5; 3]);
/// }
/// # Ok::<(), sparknet_mpi::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Averager {
    comm_delay: Duration,
    rounds: u64,
}

impl Averager {
    /// An averager without delay.
    pub fn new() -> Averager {
        Averager::default()
    }

    /// Adds `delay` of sleep to every communication round, to reproduce SparkNet's experiments on
    /// a slow network (`--comm-delay-ms`).
    pub fn with_comm_delay(mut self, delay: Duration) -> Averager {
        self.comm_delay = delay;
        self
    }

    /// The delay added to every round.
    pub fn comm_delay(&self) -> Duration {
        self.comm_delay
    }

    /// The number of rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Replaces `params` on every worker by the elementwise mean over workers, in place: one
    /// [`all_reduce_mean`](Collective::all_reduce_mean) over the whole buffer.
    ///
    /// # Errors
    /// Whatever the collective returns (see [`Collective`]).
    pub fn average<C: Collective + ?Sized>(
        &mut self,
        comm: &C,
        params: &mut [f32],
    ) -> Result<RoundStats> {
        self.round(params, |p| comm.all_reduce_mean(p))
    }

    /// Like [`average`](Averager::average) for parameters the caller has already multiplied by
    /// `1 / K` (fused into the last solver update of the round, which touches every weight
    /// anyway): the round is then exactly one [`all_reduce_sum`](Collective::all_reduce_sum),
    /// with no pass of its own over the buffer. For a power-of-two `K` the result is bit for bit
    /// that of `average` on the unscaled weights (scaling by a power of two is exact, barring
    /// subnormals).
    ///
    /// # Errors
    /// Whatever the collective returns (see [`Collective`]).
    pub fn average_prescaled<C: Collective + ?Sized>(
        &mut self,
        comm: &C,
        params: &mut [f32],
    ) -> Result<RoundStats> {
        self.round(params, |p| comm.all_reduce_sum(p))
    }

    /// One timed round over `params`: the configured delay, then `reduce`.
    fn round(
        &mut self,
        params: &mut [f32],
        reduce: impl FnOnce(&mut [f32]) -> Result<()>,
    ) -> Result<RoundStats> {
        let start = Instant::now();
        self.sleep();
        reduce(params)?;
        self.rounds += 1;
        Ok(RoundStats { elements: params.len(), comm: start.elapsed(), delay: self.comm_delay })
    }

    fn sleep(&self) {
        if !self.comm_delay.is_zero() {
            std::thread::sleep(self.comm_delay);
        }
    }
}
