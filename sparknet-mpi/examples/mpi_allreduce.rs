//! Multi-rank check of the MPI backend: allreduce (sum, mean, f64), broadcast (f32, bytes),
//! barrier, gather and weight averaging, each result checked on every element on every rank.
//!
//! ```text
//! cargo build -p sparknet-mpi --features mpi --examples
//! mpirun --oversubscribe -n 4 target/debug/examples/mpi_allreduce
//! ```
//!
//! `cargo xtask mpi-test` runs it at 2 and 4 ranks. A failed check aborts the job through
//! `MPI_Abort` with a message naming the check, rank and element, so `mpirun` exits non-zero.
//! The values are chosen so that every sum is exact in `f32` whatever order the MPI library
//! reduces in; results are then compared bit for bit.

use std::time::{Duration, Instant};

use sparknet_mpi::{Averager, Collective, Error, MpiComm};

/// Larger than one reduction block and not a multiple of anything in sight.
const LEN: usize = 1_000_003;

/// Rank `r`'s value at element `i`: multiples of 1/4 below 2^12, so sums over a few ranks are
/// exact.
fn value(r: usize, i: usize) -> f32 {
    (i % 4093) as f32 * 0.25 + (r * 8) as f32 - 100.0
}

/// Arbitrary finite floats over many binades (the same on every rank when the seed is).
fn pattern(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bits = (state >> 32) as u32;
            let x = f32::from_bits(bits);
            if x.is_finite() && x.abs() < 1e30 { x } else { (bits >> 8) as f32 }
        })
        .collect()
}

struct Checker<'a> {
    comm: &'a MpiComm,
    checks: usize,
}

impl Checker<'_> {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            let _ = self.comm.abort(&format!("mpi_allreduce check failed: {}", what()));
        }
    }

    fn same_bits(&mut self, name: &str, got: &[f32], want: impl Fn(usize) -> f32) {
        let bad = got.iter().enumerate().find(|&(i, g)| g.to_bits() != want(i).to_bits());
        self.check(bad.is_none(), || {
            let (i, g) = bad.unwrap_or((0, &0.0));
            format!("{name}: element {i} is {g:e}, expected {:e}", want(i))
        });
    }

    fn ok<T>(&mut self, name: &str, result: sparknet_mpi::Result<T>) -> T {
        match result {
            Ok(v) => v,
            Err(e) => {
                let e = self.comm.abort(&format!("mpi_allreduce: {name} returned an error: {e}"));
                unreachable!("MPI_Abort returned: {e}")
            }
        }
    }
}

