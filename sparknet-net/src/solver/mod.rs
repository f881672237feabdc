//! Caffe's solvers: learning-rate policies and the six update rules over one flat parameter buffer.
//!
//! ```
//! use sparknet_net::solver::{LrPolicy, ParamRange, SolverConfig, SolverKind, Updater};
//!
//! let config = SolverConfig { kind: SolverKind::Sgd, base_lr: 0.1, momentum: 0.9, ..Default::default() };
//! // Two blobs in one buffer: a weight (lr_mult 1) and a bias (lr_mult 2, no decay).
//! let ranges = vec![
//!     ParamRange { offset: 0, len: 2, lr_mult: 1.0, decay_mult: 1.0 },
//!     ParamRange { offset: 2, len: 1, lr_mult: 2.0, decay_mult: 0.0 },
//! ];
//! let mut solver = Updater::new(config, ranges, 3)?;
//! let mut params = vec![1.0f32, -1.0, 0.5];
//! let mut grads = vec![0.5f32, 0.5, 1.0];
//! solver.apply(&mut params, &mut grads)?;
//! assert_eq!(params, vec![0.95, -1.05, 0.3]);
//! assert_eq!(solver.state().iter, 1);
//! # Ok::<(), sparknet_net::solver::UpdateError>(())
//! ```

mod config;
mod lr_policy;
mod snapshot;
mod solve;
mod update;

pub use config::{LrPolicy, Regularization, SolverConfig, SolverKind};
pub use solve::{Event, Inputs, Solver, TestScore, updater_for};
pub use update::{ParamRange, UpdateError, Updater, UpdaterState};

#[cfg(test)]
mod tests;
