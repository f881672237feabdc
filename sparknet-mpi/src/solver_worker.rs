//! The [`Worker`] of a real net: sparknet-net's [`Solver`] (TRAIN net, flat parameter and
//! gradient buffers, Caffe's update rule, snapshots, resume) fed by this rank's partition of the
//! training set, and a TEST net that tests on this rank's partition of the test set.
//!
//! [`run`] is what `sparknet-train` runs: one rank per process under an MPI launcher (feature
//! `mpi`), otherwise `--workers K` in-process workers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use candle::Tensor;
use sparknet_net::load::read_solverstate;
use sparknet_net::solver::{Solver, Updater};
use sparknet_net::{Net, NetConfig, Phase};

use crate::bind::{DataLayerSpec, FeedConfig, PhaseData, data_layers};
use crate::eval::{TestScores, evaluate};
use crate::run::{Plan, run_local};
use crate::trainer::{Event, StepOutcome, Summary, Worker};
use crate::{Collective, Error, Result};

/// One replica: a [`Solver`] with its data.
pub struct SolverWorker {
    solver: Solver,
    train: PhaseData,
    test: Option<(Net, Vec<DataLayerSpec>, FeedConfig)>,
    /// The TEST net's parameter layout equals the TRAIN net's (the buffer is copied as is).
    same_layout: bool,
    iter_size: usize,
}

impl std::fmt::Debug for SolverWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SolverWorker")
            .field("iter", &self.solver.iter())
            .field("train", &self.train)
            .finish_non_exhaustive()
    }
}

fn layout(net: &mut Net) -> Result<Vec<(String, usize, Vec<usize>)>> {
    Ok(net.param_table()?.iter().map(|e| (e.layer.clone(), e.blob, e.shape.clone())).collect())
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
        // The solver builds the TRAIN net only; testing runs our own TEST net over the whole
        // partition (not test_iter batches), so that ranks' results add up exactly.
        let mut param = plan.solver.clone();
        param.test_iter.clear();
        // Each replica draws its own Dropout masks (and other runtime randomness): the layers'
        // streams are seeded with `random_seed + rank`. Rank 0 keeps the solver's seed, so one
        // worker is the plain solver; the initial weights are rank 0's, broadcast to all.
        let config = NetConfig {
            seed: Some(seed.wrapping_add(rank as u64)),
            input_shapes: train.input_shapes(),
            ..NetConfig::default()
        };
        let mut solver = Solver::from_param(&param, config)?;
        if let Some(w) = &plan.weights {
            solver.net_mut().copy_from_file(w)?;
        }
        if let Some(state) = &plan.resume {
            solver.restore(state)?;
        }
        let test_specs = data_layers(&plan.net, Phase::Test, plan.test_data.as_deref())?;
        let (test, same_layout) = if test_specs.is_empty() {
            (None, false)
        } else {
            let probe = PhaseData::open(&test_specs, Phase::Test, feed)?;
            let config = NetConfig {
                phase: Phase::Test,
                seed: None,
                input_shapes: probe.input_shapes(),
                ..NetConfig::default()
            };
            let mut net = Net::new(&plan.net, config)?;
            let same = layout(&mut net)? == layout(solver.net_mut())?;
            (Some((net, test_specs, feed)), same)
        };
        let iter_size = plan.solver.iter_size().max(1) as usize;
        Ok(SolverWorker { solver, train, test, same_layout, iter_size })
    }

    /// The solver.
    pub fn solver(&mut self) -> &mut Solver {
        &mut self.solver
    }

    /// The next `iter_size` batches.
    fn batches(&mut self) -> Result<Vec<HashMap<String, Tensor>>> {
        (0..self.iter_size).map(|_| self.train.next_inputs(None)).collect()
    }
}

