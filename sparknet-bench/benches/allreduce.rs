//! A SparkNet averaging round as the trainer runs it, against the floor of a solver update plus a
//! raw in-place `MPI_Allreduce` of the same bytes, for LeNet- and AlexNet-sized parameter
//! buffers, with the allocations per round counted.
//!
//! Each round times, with a barrier before each timed call:
//!
//! - `raw`: the reference, an allreduce-sum of the buffer and nothing else (`MPI_Allreduce` under
//!   `mpirun`; the group's own `all_reduce_sum` in process), right after `update_floor`, a plain
//!   update of the same buffer. Between the two, outside the timing, the buffer is multiplied by
//!   `1 / K` (so that its values keep the magnitude of the others'), which leaves every timed call
//!   of this pipeline in the cache state of its counterpart in the prescaled one: the reference
//!   finds the buffer just written by a pass of this core, as `prescaled` does, and the next
//!   update finds it as the allreduce left it, as `update_scaled` does;
//! - `average`: `Averager::average`, the allreduce then a pass dividing by `K` (what the trainer
//!   did before the scaling moved into the update);
//! - `prescaled`: `Averager::average_prescaled`, the allreduce-sum of weights already multiplied
//!   by `1 / K` (what the trainer does now for `K` > 1);
//! - `update` and `update_scaled`: one Caffe SGD update pass over the whole buffer (momentum 0.9,
//!   weight decay; `Updater::apply`) before `average`, and the same pass with the `1 / K` scaling
//!   fused into it (`Updater::apply_scaled`, the last local step of a round) before `prescaled`:
//!   where the scaling now costs. `update_scaled` is compared with `update_floor`, which finds
//!   its buffer in the same state; `update` finds its buffer warm from `average`'s division
//!   pass, so for cache-sized buffers it is cheaper, and the division pass paid for that.
//!
//! and reports three round costs, summed per round before taking the median: `old` = update +
//! average, `new` = update_scaled + prescaled, `floor` = update_floor + raw. The ratio
//! `new / floor` is the price of averaging over a bare allreduce once the moved work is counted.
//!
//! A custom harness, not criterion: under `mpirun` every rank must run exactly the same sequence
//! of collectives, which criterion's adaptive iteration counts cannot promise.
//!
//! ```text
//! # in-process workers (LocalComm), K = 1, 2, 4:
//! cargo bench -p sparknet-bench --bench allreduce
//! # MPI: build with the feature, then run the bench binary under mpirun
//! cargo bench -p sparknet-bench --features mpi --bench allreduce --no-run   # prints the path
//! RAYON_NUM_THREADS=1 mpirun --oversubscribe -n 2 target/release/deps/allreduce-<hash>
//! ```
//!
//! Flags: `--quick` (fewer rounds, LeNet only). Under `mpirun` (world size above 1) the MPI section
//! runs; otherwise the in-process section. Rank 0 prints a table and one JSON line per case. The
//! MPI section also times `MpiComm::set_mean_chunk` (the divide-after mean in 8 MiB pieces, each
//! divided while still in cache) as backend `mpi-chunked`.
//!
//! Allocations are counted by a global allocator, per thread, around every timed call but the
//! reference after the warm-up. They count Rust heap allocations (the MPI library's own `malloc`s
//! are invisible to it).

use std::time::{Duration, Instant};

