//! The in-process group and the averager: results checked on every element against a plain
//! sequential computation over the replicas, for K = 1..4 workers.

use std::time::Duration;

use sparknet_mpi::{Averager, Collective, Error, LocalComm, LocalGroup};

/// Deterministic pseudo-random finite `f32`s spread over many binades (with negative values,
/// tiny and large magnitudes), so that sums are inexact and rounding shows.
fn replica(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mantissa = (state >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            let exponent = ((state >> 8) % 40) as i32 - 20;
            let sign = if state & 1 == 0 { 1.0 } else { -1.0 };
            sign * (1.0 + mantissa) * 2f32.powi(exponent)
        })
        .collect()
}

/// Runs `f` on a fresh group of `k` workers and unwraps every worker's result.
fn run<R: Send>(k: usize, f: impl Fn(LocalComm) -> sparknet_mpi::Result<R> + Sync) -> Vec<R> {
    LocalGroup::new(k)
        .expect("group")
        .run(f)
        .expect("no worker panicked")
        .into_iter()
        .enumerate()
        .map(|(rank, r)| r.unwrap_or_else(|e| panic!("worker {rank}: {e}")))
        .collect()
}

const LEN: usize = 10_007; // not a multiple of K or of the reduction block

#[test]
fn averaging_identical_replicas_is_the_identity_bit_for_bit() {
    let weights = replica(7, LEN);
    for k in 1..=4 {
        let out = run(k, |comm| {
            let mut w = weights.clone();
            Averager::new().average(&comm, &mut w)?;
            Ok(w)
        });
        for (rank, w) in out.iter().enumerate() {
            let same = w.iter().zip(&weights).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "K={k}: rank {rank} changed identical weights");
        }
    }
}

#[test]
fn averaging_equals_the_elementwise_mean() {
    for k in 1..=4 {
        let replicas: Vec<Vec<f32>> = (0..k).map(|r| replica(100 + r as u64, LEN)).collect();
        let out = run(k, |comm| {
            let mut w = replicas[comm.rank()].clone();
            let stats = Averager::new().average(&comm, &mut w)?;
            assert_eq!(stats.elements, LEN);
            Ok(w)
        });
        for i in 0..LEN {
            // The sequential reference: sum in rank order in f64, times 1/k, round once.
            let exact = replicas.iter().map(|w| f64::from(w[i])).sum::<f64>() * (1.0 / k as f64);
            let expected = exact as f32;
            for (rank, w) in out.iter().enumerate() {
                assert_eq!(w[i].to_bits(), expected.to_bits(), "K={k} rank {rank} element {i}");
            }
        }
    }
}

#[test]
fn prescaled_averaging_matches_averaging_for_power_of_two_k() {
    for k in [1, 2, 4] {
        let replicas: Vec<Vec<f32>> = (0..k).map(|r| replica(400 + r as u64, LEN)).collect();
        let out = run(k, |comm| {
            let mut plain = replicas[comm.rank()].clone();
            Averager::new().average(&comm, &mut plain)?;
            let inv = 1.0 / k as f32;
            let mut scaled: Vec<f32> = replicas[comm.rank()].iter().map(|x| x * inv).collect();
            Averager::new().average_prescaled(&comm, &mut scaled)?;
            Ok((plain, scaled))
        });
        for (rank, (plain, scaled)) in out.iter().enumerate() {
            let same = plain.iter().zip(scaled).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "K={k} rank {rank}");
        }
    }
}

