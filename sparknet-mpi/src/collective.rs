//! The [`Collective`] trait: the handful of group operations SparkNet's training loop needs.

use crate::Result;

/// A handle of one worker (rank) in a group of `size` workers that communicate collectively.
///
/// Every collective must be called by every rank of the group, in the same order, with the same
/// lengths (and the same root); a rank that skips one leaves its peers waiting. Implementations:
/// [`LocalComm`](crate::LocalComm) (threads in one process, always available) and `MpiComm`
/// (one process per rank, feature `mpi`).
///
/// Errors: a collective returns `Err` when the group is no longer usable (a peer aborted, for the
/// in-process group) or the arguments are wrong (a root out of range; for the in-process group
/// also lengths that differ between ranks, which MPI cannot detect). After an `Err` from a
/// collective the group must not be used again. A rank that cannot go on calls
/// [`abort`](Collective::abort) so that its peers do not wait forever.
pub trait Collective {
    /// This worker's rank, in `0..size()`.
    fn rank(&self) -> usize;

    /// The number of workers in the group (`K` in the paper).
    fn size(&self) -> usize;

    /// Replaces `buf` on every rank by the elementwise sum over ranks, in place.
    ///
    /// # Errors
    /// See the trait documentation.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;

    /// Replaces `buf` on every rank by the elementwise sum over ranks, in place (for metrics such
    /// as summed test accuracy and loss).
    ///
    /// # Errors
    /// See the trait documentation.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;

    /// Replaces `buf` on every rank by the elementwise mean over ranks, in place.
    ///
    /// The default is [`all_reduce_sum`](Collective::all_reduce_sum) followed by a multiplication
    /// by `1 / size()` (exact for a power-of-two size). Implementations may fuse the division
    /// into the reduction; the in-process group does, and averages in `f64`, so that identical
    /// inputs come back bit for bit for every group size.
    ///
    /// # Errors
    /// See the trait documentation.
    fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(buf)?;
        divide(buf, self.size());
        Ok(())
    }

    /// Copies `buf` from rank `root` into `buf` on every other rank.
    ///
    /// # Errors
    /// `root` out of range, or see the trait documentation.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;

    /// Copies the bytes `buf` from rank `root` into `buf` on every other rank (for serialized
    /// settings, a snapshot or a flag such as "stop now"). Every rank must already know the length.
    ///
    /// # Errors
    /// `root` out of range, or see the trait documentation.
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()>;

    /// Returns when every rank has called it.
    ///
    /// # Errors
    /// See the trait documentation.
    fn barrier(&self) -> Result<()>;

    /// Gathers a small record of metrics (`send`, the same length on every rank) at `root`.
    ///
    /// Returns `Some(v)` on the root, where `v[r * send.len()..(r + 1) * send.len()]` is rank
    /// `r`'s record, and `None` on every other rank. This allocates the result; it is meant for
    /// per-test-interval metrics, not for per-round weights.
    ///
    /// # Errors
    /// `root` out of range, or see the trait documentation.
    fn gather_f64(&self, send: &[f64], root: usize) -> Result<Option<Vec<f64>>>;

    /// Ends the group because this rank cannot go on, with `reason` as the message.
    ///
    /// - MPI: prints `reason` with the rank to stderr and calls `MPI_Abort`, which ends every rank
    ///   of the job with a non-zero exit status. It does not return.
    /// - In process: marks the group aborted, so that every peer's current and future collectives
    ///   return [`Error::Aborted`](crate::Error::Aborted) instead of waiting, and returns that
    ///   error for this rank to propagate.
    fn abort(&self, reason: &str) -> crate::Error;
}

/// Divides every element of `buf` by `k` (the last step of averaging a sum over `k` ranks), as a
/// multiplication by `1 / k`: four to eight times faster than a division. For a power-of-two `k`
/// the reciprocal is exact and so is the result, bit for bit the same as a division; otherwise it
/// can differ from the correctly rounded quotient in the last bit.
pub(crate) fn divide(buf: &mut [f32], k: usize) {
    if k == 1 {
        return;
    }
    let inv = 1.0 / k as f32;
    for x in buf {
        *x *= inv;
    }
}

/// Checks that `root` names a rank of a group of `size`.
pub(crate) fn check_root(op: &'static str, root: usize, size: usize) -> Result<()> {
    if root < size { Ok(()) } else { Err(crate::Error::RootOutOfRange { op, root, size }) }
}
