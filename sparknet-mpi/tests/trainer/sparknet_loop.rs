//! The SparkNet loop against closed-form expectations, with a least-squares learner (plain SGD on
//! `0.5 * mean (x.w - y)^2`) as the worker: K = 1 equals plain steps bit for bit, averaging equals
//! the elementwise mean of independently stepped replicas, gradient sync equals one worker on
//! the union batch, warmup, events, time budget and a failing rank.

use std::path::PathBuf;
use std::time::Duration;

use sparknet_mpi::trainer::{LoopConfig, SyncMode, Worker, train};
use sparknet_mpi::{Collective, Error, LocalComm, LocalGroup};

use crate::lsq::{DIM, Lsq, ROWS};

fn config(tau: u64, max_iter: u64) -> LoopConfig {
    LoopConfig { tau, max_iter, ..LoopConfig::default() }
}

#[test]
fn one_worker_with_any_tau_equals_plain_steps_bit_for_bit() {
    let mut plain = Lsq::partitioned(0, 1, 4);
    for _ in 0..23 {
        plain.step().unwrap();
    }
    for tau in [1, 3, 7, 50] {
        let mut w = Lsq::partitioned(0, 1, 4);
        let s = train(&LocalComm::single(), &mut w, &config(tau, 23), &mut |_| {}).unwrap();
        assert_eq!(s.iter, 23);
        assert_eq!(s.rounds, 23u64.div_ceil(tau));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&w.w), bits(&plain.w), "tau {tau}");
    }
}

/// Two replicas stepped independently for tau steps, then the elementwise mean, by hand.
#[test]
fn averaging_rounds_equal_the_mean_of_independent_replicas() {
    let (tau, iters) = (4u64, 10u64);
    let mut reps = [Lsq::partitioned(0, 2, 3), Lsq::partitioned(1, 2, 3)];
    let mut done = 0;
    while done < iters {
        let steps = tau.min(iters - done);
        for r in &mut reps {
            for _ in 0..steps {
                r.step().unwrap();
            }
        }
        let mean: Vec<f32> = reps[0].w.iter().zip(&reps[1].w).map(|(a, b)| (a + b) * 0.5).collect();
        for r in &mut reps {
            r.w.clone_from(&mean);
        }
        done += steps;
    }
    let out = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            let mut w = Lsq::partitioned(comm.rank(), 2, 3);
            let s = train(&comm, &mut w, &config(tau, iters), &mut |_| {}).unwrap();
            (s, w.w)
        })
        .unwrap();
    for (s, w) in out {
        assert_eq!((s.iter, s.rounds), (10, 3));
        assert_eq!(w, reps[0].w);
    }
}

/// Rank 0's initial weights reach every replica before the first step.
#[test]
fn rank_zero_weights_and_iteration_are_broadcast() {
    let out = LocalGroup::new(3)
        .unwrap()
        .run(|comm| {
            let mut w = Lsq::partitioned(comm.rank(), 3, 2);
            if comm.rank() == 0 {
                w.w = vec![1.0; DIM];
                w.iter = 5;
            }
            train(&comm, &mut w, &config(10, 5), &mut |_| {}).unwrap();
            (w.iter, w.w)
        })
        .unwrap();
    for (iter, w) in out {
        assert_eq!((iter, w), (5, vec![1.0; DIM]));
    }
}

/// `--sync gradients` with K = 2 ranks of batch 3 equals one worker whose batch is both ranks'
/// rows, over 10 steps.
#[test]
fn gradient_sync_equals_one_worker_on_the_union_batch() {
    let mut union = Lsq::new(|t| {
        let mut rows = (Lsq::partitioned(0, 2, 3).batches)(t);
        rows.extend((Lsq::partitioned(1, 2, 3).batches)(t));
        rows
    });
    for _ in 0..10 {
        union.step().unwrap();
    }
    let cfg = LoopConfig { sync: SyncMode::Gradients, ..config(1, 10) };
    let out = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            let mut w = Lsq::partitioned(comm.rank(), 2, 3);
            train(&comm, &mut w, &cfg, &mut |_| {}).unwrap();
            w.w
        })
        .unwrap();
    for w in out {
        for (a, b) in w.iter().zip(&union.w) {
            assert!((a - b).abs() <= 1e-5, "{w:?} vs {:?}", union.w);
        }
    }
}