#[test]
fn sums_are_in_rank_order_and_identical_on_every_rank() {
    for k in 1..=4 {
        let replicas: Vec<Vec<f32>> = (0..k).map(|r| replica(200 + r as u64, LEN)).collect();
        let replicas64: Vec<Vec<f64>> =
            replicas.iter().map(|w| w.iter().map(|&x| f64::from(x) * 1.1).collect()).collect();
        let out = run(k, |comm| {
            let mut w = replicas[comm.rank()].clone();
            comm.all_reduce_sum(&mut w)?;
            let mut w64 = replicas64[comm.rank()].clone();
            comm.all_reduce_sum_f64(&mut w64)?;
            Ok((w, w64))
        });
        for i in 0..LEN {
            let sum32 = replicas.iter().map(|w| f64::from(w[i])).sum::<f64>() as f32;
            let sum64 = replicas64.iter().fold(0.0, |acc, w| acc + w[i]);
            for (rank, (w, w64)) in out.iter().enumerate() {
                assert_eq!(w[i].to_bits(), sum32.to_bits(), "K={k} rank {rank} f32 element {i}");
                assert_eq!(w64[i].to_bits(), sum64.to_bits(), "K={k} rank {rank} f64 element {i}");
            }
        }
    }
}

#[test]
fn broadcast_gather_and_barrier() {
    for k in 1..=4 {
        let root = k - 1;
        let out = run(k, |comm| {
            let r = comm.rank();
            let mut w = if r == root { replica(9, LEN) } else { vec![f32::NAN; LEN] };
            comm.broadcast(&mut w, root)?;
            let mut bytes = if r == 0 { b"solver: lenet".to_vec() } else { vec![0u8; 13] };
            comm.broadcast_bytes(&mut bytes, 0)?;
            comm.barrier()?;
            let gathered = comm.gather_f64(&[r as f64, (r * r) as f64, 0.5], root)?;
            let empty = comm.gather_f64(&[], 0)?;
            Ok((w, bytes, gathered, empty))
        });
        let expected = replica(9, LEN);
        for (rank, (w, bytes, gathered, empty)) in out.into_iter().enumerate() {
            assert!(w.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()), "K={k}");
            assert_eq!(bytes, b"solver: lenet", "K={k} rank {rank}");
            if rank == root {
                let want: Vec<f64> = (0..k).flat_map(|r| [r as f64, (r * r) as f64, 0.5]).collect();
                assert_eq!(gathered, Some(want), "K={k}");
            } else {
                assert_eq!(gathered, None, "K={k} rank {rank}");
            }
            assert_eq!(empty, (rank == 0).then(Vec::new), "K={k} rank {rank}");
        }
    }
}

#[test]
fn results_do_not_depend_on_thread_timing() {
    let k = 3;
    let replicas: Vec<Vec<f32>> = (0..k).map(|r| replica(300 + r as u64, LEN)).collect();
    let reference = run(k, |comm| {
        let mut w = replicas[comm.rank()].clone();
        comm.all_reduce_sum(&mut w)?;
        Ok(w)
    });
    // Ranks arrive in a different order each time; the sums must not change.
    for delay_rank in 0..k {
        let out = run(k, |comm| {
            if comm.rank() == delay_rank {
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut w = replicas[comm.rank()].clone();
            comm.all_reduce_sum(&mut w)?;
            Ok(w)
        });
        assert_eq!(out, reference, "delayed rank {delay_rank}");
    }
}

#[test]
fn comm_delay_is_added_to_every_round() {
    let comm = LocalComm::single();
    let mut averager = Averager::new().with_comm_delay(Duration::from_millis(30));
    let mut w = vec![1.0f32; 8];
    for _ in 0..2 {
        let stats = averager.average(&comm, &mut w).expect("average");
        assert!(stats.comm >= Duration::from_millis(30), "{stats:?}");
        assert_eq!(stats.delay, Duration::from_millis(30));
    }
    assert_eq!(averager.rounds(), 2);
    assert_eq!(w, [1.0; 8]);
}

#[test]
fn mismatched_calls_are_errors_on_every_rank() {
    // Different lengths.
    let out = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            let mut w = vec![0.0f32; 4 + comm.rank()];
            comm.all_reduce_sum(&mut w)
        })
        .unwrap();
    for (rank, r) in out.into_iter().enumerate() {
        assert!(
            matches!(r, Err(Error::LengthMismatch { op: "all_reduce_sum", .. })),
            "{rank}: {r:?}"
        );
    }
    // Different collectives: one rank broadcasts while the other sums.
    let out = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            let mut w = vec![0.0f32; 4];
            if comm.rank() == 0 { comm.broadcast(&mut w, 0) } else { comm.all_reduce_sum(&mut w) }
        })
        .unwrap();
    for (rank, r) in out.into_iter().enumerate() {
        assert!(matches!(r, Err(Error::Mismatch { .. })), "{rank}: {r:?}");
    }
    // A root out of range.
    let out =
        LocalGroup::new(3).unwrap().run(|comm| comm.broadcast_bytes(&mut [0u8; 2], 3)).unwrap();
    for r in out {
        assert!(matches!(r, Err(Error::RootOutOfRange { root: 3, size: 3, .. })), "{r:?}");
    }
    let single = LocalComm::single();
    assert!(matches!(single.gather_f64(&[1.0], 1), Err(Error::RootOutOfRange { .. })));
    // The group stays usable after a checked mismatch.
    let sums = run(2, |comm| {
        let mut w = [1.0f32];
        let _ = comm.all_reduce_sum(&mut vec![0.0; comm.rank() + 1]);
        comm.all_reduce_sum(&mut w)?;
        Ok(w[0])
    });
    assert_eq!(sums, [2.0, 2.0]);
}

