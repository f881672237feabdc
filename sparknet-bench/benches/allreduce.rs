//! Weight averaging (`sparknet_mpi::Averager`) against a raw in-place `MPI_Allreduce` of the same
//! bytes, for LeNet- and AlexNet-sized parameter buffers, with the allocations per round counted.
//!
//! A custom harness, not criterion: under `mpirun` every rank must run exactly the same sequence
//! of collectives, which criterion's adaptive iteration counts cannot promise.
//!
//! ```text
//! # in-process workers (LocalComm), K = 1, 2, 4:
//! cargo bench -p sparknet-bench --bench allreduce
//! # MPI: build with the feature, then run the bench binary under mpirun
//! cargo bench -p sparknet-bench --features mpi --bench allreduce --no-run   # prints the path
//! mpirun --oversubscribe -n 2 target/release/deps/allreduce-<hash>
//! ```
//!
//! Flags: `--quick` (fewer rounds, LeNet only). Under `mpirun` (world size above 1) the MPI section
//! runs; otherwise the in-process section. Rank 0 prints a table and one JSON line per case. The
//! MPI section also times `MpiComm::set_mean_chunk` (the mean in 8 MiB pieces, each divided while
//! still in cache) as backend `mpi-chunked`.
//!
//! Allocations are counted by a global allocator, per thread, around each averaging round after
//! the warm-up. They count Rust heap allocations (the MPI library's own `malloc`s are invisible to
//! it).

use std::time::{Duration, Instant};

use sparknet_mpi::{Averager, Collective, LocalGroup};

use sparknet_testkit::alloc::{CountingAllocator, thread_allocations as allocations};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Learnable parameters of Caffe's LeNet (MNIST) and of AlexNet (BVLC reference).
const MODELS: [(&str, usize); 2] = [("lenet", 431_080), ("alexnet", 60_965_224)];

/// Timed rounds per case (after 2 warm-up rounds).
fn rounds(params: usize, quick: bool) -> usize {
    match (params > 10_000_000, quick) {
        (true, _) => 10,
        (false, true) => 20,
        (false, false) => 200,
    }
}