impl Worker for SolverWorker {
    fn iter(&self) -> u64 {
        self.solver.iter()
    }
    fn set_iter(&mut self, iter: u64) {
        self.solver.updater_mut().state_mut().iter = iter;
    }
    fn params(&mut self) -> Result<&mut [f32]> {
        Ok(self.solver.net_mut().param_buffer()?)
    }
    fn params_changed(&mut self) -> Result<()> {
        Ok(self.solver.net_mut().sync_params()?)
    }
    fn step(&mut self) -> Result<StepOutcome> {
        let lr = self.solver.updater().learning_rate() as f32;
        let mut batches = self.batches()?.into_iter();
        let loss = self.solver.step_once(&mut |_: &Net| {
            batches
                .next()
                .ok_or_else(|| sparknet_net::Error::NotFound("no more prefetched batches".into()))
        })?;
        Ok(StepOutcome { loss, lr })
    }
    /// The scaling fused into the update's pass over the buffer (`Solver::step_once_scaled`),
    /// which also skips refreshing the net's tensors: the loop's `params_changed` after the
    /// allreduce does that.
    fn step_scaled(&mut self, scale: f32) -> Result<StepOutcome> {
        let lr = self.solver.updater().learning_rate() as f32;
        let mut batches = self.batches()?.into_iter();
        let loss = self.solver.step_once_scaled(
            &mut |_: &Net| {
                batches.next().ok_or_else(|| {
                    sparknet_net::Error::NotFound("no more prefetched batches".into())
                })
            },
            scale,
        )?;
        Ok(StepOutcome { loss, lr })
    }
    fn compute_gradients(&mut self) -> Result<f32> {
        let batches = self.batches()?;
        let net = self.solver.net_mut();
        net.zero_grads()?;
        let mut loss = 0.0;
        for inputs in &batches {
            loss += net.forward_backward(inputs)?;
        }
        Ok(loss / batches.len() as f32)
    }
    fn grads(&mut self) -> Result<&mut [f32]> {
        Ok(self.solver.net_mut().grad_buffer()?)
    }
    fn apply_gradients(&mut self) -> Result<f32> {
        // The update needs the net's buffers and the updater at once: take the updater out of
        // the solver for the call (a zero-sized placeholder stands in).
        let placeholder = Updater::new(self.solver.updater().config().clone(), Vec::new(), 0)?;
        let mut updater = std::mem::replace(self.solver.updater_mut(), placeholder);
        let lr = updater.learning_rate() as f32;
        let applied = self
            .solver
            .net_mut()
            .buffers()
            .map_err(Error::from)
            .and_then(|(p, g)| updater.apply(p, g).map_err(Error::from));
        *self.solver.updater_mut() = updater;
        applied?;
        self.solver.net_mut().sync_params()?;
        Ok(lr)
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
    fn test(&mut self, comm: &dyn Collective) -> Result<TestScores> {
        let Some((net, specs, feed)) = &mut self.test else { return Err(Error::NoTestData) };
        if self.same_layout {
            let train = self.solver.net_mut();
            train.sync_params()?;
            let src = train.param_data()?;
            net.param_buffer()?.copy_from_slice(src);
            net.sync_params()?;
        } else {
            net.copy_from(&self.solver.net_mut().to_proto()?)?;
        }
        // A fresh pass over the partition each time (the last batch may be partial).
        let mut data = PhaseData::open(specs, Phase::Test, *feed)?;
        evaluate(net, &mut data, comm)
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

/// Runs `plan`: one rank per process when started by an MPI launcher (built with feature `mpi`;
/// the global rayon pool gets cores / ranks-on-this-node threads unless `RAYON_NUM_THREADS` is
/// set), otherwise `workers` in-process workers, each with its own pool of cores / `workers`
/// threads. Returns this process's rank and its summary.
///
/// `on_summary` gets rank 0's summary as soon as the loop ends: under MPI before MPI is
/// finalised, because after SIGTERM or SIGINT Open MPI's `mpirun` kills the ranks
/// `odls_base_sigkill_timeout` seconds (default 1) after passing the signal on, and finalising
/// during that teardown blocks until then.
///
/// # Errors
/// Worker construction and loop errors (a failing rank aborts the others).
pub fn run(
    plan: &Plan,
    workers: usize,
    data_threads: usize,
    on_event: &(dyn Fn(&Event) + Sync),
    on_summary: &dyn Fn(&Summary),
) -> Result<(usize, Summary)> {
    #[cfg(feature = "mpi")]
    if crate::run::under_mpi_launcher() {
        let comm = crate::MpiComm::init()?;
        let local = crate::run::local_ranks_from_env().unwrap_or(comm.size());
        // RAYON_NUM_THREADS, when set, sizes the global pool instead.
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            let threads = crate::run::threads_per_rank(local);
            // Fails only when the global pool already exists; it then keeps its size.
            let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
        }
        let (rank, size) = (comm.rank(), comm.size());
        let mut report = |e: &Event| on_event(e);
        let make = |_: &crate::MpiComm| SolverWorker::new(plan, rank, size, data_threads);
        let summary = crate::run::run_rank(&comm, &plan.loop_config, make, &mut report)?;
        if rank == 0 {
            on_summary(&summary);
        }
        // `comm` is dropped here: MPI is finalised.
        return Ok((rank, summary));
    }
    let make = |c: &dyn Collective| SolverWorker::new(plan, c.rank(), c.size(), data_threads);
    let summary = run_local(workers, &plan.loop_config, make, on_event)?;
    on_summary(&summary);
    Ok((0, summary))
}
