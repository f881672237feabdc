//! Caffe's parameter update, rule for rule, over one flat parameter buffer.
//!
//! Caffe's `SGDSolver::ApplyUpdate` order is kept exactly:
//! 1. the learning rate for the current iteration (`lr_policy`);
//! 2. `clip_gradients`: when the L2 norm of all gradients exceeds the bound, scale them all down to it;
//! 3. per parameter blob: normalise by `iter_size`, add weight decay (`weight_decay * decay_mult`,
//!    L2 or L1), compute the update value with the blob's rate (`rate * lr_mult`), which for SGD is
//!    kept inside the momentum history;
//! 4. apply `w -= update` and advance the iteration ([`Updater::apply_scaled`] fuses a scaling of
//!    the whole buffer into this pass: `w = (w - update) * scale`).
//!
//! (SparkNet's last release forgot to zero gradients and to advance the iteration; the caller zeroes
//! gradients before the forward/backward passes, and [`Updater::apply`] advances `iter`.)

use super::config::{Regularization, SolverConfig, SolverKind};

/// One learnable blob inside the flat buffer, with its `ParamSpec` multipliers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamRange {
    /// Offset of the blob's first element in the flat buffer.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
    /// `param { lr_mult }` (default 1).
    pub lr_mult: f32,
    /// `param { decay_mult }` (default 1).
    pub decay_mult: f32,
}

impl ParamRange {
    fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// Solver state that persists across iterations: the iteration counter, MultiStep's `current_step`
/// and the history buffers (one or two sets, each as long as the parameter buffer).
#[derive(Debug, Clone, PartialEq)]
pub struct UpdaterState {
    /// Completed iterations (Caffe's `iter_`).
    pub iter: u64,
    /// MultiStep's `current_step` (number of step values passed).
    pub current_step: usize,
    /// History sets: `history[0]` for every rule; `history[1]` for AdaDelta (squared updates) and
    /// Adam (second moment).
    pub history: Vec<Vec<f32>>,
}

/// Errors from the update step.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpdateError {
    /// Buffers disagree in length with the parameter table.
    #[error("solver update: {what} has {got} elements, the parameter table needs {expected}")]
    Length {
        /// Which buffer.
        what: &'static str,
        /// Length required by the parameter table.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A parameter range runs past the end of the buffer or ranges overlap.
    #[error(
        "solver update: parameter range {index} ({offset}..{end}) is outside 0..{total} or overlaps another"
    )]
    BadRange {
        /// Index in the parameter table.
        index: usize,
        /// Range start.
        offset: usize,
        /// Range end.
        end: usize,
        /// Buffer length.
        total: usize,
    },
    /// Restored history does not fit this solver type and net.
    #[error(
        "solver state: expected {expected_sets} history set(s) of {len} values, got {got_sets} set(s)"
    )]
    History {
        /// Sets this rule keeps.
        expected_sets: usize,
        /// Parameter count.
        len: usize,
        /// Sets given.
        got_sets: usize,
    },
}

/// Applies Caffe's update rule to a flat parameter buffer.
#[derive(Debug, Clone)]
pub struct Updater {
    config: SolverConfig,
    ranges: Vec<ParamRange>,
    total: usize,
    state: UpdaterState,
}

impl Updater {
    /// A fresh updater (iteration 0, zero history) for parameters laid out as `ranges` inside a
    /// buffer of `total` elements.
    ///
    /// # Errors
    /// When a range is out of bounds or ranges overlap.
    pub fn new(
        config: SolverConfig,
        ranges: Vec<ParamRange>,
        total: usize,
    ) -> Result<Self, UpdateError> {
        let mut sorted: Vec<(usize, &ParamRange)> = ranges.iter().enumerate().collect();
        sorted.sort_by_key(|(_, r)| r.offset);
        let mut end_prev = 0;
        for (index, r) in sorted {
            let end = r.offset.saturating_add(r.len);
            if end > total || r.offset < end_prev {
                return Err(UpdateError::BadRange { index, offset: r.offset, end, total });
            }
            end_prev = end;
        }
        let history = vec![vec![0.0; total]; config.kind.history_sets()];
        Ok(Self {
            config,
            ranges,
            total,
            state: UpdaterState { iter: 0, current_step: 0, history },
        })
    }

