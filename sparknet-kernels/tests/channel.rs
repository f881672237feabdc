//! Per-channel kernels (BatchNorm, the channel affine map of Scale/BatchNorm/fused ReLU, Scale's
//! backward): property tests against the straightforward f64 formulas on random shapes, Caffe's
//! gradient check by central differences, bit-identity of the fused forms with the separate
//! layers' arithmetic, and length errors.

#![allow(clippy::needless_range_loop)] // the reference loops index like the formulas

mod common;

use std::mem::MaybeUninit;

use common::{GradientChecker, assert_close, probe_indices, rng, uniform};
use proptest::prelude::*;
use sparknet_kernels::{
    ChannelAffine, ChannelShape, KernelError, batch_norm_backward_train, batch_norm_forward_train,
    batch_norm_global_stats, batch_norm_update_stats, channel_affine, channel_scale_backward,
};

fn uninit(n: usize) -> Vec<MaybeUninit<f32>> {
    vec![MaybeUninit::new(f32::NAN); n]
}

fn init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    // SAFETY: the kernels returned Ok, so every element was written.
    v.into_iter().map(|v| unsafe { v.assume_init() }).collect()
}

fn at(s: &ChannelShape, o: usize, c: usize, i: usize) -> usize {
    (o * s.channels + c) * s.inner + i
}

/// Per-channel mean and biased variance in f64.
fn stats_ref(s: &ChannelShape, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let m = s.per_channel() as f64;
    let mut mean = vec![0f64; s.channels];
    let mut var = vec![0f64; s.channels];
    for c in 0..s.channels {
        for o in 0..s.outer {
            for i in 0..s.inner {
                mean[c] += x[at(s, o, c, i)] as f64;
            }
        }
        mean[c] /= m;
        for o in 0..s.outer {
            for i in 0..s.inner {
                var[c] += (x[at(s, o, c, i)] as f64 - mean[c]).powi(2);
            }
        }
        var[c] /= m;
    }
    (mean, var)
}

fn bn_train(s: &ChannelShape, x: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = s.channels;
    let (mut mean, mut var, mut inv) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
    let mut y = uninit(s.len());
    batch_norm_forward_train(s, x, eps, &mut y, &mut mean, &mut var, &mut inv).unwrap();
    (init(y), mean, var, inv)
}

