//! STOCHASTIC pooling kernels: TEST values against the closed form, TRAIN sampling against its
//! probabilities, gradient routing, finite differences, determinism and bad input.

mod common;

use common::*;
use rand::Rng;
use sparknet_kernels::{
    KernelError, PoolGeometry, stochastic_pool_backward_test, stochastic_pool_backward_train,
    stochastic_pool_forward_test, stochastic_pool_forward_train,
};

fn geom(c: usize, (in_h, in_w): (usize, usize), k: usize, s: usize) -> PoolGeometry {
    PoolGeometry {
        channels: c,
        in_h,
        in_w,
        kernel_h: k,
        kernel_w: k,
        stride_h: s,
        stride_w: s,
        pad_h: 0,
        pad_w: 0,
    }
}

/// The elements of each window (flat in-plane indices), row-major, windows clipped to the input
/// (Caffe's ceil-mode output without padding).
fn windows(g: &PoolGeometry) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for py in 0..g.out_h() {
        for px in 0..g.out_w() {
            let (hs, ws) = (py * g.stride_h, px * g.stride_w);
            let mut win = Vec::new();
            for h in hs..(hs + g.kernel_h).min(g.in_h) {
                for w in ws..(ws + g.kernel_w).min(g.in_w) {
                    win.push(h * g.in_w + w);
                }
            }
            out.push(win);
        }
    }
    out
}

/// `sum(x^2) / sum(x)` per window in f64 (0 for an all-zero window).
fn test_ref(g: &PoolGeometry, batch: usize, x: &[f32]) -> Vec<f64> {
    let wins = windows(g);
    let mut y = Vec::new();
    for plane in x.chunks(g.in_h * g.in_w).take(batch * g.channels) {
        for win in &wins {
            let s1: f64 = win.iter().map(|&i| f64::from(plane[i])).sum();
            let s2: f64 = win.iter().map(|&i| f64::from(plane[i]).powi(2)).sum();
            y.push(if s1 == 0.0 { 0.0 } else { s2 / s1 });
        }
    }
    y
}

fn positive(seed: u64, len: usize) -> Vec<f32> {
    let mut r = rng(seed);
    (0..len).map(|_| r.random_range(0.05f32..1.0)).collect()
}

#[test]
fn test_mode_is_the_weighted_average() {
    // By hand: 3x3 ramp, kernel 2, stride 2 -> ceil(1/2)+1 = 2x2 outputs, the right and bottom
    // windows clipped to the input.
    let g = geom(1, (3, 3), 2, 2);
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let mut y = vec![f32::NAN; 4];
    stochastic_pool_forward_test(&g, 1, &x, &mut y).unwrap();
    let expected = [
        (1. + 4. + 16. + 25.) / (1. + 2. + 4. + 5.),
        (9. + 36.) / (3. + 6.),
        (49. + 64.) / (7. + 8.),
        9.0,
    ];
    assert_close("3x3 by hand", &y, &expected, 1e-6);
    // An all-zero window gives 0 (FLT_MIN in the denominator), not NaN.
    let mut y = vec![f32::NAN; 1];
    stochastic_pool_forward_test(&geom(1, (2, 2), 2, 2), 1, &[0.0; 4], &mut y).unwrap();
    assert_eq!(y, [0.0]);
    // Random shapes (overlapping, clipped, global-sized) against the f64 closed form.
    for (ci, (g, batch)) in [
        (geom(3, (7, 6), 3, 2), 2),
        (geom(2, (5, 5), 2, 1), 3),
        (geom(1, (4, 4), 4, 1), 1),
        (geom(4, (9, 8), 3, 3), 2),
    ]
    .into_iter()
    .enumerate()
    {
        let x = positive(ci as u64, batch * g.input_len());
        let mut y = vec![f32::NAN; batch * g.output_len()];
        stochastic_pool_forward_test(&g, batch, &x, &mut y).unwrap();
        assert_close(&format!("case {ci}"), &y, &test_ref(&g, batch, &x), 1e-5);
    }
}

