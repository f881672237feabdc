//! A counting global allocator for "allocates nothing per round/batch" tests and benchmarks.
//!
//! Install it in a test or bench binary, then read the counters around the code under test:
//!
//! ```no_run
//! use sparknet_testkit::alloc::{CountingAllocator, thread_allocations};
//!
//! #[global_allocator]
//! static GLOBAL: CountingAllocator = CountingAllocator;
//!
//! let before = thread_allocations();
//! let v = vec![1u8; 10];
//! assert!(thread_allocations() > before);
//! # drop(v);
//! ```
//!
//! Two counters: [`thread_allocations`] counts the calling thread's allocations (robust when the
//! test harness runs other tests in parallel), [`total_allocations`] every thread's (for work that
//! background threads do, such as a prefetching loader). Reallocations count as allocations;
//! deallocations are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    // Const-initialised and without a destructor: safe to touch from inside the allocator.
    static THREAD: Cell<u64> = const { Cell::new(0) };
}
static TOTAL: AtomicU64 = AtomicU64::new(0);

/// Forwards to the system allocator, counting allocations per thread and in total.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

fn count_one() {
    THREAD.with(|c| c.set(c.get() + 1));
    TOTAL.fetch_add(1, Ordering::Relaxed);
}

/// Allocations made so far by the calling thread (0 unless [`CountingAllocator`] is installed).
pub fn thread_allocations() -> u64 {
    THREAD.with(Cell::get)
}

/// Allocations made so far by every thread (0 unless [`CountingAllocator`] is installed).
pub fn total_allocations() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}