    /// The settings.
    pub fn config(&self) -> &SolverConfig {
        &self.config
    }

    /// The parameter table.
    pub fn ranges(&self) -> &[ParamRange] {
        &self.ranges
    }

    /// Iteration, MultiStep step and history (what a solverstate stores).
    pub fn state(&self) -> &UpdaterState {
        &self.state
    }

    /// Mutable access to the state (for example to reset or average the history).
    pub fn state_mut(&mut self) -> &mut UpdaterState {
        &mut self.state
    }

    /// Restores a saved state (resume from a solverstate).
    ///
    /// # Errors
    /// When the history does not match this rule's set count or the parameter count.
    pub fn restore(&mut self, state: UpdaterState) -> Result<(), UpdateError> {
        let sets = self.config.kind.history_sets();
        if state.history.len() != sets || state.history.iter().any(|h| h.len() != self.total) {
            return Err(UpdateError::History {
                expected_sets: sets,
                len: self.total,
                got_sets: state.history.len(),
            });
        }
        self.state = state;
        Ok(())
    }

    /// The learning rate the next [`apply`](Self::apply) will use.
    pub fn learning_rate(&self) -> f64 {
        self.config.lr_policy.rate(self.config.base_lr, self.state.iter)
    }

    /// One Caffe update: clip, normalise, regularise, compute the update value into `grads`, then
    /// `params -= grads` and advance the iteration. `grads` holds the accumulated gradients on entry
    /// and the applied update on return (as Caffe's diff does).
    ///
    /// # Errors
    /// When a buffer's length differs from the parameter table's total.
    pub fn apply(&mut self, params: &mut [f32], grads: &mut [f32]) -> Result<f64, UpdateError> {
        self.apply_inner(params, grads, None)
    }

    /// [`apply`](Self::apply) with its final pass fused with a scaling of the whole buffer:
    /// `w = (w - u) * scale` for every value (BatchNorm statistics and other values the rule leaves
    /// alone included, so they end up multiplied by `scale` too). The result is bit for bit that
    /// of `apply` followed by multiplying every parameter by `scale`, in one pass instead of two.
    ///
    /// SparkNet's averaging uses it with `scale = 1 / K` on the last local step of a round, so
    /// that the round's allreduce-sum directly yields the mean (see sparknet-mpi's
    /// `Averager::average_prescaled`).
    ///
    /// # Errors
    /// As [`apply`](Self::apply).
    pub fn apply_scaled(
        &mut self,
        params: &mut [f32],
        grads: &mut [f32],
        scale: f32,
    ) -> Result<f64, UpdateError> {
        self.apply_inner(params, grads, Some(scale))
    }