use sparknet_mpi::{Averager, Collective, LocalGroup};
use sparknet_net::solver::{ParamRange, SolverConfig, SolverKind, Updater};

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
fn summary(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    (sorted[sorted.len() / 2], sorted[0])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The timed calls of a round, in the order of [`Sample::times`].
const CALLS: [&str; 6] = ["raw", "average", "prescaled", "update", "update_scaled", "update_floor"];
const RAW: usize = 0;
const AVERAGE: usize = 1;
const PRESCALED: usize = 2;
const UPDATE: usize = 3;
const UPDATE_SCALED: usize = 4;
const UPDATE_FLOOR: usize = 5;

/// Timings of one case on one rank.
struct Sample {
    /// Per call of [`CALLS`], one duration per timed round.
    times: [Vec<Duration>; 6],
    /// Rust heap allocations in the timed calls other than the reference, over all rounds.
    allocations: u64,
    rounds: usize,
}

impl Sample {
    /// Per-round sums of the given calls.
    fn rounds_of(&self, calls: &[usize]) -> Vec<Duration> {
        (0..self.rounds).map(|r| calls.iter().map(|&c| self.times[c][r]).sum()).collect()
    }
}

/// A Caffe SGD updater (the LeNet solver's momentum and weight decay) for a buffer of `params`
/// values laid out as one weight blob and a bias blob (lr_mult 2, no decay) of 1% of the values.
fn sgd(params: usize) -> Updater {
    let config = SolverConfig {
        kind: SolverKind::Sgd,
        base_lr: 0.01,
        momentum: 0.9,
        weight_decay: 0.0005,
        ..SolverConfig::default()
    };
    let bias = params / 100;
    let ranges = vec![
        ParamRange { offset: 0, len: params - bias, lr_mult: 1.0, decay_mult: 1.0 },
        ParamRange { offset: params - bias, len: bias, lr_mult: 2.0, decay_mult: 0.0 },
    ];
    Updater::new(config, ranges, params).expect("ranges fit the buffer")
}

/// Times `rounds` rounds of every call of [`CALLS`] over buffers of `params` values, with a
/// barrier before each timed call so that every rank starts it together. The divide-after
/// pipeline (update, then average) and the prescaled one (scaled update, then prescaled
/// average) each keep their own weights, which stay equal on every rank (and of the same
/// magnitude round after round); the floor (update, then the reference) keeps a third set,
/// divided by `K` between the two, outside the timing.
fn measure<C: Collective>(
    comm: &C,
    params: usize,
    rounds: usize,
    mut reference: impl FnMut(&mut [f32]),
) -> Sample {
    let init = |i: usize| (i % 1000) as f32 * 1e-3;
    let mut old: Vec<f32> = (0..params).map(init).collect();
    let mut new = old.clone();
    let grads: Vec<f32> = (0..params).map(|i| (i % 777) as f32 * 1e-4 - 0.03).collect();
    let (mut old_grads, mut new_grads) = (grads.clone(), grads);
    let (mut old_sgd, mut new_sgd) = (sgd(params), sgd(params));
    let (mut raw, mut raw_grads, mut raw_sgd) = (old.clone(), old_grads.clone(), sgd(params));
    let inv_k = 1.0 / comm.size() as f32;
    let mut averager = Averager::new();
    let mut sample = Sample {
        times: std::array::from_fn(|_| Vec::with_capacity(rounds)),
        allocations: 0,
        rounds,
    };
    let fail = |e: &dyn std::fmt::Display| -> ! {
        let e = comm.abort(&format!("allreduce bench: {e}"));
        panic!("{e}")
    };
    // The three pipelines in each of their six orders in turn, so that none always runs first or
    // always after the same other one (on a warmer cache, or after the same MPI traffic).
    const ORDERS: [[usize; 3]; 6] =
        [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for round in 0..rounds + 2 {
        let mut t = [Duration::ZERO; 6];
        let mut allocated = 0;
        for pipeline in ORDERS[round % ORDERS.len()] {
            let mut timed = |call: usize, f: &mut dyn FnMut()| {
                comm.barrier().unwrap_or_else(|e| fail(&e));
                let before = allocations();
                let start = Instant::now();
                f();
                t[call] = start.elapsed();
                if call != RAW {
                    allocated += allocations() - before;
                }
            };
            match pipeline {
                0 => {
                    timed(UPDATE_FLOOR, &mut || {
                        raw_sgd.apply(&mut raw, &mut raw_grads).unwrap_or_else(|e| fail(&e));
                    });
                    raw.iter_mut().for_each(|w| *w *= inv_k);
                    timed(RAW, &mut || reference(&mut raw));
                }
                1 => {
                    timed(UPDATE, &mut || {
                        old_sgd.apply(&mut old, &mut old_grads).unwrap_or_else(|e| fail(&e));
                    });
                    timed(AVERAGE, &mut || {
                        averager.average(comm, &mut old).unwrap_or_else(|e| fail(&e));
                    });
                }
                _ => {
                    timed(UPDATE_SCALED, &mut || {
                        new_sgd
                            .apply_scaled(&mut new, &mut new_grads, inv_k)
                            .unwrap_or_else(|e| fail(&e));
                    });
                    timed(PRESCALED, &mut || {
                        averager.average_prescaled(comm, &mut new).unwrap_or_else(|e| fail(&e));
                    });
                }
            }
        }
        if round >= 2 {
            for (times, d) in sample.times.iter_mut().zip(t) {
                times.push(d);
            }
            sample.allocations += allocated;
        }
    }
    // The three pipelines compute the same weights (bit for bit for a power-of-two K).
    for (name, other) in [("prescaled", &new), ("floor", &raw)] {
        let gap = old.iter().zip(other).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        if gap > 1e-5 {
            fail(&format!("the {name} pipeline drifted from the divide-after one by {gap}"));
        }
    }
    sample
}

fn report(backend: &str, reference_name: &str, model: &str, params: usize, k: usize, s: &Sample) {
    let med = |v: &[Duration]| summary(v).0;
    let min = |v: &[Duration]| summary(v).1;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let per_round = s.allocations as f64 / s.rounds as f64;
    let mb = params as f64 * 4.0 / 1e6;
    println!("{backend:<6} K={k} {model:<8} {mb:>7.1} MB  allocations/round {per_round}");
    for (name, times) in CALLS.iter().zip(&s.times) {
        let name = if *name == "raw" { reference_name } else { name };
        println!("    {name:<16} {:>9.3} ms (min {:>9.3})", ms(med(times)), ms(min(times)));
    }
    let raw = &s.times[RAW];
    let avg_ratio = ratio(med(&s.times[AVERAGE]), med(raw));
    let pre_ratio = ratio(med(&s.times[PRESCALED]), med(raw));
    // Against the plain update in the same cache state (both follow an allreduce).
    let upd_ratio = ratio(med(&s.times[UPDATE_SCALED]), med(&s.times[UPDATE_FLOOR]));
    let old = s.rounds_of(&[UPDATE, AVERAGE]);
    let new = s.rounds_of(&[UPDATE_SCALED, PRESCALED]);
    let floor = s.rounds_of(&[UPDATE_FLOOR, RAW]);
    let (new_ratio, old_ratio) = (ratio(med(&new), med(&floor)), ratio(med(&old), med(&floor)));
    let (new_ratio_min, old_ratio_min) =
        (ratio(min(&new), min(&floor)), ratio(min(&old), min(&floor)));
    println!(
        "    averaging / raw: divide-after {avg_ratio:.3}, prescaled {pre_ratio:.3}; update scaled / floor's update {upd_ratio:.3}"
    );
    println!(
        "    round (update + averaging) / (update + raw): new {new_ratio:.3} (of minima {new_ratio_min:.3}), old {old_ratio:.3} (of minima {old_ratio_min:.3}); medians {:.3} / {:.3} / {:.3} ms",
        ms(med(&new)),
        ms(med(&old)),
        ms(med(&floor))
    );
    let mut json = format!(
        "{{\"bench\":\"allreduce\",\"backend\":\"{backend}\",\"k\":{k},\"model\":\"{model}\",\"params\":{params},\"rounds\":{},\"reference\":\"{reference_name}\"",
        s.rounds
    );
    for (name, times) in CALLS.iter().zip(&s.times) {
        json += &format!(
            ",\"{name}_ms\":{:.4},\"{name}_min_ms\":{:.4}",
            ms(med(times)),
            ms(min(times))
        );
    }
    json += &format!(
        ",\"round_new_ms\":{:.4},\"round_old_ms\":{:.4},\"round_floor_ms\":{:.4},\"ratio_average\":{avg_ratio:.4},\"ratio_prescaled\":{pre_ratio:.4},\"ratio_update_scaled\":{upd_ratio:.4},\"ratio_round_new\":{new_ratio:.4},\"ratio_round_new_of_minima\":{new_ratio_min:.4},\"ratio_round_old\":{old_ratio:.4},\"ratio_round_old_of_minima\":{old_ratio_min:.4},\"allocations_per_round\":{per_round}}}",
        ms(med(&new)),
        ms(med(&old)),
        ms(med(&floor))
    );
    println!("{json}");
}

/// In-process workers: averaging against the group's own allreduce-sum of the same length (the
/// same exchange without the division).
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
            report("local", "all_reduce_sum", model, params, k, &rank0);
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
                    report(backend, "MPI_Allreduce", model, params, comm.size(), &sample);
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
