//! [`Solver`]: Caffe's `Solver::Step` loop around a train net and its test nets. The net never
//! reads data: every step takes its batches from the caller ([`Solver::step`]), and the
//! [`Solver::solve`] loop pulls them from closures. Snapshots and resume are in `snapshot.rs`.
//!
//! A step is two operations a distributed trainer can also call apart:
//! [`Solver::compute_gradients`] (zero the gradients, `iter_size` forward/backward passes) and
//! [`Solver::apply_update`] (Caffe's update rule over the flat buffers). Gradient-averaging
//! trainers run an allreduce between the two.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use candle::Tensor;

use super::{ParamRange, SolverConfig, Updater};
use crate::load::{read_net_prototxt, read_solver_prototxt};
use crate::proto::{NetParameter, Phase, SolverParameter};
use crate::{Error, Net, NetConfig, Result};

/// One forward pass's inputs: every fed blob by name.
pub type Inputs = HashMap<String, Tensor>;

/// One averaged output of a test net.
#[derive(Debug, Clone, PartialEq)]
pub struct TestScore {
    /// Output blob name.
    pub blob: String,
    /// Mean over `test_iter` passes of the blob's sum (its value for a scalar output).
    pub value: f32,
}

/// What [`Solver::solve`] reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A `display` line: the iteration, the loss smoothed over `average_loss` and the rate.
    Train {
        /// Iteration (before the update).
        iter: u64,
        /// Smoothed loss.
        loss: f32,
        /// Learning rate of this update.
        lr: f64,
    },
    /// A test pass over test net `net` at `iter`.
    Test {
        /// Iteration.
        iter: u64,
        /// Test net index.
        net: usize,
        /// Averaged outputs.
        scores: Vec<TestScore>,
    },
    /// Snapshot files written.
    Snapshot {
        /// The `.caffemodel`.
        model: PathBuf,
        /// The `.solverstate`.
        state: PathBuf,
    },
}

/// A test net and whether its parameter layout is the train net's (then the trained weights
/// are shared by copying the flat buffer; otherwise by layer name).
struct TestNet {
    net: Net,
    same_layout: Option<bool>,
}

/// Caffe's solver: a TRAIN net, its TEST nets and the update rule.
pub struct Solver {
    pub(super) param: SolverParameter,
    pub(super) net: Net,
    test_nets: Vec<TestNet>,
    pub(super) updater: Updater,
    pub(super) losses: VecDeque<f32>,
}

impl std::fmt::Debug for Solver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Solver")
            .field("iter", &self.iter())
            .field("test_nets", &self.test_nets.len())
            .finish_non_exhaustive()
    }
}

fn net_from(param: Option<&NetParameter>, file: Option<&str>) -> Result<Option<NetParameter>> {
    Ok(match (param, file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(read_net_prototxt(f)?),
        (None, None) => None,
    })
}

fn layout(net: &mut Net) -> Result<Vec<(String, usize, Vec<usize>)>> {
    Ok(net.param_table()?.iter().map(|e| (e.layer.clone(), e.blob, e.shape.clone())).collect())
}

impl Solver {
    /// Reads a solver prototxt and builds its nets (see [`Solver::from_param`]).
    ///
    /// # Errors
    /// As [`read_solver_prototxt`] and [`Solver::from_param`].
    pub fn from_file(path: impl AsRef<Path>, config: NetConfig) -> Result<Solver> {
        Solver::from_param(&read_solver_prototxt(path)?, config)
    }

    /// Builds the train net (`net_param`, `net`, `train_net_param` or `train_net`; relative paths
    /// as given, i.e. against the working directory as Caffe does) in TRAIN and the test nets
    /// (`test_net_param`/`test_net`, else the same definition in TEST, one per `test_iter`).
    /// `config` gives device, seed (`random_seed >= 0` overrides it) and the fed input shapes;
    /// its phase is ignored. The parameter shapes must be known (declared or in
    /// `config.input_shapes`).
    ///
    /// # Errors
    /// Unreadable nets, bad solver settings, unknown parameter shapes.
    pub fn from_param(param: &SolverParameter, config: NetConfig) -> Result<Solver> {
        Solver::with_test_config(param, config.clone(), config)
    }