fn main() {
    let mut comm = match MpiComm::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mpi_allreduce: {e}");
            std::process::exit(2);
        }
    };
    let (rank, k) = (comm.rank(), comm.size());

    // The mean in cache-sized pieces equals the mean in one allreduce (bit for bit here, as the
    // sums are exact; in general the library may reduce pieces in another order).
    let mut whole: Vec<f32> = (0..LEN).map(|i| value(rank, i)).collect();
    let mut pieces = whole.clone();
    let whole_result = comm.all_reduce_mean(&mut whole);
    comm.set_mean_chunk(65_536);
    let pieces_result = comm.all_reduce_mean(&mut pieces);
    comm.set_mean_chunk(0);
    let same = whole.iter().zip(&pieces).all(|(a, b)| a.to_bits() == b.to_bits());
    if whole_result.is_err() || pieces_result.is_err() || !same {
        let _ = comm.abort(&format!(
            "mpi_allreduce check failed: chunked mean differs ({whole_result:?}, {pieces_result:?}, same bits: {same})"
        ));
    }
    let mut c = Checker { comm: &comm, checks: 0 };

    // allreduce sum, f32 and f64.
    let mut buf: Vec<f32> = (0..LEN).map(|i| value(rank, i)).collect();
    c.ok("all_reduce_sum", comm.all_reduce_sum(&mut buf));
    c.same_bits("all_reduce_sum", &buf, |i| (0..k).map(|r| value(r, i)).sum());

    let mut buf64: Vec<f64> = (0..LEN).map(|i| f64::from(value(rank, i)) * 1e6).collect();
    c.ok("all_reduce_sum_f64", comm.all_reduce_sum_f64(&mut buf64));
    let bad = (0..LEN).find(|&i| {
        buf64[i].to_bits() != (0..k).map(|r| f64::from(value(r, i)) * 1e6).sum::<f64>().to_bits()
    });
    c.check(bad.is_none(), || format!("all_reduce_sum_f64: element {bad:?} differs"));

    // Averaging equals the elementwise mean.
    let mut weights: Vec<f32> = (0..LEN).map(|i| value(rank, i)).collect();
    let mut averager = Averager::new();
    let stats = c.ok("average", averager.average(&comm, &mut weights));
    c.check(stats.elements == LEN, || format!("average reported {} elements", stats.elements));
    // The sum is exact in any order, then multiplied by 1/K (exact for a power-of-two K).
    let mean = |i: usize| (0..k).map(|r| value(r, i)).sum::<f32>() * (1.0 / k as f32);
    c.same_bits("average (elementwise mean)", &weights, mean);

    // With inexact sums (arbitrary floats) every rank still ends with the same bits, so the
    // replicas stay identical after a round.
    let mut mixed = pattern(1000 + rank as u64, LEN);
    c.ok("average mixed", averager.average(&comm, &mut mixed));
    let mut from_root = mixed.clone();
    c.ok("broadcast mixed", comm.broadcast(&mut from_root, 0));
    c.same_bits("average on every rank equals rank 0's", &mixed, |i| from_root[i]);

    // Prescaled weights (times 1/K, exact for a power-of-two K) need only the allreduce-sum.
    if k.is_power_of_two() {
        let inv = 1.0 / k as f32;
        let mut pre: Vec<f32> = (0..LEN).map(|i| value(rank, i) * inv).collect();
        c.ok("average_prescaled", averager.average_prescaled(&comm, &mut pre));
        c.same_bits("average_prescaled", &pre, mean);
    }

    // Averaging identical replicas is the identity, bit for bit, when K is a power of two.
    let same = pattern(42, LEN);
    let mut replica = same.clone();
    c.ok("average identical", averager.average(&comm, &mut replica));
    if k.is_power_of_two() {
        c.same_bits("average of identical replicas", &replica, |i| same[i]);
    } else if rank == 0 {
        eprintln!("mpi_allreduce: identity check needs a power-of-two rank count, {k} is not");
    }

    // Broadcast from the last rank (f32) and from rank 0 (bytes).
    let root = k - 1;
    let mut b: Vec<f32> = if rank == root { pattern(7, LEN) } else { vec![f32::NAN; LEN] };
    c.ok("broadcast", comm.broadcast(&mut b, root));
    let want = pattern(7, LEN);
    c.same_bits("broadcast", &b, |i| want[i]);
    let message = b"net: lenet_train_test.prototxt; seed 1701";
    let mut bytes = if rank == 0 { message.to_vec() } else { vec![0u8; message.len()] };
    c.ok("broadcast_bytes", comm.broadcast_bytes(&mut bytes, 0));
    c.check(bytes == message, || format!("broadcast_bytes got {bytes:?}"));
    let out_of_range = comm.broadcast(&mut b, k);
    c.check(matches!(out_of_range, Err(Error::RootOutOfRange { .. })), || {
        format!("broadcast to root {k} returned {out_of_range:?}")
    });

    // Barrier: after a first barrier lines the ranks up, rank 0 sleeps 200 ms before the second;
    // nobody may leave the second before rank 0 arrived (100 ms leaves room for the skew with
    // which oversubscribed ranks leave the first one).
    c.ok("barrier", comm.barrier());
    let start = Instant::now();
    if rank == 0 {
        std::thread::sleep(Duration::from_millis(200));
    }
    c.ok("barrier", comm.barrier());
    let waited = start.elapsed();
    c.check(waited >= Duration::from_millis(100), || format!("barrier released after {waited:?}"));

    // Gather of metric records at rank 0 (and at the last rank).
    let record = [rank as f64, 0.5 * rank as f64, 1e-3];
    for root in [0, k - 1] {
        let gathered = c.ok("gather_f64", comm.gather_f64(&record, root));
        let want: Vec<f64> = (0..k).flat_map(|r| [r as f64, 0.5 * r as f64, 1e-3]).collect();
        let ok = if rank == root { gathered.as_ref() == Some(&want) } else { gathered.is_none() };
        c.check(ok, || format!("gather_f64 at root {root} returned {gathered:?}"));
    }

    // The communication delay is added to every round.
    let mut params: Vec<f32> = (0..1000).map(|i| value(rank, i)).collect();
    let mut slow = Averager::new().with_comm_delay(Duration::from_millis(25));
    let stats = c.ok("delayed average", slow.average(&comm, &mut params));
    c.check(stats.comm >= Duration::from_millis(25), || format!("delayed round took {stats:?}"));

    // A rank that failed a check has aborted the job; rank 0 reports once for all.
    let checks = c.checks as f64;
    let counts = c.ok("final gather", comm.gather_f64(&[checks], 0));
    if let Some(counts) = counts {
        eprintln!("mpi_allreduce: all {k} ranks passed their checks (checks per rank: {counts:?})");
    }
}
