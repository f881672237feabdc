//! [`Solver`]: Caffe's `Solver::Step` loop around a train net and its test nets, with snapshots
//! and resume. The net never reads data: every forward pass takes its inputs from a closure.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use candle::Tensor;
use prost::Message;

use super::{ParamRange, SolverConfig, Updater, UpdaterState};
use crate::blob::blob_data;
use crate::load::{
    atomic_write, read_caffemodel, read_net_prototxt, read_solver_prototxt, read_solverstate,
};
use crate::proto::{BlobProto, BlobShape, NetParameter, Phase, SolverParameter, SolverState};
use crate::{Error, Net, NetConfig, Result};

/// Feeds a net's inputs for one forward pass (the batch source the trainer binds).
pub type Batches<'a> = dyn FnMut(&Net) -> Result<HashMap<String, Tensor>> + 'a;

/// Feeds test net `i`'s inputs for one forward pass.
pub type TestBatches<'a> = dyn FnMut(usize, &Net) -> Result<HashMap<String, Tensor>> + 'a;

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

/// Caffe's solver: a TRAIN net, its TEST nets and the update rule.
pub struct Solver {
    param: SolverParameter,
    net: Net,
    test_nets: Vec<Net>,
    updater: Updater,
    losses: VecDeque<f32>,
}