#[test]
fn warmup_uses_gradient_sync_then_averages_every_tau() {
    let cfg = LoopConfig { warmup: 4, ..config(3, 13) };
    let out = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            let mut w = Lsq::partitioned(comm.rank(), 2, 2);
            let s = train(&comm, &mut w, &cfg, &mut |_| {}).unwrap();
            (s.rounds, w.w)
        })
        .unwrap();
    // 4 gradient-sync rounds of one step, then 9 iterations in rounds of 3.
    assert_eq!(out[0].0, 4 + 3);
    assert_eq!(out[0].1, out[1].1, "replicas identical after the last round");
}

#[test]
fn events_come_at_display_and_test_points_with_timings() {
    let delay = Duration::from_millis(2);
    let cfg = LoopConfig {
        display: 4,
        test_interval: 8,
        test_initialization: true,
        snapshot: 8,
        snapshot_after_train: true,
        comm_delay: delay,
        ..config(2, 12)
    };
    let out = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            let mut w = Lsq::partitioned(comm.rank(), 2, 4);
            let mut events = Vec::new();
            let mut ticks = 0;
            let s = train(&comm, &mut w, &cfg, &mut |e| {
                if e.tick {
                    ticks += 1;
                } else {
                    events.push(e.clone());
                }
            })
            .unwrap();
            assert_eq!(ticks, if comm.rank() == 0 { 3 } else { 0 }, "rounds ending at 2, 6, 10");
            (s, events, w.snapshots)
        })
        .unwrap();
    let (summary, events, snapshots) = &out[0];
    assert!(out[1].1.is_empty(), "only rank 0 reports");
    assert_eq!(out[1].2, 0, "only rank 0 snapshots");
    let iters: Vec<u64> = events.iter().map(|e| e.iter).collect();
    assert_eq!(iters, [0, 4, 8, 12, 12]);
    assert!(events[0].test.is_some() && events[0].loss.is_none());
    assert!(events[2].test.is_some() && events[1].test.is_none());
    assert_eq!(events[2].snapshot, [PathBuf::from("lsq_iter_8.caffemodel")]);
    assert_eq!(*snapshots, 2);
    let first_loss = events[0].test.as_ref().unwrap().get("loss").unwrap();
    let last = events.last().unwrap();
    assert!(last.test.as_ref().unwrap().get("loss").unwrap() < first_loss * 0.8);
    assert_eq!(last.test.as_ref().unwrap().records, ROWS as u64);
    let e = events[1].to_json();
    for key in ["round", "iter", "loss", "lr", "compute", "allreduce", "data_wait", "eval"] {
        assert!(e.get(key).is_some(), "{key} missing in {e}");
    }
    assert_eq!(e["round"], 2);
    assert!(events[1].allreduce >= 2.0 * delay.as_secs_f64(), "two delayed rounds");
    assert!(summary.allreduce >= 6.0 * delay.as_secs_f64());
}

#[test]
fn a_zero_time_budget_stops_after_the_first_round() {
    let cfg = LoopConfig { time_budget: Some(Duration::ZERO), ..config(5, 100) };
    let out = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            let mut w = Lsq::partitioned(comm.rank(), 2, 2);
            train(&comm, &mut w, &cfg, &mut |_| {}).unwrap()
        })
        .unwrap();
    for s in out {
        assert_eq!((s.iter, s.rounds, s.stopped_by_time), (5, 1, true));
        assert!(s.test.is_some(), "the final test still runs");
    }
}

#[test]
fn a_failing_rank_stops_its_peers_with_its_message() {
    let out = LocalGroup::new(3)
        .unwrap()
        .run(|comm| {
            let mut w = Lsq::partitioned(comm.rank(), 3, 2);
            if comm.rank() == 1 {
                w.fail_at = Some(5);
            }
            train(&comm, &mut w, &config(2, 50), &mut |_| {})
        })
        .unwrap();
    let err = out[1].as_ref().unwrap_err();
    assert!(matches!(err, Error::Config(m) if m.contains("batch 5 is corrupt")), "{err}");
    for r in [0, 2] {
        let err = out[r].as_ref().unwrap_err();
        assert!(
            matches!(err, Error::Aborted { by: 1, reason, .. } if reason.contains("batch 5 is corrupt")),
            "{err}"
        );
    }
}

#[test]
fn tau_zero_and_unknown_sync_are_errors() {
    let mut w = Lsq::partitioned(0, 1, 2);
    let err = train(&LocalComm::single(), &mut w, &config(0, 5), &mut |_| {}).unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("tau")));
    let err = "ring".parse::<SyncMode>().unwrap_err();
    assert!(err.to_string().contains("'average' or 'gradients'"));
}