/// Median and minimum of a sample.
fn summary(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort_unstable();
    (times[times.len() / 2], times[0])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Timings of one case on one rank.
struct Sample {
    average: Vec<Duration>,
    reference: Vec<Duration>,
    allocations: u64,
    rounds: usize,
}

/// Times `rounds` averaging rounds and as many `reference` rounds over a buffer of the same size,
/// interleaved, with a barrier before each timed call so that every rank starts it together.
fn measure<C: Collective>(
    comm: &C,
    params: usize,
    rounds: usize,
    mut reference: impl FnMut(&mut [f32]),
) -> Sample {
    let mut weights: Vec<f32> = (0..params).map(|i| (i % 1000) as f32 * 1e-3).collect();
    let mut raw = weights.clone();
    let mut averager = Averager::new(0);
    let mut sample = Sample {
        average: Vec::with_capacity(rounds),
        reference: Vec::with_capacity(rounds),
        allocations: 0,
        rounds,
    };
    let fail = |e: sparknet_mpi::Error| -> ! {
        let e = comm.abort(&format!("allreduce bench: {e}"));
        panic!("{e}")
    };
    for round in 0..rounds + 2 {
        // Alternate which of the two goes first, so that neither always runs on a warmer cache.
        let mut t_reference = Duration::ZERO;
        let mut t_average = Duration::ZERO;
        let mut allocated = 0;
        for turn in [round % 2, 1 - round % 2] {
            comm.barrier().unwrap_or_else(|e| fail(e));
            if turn == 0 {
                let start = Instant::now();
                reference(&mut raw);
                t_reference = start.elapsed();
            } else {
                let before = allocations();
                let start = Instant::now();
                averager.average(comm, &mut weights).unwrap_or_else(|e| fail(e));
                t_average = start.elapsed();
                allocated = allocations() - before;
            }
        }
        if round >= 2 {
            sample.reference.push(t_reference);
            sample.average.push(t_average);
            sample.allocations += allocated;
        }
    }
    sample
}

fn report(backend: &str, reference_name: &str, model: &str, params: usize, k: usize, s: Sample) {
    let Sample { mut average, mut reference, allocations, rounds } = s;
    let (avg_med, avg_min) = summary(&mut average);
    let (ref_med, ref_min) = summary(&mut reference);
    let ratio = avg_med.as_secs_f64() / ref_med.as_secs_f64();
    let ratio_min = avg_min.as_secs_f64() / ref_min.as_secs_f64();
    let mb = params as f64 * 4.0 / 1e6;
    println!(
        "{backend:<6} K={k} {model:<8} {mb:>7.1} MB  average {:>9.3} ms (min {:>9.3})  {reference_name} {:>9.3} ms (min {:>9.3})  ratio {ratio:.3} (of minima {ratio_min:.3})  allocations/round {}",
        ms(avg_med),
        ms(avg_min),
        ms(ref_med),
        ms(ref_min),
        allocations as f64 / rounds as f64
    );
    println!(
        "{{\"bench\":\"allreduce\",\"backend\":\"{backend}\",\"k\":{k},\"model\":\"{model}\",\"params\":{params},\"rounds\":{rounds},\"average_ms\":{:.4},\"reference\":\"{reference_name}\",\"reference_ms\":{:.4},\"ratio\":{ratio:.4},\"ratio_of_minima\":{ratio_min:.4},\"allocations_per_round\":{}}}",
        ms(avg_med),
        ms(ref_med),
        allocations as f64 / rounds as f64
    );
}

/// In-process workers: averaging (the fused mean) against the group's own allreduce-sum of the
/// same length (the same exchange without the division).
fn local_section(quick: bool) {
    println!("in-process workers (LocalComm), {} cores", available_cores());
    for (model, params) in MODELS {
        if quick && params > 10_000_000 {
            continue;
        }
        for k in [1, 2, 4] {
            let group = LocalGroup::new(k).expect("k > 0");
            let samples = group
                .run(|comm| {
                    measure(&comm, params, rounds(params, quick), |buf| {
                        comm.all_reduce_sum(buf).expect("all_reduce_sum")
                    })
                })
                .expect("no worker panicked");
            let total_allocations: u64 = samples.iter().map(|s| s.allocations).sum();
            let mut rank0 = samples.into_iter().next().expect("k > 0");
            rank0.allocations = total_allocations;
            report("local", "all_reduce_sum", model, params, k, rank0);
        }
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(feature = "mpi")]
mod mpi_section {
    //! The MPI section: averaging against a raw in-place `MPI_Allreduce(MPI_SUM)` of the buffer.

    use std::ffi::{c_int, c_void};

    use sparknet_mpi::mpi::collective::SystemOperation;
    use sparknet_mpi::mpi::datatype::Equivalence;
    use sparknet_mpi::mpi::traits::AsRaw;
    use sparknet_mpi::{Collective, MpiComm, mpi_in_place};

    use super::{MODELS, measure, report, rounds};

    /// The reference: `MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD)`.
    fn raw_allreduce(comm: &MpiComm, buf: &mut [f32]) {
        // SAFETY: `buf` is a valid, exclusively borrowed f32 buffer of `buf.len()` elements (below
        // c_int::MAX for these models); the handles are valid while `comm` lives.
        let code = unsafe {
            sparknet_mpi::mpi::ffi::MPI_Allreduce(
                mpi_in_place(),
                buf.as_mut_ptr().cast::<c_void>(),
                buf.len() as c_int,
                f32::equivalent_datatype().as_raw(),
                SystemOperation::sum().as_raw(),
                comm.world().as_raw(),
            )
        };
        if code != 0 {
            let e = comm.abort(&format!("raw MPI_Allreduce returned {code}"));
            panic!("{e}");
        }
    }

    /// Pieces for the chunked variant: 2 Mi floats (8 MiB), a fraction of a usual L3 cache.
    const CHUNK: usize = 1 << 21;

    pub(super) fn run(comm: &mut MpiComm, quick: bool) {
        if comm.rank() == 0 {
            println!("MPI, {} ranks", comm.size());
        }
        for (model, params) in MODELS {
            if quick && params > 10_000_000 {
                continue;
            }
            for chunk in [0, CHUNK] {
                if chunk >= params {
                    continue;
                }
                comm.set_mean_chunk(chunk);
                let comm = &*comm;
                let sample =
                    measure(comm, params, rounds(params, quick), |buf| raw_allreduce(comm, buf));
                if comm.rank() == 0 {
                    let backend = if chunk == 0 { "mpi" } else { "mpi-chunked" };
                    report(backend, "MPI_Allreduce", model, params, comm.size(), sample);
                }
            }
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    #[cfg(feature = "mpi")]
    {
        let mut comm = sparknet_mpi::MpiComm::init().expect("MPI init");
        if comm.size() > 1 {
            mpi_section::run(&mut comm, quick);
            return;
        }
    }
    local_section(quick);
}