    fn apply_inner(
        &mut self,
        params: &mut [f32],
        grads: &mut [f32],
        scale: Option<f32>,
    ) -> Result<f64, UpdateError> {
        for (what, got) in [("parameter buffer", params.len()), ("gradient buffer", grads.len())] {
            if got != self.total {
                return Err(UpdateError::Length { what, expected: self.total, got });
            }
        }
        let rate = self.learning_rate();
        self.clip(grads);
        let c = &self.config;
        let norm = if c.iter_size > 1 { 1.0 / c.iter_size as f32 } else { 1.0 };
        let t = self.state.iter + 1;
        for r in &self.ranges {
            let rg = r.range();
            let (w, g) = (&params[rg.clone()], &mut grads[rg.clone()]);
            if norm != 1.0 {
                g.iter_mut().for_each(|x| *x *= norm);
            }
            let decay = (c.weight_decay * f64::from(r.decay_mult)) as f32;
            if decay != 0.0 {
                match c.regularization {
                    Regularization::L2 => g.iter_mut().zip(w).for_each(|(g, w)| *g += decay * w),
                    Regularization::L1 => {
                        g.iter_mut().zip(w).for_each(|(g, w)| *g += decay * sign(*w));
                    }
                }
            }
            let local_rate = (rate * f64::from(r.lr_mult)) as f32;
            let (h0, rest) =
                self.state.history.split_first_mut().expect("at least one history set");
            let h = &mut h0[rg.clone()];
            let momentum = c.momentum as f32;
            let delta = c.delta as f32;
            match c.kind {
                SolverKind::Sgd => g.iter_mut().zip(h.iter_mut()).for_each(|(g, h)| {
                    *h = local_rate * *g + momentum * *h;
                    *g = *h;
                }),
                SolverKind::Nesterov => g.iter_mut().zip(h.iter_mut()).for_each(|(g, h)| {
                    let prev = *h;
                    *h = momentum * *h + local_rate * *g;
                    *g = (1.0 + momentum) * *h - momentum * prev;
                }),
                SolverKind::AdaGrad => g.iter_mut().zip(h.iter_mut()).for_each(|(g, h)| {
                    *h += *g * *g;
                    *g = local_rate * *g / (h.sqrt() + delta);
                }),
                SolverKind::RmsProp => {
                    let d = c.rms_decay as f32;
                    g.iter_mut().zip(h.iter_mut()).for_each(|(g, h)| {
                        *h = d * *h + (1.0 - d) * *g * *g;
                        *g = local_rate * *g / (h.sqrt() + delta);
                    });
                }
                SolverKind::AdaDelta => {
                    let u = &mut rest[0][rg.clone()];
                    g.iter_mut().zip(h.iter_mut()).zip(u.iter_mut()).for_each(|((g, h), u)| {
                        *h = momentum * *h + (1.0 - momentum) * *g * *g;
                        let step = *g * ((*u + delta) / (*h + delta)).sqrt();
                        *u = momentum * *u + (1.0 - momentum) * step * step;
                        *g = local_rate * step;
                    });
                }
                SolverKind::Adam => {
                    let v = &mut rest[0][rg.clone()];
                    let (b1, b2) = (c.momentum, c.momentum2);
                    let correction =
                        ((1.0 - b2.powf(t as f64)).sqrt() / (1.0 - b1.powf(t as f64))) as f32;
                    let (b1, b2) = (b1 as f32, b2 as f32);
                    g.iter_mut().zip(h.iter_mut()).zip(v.iter_mut()).for_each(|((g, m), v)| {
                        *m = b1 * *m + (1.0 - b1) * *g;
                        *v = b2 * *v + (1.0 - b2) * *g * *g;
                        *g = local_rate * correction * *m / (v.sqrt() + delta);
                    });
                }
            }
        }
        match scale {
            None => params.iter_mut().zip(grads.iter()).for_each(|(w, u)| *w -= u),
            Some(s) => params.iter_mut().zip(grads.iter()).for_each(|(w, u)| *w = (*w - u) * s),
        }
        self.state.iter += 1;
        self.state.current_step = self.config.lr_policy.multistep_index(self.state.iter);
        Ok(rate)
    }

    /// Caffe's `ClipGradients`: scale all gradients so their global L2 norm is at most the bound.
    fn clip(&self, grads: &mut [f32]) {
        let bound = self.config.clip_gradients;
        if bound < 0.0 {
            return;
        }
        let sumsq: f64 = self
            .ranges
            .iter()
            .flat_map(|r| grads[r.range()].iter())
            .map(|&g| f64::from(g) * f64::from(g))
            .sum();
        let norm = sumsq.sqrt();
        if norm > bound {
            let scale = (bound / norm) as f32;
            for r in &self.ranges {
                grads[r.range()].iter_mut().for_each(|g| *g *= scale);
            }
        }
    }
}

fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}
