//! How a [`Plan`] runs: one rank per process when an MPI launcher started this process (feature
//! `mpi`), otherwise `K` in-process workers on threads; each rank with its own compute threads
//! (cores / ranks on this node). [`run`] is what `sparknet-train` calls.

use crate::plan::Plan;
use crate::solver_worker::SolverWorker;
use crate::trainer::{Event, LoopConfig, Summary, Worker, train};
use crate::{Collective, Error, LocalGroup, Result};

/// Compute threads for each of `ranks` ranks sharing this machine: the cores divided among them
/// (at least 1), so oversubscribed ranks do not fight over cores.
pub fn threads_per_rank(ranks: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cores / ranks.max(1)).max(1)
}

/// Ranks of this MPI job on this node, from the launcher's environment (Open MPI, MPICH/Hydra,
/// Slurm); `None` outside a launcher.
pub fn local_ranks_from_env() -> Option<usize> {
    ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// This process's rank as the MPI launcher announces it (0 outside a launcher), known before MPI
/// is initialised (for deciding which process logs).
pub fn launcher_rank() -> usize {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// True when started by an MPI launcher (`mpirun`/`mpiexec`/`srun`).
pub fn under_mpi_launcher() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// Runs the loop on this rank with `make` building its worker, on the current thread (its
/// kernels use the current rayon pool: for one MPI rank per process, size the global pool with
/// [`threads_per_rank`]).
///
/// # Errors
/// Worker construction (after aborting the group) and loop errors.
pub fn run_rank<C, W, F>(
    comm: &C,
    config: &LoopConfig,
    make: F,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Summary>
where
    C: Collective,
    W: Worker,
    F: FnOnce(&C) -> Result<W>,
{
    let mut worker = match make(comm) {
        Ok(w) => w,
        Err(e) => {
            if comm.size() > 1 {
                let _ = comm.abort(&format!("rank {}: {e}", comm.rank()));
            }
            return Err(e);
        }
    };
    train(comm, &mut worker, config, on_event)
}

/// `K` in-process workers on threads, each in its own rayon pool of `threads_per_rank(K)`
/// compute threads; rank 0 reports to `on_event`. Returns rank 0's summary.
///
/// # Errors
/// The lowest rank's error.
pub fn run_local<W, F>(
    workers: usize,
    config: &LoopConfig,
    make: F,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<Summary>
where
    W: Worker,
    F: Fn(&dyn Collective) -> Result<W> + Sync,
{
    let threads = threads_per_rank(workers);
    let make = &make;
    let results = LocalGroup::new(workers)?.run(|comm| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("sparknet-compute-{i}"))
            .build()
            .map_err(|e| Error::Config(format!("cannot start {threads} compute threads: {e}")))?;
        pool.install(move || {
            let mut report = |e: &Event| on_event(e);
            run_rank(&comm, config, |c: &crate::LocalComm| make(c), &mut report)
        })
    })?;
    let mut first_err = None;
    let mut summary = None;
    for r in results {
        match r {
            Ok(s) => {
                summary.get_or_insert(s);
            }
            // Prefer the failing rank's own error over its peers' "aborted by".
            Err(e @ Error::Aborted { .. }) => {
                first_err.get_or_insert(e);
            }
            // The lowest failing rank's own error (rank 0 knows the last snapshot).
            Err(e) => {
                if first_err.as_ref().is_none_or(|f| matches!(f, Error::Aborted { .. })) {
                    first_err = Some(e);
                }
            }
        }
    }
    match (first_err, summary) {
        (Some(e), _) => Err(e),
        (None, Some(s)) => Ok(s),
        (None, None) => Err(Error::EmptyGroup),
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
    if under_mpi_launcher() {
        let comm = crate::MpiComm::init()?;
        let local = local_ranks_from_env().unwrap_or(comm.size());
        // RAYON_NUM_THREADS, when set, sizes the global pool instead.
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            let threads = threads_per_rank(local);
            // Fails only when the global pool already exists; it then keeps its size.
            let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
        }
        let (rank, size) = (comm.rank(), comm.size());
        let mut report = |e: &Event| on_event(e);
        let make = |_: &crate::MpiComm| SolverWorker::new(plan, rank, size, data_threads);
        let summary = run_rank(&comm, &plan.loop_config, make, &mut report)?;
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
