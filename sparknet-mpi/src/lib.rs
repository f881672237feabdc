//! SparkNet's distributed training: model averaging over MPI allreduce.
//!
//! This crate will compose `sparknet-net` and `sparknet-data`: a `Collective` trait with an MPI
//! backend (rsmpi, behind the `mpi` feature) and an in-process backend, weight averaging over one
//! flat parameter buffer, the SparkNet loop (broadcast, tau local solver steps per worker, average),
//! and the `sparknet-train` binary (`mpirun -n 8 sparknet-train ...`).
//!
//! Nothing is implemented yet; see the project's issue tracker.
