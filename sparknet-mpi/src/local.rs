//! In-process workers: `K` threads of one process form a group ([`LocalGroup`]), each holding a
//! [`LocalComm`] handle.
//!
//! How a collective works: every rank publishes a pointer to its own buffer in its slot, waits at a
//! barrier until all have done so, then works directly on the peers' buffers (no shared copy, no
//! allocation), and waits at a second barrier before returning, so no rank touches a buffer whose
//! owner has already returned. A reduction splits the elements into `K` contiguous chunks; rank
//! `r` reduces chunk `r` over the ranks in the order `0, 1, .., K-1` (accumulating in `f64`) and
//! writes the result into every rank's buffer. The summation order therefore never depends on
//! thread timing, and the result is the same on every rank and every run.
//!
//! Every rank also publishes which collective it called, its length and its root; all ranks check
//! them against each other after the first barrier and return the same `Err` when they disagree,
//! instead of reading a buffer of the wrong size.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::collective::{Collective, check_root};
use crate::{Error, Result};

/// The collectives, as published in a slot so that ranks can check they called the same one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Barrier,
    AllReduceSum,
    AllReduceSumF64,
    AllReduceMean,
    Broadcast,
    BroadcastBytes,
    GatherF64,
}

impl Op {
    const ALL: [Op; 7] = [
        Op::Barrier,
        Op::AllReduceSum,
        Op::AllReduceSumF64,
        Op::AllReduceMean,
        Op::Broadcast,
        Op::BroadcastBytes,
        Op::GatherF64,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Barrier => "barrier",
            Op::AllReduceSum => "all_reduce_sum",
            Op::AllReduceSumF64 => "all_reduce_sum_f64",
            Op::AllReduceMean => "all_reduce_mean",
            Op::Broadcast => "broadcast",
            Op::BroadcastBytes => "broadcast_bytes",
            Op::GatherF64 => "gather_f64",
        }
    }

    fn code(self) -> usize {
        self as usize
    }

    fn from_code(code: usize) -> &'static str {
        Op::ALL.get(code).map_or("an unknown collective", |op| op.name())
    }
}

/// What one rank publishes for the collective it is in. Written by the owner before the first
/// barrier, read by everyone between the two barriers; the barrier's mutex orders these accesses,
/// so relaxed atomics suffice.
struct Slot {
    op: AtomicUsize,
    ptr: AtomicPtr<u8>,
    len: AtomicUsize,
    root: AtomicUsize,
}

/// Why the group stopped.
struct Failure {
    by: usize,
    reason: String,
}

struct BarrierState {
    arrived: usize,
    generation: u64,
    failure: Option<Failure>,
}

struct Shared {
    size: usize,
    slots: Box<[Slot]>,
    state: Mutex<BarrierState>,
    cv: Condvar,
}