fn shapes() -> impl Strategy<Value = ChannelShape> {
    (1usize..5, 1usize..6, 1usize..40).prop_map(|(outer, channels, inner)| ChannelShape {
        outer,
        channels,
        inner,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// BatchNorm with batch statistics against `(x - mean) / sqrt(var + eps)` in f64.
    #[test]
    fn batch_norm_forward_matches_the_formula(s in shapes(), seed in 0u64..1000) {
        let x: Vec<f32> = uniform(&mut rng(seed), s.len()).iter().map(|v| v * 3.0 + 0.5).collect();
        let eps = 1e-5;
        let (y, mean, var, inv) = bn_train(&s, &x, eps);
        let (mr, vr) = stats_ref(&s, &x);
        assert_close("mean", &mean, &mr, 1e-5);
        assert_close("var", &var, &vr, 1e-5);
        let ir: Vec<f64> = vr.iter().map(|v| 1.0 / (v + eps as f64).sqrt()).collect();
        assert_close("inv_std", &inv, &ir, 1e-4);
        let mut yr = vec![0f64; s.len()];
        for o in 0..s.outer { for c in 0..s.channels { for i in 0..s.inner {
            let k = at(&s, o, c, i);
            yr[k] = (x[k] as f64 - mr[c]) * ir[c];
        }}}
        assert_close("y", &y, &yr, 1e-4);
    }

    /// Every form of the channel affine map against the f64 formula, and each form is the
    /// separate layers' f32 arithmetic bit for bit.
    #[test]
    fn channel_affine_matches_the_formula(s in shapes(), seed in 0u64..1000, form in 0usize..16) {
        let mut r = rng(seed);
        let x = uniform(&mut r, s.len());
        let vecs: Vec<Vec<f32>> = (0..4).map(|_| uniform(&mut r, s.channels)).collect();
        let on = |bit: usize| form >> bit & 1 == 1;
        let op = ChannelAffine {
            shift: on(0).then_some(vecs[0].as_slice()),
            scale: on(1).then_some(vecs[1].as_slice()),
            scale2: on(2).then_some(vecs[2].as_slice()),
            bias: on(3).then_some(vecs[3].as_slice()),
            relu: seed % 2 == 0,
        };
        let mut y = uninit(s.len());
        channel_affine(&s, &op, &x, &mut y).unwrap();
        let y = init(y);
        for o in 0..s.outer { for c in 0..s.channels { for i in 0..s.inner {
            let k = at(&s, o, c, i);
            let mut v = x[k];
            if let Some(m) = op.shift { v -= m[c]; }
            if let Some(a) = op.scale { v *= a[c]; }
            if let Some(g) = op.scale2 { v *= g[c]; }
            if let Some(b) = op.bias { v += b[c]; }
            if op.relu { v = v.max(0.0); }
            prop_assert_eq!(y[k].to_bits(), v.to_bits(), "form {} at {}", form, k);
        }}}
    }

    /// Scale's backward against the f64 sums.
    #[test]
    fn scale_backward_matches_the_formula(s in shapes(), seed in 0u64..1000) {
        let mut r = rng(seed);
        let (x, dy, f) = (uniform(&mut r, s.len()), uniform(&mut r, s.len()), uniform(&mut r, s.channels));
        let mut dx = uninit(s.len());
        let (mut df, mut db) = (vec![9.0; s.channels], vec![9.0; s.channels]);
        channel_scale_backward(&s, &x, &dy, &f, Some(&mut dx), Some(&mut df), Some(&mut db)).unwrap();
        let dx = init(dx);
        let (mut dfr, mut dbr, mut dxr) = (vec![0f64; s.channels], vec![0f64; s.channels], vec![0f64; s.len()]);
        for o in 0..s.outer { for c in 0..s.channels { for i in 0..s.inner {
            let k = at(&s, o, c, i);
            dfr[c] += dy[k] as f64 * x[k] as f64;
            dbr[c] += dy[k] as f64;
            dxr[k] = dy[k] as f64 * f[c] as f64;
        }}}
        assert_close("dscale", &df, &dfr, 1e-5);
        assert_close("dbias", &db, &dbr, 1e-5);
        assert_close("dx", &dx, &dxr, 1e-6);
    }

    /// BatchNorm's backward against Caffe's formula in f64.
    #[test]
    fn batch_norm_backward_matches_the_formula(s in shapes(), seed in 0u64..1000) {
        let mut r = rng(seed);
        let (x, dy) = (uniform(&mut r, s.len()), uniform(&mut r, s.len()));
        let (y, _, _, inv) = bn_train(&s, &x, 1e-5);
        let mut dx = uninit(s.len());
        batch_norm_backward_train(&s, &y, &dy, &inv, &mut dx).unwrap();
        let dx = init(dx);
        let m = s.per_channel() as f64;
        let mut dxr = vec![0f64; s.len()];
        for c in 0..s.channels {
            let (mut m1, mut m2) = (0f64, 0f64);
            for o in 0..s.outer { for i in 0..s.inner {
                let k = at(&s, o, c, i);
                m1 += dy[k] as f64;
                m2 += dy[k] as f64 * y[k] as f64;
            }}
            for o in 0..s.outer { for i in 0..s.inner {
                let k = at(&s, o, c, i);
                dxr[k] = (dy[k] as f64 - m1 / m - m2 / m * y[k] as f64) * inv[c] as f64;
            }}
        }
        assert_close("dx", &dx, &dxr, 1e-4);
    }
}

/// Caffe's GradientChecker on BatchNorm with batch statistics (the statistics depend on x).
#[test]
fn batch_norm_gradient_matches_finite_differences() {
    for (k, s) in [
        ChannelShape { outer: 3, channels: 2, inner: 5 },
        ChannelShape { outer: 2, channels: 3, inner: 1 },
        ChannelShape { outer: 4, channels: 1, inner: 33 },
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = rng(10 + k as u64);
        let x: Vec<f32> = uniform(&mut r, s.len()).iter().map(|v| v * 2.0).collect();
        let top = uniform(&mut r, s.len());
        let (y, _, _, inv) = bn_train(&s, &x, 1e-3);
        let mut dx = uninit(s.len());
        batch_norm_backward_train(&s, &y, &top, &inv, &mut dx).unwrap();
        let dx = init(dx);
        GradientChecker { step: 1e-2, tol: 2e-2 }.check(
            &format!("{s:?}"),
            (&x, &dx),
            &top,
            &probe_indices(x.len(), 60, 3),
            |x| bn_train(&s, x, 1e-3).0,
        );
    }
}

/// Caffe's GradientChecker on Scale (data, factor and bias gradients).
#[test]
fn scale_gradient_matches_finite_differences() {
    let s = ChannelShape { outer: 2, channels: 3, inner: 7 };
    let mut r = rng(20);
    let (x, f, b, top) = (
        uniform(&mut r, s.len()),
        uniform(&mut r, s.channels),
        uniform(&mut r, s.channels),
        uniform(&mut r, s.len()),
    );
    let fwd = |x: &[f32], f: &[f32], b: &[f32]| {
        let mut y = uninit(s.len());
        let op = ChannelAffine { scale: Some(f), bias: Some(b), ..ChannelAffine::default() };
        channel_affine(&s, &op, x, &mut y).unwrap();
        init(y)
    };
    let mut dx = uninit(s.len());
    let (mut df, mut db) = (vec![0.0; 3], vec![0.0; 3]);
    channel_scale_backward(&s, &x, &top, &f, Some(&mut dx), Some(&mut df), Some(&mut db)).unwrap();
    let dx = init(dx);
    let gc = GradientChecker { step: 1e-2, tol: 1e-2 };
    gc.check("dx", (&x, &dx), &top, &probe_indices(x.len(), 42, 1), |x| fwd(x, &f, &b));
    gc.check("dscale", (&f, &df), &top, &[0, 1, 2], |f| fwd(&x, f, &b));
    gc.check("dbias", (&b, &db), &top, &[0, 1, 2], |b| fwd(&x, &f, b));
    // Only some outputs wanted: the others are not touched, the wanted ones equal.
    let mut df2 = vec![0.0; 3];
    channel_scale_backward(&s, &x, &top, &f, None, Some(&mut df2), None).unwrap();
    assert_eq!(df, df2);
}

/// Stored statistics and the moving-average update follow Caffe's BatchNormLayer.
#[test]
fn global_stats_and_update_follow_caffe() {
    let (mut mean, mut inv) = (vec![0.0; 2], vec![0.0; 2]);
    batch_norm_global_stats(&[2.0, 20.0], &[8.0, 50.0], 2.0, 0.0, &mut mean, &mut inv).unwrap();
    assert_eq!(mean, [1.0, 10.0]);
    assert_eq!(inv, [0.5, 0.2]);
    batch_norm_global_stats(&[2.0, 20.0], &[8.0, 50.0], 0.0, 1.0, &mut mean, &mut inv).unwrap();
    assert_eq!((mean.clone(), inv.clone()), (vec![0.0, 0.0], vec![1.0, 1.0]));
    let (mut ms, mut vs, mut f) = (vec![1.0, 2.0], vec![3.0, 4.0], 1.0);
    batch_norm_update_stats(&[0.5, 1.5], &[2.0, 4.0], 5, 0.9, (&mut ms, &mut vs, &mut f)).unwrap();
    assert_eq!(ms, [0.5 + 0.9 * 1.0, 1.5 + 0.9 * 2.0]);
    assert_eq!(vs, [1.25 * 2.0 + 0.9 * 3.0, 1.25 * 4.0 + 0.9 * 4.0]);
    assert_eq!(f, 0.9 * 1.0 + 1.0);
}

/// Results do not depend on the thread count.
#[test]
fn thread_count_does_not_change_results() {
    let s = ChannelShape { outer: 8, channels: 5, inner: 3000 };
    let x = uniform(&mut rng(4), s.len());
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| bn_train(&s, &x, 1e-5))
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn bad_lengths_are_errors() {
    let s = ChannelShape { outer: 2, channels: 3, inner: 4 };
    let x = vec![0.0; 24];
    let mut y = uninit(23);
    let e = channel_affine(&s, &ChannelAffine::default(), &x, &mut y).unwrap_err();
    assert_eq!(
        e,
        KernelError::Length { kernel: "channel_affine", what: "y", expected: 24, actual: 23 }
    );
    let mut y = uninit(24);
    let op = ChannelAffine { scale: Some(&[1.0, 2.0]), ..ChannelAffine::default() };
    assert!(channel_affine(&s, &op, &x, &mut y).is_err());
    let (mut m, mut v, mut i) = (vec![0.0; 3], vec![0.0; 2], vec![0.0; 3]);
    assert!(batch_norm_forward_train(&s, &x, 1e-5, &mut y, &mut m, &mut v, &mut i).is_err());
    let empty = ChannelShape { outer: 0, channels: 3, inner: 4 };
    let mut v = vec![0.0; 3];
    let e = batch_norm_forward_train(&empty, &[], 1e-5, &mut [], &mut m, &mut v, &mut i);
    assert!(matches!(e, Err(KernelError::Geometry { .. })));
}