#[test]
fn train_picks_by_the_cumulative_rule() {
    // Window [1, 2, 3, 4], sum 10: threshold u * 10, first running sum >= threshold wins.
    let g = geom(1, (2, 2), 2, 2);
    let x = [1.0, 2.0, 3.0, 4.0];
    for (u, want) in [(0.0, 0), (0.05, 0), (0.15, 1), (0.29, 1), (0.31, 2), (0.59, 2), (0.61, 3)] {
        let (mut y, mut idx) = ([0.0], [u32::MAX]);
        stochastic_pool_forward_train(&g, 1, &x, &[u], &mut y, &mut idx).unwrap();
        assert_eq!((idx[0], y[0]), (want, x[want as usize]), "u = {u}");
    }
    // Caffe's `>=`: u = 0 picks the first element even when it is 0 (probability zero for a
    // continuous u); any u > 0 skips the zeros.
    let x = [0.0, 0.0, 5.0, 5.0];
    let (mut y, mut idx) = ([0.0], [0]);
    stochastic_pool_forward_train(&g, 1, &x, &[0.0], &mut y, &mut idx).unwrap();
    assert_eq!((idx[0], y[0]), (0, 0.0));
    stochastic_pool_forward_train(&g, 1, &x, &[1e-6], &mut y, &mut idx).unwrap();
    assert_eq!((idx[0], y[0]), (2, 5.0));
    // Outside Caffe's domain the same rule applies (all negative: threshold -5, the first
    // running sum -1 reaches it); when no running sum reaches the threshold (here -1.25, or a
    // NaN), the window's last element; never a panic.
    for (x, want) in
        [([-1.0, -2.0, -3.0, -4.0], 0), ([-3.0, 1.0, -1.0, 0.5], 3), ([1.0, f32::NAN, 1.0, 1.0], 3)]
    {
        stochastic_pool_forward_train(&g, 1, &x, &[0.5], &mut y, &mut idx).unwrap();
        assert_eq!(idx[0], want, "{x:?}");
    }
}

/// Sampling frequencies over 200,000 windows (fixed seed) match `x_i / sum(x)`. Each frequency
/// is binomial with standard deviation `sqrt(p (1 - p) / n) <= 0.0012`; the bound is 5 standard
/// deviations (a false alarm has probability below 1e-6 per element for a fresh seed).
#[test]
fn train_sampling_frequencies_match_the_probabilities() {
    let n = 200_000;
    let window = [0.5f32, 0.0, 1.5, 2.0, 0.25, 0.75];
    let total: f32 = window.iter().sum();
    // n planes of one 2x3 window each.
    let g = PoolGeometry { kernel_h: 2, kernel_w: 3, ..geom(n, (2, 3), 2, 2) };
    let x: Vec<f32> = window.iter().copied().cycle().take(n * 6).collect();
    let mut r = rng(2024);
    let u: Vec<f32> = (0..n).map(|_| r.random::<f32>()).collect();
    let (mut y, mut idx) = (vec![0.0; n], vec![0u32; n]);
    stochastic_pool_forward_train(&g, 1, &x, &u, &mut y, &mut idx).unwrap();
    let mut counts = [0usize; 6];
    for (&i, &v) in idx.iter().zip(&y) {
        counts[i as usize] += 1;
        assert_eq!(v, window[i as usize], "the output is the sampled element");
    }
    for (i, &c) in counts.iter().enumerate() {
        let p = f64::from(window[i] / total);
        let f = c as f64 / n as f64;
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        assert!((f - p).abs() <= 5.0 * sd, "element {i}: frequency {f}, probability {p}");
    }
    assert_eq!(counts[1], 0, "a zero activation is never sampled");
}