impl Shared {
    fn new(size: usize) -> Arc<Shared> {
        let slots = (0..size)
            .map(|_| Slot {
                op: AtomicUsize::new(0),
                ptr: AtomicPtr::new(std::ptr::null_mut()),
                len: AtomicUsize::new(0),
                root: AtomicUsize::new(0),
            })
            .collect();
        Arc::new(Shared {
            size,
            slots,
            state: Mutex::new(BarrierState { arrived: 0, generation: 0, failure: None }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BarrierState> {
        // Nothing panics while holding the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A group of in-process workers, created together; hand one [`LocalComm`] to each thread
/// ([`into_comms`](LocalGroup::into_comms)) or let [`run`](LocalGroup::run) start the threads.
///
/// ```
/// use sparknet_mpi::{Collective, LocalGroup};
///
/// let sums = LocalGroup::new(3)?.run(|comm| {
///     let mut x = [comm.rank() as f32 + 1.0];
///     comm.all_reduce_sum(&mut x).map(|()| x[0])
/// })?;
/// assert!(sums.iter().all(|s| *s.as_ref().unwrap() == 6.0));
/// # Ok::<(), sparknet_mpi::Error>(())
/// ```
pub struct LocalGroup {
    comms: Vec<LocalComm>,
}

impl LocalGroup {
    /// Creates the `size` handles of a new group.
    ///
    /// # Errors
    /// [`Error::EmptyGroup`] when `size` is 0.
    pub fn new(size: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::EmptyGroup);
        }
        let shared = Shared::new(size);
        let comms = (0..size).map(|rank| LocalComm::new(rank, &shared)).collect();
        Ok(LocalGroup { comms })
    }

    /// The number of workers.
    pub fn size(&self) -> usize {
        self.comms.len()
    }

    /// The handles, in rank order; move each into its own thread.
    pub fn into_comms(self) -> Vec<LocalComm> {
        self.comms
    }

    /// Runs `f` once per rank, each on its own scoped thread (named `sparknet-worker-<rank>`), and
    /// returns the results in rank order.
    ///
    /// # Errors
    /// [`Error::WorkerPanicked`] for the lowest rank that panicked (its peers' collectives return
    /// [`Error::Aborted`] rather than waiting for it), [`Error::Spawn`] when a thread cannot start.
    pub fn run<R, F>(self, f: F) -> Result<Vec<R>>
    where
        F: Fn(LocalComm) -> R + Sync,
        R: Send,
    {
        let size = self.size();
        std::thread::scope(|scope| {
            let f = &f;
            let mut handles = Vec::with_capacity(size);
            for comm in self.comms {
                let rank = comm.rank;
                let handle = std::thread::Builder::new()
                    .name(format!("sparknet-worker-{rank}"))
                    .spawn_scoped(scope, move || f(comm))
                    .map_err(|source| Error::Spawn { rank, source });
                handles.push(handle);
            }
            let mut results = Vec::with_capacity(size);
            let mut first_error = None;
            for (rank, handle) in handles.into_iter().enumerate() {
                let outcome = handle.and_then(|h| {
                    h.join().map_err(|payload| Error::WorkerPanicked {
                        rank,
                        message: panic_message(payload.as_ref()),
                    })
                });
                match outcome {
                    Ok(r) => results.push(r),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(results),
            }
        })
    }
}

impl IntoIterator for LocalGroup {
    type Item = LocalComm;
    type IntoIter = std::vec::IntoIter<LocalComm>;

    fn into_iter(self) -> Self::IntoIter {
        self.comms.into_iter()
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_owned()
    }
}

/// One worker's handle in a [`LocalGroup`]. It can move to another thread (`Send`) but cannot be
/// shared between threads (not `Sync`): one rank runs one collective at a time.
///
/// Dropping a handle (including by a panic) marks the group as left by that rank, so peers that
/// still call collectives get [`Error::Aborted`] instead of waiting forever.
pub struct LocalComm {
    rank: usize,
    shared: Arc<Shared>,
    not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for LocalComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalComm").field("rank", &self.rank).field("size", &self.size()).finish()
    }
}

/// The element types the in-process reduction handles, accumulated in `f64`.
trait Reduce: Copy {
    fn widen(self) -> f64;
    fn narrow(x: f64) -> Self;
}

impl Reduce for f32 {
    fn widen(self) -> f64 {
        f64::from(self)
    }
    fn narrow(x: f64) -> Self {
        x as f32
    }
}

impl Reduce for f64 {
    fn widen(self) -> f64 {
        self
    }
    fn narrow(x: f64) -> Self {
        x
    }
}

/// Elements reduced per block: the `f64` accumulator stays on the stack and in L1.
const BLOCK: usize = 512;

impl LocalComm {
    /// A group of one: every collective returns at once and leaves the buffers as they are (the
    /// single-worker case, which is not a separate code path in the trainer).
    pub fn single() -> LocalComm {
        LocalComm::new(0, &Shared::new(1))
    }

    fn new(rank: usize, shared: &Arc<Shared>) -> LocalComm {
        LocalComm { rank, shared: Arc::clone(shared), not_sync: PhantomData }
    }

    /// Marks the group failed (the first failure wins) and wakes every waiting rank.
    fn fail(&self, reason: String) {
        let mut state = self.shared.lock();
        if state.failure.is_none() {
            state.failure = Some(Failure { by: self.rank, reason });
        }
        drop(state);
        self.shared.cv.notify_all();
    }

    fn aborted(&self, op: Op, failure: &Failure) -> Error {
        Error::Aborted {
            op: op.name(),
            rank: self.rank,
            by: failure.by,
            reason: failure.reason.clone(),
        }
    }

    /// The first barrier: returns `Err` when the group failed before every rank arrived. Once the
    /// group failed no barrier completes, so no peer can go on to touch this rank's buffer.
    fn wait_arrival(&self, op: Op) -> Result<()> {
        let mut state = self.shared.lock();
        if let Some(f) = &state.failure {
            return Err(self.aborted(op, f));
        }
        state.arrived += 1;
        if state.arrived == self.shared.size {
            state.arrived = 0;
            state.generation = state.generation.wrapping_add(1);
            drop(state);
            self.shared.cv.notify_all();
            return Ok(());
        }
        let generation = state.generation;
        loop {
            state = self.shared.cv.wait(state).unwrap_or_else(|e| e.into_inner());
            if state.generation != generation {
                return Ok(());
            }
            if let Some(f) = &state.failure {
                return Err(self.aborted(op, f));
            }
        }
    }

    /// The second barrier: every rank passed the first one and is inside the same collective, so
    /// every rank will arrive; a failure flag cannot release it early (peers may still be writing
    /// into this rank's buffer).
    fn wait_departure(&self) {
        let mut state = self.shared.lock();
        state.arrived += 1;
        if state.arrived == self.shared.size {
            state.arrived = 0;
            state.generation = state.generation.wrapping_add(1);
            drop(state);
            self.shared.cv.notify_all();
            return;
        }
        let generation = state.generation;
        while state.generation == generation {
            state = self.shared.cv.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Checks that every rank published the same collective, length and root.
    fn check_slots(&self, op: Op, len: usize, root: usize) -> Result<()> {
        for (other_rank, slot) in self.shared.slots.iter().enumerate() {
            let other_op = slot.op.load(Ordering::Relaxed);
            let other_root = slot.root.load(Ordering::Relaxed);
            if other_op != op.code() || other_root != root {
                return Err(Error::Mismatch {
                    op: op.name(),
                    rank: self.rank,
                    root,
                    other_rank,
                    other_op: Op::from_code(other_op),
                    other_root,
                });
            }
            let other_len = slot.len.load(Ordering::Relaxed);
            if other_len != len {
                return Err(Error::LengthMismatch {
                    op: op.name(),
                    rank: self.rank,
                    len,
                    other_rank,
                    other_len,
                });
            }
        }
        check_root(op.name(), root, self.shared.size)
    }

    /// Runs one collective: publish `(op, ptr, len, root)`, first barrier, check, `work`, second
    /// barrier. `work` runs only when every rank's slot agrees.
    ///
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` elements of the type `work` uses for the
    /// whole call, and nothing else may access that memory during the call. `work` may access the
    /// peers' buffers only as the module documentation describes (reductions: its own chunk of
    /// every buffer; broadcast: read the root's, write its own; gather: read all).
    unsafe fn collective<T>(
        &self,
        op: Op,
        ptr: *mut T,
        len: usize,
        root: usize,
        work: impl FnOnce(),
    ) -> Result<()> {
        let slot = &self.shared.slots[self.rank];
        slot.op.store(op.code(), Ordering::Relaxed);
        slot.ptr.store(ptr.cast(), Ordering::Relaxed);
        slot.len.store(len, Ordering::Relaxed);
        slot.root.store(root, Ordering::Relaxed);
        self.wait_arrival(op)?;
        let checked = self.check_slots(op, len, root);
        if checked.is_ok() {
            work();
        }
        self.wait_departure();
        checked
    }

    fn peer_ptr<T>(&self, rank: usize) -> *mut T {
        self.shared.slots[rank].ptr.load(Ordering::Relaxed).cast()
    }

    /// This rank's chunk of `0..len` in a reduction.
    fn chunk(&self, len: usize) -> (usize, usize) {
        let k = self.shared.size;
        (self.rank * len / k, (self.rank + 1) * len / k)
    }

    /// Reduces elements `lo..hi` over every rank's buffer (in rank order, in `f64`), multiplies by
    /// `1 / K` when `mean`, and writes the result into every rank's buffer.
    ///
    /// # Safety
    /// Called between the two barriers of a reduction whose slots all hold valid `T` buffers of at
    /// least `hi` elements, with `lo..hi` this rank's chunk (no other thread touches it).
    unsafe fn reduce_chunk<T: Reduce>(&self, lo: usize, hi: usize, mean: bool) {
        let k = self.shared.size;
        // Multiplying by the f64 reciprocal is within one f64 ulp of the quotient, far below the
        // f32 rounding that follows: K identical inputs still come back bit for bit.
        let inv_k = 1.0 / k as f64;
        let mut acc = [0.0f64; BLOCK];
        let mut start = lo;
        while start < hi {
            let n = (hi - start).min(BLOCK);
            let acc = &mut acc[..n];
            for r in 0..k {
                // SAFETY: rank r's buffer holds at least `hi` elements (slots checked) and this
                // thread is the only one accessing `start..start + n` of it until the second
                // barrier; the shared slice is dropped before the mutable one below is made.
                let src = unsafe {
                    std::slice::from_raw_parts(self.peer_ptr::<T>(r).add(start).cast_const(), n)
                };
                if r == 0 {
                    acc.iter_mut().zip(src).for_each(|(a, x)| *a = x.widen());
                } else if mean && r == k - 1 {
                    // The scaling rides along with the last addition (no extra pass).
                    acc.iter_mut().zip(src).for_each(|(a, x)| *a = (*a + x.widen()) * inv_k);
                } else {
                    acc.iter_mut().zip(src).for_each(|(a, x)| *a += x.widen());
                }
            }
            for r in 0..k {
                // SAFETY: as above; no other reference to this region exists now.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(self.peer_ptr::<T>(r).add(start), n) };
                dst.iter_mut().zip(acc.iter()).for_each(|(d, a)| *d = T::narrow(*a));
            }
            start += n;
        }
    }

    fn reduce<T: Reduce>(&self, op: Op, buf: &mut [T], mean: bool) -> Result<()> {
        if self.shared.size == 1 {
            return self.solo(op);
        }
        let len = buf.len();
        let (lo, hi) = self.chunk(len);
        // SAFETY: `buf` is borrowed mutably for the whole call and only reached through `ptr`;
        // `reduce_chunk` touches only this rank's chunk of each peer's buffer, whose length was
        // checked to equal `len` before it runs.
        unsafe {
            self.collective(op, buf.as_mut_ptr(), len, 0, || self.reduce_chunk::<T>(lo, hi, mean))
        }
    }

    fn copy_from_root<T: Copy>(&self, op: Op, buf: &mut [T], root: usize) -> Result<()> {
        if self.shared.size == 1 {
            check_root(op.name(), root, 1)?;
            return self.solo(op);
        }
        let len = buf.len();
        let own = buf.as_mut_ptr();
        let is_root = root == self.rank;
        // SAFETY: `buf` is only reached through `own` during the call. The root's buffer is only
        // read (by every non-root) and each non-root writes only its own; all lengths equal `len`.
        unsafe {
            self.collective(op, own, len, root, || {
                if !is_root {
                    std::ptr::copy_nonoverlapping(self.peer_ptr::<T>(root).cast_const(), own, len);
                }
            })
        }
    }

    /// A collective in a group of one: nothing to exchange, but a failed group still reports it.
    fn solo(&self, op: Op) -> Result<()> {
        match &self.shared.lock().failure {
            Some(f) => Err(self.aborted(op, f)),
            None => Ok(()),
        }
    }
}

impl Collective for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    /// The sum is accumulated in `f64` in rank order and rounded once.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.reduce(Op::AllReduceSum, buf, false)
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.reduce(Op::AllReduceSumF64, buf, false)
    }

    /// The mean is computed in `f64` (sum in rank order, times `1 / K`) and rounded once to `f32`,
    /// so `K` identical inputs come back bit for bit for every `K` below 2^29.
    fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<()> {
        self.reduce(Op::AllReduceMean, buf, true)
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        self.copy_from_root(Op::Broadcast, buf, root)
    }

    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.copy_from_root(Op::BroadcastBytes, buf, root)
    }

    fn barrier(&self) -> Result<()> {
        if self.shared.size == 1 {
            return self.solo(Op::Barrier);
        }
        // SAFETY: a barrier publishes no buffer (length 0) and its work touches nothing.
        unsafe { self.collective(Op::Barrier, std::ptr::null_mut::<u8>(), 0, 0, || {}) }
    }

    fn gather_f64(&self, send: &[f64], root: usize) -> Result<Option<Vec<f64>>> {
        let op = Op::GatherF64;
        if self.shared.size == 1 {
            check_root(op.name(), root, 1)?;
            return self.solo(op).map(|()| Some(send.to_vec()));
        }
        let len = send.len();
        let is_root = root == self.rank;
        let mut out = Vec::new();
        // SAFETY: every buffer is only read (the root reads all of them, `len` elements each, as
        // checked); the pointer is cast to `*mut` only to fit the slot and is never written.
        unsafe {
            self.collective(op, send.as_ptr().cast_mut(), len, root, || {
                if is_root {
                    out.reserve_exact(len * self.shared.size);
                    for r in 0..self.shared.size {
                        out.extend_from_slice(std::slice::from_raw_parts(
                            self.peer_ptr::<f64>(r).cast_const(),
                            len,
                        ));
                    }
                }
            })?;
        }
        Ok(is_root.then_some(out))
    }

    fn abort(&self, reason: &str) -> Error {
        self.fail(reason.to_owned());
        Error::Aborted { op: "abort", rank: self.rank, by: self.rank, reason: reason.to_owned() }
    }
}

impl Drop for LocalComm {
    fn drop(&mut self) {
        let reason = if std::thread::panicking() {
            format!("worker {} panicked", self.rank)
        } else {
            format!("worker {} left the group (its handle was dropped)", self.rank)
        };
        self.fail(reason);
    }
}