    /// [`Solver::from_param`] with the test nets built from their own `test_config` (their fed
    /// input shapes usually differ from the train net's: another batch size).
    ///
    /// # Errors
    /// As [`Solver::from_param`].
    pub fn with_test_config(
        param: &SolverParameter,
        config: NetConfig,
        test_config: NetConfig,
    ) -> Result<Solver> {
        let (mut config, mut test_config) = (config, test_config);
        if param.random_seed() >= 0 {
            config.seed = Some(param.random_seed() as u64);
            test_config.seed = config.seed;
        }
        let general = net_from(param.net_param.as_ref(), param.net.as_deref())?;
        let train = net_from(param.train_net_param.as_ref(), param.train_net.as_deref())?
            .or_else(|| general.clone())
            .ok_or_else(|| Error::invalid("solver", "net", "no train net (net or train_net)"))?;
        let mut net = Net::new(&train, NetConfig { phase: Phase::Train, ..config })?;
        let mut test_defs: Vec<NetParameter> = param.test_net_param.clone();
        for f in &param.test_net {
            test_defs.push(read_net_prototxt(f)?);
        }
        if test_defs.is_empty()
            && let Some(g) = &general
        {
            test_defs = vec![g.clone(); param.test_iter.len()];
        }
        if test_defs.len() != param.test_iter.len() {
            return Err(Error::invalid(
                "solver",
                "test_iter",
                format!("{} values for {} test nets", param.test_iter.len(), test_defs.len()),
            ));
        }
        let test_nets = test_defs
            .iter()
            .map(|d| {
                let net = Net::new(d, NetConfig { phase: Phase::Test, ..test_config.clone() })?;
                Ok(TestNet { net, same_layout: None })
            })
            .collect::<Result<Vec<_>>>()?;
        let updater = updater_for(&mut net, SolverConfig::from_proto(param)?)?;
        Ok(Solver { param: param.clone(), net, test_nets, updater, losses: VecDeque::new() })
    }

    /// The solver settings.
    pub fn param(&self) -> &SolverParameter {
        &self.param
    }

    /// The train net (its flat buffers: [`Net::param_buffer`], [`Net::grad_buffer`]).
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The train net, mutably (to average its parameters in place between steps).
    pub fn net_mut(&mut self) -> &mut Net {
        &mut self.net
    }

    /// The number of test nets.
    pub fn test_net_count(&self) -> usize {
        self.test_nets.len()
    }

    /// Test net `index` holding the train net's current weights (Caffe's
    /// `ShareTrainedLayersWith`: by layer name, or as one buffer copy when both nets have the
    /// same parameter layout), ready for forward passes.
    ///
    /// # Errors
    /// [`Error::NoSuchTestNet`]; weights that do not fit the test net.
    pub fn test_net(&mut self, index: usize) -> Result<&mut Net> {
        let count = self.test_nets.len();
        let t = self.test_nets.get_mut(index).ok_or(Error::NoSuchTestNet { index, count })?;
        self.net.sync_params()?;
        let same = match t.same_layout {
            Some(s) => s,
            None => *t.same_layout.insert(layout(&mut t.net)? == layout(&mut self.net)?),
        };
        if same {
            t.net.param_buffer()?.copy_from_slice(self.net.param_data()?);
            t.net.sync_params()?;
        } else {
            t.net.copy_from(&self.net.to_proto()?)?;
        }
        Ok(&mut t.net)
    }

    /// Completed iterations.
    pub fn iter(&self) -> u64 {
        self.updater.state().iter
    }

    /// Sets the iteration count (a replica joining another's resumed run); the learning rate
    /// follows it.
    pub fn set_iter(&mut self, iter: u64) {
        self.updater.state_mut().iter = iter;
    }

    /// Batches per iteration (Caffe's `iter_size`, at least 1): what [`Solver::step`] and
    /// [`Solver::compute_gradients`] take.
    pub fn iter_size(&self) -> usize {
        self.updater.config().iter_size.max(1) as usize
    }