#[test]
fn a_stop_request_ends_every_rank_after_the_round_with_a_snapshot() {
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    let cfg = LoopConfig { stop: Some(&STOP), test_interval: 2, ..config(3, 100) };
    let out = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            let mut w = Lsq::partitioned(comm.rank(), 2, 2);
            let mut reports = 0;
            let s = train(&comm, &mut w, &cfg, &mut |e| reports += usize::from(!e.tick)).unwrap();
            (s, w.snapshots, reports)
        })
        .unwrap();
    for (rank, (s, snapshots, reports)) in out.into_iter().enumerate() {
        assert!(s.interrupted && !s.stopped_by_time, "{s:?}");
        assert_eq!((s.iter, s.rounds), (3, 1));
        assert!(s.test.is_none(), "no final test after a stop request");
        assert_eq!(snapshots, u64::from(rank == 0));
        assert_eq!(reports, usize::from(rank == 0), "one report, with the snapshot");
    }
}

/// The loop as it was before the 1/K scaling moved into the last local step: `tau` plain steps,
/// then `Averager::average` (allreduce, then divide by K), from rank 0's broadcast weights.
fn divide_after<W: Worker>(comm: &dyn Collective, w: &mut W, tau: u64, max_iter: u64) {
    comm.broadcast(w.params().unwrap(), 0).unwrap();
    w.params_changed().unwrap();
    let mut averager = sparknet_mpi::Averager::new();
    while w.iter() < max_iter {
        for _ in 0..tau.min(max_iter - w.iter()) {
            w.step().unwrap();
        }
        averager.average(comm, w.params().unwrap()).unwrap();
        w.params_changed().unwrap();
    }
}

/// The largest difference between two runs' weights, in units of the largest weight.
fn relative_gap(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
}

/// Prescaled rounds (the loop's `step_scaled` + allreduce-sum) against the divide-after rounds:
/// bit for bit for K = 2 and 4 (scaling by a power of two is exact), within a few rounding errors
/// for K = 3.
#[test]
fn prescaled_rounds_equal_divide_after_rounds() {
    let (tau, iters) = (3u64, 11u64);
    for k in [2, 3, 4] {
        let run = |prescaled: bool| {
            LocalGroup::new(k)
                .unwrap()
                .run(|comm| {
                    let mut w = Lsq::partitioned(comm.rank(), k, 2);
                    if comm.rank() == 0 {
                        w.w = vec![0.3, -0.2, 0.1, 0.7, -0.5];
                    }
                    if prescaled {
                        train(&comm, &mut w, &config(tau, iters), &mut |_| {}).unwrap();
                    } else {
                        divide_after(&comm, &mut w, tau, iters);
                    }
                    w.w
                })
                .unwrap()
        };
        let (new, old) = (run(true), run(false));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for r in 1..k {
            assert_eq!(bits(&new[r]), bits(&new[0]), "K={k}: replicas identical");
        }
        if k == 3 {
            let gap = relative_gap(&new[0], &old[0]);
            assert!(gap <= 1e-6, "K=3: relative gap {gap}: {:?} vs {:?}", new[0], old[0]);
        } else {
            assert_eq!(bits(&new[0]), bits(&old[0]), "K={k}");
        }
    }
}

/// A stop requested on one rank only (a launcher that signals a single rank) still stops every
/// rank at the same round, with rank 0's snapshot.
#[test]
fn a_stop_request_on_one_rank_stops_every_rank() {
    static OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    let out = LocalGroup::new(3)
        .unwrap()
        .run(|comm| {
            let flag = if comm.rank() == 2 { &ON } else { &OFF };
            let cfg = LoopConfig { stop: Some(flag), ..config(3, 100) };
            let mut w = Lsq::partitioned(comm.rank(), 3, 2);
            let s = train(&comm, &mut w, &cfg, &mut |_| {}).unwrap();
            (s, w.snapshots)
        })
        .unwrap();
    for (rank, (s, snapshots)) in out.into_iter().enumerate() {
        assert!(s.interrupted, "rank {rank}: {s:?}");
        assert_eq!((s.iter, s.rounds), (3, 1), "rank {rank}");
        assert_eq!(snapshots, u64::from(rank == 0));
    }
}

