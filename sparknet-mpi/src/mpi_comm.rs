//! The MPI backend (feature `mpi`): one process per rank, over rsmpi.
//!
//! Allreduce runs in place (`MPI_IN_PLACE` as the send buffer, so no second buffer and no copy).
//! rsmpi has no safe in-place allreduce and its bindings do not export `MPI_IN_PLACE` (a macro
//! whose value differs between Open MPI and MPICH), so a one-function C shim compiled by `build.rs`
//! with `mpicc` hands it over. Only MPI-3 calls that both Open MPI and MPICH provide are used.
//!
//! Failure: [`MpiComm::init`] installs a panic hook that calls `MPI_Abort` after the usual panic
//! message, and [`Collective::abort`] prints its reason and calls `MPI_Abort`; either way every
//! rank of the job ends and `mpirun` exits non-zero, instead of the peers waiting forever in their
//! next collective.

use std::ffi::{c_int, c_void};
use std::io::Write;

use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{AsRaw, Communicator, CommunicatorCollectives, Root};

use crate::collective::{check_root, divide};
use crate::{Collective, Error, Result};

unsafe extern "C" {
    /// Defined in `csrc/in_place.c`: returns the implementation's `MPI_IN_PLACE`.
    fn sparknet_mpi_in_place() -> *mut c_void;
}

/// The value of `MPI_IN_PLACE` in the MPI library this crate was built against, for raw
/// `mpi::ffi` calls (`(void *)1` in Open MPI, `(void *)-1` in MPICH).
pub fn mpi_in_place() -> *mut c_void {
    // SAFETY: the shim takes no arguments and returns a constant.
    unsafe { sparknet_mpi_in_place() }
}

/// Exit code of the job when a rank calls [`Collective::abort`].
const ABORT_CODE: c_int = 1;
/// Exit code of the job when a rank panics (Rust's usual code for a panic).
const PANIC_CODE: c_int = 101;

/// One rank of an MPI job (`MPI_COMM_WORLD`). Not `Send`: MPI is initialised with
/// `MPI_THREAD_SINGLE`, so keep it on the thread that created it.
///
/// ```no_run
/// use sparknet_mpi::{Averager, Collective, MpiComm};
///
/// let comm = MpiComm::init()?;
/// let mut weights = vec![comm.rank() as f32; 1000];
/// Averager::new().average(&comm, &mut weights)?;
/// # Ok::<(), sparknet_mpi::Error>(())
/// ```
pub struct MpiComm {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    mean_chunk: Option<usize>,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

impl std::fmt::Debug for MpiComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiComm").field("rank", &self.rank).field("size", &self.size).finish()
    }
}

impl MpiComm {
    /// Initialises MPI (under `mpirun`, or as a job of one rank without it) and installs the
    /// panic hook that aborts the job. MPI is finalised when the returned value is dropped, and
    /// cannot be initialised again in the same process.
    ///
    /// # Errors
    /// [`Error::MpiInit`] when MPI was already initialised in this process.
    pub fn init() -> Result<MpiComm> {
        let universe = mpi::initialize().ok_or_else(|| {
            Error::MpiInit(
                "MPI was already initialised in this process; call MpiComm::init once".to_owned(),
            )
        })?;
        let world = universe.world();
        let rank = usize::try_from(world.rank()).unwrap_or(0);
        let size = usize::try_from(world.size()).unwrap_or(1);
        install_panic_abort(rank);
        Ok(MpiComm { world, rank, size, mean_chunk: None, _universe: universe })
    }

    /// Makes [`all_reduce_mean`](Collective::all_reduce_mean) (and so the [`Averager`]) reduce
    /// buffers longer than `elems` in pieces of `elems`, each divided by `K` right after its
    /// allreduce while it is still in cache, instead of one allreduce followed by a pass over the
    /// whole buffer. Off by default (one allreduce per round); `elems` of 0 turns it off again.
    /// Every rank must use the same value. The MPI library may choose another algorithm, and so
    /// another summation order, for the smaller pieces, so results can differ from the one-call
    /// mean in the last bits. The `allreduce` bench compares the timings.
    ///
    /// [`Averager`]: crate::Averager
    pub fn set_mean_chunk(&mut self, elems: usize) {
        self.mean_chunk = (elems > 0).then_some(elems);
    }

