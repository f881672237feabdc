//! SparkNet's communication layer: `K` workers train replicas of a net, and after every `tau`
//! local solver steps their weights are averaged with one allreduce (Moritz et al., *SparkNet:
//! Training Deep Networks in Spark*, ICLR 2016).
//!
//! ```
//! use sparknet_mpi::{Averager, Collective, LocalGroup};
//!
//! // Four in-process workers, each with its own replica of 6 weights.
//! let averaged = LocalGroup::new(4)?.run(|comm| -> sparknet_mpi::Result<Vec<f32>> {
//!     // Rank 0 initialises the weights and broadcasts them, so every replica starts equal.
//!     let mut weights = vec![0.0f32; 6];
//!     if comm.rank() == 0 {
//!         weights.iter_mut().enumerate().for_each(|(i, w)| *w = i as f32);
//!     }
//!     comm.broadcast(&mut weights, 0)?;
//!
//!     // ... tau local solver steps would change each replica differently; pretend they did:
//!     weights.iter_mut().for_each(|w| *w += comm.rank() as f32);
//!
//!     // One averaging round: a single allreduce over the flat buffer, then divide by K.
//!     let mut averager = Averager::new();
//!     let stats = averager.average(&comm, &mut weights)?;
//!     assert_eq!(stats.elements, 6);
//!     Ok(weights)
//! })?;
//! // Every worker now holds the mean: i + (0 + 1 + 2 + 3) / 4.
//! for weights in averaged {
//!     assert_eq!(weights?, [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]);
//! }
//! # Ok::<(), sparknet_mpi::Error>(())
//! ```
//!
//! # Overview
//!
//! - [`Collective`]: rank, size, allreduce (sum and mean, in place), broadcast, barrier, gather of
//!   small metric records, and abort. Written once against this trait, the trainer runs the same
//!   way in process and under `mpirun`.
//! - [`LocalGroup`] / [`LocalComm`]: `K` in-process workers as threads, the embedded default and
//!   the test double. Results do not depend on thread timing (fixed summation order).
//!   [`LocalComm::single`] is the one-worker case.
//! - `MpiComm` (feature `mpi`): one process per rank under `mpirun`, allreduce in place through
//!   `MPI_IN_PLACE`, and a failing rank ends the whole job through `MPI_Abort`.
//! - [`Averager`]: one allreduce per round over one flat buffer, no allocation per round, an
//!   optional artificial delay per round; [`StatePolicy`] for the solver history.
//!
//! The trainer, built on these:
//!
//! - [`trainer`]: the SparkNet loop over any [`Collective`] and [`trainer::Worker`] (rank 0's
//!   weights broadcast, `tau` local steps then one averaging allreduce, or gradient sync; warmup,
//!   communication delay, time budget; round-aligned reports, tests and snapshots).
//! - [`solver_worker`]: the worker of a real net (sparknet-net's `Solver`).
//! - [`bind`]: a net's `Data` layers bound to sparknet-data loaders over this rank's partition;
//!   [`eval`]: a test pass over the partition, summed over ranks.
//! - [`plan`]: solver/net/data resolution for the `sparknet-train` binary ([`plan::Plan`]);
//!   [`default_run`]: its embedded LeNet and the MNIST-or-synthetic data it finds.
//! - [`launch`]: how a plan runs ([`launch::run`]: in-process workers, or one rank per process
//!   under `mpirun`, each with its share of the cores).
//!
//! The path of one training step, from the binary down: `sparknet-train` -> [`launch::run`] ->
//! [`trainer::train`] (the round) -> [`solver_worker::SolverWorker`] -> sparknet-net's
//! `Solver::compute_gradients` / `Solver::apply_update`.
//!
//! # Feature flags
//!
//! - `mpi` (off by default): the MPI backend. Needs an MPI installation (Open MPI or MPICH:
//!   `mpicc` on the `PATH`, or `MPICC` naming it) and libclang for rsmpi's bindgen. Without it the
//!   crate has no system dependency and `build.rs` does nothing.
//!
//! # Building and running with MPI
//!
//! ```text
//! apt-get install libopenmpi-dev openmpi-bin libclang-dev   # or: libmpich-dev mpich
//! cargo build -p sparknet-mpi --features mpi --examples
//! mpirun -n 2 target/debug/examples/mpi_allreduce               # Open MPI: add --oversubscribe
//!                                                                # for more ranks than cores
//! MPICC=mpicc.mpich cargo build ...; mpirun.mpich -n 4 ...      # MPICH, in its own target dir
//! ```
//!
//! As root, Open MPI also needs `OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`. A
//! binary built with `mpi` also runs without `mpirun`, as a job of one rank (singleton init).
//!
//! # Numerics
//!
//! [`Collective::all_reduce_mean`] of `K` identical replicas returns them bit for bit with
//! [`LocalComm`] for every `K` (the mean is taken in `f64` and rounded once). With MPI the sum is
//! an `f32` reduction in the library's order, then divided by `K`: for `K` = 2 and 4 the sum of
//! identical values is exactly `K * x` in any order and the division is exact, so the identity
//! holds bit for bit (checked by the `mpi_allreduce` example); for other `K` the result can differ
//! from the input in the last bit.
//!
mod average;
pub mod bind;
mod collective;
pub mod default_run;
mod error;
pub mod eval;
pub mod launch;
mod local;
#[cfg(feature = "mpi")]
mod mpi_comm;
pub mod outer;
pub mod plan;
pub mod solver_worker;
pub mod trainer;

pub use average::{Averager, RoundStats, StatePolicy};
pub use collective::Collective;
pub use error::{Error, Result};
pub use local::{LocalComm, LocalGroup};
/// The rsmpi crate this backend is built on, for MPI calls this crate does not wrap (with
/// [`MpiComm::world`] and [`mpi_in_place`]).
#[cfg(feature = "mpi")]
pub use mpi;
#[cfg(feature = "mpi")]
pub use mpi_comm::{MpiComm, mpi_in_place};