/// `--outer average` is SparkNet's rule whatever rate and momentum are given: the same bits as
/// the default loop.
#[test]
fn outer_average_is_the_plain_average_bit_for_bit() {
    use sparknet_mpi::outer::{OuterConfig, OuterRule};
    let run = |outer: OuterConfig| {
        LocalGroup::new(2)
            .unwrap()
            .run(|comm| {
                let mut w = Lsq::partitioned(comm.rank(), 2, 3);
                let cfg = LoopConfig { outer, ..config(3, 9) };
                train(&comm, &mut w, &cfg, &mut |_| {}).unwrap();
                w.w.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            })
            .unwrap()
    };
    let plain = run(OuterConfig::default());
    let odd = run(OuterConfig { rule: OuterRule::Average, lr: 0.3, momentum: 0.5 });
    assert_eq!(plain, odd);
}

/// DiLoCo's rule over two rounds of K = 2, tau = 2, computed by hand: delta = w0 - mean,
/// m = mu m + delta, w = w0 - lr (delta + mu m).
#[test]
fn nesterov_outer_rule_matches_a_hand_computed_two_round_example() {
    use sparknet_mpi::outer::OuterConfig;
    let (lr, mu) = (0.7f32, 0.9f32);
    let mut reps = [Lsq::partitioned(0, 2, 3), Lsq::partitioned(1, 2, 3)];
    let mut w0 = reps[0].w.clone();
    let mut m = [0f32; DIM];
    for _round in 0..2 {
        for r in &mut reps {
            r.w.clone_from(&w0);
            for _ in 0..2 {
                r.step().unwrap();
            }
        }
        for j in 0..DIM {
            let mean = (reps[0].w[j] + reps[1].w[j]) * 0.5;
            let delta = w0[j] - mean;
            m[j] = mu * m[j] + delta;
            w0[j] -= lr * (delta + mu * m[j]);
        }
    }
    let out = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            let mut w = Lsq::partitioned(comm.rank(), 2, 3);
            let cfg = LoopConfig { outer: OuterConfig::diloco(), ..config(2, 4) };
            train(&comm, &mut w, &cfg, &mut |_| {}).unwrap();
            w.w
        })
        .unwrap();
    for w in out {
        for (a, b) in w.iter().zip(&w0) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{w:?} vs by hand {w0:?}");
        }
    }
    // Not the plain average.
    let plain = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            let mut w = Lsq::partitioned(comm.rank(), 2, 3);
            train(&comm, &mut w, &config(2, 4), &mut |_| {}).unwrap();
            w.w
        })
        .unwrap();
    assert!(plain[0].iter().zip(&w0).any(|(a, b)| (a - b).abs() > 1e-4));
}

/// `target_accuracy` ends the run at the first periodic test that reaches it, with the weights
/// of that iteration, and says so; every rank stops at the same round.
#[test]
fn a_target_accuracy_stops_at_the_first_test_that_reaches_it() {
    let base = LoopConfig { test_interval: 5, ..config(5, 200) };
    // The same run without a target: the accuracy at every test point.
    let mut tests = Vec::new();
    let mut w = Lsq::partitioned(0, 1, 4);
    train(&LocalComm::single(), &mut w, &base, &mut |e| {
        if let Some(t) = &e.test {
            tests.push((e.iter, t.accuracy().unwrap()));
        }
    })
    .unwrap();
    let (first, last) = (tests[0].1, tests[tests.len() - 2].1);
    assert!(last > first, "the learner improves: {tests:?}");
    let target = (first + last) / 2.0;
    let at = tests.iter().find(|&&(_, a)| a >= target).unwrap().0;
    assert!(at < 200, "{tests:?}");
    let mut expect = Lsq::partitioned(0, 1, 4);
    train(&LocalComm::single(), &mut expect, &config(5, at), &mut |_| {}).unwrap();

    let cfg = LoopConfig { target_accuracy: Some(target), ..base };
    let out = LocalGroup::new(2)
        .unwrap()
        .run(|comm| {
            let mut w = Lsq::partitioned(0, 1, 4);
            let s = train(&comm, &mut w, &cfg, &mut |_| {}).unwrap();
            (s, w.w)
        })
        .unwrap();
    for (s, w) in out {
        assert!(s.reached_target && !s.stopped_by_time, "{s:?}");
        assert_eq!(s.iter, at);
        assert!(s.test.unwrap().accuracy().unwrap() >= target);
        // Identical replicas: averaging them is exact, so the trajectory is the single one.
        assert_eq!(w, expect.w);
    }
}
