//! Process-wide allocator tuning for net execution on the CPU.
//!
//! Every layer's forward returns fresh candle tensors, so a pass allocates and frees the same
//! large buffers (tens of MB for an ImageNet batch) again and again. With glibc's defaults,
//! buffers above the dynamic mmap threshold are fresh `mmap`s: every pass pays a page fault and
//! a page clear per 4 KiB, which measured as much as 40% of a SqueezeNet forward pass
//! (`sparknet-net/BENCH.md`). [`keep_freed_memory`] tells glibc to serve large blocks from the
//! heap and never to give freed memory back, so a steady-state pass reuses the pages of the
//! previous one, as Caffe's long-lived blobs do.
//!
//! This changes the whole process, so the library never calls it by itself: the binaries
//! (`sparknet-net`, `sparknet-train`) call it first thing, and so may any program that runs nets
//! in a loop. The cost is that the process keeps its peak heap size until it exits.

/// Configures the C allocator to keep freed memory for reuse (see the module docs). Returns
/// `true` when the settings were applied (glibc on Linux), `false` elsewhere (a no-op).
pub fn keep_freed_memory() -> bool {
    imp::keep_freed_memory()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub(super) fn keep_freed_memory() -> bool {
        // glibc's mallopt parameters (malloc.h).
        const M_TRIM_THRESHOLD: libc::c_int = -1;
        const M_MMAP_MAX: libc::c_int = -4;
        // SAFETY: mallopt only changes allocator parameters; both are documented, valid values
        // (no mmap-served blocks; never trim the top of the heap). Blocks already mapped stay
        // valid and are unmapped on free as before.
        unsafe {
            let no_mmap = libc::mallopt(M_MMAP_MAX, 0);
            let no_trim = libc::mallopt(M_TRIM_THRESHOLD, libc::c_int::MAX);
            no_mmap == 1 && no_trim == 1
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn keep_freed_memory() -> bool {
        false
    }
}