    /// The learning rate of the next update.
    pub fn learning_rate(&self) -> f64 {
        self.updater.learning_rate()
    }

    /// The update rule and its state (history, iteration).
    pub fn updater(&self) -> &Updater {
        &self.updater
    }

    /// The update rule, mutably (for example to average or reset the history).
    pub fn updater_mut(&mut self) -> &mut Updater {
        &mut self.updater
    }

    /// The loss smoothed over the last `average_loss` iterations.
    pub fn smoothed_loss(&self) -> f32 {
        if self.losses.is_empty() {
            return 0.0;
        }
        self.losses.iter().sum::<f32>() / self.losses.len() as f32
    }

    /// One Caffe iteration on `batches` (exactly [`iter_size`](Solver::iter_size) of them):
    /// [`compute_gradients`](Solver::compute_gradients), then
    /// [`apply_update`](Solver::apply_update). Returns the mean loss of the passes.
    ///
    /// # Errors
    /// A wrong number of batches, net and update errors.
    pub fn step(&mut self, batches: &[Inputs]) -> Result<f32> {
        let loss = self.compute_gradients(batches)?;
        self.apply_update()?;
        Ok(loss)
    }

    /// [`step`](Solver::step) whose update also multiplies every parameter by `scale` in the
    /// same pass ([`apply_scaled`](Solver::apply_scaled)), as SparkNet's averaging wants on the
    /// last local step of a round (`scale = 1 / K`, then an allreduce-sum).
    ///
    /// # Errors
    /// As [`step`](Solver::step).
    pub fn step_scaled(&mut self, batches: &[Inputs], scale: f32) -> Result<f32> {
        let loss = self.compute_gradients(batches)?;
        self.apply_scaled(scale)?;
        Ok(loss)
    }

    /// The first half of an iteration: zero the gradients, run forward and backward on each of
    /// `batches` (exactly [`iter_size`](Solver::iter_size) of them), leaving their summed
    /// gradients in the net's gradient buffer; records the mean loss for
    /// [`smoothed_loss`](Solver::smoothed_loss) and returns it.
    ///
    /// # Errors
    /// [`Error::BatchCount`]; net errors.
    pub fn compute_gradients(&mut self, batches: &[Inputs]) -> Result<f32> {
        let expected = self.iter_size();
        if batches.len() != expected {
            return Err(Error::BatchCount { expected, got: batches.len() });
        }
        self.net.zero_grads()?;
        let mut loss = 0f32;
        for inputs in batches {
            loss += self.net.forward_backward(inputs)?;
        }
        loss /= expected as f32;
        let avg = self.param.average_loss().max(1) as usize;
        self.losses.push_back(loss);
        while self.losses.len() > avg {
            self.losses.pop_front();
        }
        Ok(loss)
    }

    /// The second half of an iteration: Caffe's update (normalise by `iter_size`, regularise,
    /// clip, the rule; see [`Updater::apply`]) from the gradients in the net's buffer, which the
    /// caller may have changed (averaged) since [`compute_gradients`](Solver::compute_gradients);
    /// advances the iteration and refreshes the layers' weights. Returns the learning rate used.
    ///
    /// # Errors
    /// Update errors.
    pub fn apply_update(&mut self) -> Result<f64> {
        let (params, grads) = self.net.buffers()?;
        let lr = self.updater.apply(params, grads)?;
        self.net.sync_params()?;
        Ok(lr)
    }

    /// [`apply_update`](Solver::apply_update) that also multiplies every parameter by `scale`
    /// in the same pass ([`Updater::apply_scaled`]; BatchNorm statistics included). The layers'
    /// tensors are left stale: the flat buffer ([`Net::param_data`]) holds the scaled values,
    /// and the tensors are refreshed by [`Net::sync_params`] or the next forward (the caller is
    /// about to overwrite the buffer anyway).
    ///
    /// # Errors
    /// Update errors.
    pub fn apply_scaled(&mut self, scale: f32) -> Result<f64> {
        let (params, grads) = self.net.buffers()?;
        Ok(self.updater.apply_scaled(params, grads, scale)?)
    }

