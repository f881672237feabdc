//! The [`Worker`] of a real net: sparknet-net's [`Solver`] (TRAIN net, flat parameter and
//! gradient buffers, Caffe's update rule, snapshots, resume) fed by this rank's partition of the
//! training set, and the solver's TEST net tested on this rank's partition of the test set.
//!
//! Every operation is the solver's own; this adapter only fetches the batches and turns the
//! solver's answers into the loop's.

use std::path::PathBuf;
use std::time::Duration;

use sparknet_net::load::read_solverstate;
use sparknet_net::solver::{Inputs, Solver};
use sparknet_net::{NetConfig, Phase};

use crate::bind::{DataLayerSpec, FeedConfig, PhaseData, data_layers};
use crate::eval::{TestScores, evaluate};
use crate::plan::Plan;
use crate::trainer::{StepOutcome, Worker};
use crate::{Collective, Error, Result};

/// One replica: a [`Solver`] with its data.
pub struct SolverWorker {
    solver: Solver,
    train: PhaseData,
    /// The TEST Data layers and how to feed them (a fresh pass over the partition per test).
    test: Option<(Vec<DataLayerSpec>, FeedConfig)>,
}

impl std::fmt::Debug for SolverWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SolverWorker")
            .field("iter", &self.solver.iter())
            .field("train", &self.train)
            .finish_non_exhaustive()
    }
}

impl SolverWorker {
    /// Rank `rank` of `world`'s replica for `plan`, with `data_threads` decode threads per
    /// loader. `--weights` and `--resume` are loaded on every rank (the loop then broadcasts
    /// rank 0's weights).
    ///
    /// # Errors
    /// Net, data, weight and solver-state errors, naming the file or layer.
    pub fn new(
        plan: &Plan,
        rank: usize,
        world: usize,
        data_threads: usize,
    ) -> Result<SolverWorker> {
        let seed = u64::try_from(plan.solver.random_seed()).unwrap_or(1);
        let train_specs = data_layers(&plan.net, Phase::Train, plan.train_data.as_deref())?;
        if train_specs.is_empty() {
            return Err(Error::Config("the TRAIN phase of the net has no Data layer".into()));
        }
        let feed = FeedConfig { rank, world, shuffle: None, seed, threads: data_threads };
        // A resumed run reads on from where the interrupted one was: `iter * iter_size` batches
        // into each loader's stream, so that it follows the same trajectory.
        let iter_size = plan.solver.iter_size().max(1) as u64;
        let resumed_iter = match &plan.resume {
            Some(state) => u64::try_from(read_solverstate(state)?.iter()).unwrap_or(0),
            None => 0,
        };
        let train = PhaseData::open_at(&train_specs, Phase::Train, feed, resumed_iter * iter_size)?;
        let test_specs = data_layers(&plan.net, Phase::Test, plan.test_data.as_deref())?;
        // Testing runs the solver's TEST net over the whole partition (not test_iter batches),
        // so that ranks' results add up exactly: one test net, shaped by the test data.
        let mut param = plan.solver.clone();
        param.test_iter.clear();
        let mut test_config = NetConfig { seed: None, ..NetConfig::default() };
        if !test_specs.is_empty() {
            param.test_iter.push(1);
            test_config.input_shapes =
                PhaseData::open(&test_specs, Phase::Test, feed)?.input_shapes();
        }
        // Each replica draws its own Dropout masks (and other runtime randomness): the layers'
        // streams are seeded with `random_seed + rank`. Rank 0 keeps the solver's seed, so one
        // worker is the plain solver; the initial weights are rank 0's, broadcast to all.
        param.random_seed = Some(seed.wrapping_add(rank as u64) as i64);
        let config = NetConfig { input_shapes: train.input_shapes(), ..NetConfig::default() };
        let mut solver = Solver::with_test_config(&param, config, test_config)?;
        if let Some(w) = &plan.weights {
            solver.net_mut().copy_from_file(w)?;
        }
        if let Some(state) = &plan.resume {
            solver.restore(state)?;
        }
        let test = (!test_specs.is_empty()).then_some((test_specs, feed));
        Ok(SolverWorker { solver, train, test })
    }