#[test]
fn an_aborting_worker_releases_its_peers() {
    let out = LocalGroup::new(3)
        .unwrap()
        .run(|comm| {
            if comm.rank() == 1 {
                std::thread::sleep(Duration::from_millis(20));
                return Err(comm.abort("cannot read the training data"));
            }
            let mut w = vec![1.0f32; 100];
            comm.all_reduce_sum(&mut w)?;
            comm.barrier()
        })
        .unwrap();
    for (rank, r) in out.into_iter().enumerate() {
        match r {
            Err(Error::Aborted { by: 1, reason, rank: seen, .. }) => {
                assert_eq!(reason, "cannot read the training data");
                assert_eq!(seen, rank);
            }
            other => panic!("rank {rank}: {other:?}"),
        }
    }
}

#[test]
fn a_panicking_or_departing_worker_releases_its_peers() {
    let result = LocalGroup::new(3).unwrap().run(|comm| {
        if comm.rank() == 2 {
            panic!("worker exploded");
        }
        let mut w = vec![1.0f32; 10];
        comm.all_reduce_mean(&mut w)
    });
    match result {
        Err(Error::WorkerPanicked { rank: 2, message }) => assert_eq!(message, "worker exploded"),
        other => panic!("{other:?}"),
    }
    // A worker that returns early (drops its handle) while the others go on.
    let out = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            if comm.rank() == 0 {
                return Ok(());
            }
            comm.barrier()
        })
        .unwrap();
    assert!(out[0].is_ok());
    assert!(matches!(&out[1], Err(Error::Aborted { by: 0, .. })), "{:?}", out[1]);
}

#[test]
fn group_construction() {
    assert!(matches!(LocalGroup::new(0), Err(Error::EmptyGroup)));
    let group = LocalGroup::new(3).unwrap();
    assert_eq!(group.size(), 3);
    let comms: Vec<LocalComm> = group.into_iter().collect();
    let ranks: Vec<(usize, usize)> = comms.iter().map(|c| (c.rank(), c.size())).collect();
    assert_eq!(ranks, [(0, 3), (1, 3), (2, 3)]);
    let single = LocalComm::single();
    assert_eq!((single.rank(), single.size()), (0, 1));
    // The trait is object safe: the trainer may hold a `Box<dyn Collective>`.
    let dynamic: &dyn Collective = &single;
    let mut v = [2.0f32, 4.0];
    Averager::new().average(dynamic, &mut v).unwrap();
    assert_eq!(v, [2.0, 4.0]);
    let mut w = [f32::NAN, -0.0, 1e-45];
    single.all_reduce_mean(&mut w).unwrap();
    assert!(w[0].is_nan() && w[1].to_bits() == (-0.0f32).to_bits() && w[2] == 1e-45);
}
