//! SparkNet's model averaging: after every `tau` local solver steps, each of the `K` workers
//! replaces its weights by the mean of all workers' weights, with one allreduce per round.
//!
//! What else is averaged besides the weights is the [`AveragingPolicy`].
//!
//! Everything averaged in a round travels in the same single allreduce: when only the parameters
//! are averaged they are reduced in place (no copy); otherwise the averaged parts are packed into
//! the averager's buffer, which is allocated once, when the [`Averager`] is created.

use std::time::{Duration, Instant};

use crate::{Collective, Error, Result};

/// What happens to one kind of per-replica state at an averaging round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatePolicy {
    /// Replaced by the mean over workers, like the weights.
    Averaged,
    /// Left as each worker has it.
    Local,
    /// Set to zero on every worker.
    Reset,
}

/// What is averaged besides the learnable parameters, which always are.
///
/// Two other kinds of per-replica state have a [`StatePolicy`] each; the trainer passes this
/// policy to [`Averager::average_state`]:
///
/// | state | default | why |
/// |---|---|---|
/// | BatchNorm statistics (running mean, variance, scale factor) | [`Averaged`](StatePolicy::Averaged) | they describe the data every replica will see at test time; averaging them keeps the averaged weights and statistics consistent |
/// | solver history (momentum buffers, Adam moments) | [`Local`](StatePolicy::Local) | what SparkNet did: each worker's Caffe solver kept its own history across rounds |
///
/// [`Reset`](StatePolicy::Reset) zeroes the state after the round (a fresh momentum after every
/// averaging step); [`Averaged`](StatePolicy::Averaged) for the solver history averages the
/// momentum like the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AveragingPolicy {
    /// BatchNorm running statistics (default [`StatePolicy::Averaged`]).
    pub batch_norm: StatePolicy,
    /// Solver history such as momentum (default [`StatePolicy::Local`], as in SparkNet).
    pub solver_history: StatePolicy,
}

impl Default for AveragingPolicy {
    fn default() -> Self {
        AveragingPolicy { batch_norm: StatePolicy::Averaged, solver_history: StatePolicy::Local }
    }
}

impl AveragingPolicy {
    /// How many values a round packs into the averager's buffer for state of these lengths: 0 when
    /// only the parameters are averaged (they are reduced in place), otherwise the parameters plus
    /// every averaged part. Pass it to [`Averager::new`].
    pub fn packed_len(&self, params: usize, batch_norm: usize, solver_history: usize) -> usize {
        let bn = if self.batch_norm == StatePolicy::Averaged { batch_norm } else { 0 };
        let hist = if self.solver_history == StatePolicy::Averaged { solver_history } else { 0 };
        if bn + hist == 0 { 0 } else { params + bn + hist }
    }
}

/// One worker's state for [`Averager::average_state`]; each part is a flat `f32` buffer (empty
/// when the net has none).
#[derive(Debug)]
pub struct ReplicaState<'a> {
    /// The learnable parameters, always averaged.
    pub params: &'a mut [f32],
    /// BatchNorm running statistics.
    pub batch_norm: &'a mut [f32],
    /// Solver history (momentum and the like).
    pub solver_history: &'a mut [f32],
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
///     Averager::new(0).average(&comm, &mut weights).map(|_stats| weights)
/// })?;
/// for weights in means {
///     assert_eq!(weights?, [0.5; 3]);
/// }
/// # Ok::<(), sparknet_mpi::Error>(())
/// ```
#[derive(Debug)]
pub struct Averager {
    buf: Vec<f32>,
    comm_delay: Duration,
    rounds: u64,
}

impl Averager {
    /// An averager whose packing buffer holds `capacity` values, allocated now. Use 0 when only
    /// contiguous parameters are averaged ([`average`](Averager::average) reduces them in place);
    /// for [`average_state`](Averager::average_state) use [`AveragingPolicy::packed_len`].
    pub fn new(capacity: usize) -> Averager {
        Averager { buf: vec![0.0; capacity], comm_delay: Duration::ZERO, rounds: 0 }
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

    /// The capacity of the packing buffer.
    pub fn capacity(&self) -> usize {
        self.buf.len()
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

    /// Averages the parameters and, following `policy`, the BatchNorm statistics and the solver
    /// history, in one allreduce; `Reset` parts are zeroed, `Local` parts left alone.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] when the parts to pack exceed the capacity given to
    /// [`new`](Averager::new) (see [`AveragingPolicy::packed_len`]); whatever the collective
    /// returns.
    pub fn average_state<C: Collective + ?Sized>(
        &mut self,
        comm: &C,
        state: ReplicaState<'_>,
        policy: &AveragingPolicy,
    ) -> Result<RoundStats> {
        let ReplicaState { params, batch_norm, solver_history } = state;
        let mut parts: [(&mut [f32], StatePolicy); 3] = [
            (params, StatePolicy::Averaged),
            (batch_norm, policy.batch_norm),
            (solver_history, policy.solver_history),
        ];
        let packed = policy.packed_len(parts[0].0.len(), parts[1].0.len(), parts[2].0.len());
        let stats = if packed == 0 {
            self.average(comm, parts[0].0)?
        } else {
            if packed > self.buf.len() {
                return Err(Error::BufferTooSmall {
                    what: "parameters and averaged state",
                    needed: packed,
                    capacity: self.buf.len(),
                });
            }
            let start = Instant::now();
            let mut at = 0;
            for (part, _) in parts.iter().filter(|(_, p)| *p == StatePolicy::Averaged) {
                self.buf[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            self.sleep();
            comm.all_reduce_mean(&mut self.buf[..packed])?;
            at = 0;
            for (part, _) in parts.iter_mut().filter(|(_, p)| *p == StatePolicy::Averaged) {
                part.copy_from_slice(&self.buf[at..at + part.len()]);
                at += part.len();
            }
            self.rounds += 1;
            RoundStats { elements: packed, comm: start.elapsed(), delay: self.comm_delay }
        };
        for (part, _) in parts.iter_mut().filter(|(_, p)| *p == StatePolicy::Reset) {
            part.fill(0.0);
        }
        Ok(stats)
    }

    fn sleep(&self) {
        if !self.comm_delay.is_zero() {
            std::thread::sleep(self.comm_delay);
        }
    }
}