    /// The world communicator, for MPI calls this crate does not wrap.
    pub fn world(&self) -> &SimpleCommunicator {
        &self.world
    }

    /// In-place `MPI_Allreduce(MPI_SUM)` over `buf`, in pieces of at most `c_int::MAX` elements.
    fn all_reduce_in_place<T: Equivalence>(&self, op: &'static str, buf: &mut [T]) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let datatype = T::equivalent_datatype();
        for piece in buf.chunks_mut(c_int::MAX as usize) {
            // SAFETY: `piece` is a valid, exclusively borrowed buffer of `piece.len()` elements of
            // the type `datatype` describes; with MPI_IN_PLACE as the send buffer MPI reads and
            // writes only `piece`; the datatype, operation and communicator handles are valid
            // while `self` lives.
            let code = unsafe {
                mpi::ffi::MPI_Allreduce(
                    mpi_in_place(),
                    piece.as_mut_ptr().cast::<c_void>(),
                    piece.len() as c_int,
                    datatype.as_raw(),
                    SystemOperation::sum().as_raw(),
                    self.world.as_raw(),
                )
            };
            if code != mpi::ffi::MPI_SUCCESS as c_int {
                return Err(Error::Mpi { op, rank: self.rank, code });
            }
        }
        Ok(())
    }

    fn root_rank(&self, op: &'static str, root: usize) -> Result<mpi::Rank> {
        check_root(op, root, self.size)?;
        Ok(root as mpi::Rank)
    }
}

impl Collective for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_in_place("all_reduce_sum", buf)
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.all_reduce_in_place("all_reduce_sum_f64", buf)
    }

    /// One in-place allreduce, then a multiplication by `1 / K`; in pieces when
    /// [`set_mean_chunk`](MpiComm::set_mean_chunk) asked for it.
    fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let piece_len = self.mean_chunk.unwrap_or(buf.len()).max(1);
        for piece in buf.chunks_mut(piece_len) {
            self.all_reduce_in_place("all_reduce_mean", piece)?;
            divide(piece, self.size);
        }
        Ok(())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        let root = self.root_rank("broadcast", root)?;
        self.world.process_at_rank(root).broadcast_into(buf);
        Ok(())
    }

    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        let root = self.root_rank("broadcast_bytes", root)?;
        self.world.process_at_rank(root).broadcast_into(buf);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn gather_f64(&self, send: &[f64], root: usize) -> Result<Option<Vec<f64>>> {
        let root_rank = self.root_rank("gather_f64", root)?;
        let process = self.world.process_at_rank(root_rank);
        if root == self.rank {
            let mut out = vec![0.0; send.len() * self.size];
            process.gather_into_root(send, &mut out[..]);
            Ok(Some(out))
        } else {
            process.gather_into(send);
            Ok(None)
        }
    }

    fn abort(&self, reason: &str) -> Error {
        abort_job(self.rank, reason, ABORT_CODE)
    }
}

/// Prints `message` for `rank` to stderr (unbuffered and outside any test-output capture) and
/// ends the whole job with `MPI_Abort`.
fn abort_job(rank: usize, message: &str, code: c_int) -> ! {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "sparknet-mpi: rank {rank} aborts the MPI job: {message}");
    let _ = stderr.flush();
    drop(stderr);
    if mpi::is_initialized() && !mpi::is_finalized() {
        // SAFETY: MPI is initialised and not finalised, and MPI_COMM_WORLD is always valid then.
        unsafe {
            mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code);
        }
    }
    std::process::abort()
}

/// After the usual panic message, a panic anywhere in the process aborts the MPI job (while MPI
/// is initialised), so that the peers do not wait for this rank in their next collective.
fn install_panic_abort(rank: usize) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if mpi::is_initialized() && !mpi::is_finalized() {
            abort_job(rank, &format!("panic: {info}"), PANIC_CODE);
        }
    }));
}
