//! The crate's error type.

/// Everything that can go wrong in a collective operation or in weight averaging.
///
/// Every variant names the operation (`op`, e.g. `"all_reduce_sum"`) and, where it applies, the
/// rank that saw the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A group needs at least one worker.
    #[error("a worker group needs at least one worker, got 0")]
    EmptyGroup,
    /// The ranks passed buffers of different lengths to the same collective.
    #[error(
        "{op}: rank {rank} passed {len} elements but rank {other_rank} passed {other_len}; every rank must pass the same length"
    )]
    LengthMismatch {
        /// The collective.
        op: &'static str,
        /// The rank reporting the error.
        rank: usize,
        /// Its length.
        len: usize,
        /// The first rank whose length differs.
        other_rank: usize,
        /// That rank's length.
        other_len: usize,
    },
    /// The ranks called different collectives (or the same one with different roots) at the same
    /// point of their sequence; detected by the in-process group only.
    #[error(
        "rank {rank} called {op} (root {root}) while rank {other_rank} called {other_op} (root {other_root}); every rank must call the same collectives in the same order"
    )]
    Mismatch {
        /// The collective this rank called.
        op: &'static str,
        /// The rank reporting the error.
        rank: usize,
        /// Its root (0 for collectives without one).
        root: usize,
        /// The first rank that disagrees.
        other_rank: usize,
        /// The collective that rank called.
        other_op: &'static str,
        /// Its root.
        other_root: usize,
    },
    /// A root rank outside `0..size`.
    #[error("{op}: root rank {root} is out of range for a group of {size}")]
    RootOutOfRange {
        /// The collective.
        op: &'static str,
        /// The root that was asked for.
        root: usize,
        /// The group size.
        size: usize,
    },
    /// A peer aborted the group or left it (dropped its handle, panicked) before this collective
    /// completed; the operation did not complete and the group is unusable from now on.
    #[error("{op} on rank {rank}: the group was aborted by rank {by}: {reason}")]
    Aborted {
        /// The collective that was interrupted.
        op: &'static str,
        /// The rank reporting the error.
        rank: usize,
        /// The rank that aborted.
        by: usize,
        /// Its message.
        reason: String,
    },
    /// An in-process worker thread panicked.
    #[error("worker {rank} panicked: {message}")]
    WorkerPanicked {
        /// The worker's rank.
        rank: usize,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// An in-process worker thread could not be started.
    #[error("could not start worker thread {rank}: {source}")]
    Spawn {
        /// The worker's rank.
        rank: usize,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An MPI call returned an error code (only possible when the error handler returns errors).
    #[error("{op}: MPI call failed with error code {code} on rank {rank}")]
    Mpi {
        /// The collective.
        op: &'static str,
        /// The rank reporting the error.
        rank: usize,
        /// The MPI error code.
        code: i32,
    },
    /// MPI could not be initialised (for example it already was, in this process).
    #[error("MPI initialisation failed: {0}")]
    MpiInit(String),
    /// The net (building it, loading weights, a forward pass) failed.
    #[error(transparent)]
    Net(#[from] sparknet_net::Error),
    /// The solver's update rule rejected its buffers or state.
    #[error(transparent)]
    Update(#[from] sparknet_net::solver::UpdateError),
    /// A dataset could not be opened or read.
    #[error(transparent)]
    Data(#[from] sparknet_data::Error),
    /// A net's Data layer could not open or read its dataset (or its mean file): the layer, the
    /// file, the data crate's error, and a hint where one helps.
    #[error("Data layer '{layer}' ({}): {source}{hint}", path.display())]
    DataLayer {
        /// The layer's name.
        layer: String,
        /// The dataset directory or mean file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: Box<sparknet_data::Error>,
        /// Advice appended to the message (may be empty).
        hint: &'static str,
    },
    /// A candle tensor operation failed while feeding or reading the net.
    #[error("tensor: {0}")]
    Tensor(#[from] candle::Error),
    /// The training configuration (flags, solver, net's Data layers) is unusable; the message
    /// names the file, layer or flag.
    #[error("{0}")]
    Config(String),
    /// A test pass was asked of a net whose TEST phase has no Data layer (or no test data).
    #[error("the TEST phase of the net has no Data layer to test on")]
    NoTestData,
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Training produced a non-finite loss or non-finite weights: the run stops (it never
    /// snapshots such weights).
    #[error(
        "training diverged at iteration {iter}: {what}; {}",
        match last_snapshot {
            Some(p) => format!("the last good snapshot is {} (resume with --resume {})", p.display(), p.display()),
            None => "no snapshot was written before it".to_string(),
        }
    )]
    NonFinite {
        /// The iteration (per worker) at which it was found.
        iter: u64,
        /// What went non-finite: the loss, the first layer whose output did, or a parameter.
        what: String,
        /// The last `.solverstate` written before, if any.
        last_snapshot: Option<std::path::PathBuf>,
    },
    /// No snapshot could be written, at the snapshot prefix nor at the fallback path.
    #[error("could not write the snapshot: {primary}; the fallback failed too: {fallback}")]
    SnapshotLost {
        /// The error at the snapshot prefix (after one retry).
        primary: Box<Error>,
        /// The error at the fallback path.
        fallback: Box<Error>,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