    /// The solver.
    pub fn solver(&mut self) -> &mut Solver {
        &mut self.solver
    }

    /// The next `iter_size` batches.
    fn batches(&mut self) -> Result<Vec<Inputs>> {
        (0..self.solver.iter_size()).map(|_| self.train.next_inputs(None)).collect()
    }
}

impl Worker for SolverWorker {
    fn iter(&self) -> u64 {
        self.solver.iter()
    }
    fn set_iter(&mut self, iter: u64) {
        self.solver.set_iter(iter);
    }
    fn params(&mut self) -> Result<&mut [f32]> {
        Ok(self.solver.net_mut().param_buffer()?)
    }
    fn params_changed(&mut self) -> Result<()> {
        Ok(self.solver.net_mut().sync_params()?)
    }
    /// The scaling fused into the update's pass over the buffer (`Solver::apply_scaled`), which
    /// also skips refreshing the net's tensors: the loop's `params_changed` after the allreduce
    /// does that.
    fn step_scaled(&mut self, scale: f32) -> Result<StepOutcome> {
        let loss = self.compute_gradients()?;
        let lr = self.solver.apply_scaled(scale)? as f32;
        Ok(StepOutcome { loss, lr })
    }
    fn compute_gradients(&mut self) -> Result<f32> {
        let batches = self.batches()?;
        Ok(self.solver.compute_gradients(&batches)?)
    }
    fn grads(&mut self) -> Result<&mut [f32]> {
        Ok(self.solver.net_mut().grad_buffer()?)
    }
    fn apply_gradients(&mut self) -> Result<f32> {
        Ok(self.solver.apply_update()? as f32)
    }
    fn data_wait(&self) -> Duration {
        self.train.wait()
    }
    fn history_sets(&self) -> usize {
        self.solver.updater().state().history.len()
    }
    fn history(&mut self, set: usize) -> Result<&mut [f32]> {
        let sets = self.history_sets();
        self.solver
            .updater_mut()
            .state_mut()
            .history
            .get_mut(set)
            .map(Vec::as_mut_slice)
            .ok_or_else(|| Error::Config(format!("history set {set} of {sets}")))
    }
    fn plain_ranges(&mut self) -> Result<Vec<std::ops::Range<usize>>> {
        let table = self.solver.net_mut().param_table()?;
        Ok(table.iter().filter(|e| e.lr_mult == 0.0).map(|e| e.offset..e.offset + e.len).collect())
    }
    fn test(&mut self, comm: &dyn Collective) -> Result<TestScores> {
        let Some((specs, feed)) = &self.test else { return Err(Error::NoTestData) };
        // A fresh pass over the partition each time (the last batch may be partial).
        let mut data = PhaseData::open(specs, Phase::Test, *feed)?;
        evaluate(self.solver.test_net(0)?, &mut data, comm)
    }
    fn snapshot(&mut self) -> Result<Vec<PathBuf>> {
        let (model, state) = self.solver.snapshot()?;
        Ok(vec![model, state])
    }
    fn snapshot_to(&mut self, prefix: &str) -> Result<Vec<PathBuf>> {
        let (model, state) = self.solver.snapshot_to(prefix)?;
        Ok(vec![model, state])
    }
    fn snapshot_prefix(&self) -> String {
        self.solver.param().snapshot_prefix().to_string()
    }
    fn diagnose_non_finite(&mut self) -> Result<Option<String>> {
        let net = self.solver.net_mut();
        if let Some(top) = net.first_non_finite_top()? {
            return Ok(Some(top.to_string()));
        }
        Ok(net.first_non_finite_param()?.map(|p| p.to_string()))
    }
}