#[test]
fn train_backward_routes_to_the_sampled_elements() {
    // Overlapping windows (kernel 2, stride 1) over two planes.
    let (g, batch) = (geom(2, (4, 5), 2, 1), 1);
    let x = positive(7, batch * g.input_len());
    let mut r = rng(8);
    let nout = batch * g.output_len();
    let u: Vec<f32> = (0..nout).map(|_| r.random::<f32>()).collect();
    let (mut y, mut idx) = (vec![0.0; nout], vec![0u32; nout]);
    stochastic_pool_forward_train(&g, batch, &x, &u, &mut y, &mut idx).unwrap();
    let gy = uniform(&mut rng(9), nout);
    let mut gx = vec![f32::NAN; x.len()];
    stochastic_pool_backward_train(&g, batch, &gy, &idx, &mut gx).unwrap();
    let (ip, op) = (g.in_h * g.in_w, g.out_h() * g.out_w());
    let wins = windows(&g);
    let mut expected = vec![0f64; x.len()];
    for (o, (&i, &d)) in idx.iter().zip(&gy).enumerate() {
        let i = i as usize;
        assert!(wins[o % op].contains(&i), "output {o} sampled {i} outside its window");
        assert_eq!(y[o], x[(o / op) * ip + i]);
        expected[(o / op) * ip + i] += f64::from(d);
    }
    assert_close("routed gradient", &gx, &expected, 1e-6);
}

/// GradientChecker on the TEST output: step 1e-3, tolerance 1e-2 relative to
/// max(1, |gradient|); inputs in [0.05, 1) keep the denominator away from 0.
#[test]
fn test_backward_matches_finite_differences() {
    const CHECK: GradientChecker = GradientChecker { step: 1e-3, tol: 1e-2 };
    for (ci, (g, batch)) in
        [(geom(2, (5, 6), 3, 2), 2), (geom(1, (4, 4), 2, 1), 1)].into_iter().enumerate()
    {
        let x = positive(20 + ci as u64, batch * g.input_len());
        let top = uniform(&mut rng(30 + ci as u64), batch * g.output_len());
        let mut gx = vec![f32::NAN; x.len()];
        stochastic_pool_backward_test(&g, batch, &x, &top, &mut gx).unwrap();
        let probes = probe_indices(x.len(), 80, ci as u64);
        CHECK.check(&format!("case {ci}"), (&x, &gx), &top, &probes, |xp| {
            let mut y = vec![0.0; top.len()];
            stochastic_pool_forward_test(&g, batch, xp, &mut y).unwrap();
            y
        });
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (g, batch) = (geom(8, (12, 12), 3, 2), 4);
    let x = positive(40, batch * g.input_len());
    let nout = batch * g.output_len();
    let mut r = rng(41);
    let u: Vec<f32> = (0..nout).map(|_| r.random::<f32>()).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (mut y, mut idx) = (vec![0.0; nout], vec![0u32; nout]);
            stochastic_pool_forward_train(&g, batch, &x, &u, &mut y, &mut idx).unwrap();
            let mut t = vec![0.0; nout];
            stochastic_pool_forward_test(&g, batch, &x, &mut t).unwrap();
            (y, idx, t)
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn bad_input_is_an_error() {
    let g = geom(1, (4, 4), 2, 2);
    let x = vec![1.0; 16];
    let (mut y, mut idx) = (vec![0.0; 4], vec![0u32; 4]);
    let padded = PoolGeometry { pad_h: 1, ..g };
    let err = stochastic_pool_forward_test(&padded, 1, &x, &mut y).unwrap_err();
    assert!(err.to_string().contains("no padding"), "{err}");
    let err = stochastic_pool_forward_train(&g, 1, &x, &[0.5; 3], &mut y, &mut idx).unwrap_err();
    assert!(matches!(err, KernelError::Length { what: "uniforms", .. }), "{err}");
    let err =
        stochastic_pool_forward_train(&g, 1, &x, &[0.5; 4], &mut y, &mut idx[..2]).unwrap_err();
    assert!(matches!(err, KernelError::Length { what: "index", .. }), "{err}");
    let mut gx = vec![0.0; 16];
    let err = stochastic_pool_backward_train(&g, 1, &y, &[0, 1, 2, 99], &mut gx).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
    let err = stochastic_pool_backward_test(&g, 1, &x[1..], &y, &mut gx).unwrap_err();
    assert!(matches!(err, KernelError::Length { what: "input", .. }), "{err}");
}