    /// Runs test net `index` for its `test_iter` passes on batches from `batches`, with the
    /// train net's current weights ([`Solver::test_net`]).
    ///
    /// # Errors
    /// A bad index, batch and net errors.
    pub fn test(
        &mut self,
        index: usize,
        batches: &mut dyn FnMut() -> Result<Inputs>,
    ) -> Result<Vec<TestScore>> {
        let iters = self.param.test_iter.get(index).copied().unwrap_or(0);
        let tnet = self.test_net(index)?;
        let outputs = tnet.output_names();
        let mut sums = vec![0f64; outputs.len()];
        for _ in 0..iters.max(0) {
            tnet.forward(&batches()?)?;
            for (s, name) in sums.iter_mut().zip(&outputs) {
                if let Some(t) = tnet.blob(name) {
                    *s += f64::from(t.sum_all()?.to_scalar::<f32>()?);
                }
            }
        }
        let k = f64::from(iters.max(1));
        Ok(outputs
            .into_iter()
            .zip(sums)
            .map(|(blob, s)| TestScore { blob, value: (s / k) as f32 })
            .collect())
    }

    /// Caffe's `Solve` up to `max_iter` (or `iters` more iterations when given): tests every
    /// `test_interval` (and at the start when `test_initialization`), reports every `display`,
    /// snapshots every `snapshot` iterations; `train_batches()` feeds the train net,
    /// `test_batches(i)` test net `i`.
    ///
    /// # Errors
    /// As [`Solver::step`], [`Solver::test`], [`Solver::snapshot`].
    pub fn solve(
        &mut self,
        iters: Option<u64>,
        train_batches: &mut dyn FnMut() -> Result<Inputs>,
        test_batches: &mut dyn FnMut(usize) -> Result<Inputs>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        let stop = match iters {
            Some(n) => self.iter() + n,
            None => self.param.max_iter().max(0) as u64,
        };
        let (interval, display, snap) = (
            self.param.test_interval().max(0) as u64,
            self.param.display().max(0) as u64,
            self.param.snapshot().max(0) as u64,
        );
        while self.iter() < stop {
            let it = self.iter();
            if interval > 0
                && it.is_multiple_of(interval)
                && (it > 0 || self.param.test_initialization())
            {
                self.test_all(test_batches, on_event)?;
            }
            let lr = self.updater.learning_rate();
            let batches =
                (0..self.iter_size()).map(|_| train_batches()).collect::<Result<Vec<_>>>()?;
            self.step(&batches)?;
            if display > 0 && it.is_multiple_of(display) {
                on_event(&Event::Train { iter: it, loss: self.smoothed_loss(), lr });
            }
            if snap > 0 && self.iter().is_multiple_of(snap) {
                let (model, state) = self.snapshot()?;
                on_event(&Event::Snapshot { model, state });
            }
        }
        if interval > 0 && self.iter().is_multiple_of(interval) {
            self.test_all(test_batches, on_event)?;
        }
        Ok(())
    }

    fn test_all(
        &mut self,
        test_batches: &mut dyn FnMut(usize) -> Result<Inputs>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        for i in 0..self.test_nets.len() {
            let scores = self.test(i, &mut || test_batches(i))?;
            on_event(&Event::Test { iter: self.iter(), net: i, scores });
        }
        Ok(())
    }
}

/// A fresh [`Updater`] for `net`'s flat parameter buffer: one range per learnable blob, with its
/// `lr_mult` and `decay_mult` (Caffe's `learnable_params` order).
///
/// # Errors
/// When the parameter table cannot be built (shapes unknown).
pub fn updater_for(net: &mut Net, config: SolverConfig) -> Result<Updater> {
    let ranges = net
        .param_table()?
        .iter()
        .map(|e| ParamRange {
            offset: e.offset,
            len: e.len,
            lr_mult: e.lr_mult,
            decay_mult: e.decay_mult,
        })
        .collect();
    Ok(Updater::new(config, ranges, net.param_count()?)?)
}