fn net_from(param: Option<&NetParameter>, file: Option<&str>) -> Result<Option<NetParameter>> {
    Ok(match (param, file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(read_net_prototxt(f)?),
        (None, None) => None,
    })
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
        let mut config = config;
        if param.random_seed() >= 0 {
            config.seed = Some(param.random_seed() as u64);
        }
        let general = net_from(param.net_param.as_ref(), param.net.as_deref())?;
        let train = net_from(param.train_net_param.as_ref(), param.train_net.as_deref())?
            .or_else(|| general.clone())
            .ok_or_else(|| Error::invalid("solver", "net", "no train net (net or train_net)"))?;
        let mut net = Net::new(&train, NetConfig { phase: Phase::Train, ..config.clone() })?;
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
            .map(|d| Net::new(d, NetConfig { phase: Phase::Test, ..config.clone() }))
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

    /// The test nets.
    pub fn test_nets(&self) -> &[Net] {
        &self.test_nets
    }

    /// Completed iterations.
    pub fn iter(&self) -> u64 {
        self.updater.state().iter
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

    /// One Caffe iteration: zero the gradients, `iter_size` forward/backward passes on batches
    /// from `batches`, normalise/regularise/update (see [`Updater::apply`]), advance the
    /// iteration. Returns the mean loss of the passes.
    ///
    /// # Errors
    /// Batch, net and update errors.
    pub fn step_once(&mut self, batches: &mut Batches<'_>) -> Result<f32> {
        let loss = self.forward_backward_update(batches, None)?;
        self.net.sync_params()?;
        Ok(loss)
    }

    /// [`step_once`](Solver::step_once) whose update also multiplies every parameter by `scale`
    /// in the same pass ([`Updater::apply_scaled`]; BatchNorm statistics included), as SparkNet's
    /// averaging wants on the last local step of a round (`scale = 1 / K`, then an
    /// allreduce-sum). The layers' tensors are left stale: the flat buffer
    /// ([`Net::param_data`]) holds the scaled values, and the tensors are refreshed by
    /// [`Net::sync_params`] or the next forward (the caller is about to overwrite the buffer
    /// anyway). Returns the mean loss of the passes.
    ///
    /// # Errors
    /// As [`step_once`](Solver::step_once).
    pub fn step_once_scaled(&mut self, batches: &mut Batches<'_>, scale: f32) -> Result<f32> {
        self.forward_backward_update(batches, Some(scale))
    }

    fn forward_backward_update(
        &mut self,
        batches: &mut Batches<'_>,
        scale: Option<f32>,
    ) -> Result<f32> {
        self.net.zero_grads()?;
        let n = self.updater.config().iter_size.max(1);
        let mut loss = 0f32;
        for _ in 0..n {
            let inputs = batches(&self.net)?;
            loss += self.net.forward_backward(&inputs)?;
        }
        loss /= n as f32;
        let avg = self.param.average_loss().max(1) as usize;
        self.losses.push_back(loss);
        while self.losses.len() > avg {
            self.losses.pop_front();
        }
        let (params, grads) = self.net.buffers()?;
        match scale {
            None => self.updater.apply(params, grads)?,
            Some(s) => self.updater.apply_scaled(params, grads, s)?,
        };
        Ok(loss)
    }

    /// Runs test net `index` for its `test_iter` passes with the train net's current weights
    /// (shared by layer name, as Caffe's `ShareTrainedLayersWith`).
    ///
    /// # Errors
    /// A bad index, batch and net errors.
    pub fn test(&mut self, index: usize, batches: &mut Batches<'_>) -> Result<Vec<TestScore>> {
        let iters = *self.param.test_iter.get(index).ok_or_else(|| {
            Error::NotFound(format!("no test net {index} ({} nets)", self.test_nets.len()))
        })?;
        self.net.sync_params()?;
        let weights = self.net.to_proto()?;
        let tnet = &mut self.test_nets[index];
        tnet.copy_from(&weights)?;
        let outputs = tnet.output_names();
        let mut sums = vec![0f64; outputs.len()];
        for _ in 0..iters.max(0) {
            let inputs = batches(tnet)?;
            tnet.forward(&inputs)?;
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
    /// snapshots every `snapshot` iterations; `test_batches(i, net)` feeds test net `i`.
    ///
    /// # Errors
    /// As [`Solver::step_once`], [`Solver::test`], [`Solver::snapshot`].
    pub fn solve(
        &mut self,
        iters: Option<u64>,
        train_batches: &mut Batches<'_>,
        test_batches: &mut TestBatches<'_>,
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
            self.step_once(train_batches)?;
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
        test_batches: &mut TestBatches<'_>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        for i in 0..self.test_nets.len() {
            let scores = self.test(i, &mut |n: &Net| test_batches(i, n))?;
            on_event(&Event::Test { iter: self.iter(), net: i, scores });
        }
        Ok(())
    }

    /// Writes `<snapshot_prefix>_iter_<iter>.caffemodel` and `.solverstate` (Caffe's
    /// `SolverState`: iter, learned_net, one history blob per learnable blob and set,
    /// current_step), each atomically (temporary file, then rename).
    ///
    /// # Errors
    /// I/O errors.
    pub fn snapshot(&mut self) -> Result<(PathBuf, PathBuf)> {
        let prefix = self.param.snapshot_prefix().to_string();
        self.snapshot_to(&prefix)
    }

    /// As [`Solver::snapshot`], under `prefix` instead of the solver's `snapshot_prefix` (a
    /// trainer's fallback location when that one cannot be written).
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn snapshot_to(&mut self, prefix: &str) -> Result<(PathBuf, PathBuf)> {
        let base = format!("{prefix}_iter_{}", self.iter());
        let model = PathBuf::from(format!("{base}.caffemodel"));
        let state_path = PathBuf::from(format!("{base}.solverstate"));
        self.net.sync_params()?;
        atomic_write(&model, &self.net.to_proto()?.encode_to_vec())?;
        let entries = self.net.param_table()?.to_vec();
        let st = self.updater.state();
        let mut history = Vec::new();
        for set in &st.history {
            for e in &entries {
                history.push(BlobProto {
                    shape: Some(BlobShape { dim: e.shape.iter().map(|&d| d as i64).collect() }),
                    data: set[e.offset..e.offset + e.len].to_vec(),
                    ..Default::default()
                });
            }
        }
        let state = SolverState {
            iter: Some(st.iter as i32),
            learned_net: Some(model.to_string_lossy().into_owned()),
            history,
            current_step: Some(st.current_step as i32),
        };
        atomic_write(&state_path, &state.encode_to_vec())?;
        Ok((model, state_path))
    }

    /// Resumes from a `.solverstate` (ours or Caffe's): loads its `learned_net` (as written, or
    /// beside the solverstate when that path does not exist), the history and the iteration.
    ///
    /// # Errors
    /// Unreadable files, a history that does not fit the net and solver type.
    pub fn restore(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let state = read_solverstate(path)?;
        let learned = PathBuf::from(state.learned_net());
        let not_found = || {
            Error::NotFound(format!(
                "{}: learned_net '{}' not found (nor beside the solverstate)",
                path.display(),
                learned.display()
            ))
        };
        let learned = if learned.is_file() {
            learned.clone()
        } else {
            let name = learned.file_name().ok_or_else(not_found)?;
            let beside = path.with_file_name(name);
            if !beside.is_file() {
                return Err(not_found());
            }
            beside
        };
        let weights = read_caffemodel(&learned).map_err(|e| Error::InFile {
            path: path.to_path_buf(),
            source: Box::new(e.in_file(&learned)),
        })?;
        // Everything is checked before anything changes: the history first, then the weights
        // (`copy_from` checks every blob before copying), so a bad file leaves the solver as it
        // was.
        let entries = self.net.param_table()?.to_vec();
        let total = self.net.param_count()?;
        let sets = self.updater.config().kind.history_sets();
        if state.history.len() != sets * entries.len() {
            return Err(Error::parse(
                path,
                format!(
                    "{} history blobs, the net and {} solver need {}",
                    state.history.len(),
                    self.updater.config().kind.caffe_name(),
                    sets * entries.len()
                ),
            ));
        }
        let mut history = vec![vec![0f32; total]; sets];
        for (j, b) in state.history.iter().enumerate() {
            let (set, e) = (j / entries.len(), &entries[j % entries.len()]);
            let v = blob_data(b);
            if v.len() != e.len {
                let mismatch = Error::ShapeMismatch {
                    layer: e.layer.clone(),
                    what: format!("history blob {j}"),
                    expected: e.shape.clone(),
                    got: vec![v.len()],
                };
                return Err(mismatch.in_file(path));
            }
            history[set][e.offset..e.offset + e.len].copy_from_slice(&v);
        }
        self.net.copy_from(&weights).map_err(|e| Error::InFile {
            path: path.to_path_buf(),
            source: Box::new(e.in_file(&learned)),
        })?;
        self.updater.restore(UpdaterState {
            iter: state.iter().max(0) as u64,
            current_step: state.current_step().max(0) as usize,
            history,
        })?;
        self.losses.clear();
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
