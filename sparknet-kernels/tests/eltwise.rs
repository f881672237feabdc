//! Eltwise (SUM/PROD/MAX), the scaled copy and Concat's copies: property tests against the
//! straightforward loops on random shapes (Caffe's operation order, so bit for bit), gradient
//! checks by central differences, Caffe's MAX tie rule, and length errors.

#![allow(clippy::needless_range_loop)] // the reference loops index like the formulas

mod common;

use std::mem::MaybeUninit;

use common::{GradientChecker, probe_indices, rng, uniform};
use proptest::prelude::*;
use sparknet_kernels::{
    concat_backward, concat_forward, eltwise_max, eltwise_max_backward, eltwise_prod,
    eltwise_prod_backward, eltwise_sum, scaled_copy,
};

fn uninit(n: usize) -> Vec<MaybeUninit<f32>> {
    vec![MaybeUninit::new(f32::NAN); n]
}

fn init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    // SAFETY: the kernels returned Ok, so every element was written.
    v.into_iter().map(|v| unsafe { v.assume_init() }).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

fn inputs(seed: u64, k: usize, n: usize) -> Vec<Vec<f32>> {
    let mut r = rng(seed);
    (0..k).map(|_| uniform(&mut r, n)).collect()
}

fn sum(xs: &[&[f32]], coeff: &[f32], relu: bool) -> Vec<f32> {
    let mut y = uninit(xs[0].len());
    eltwise_sum(xs, coeff, relu, &mut y).unwrap();
    init(y)
}

fn prod(xs: &[&[f32]]) -> Vec<f32> {
    let mut y = uninit(xs[0].len());
    eltwise_prod(xs, &mut y).unwrap();
    init(y)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// SUM, PROD and MAX against the straightforward loops, bit for bit.
    #[test]
    fn forward_matches_direct_loops(k in 1usize..5, n in 0usize..40_000, seed in 0u64..1000, relu: bool) {
        let xs = inputs(seed, k, n);
        let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let coeff: Vec<f32> = (0..k).map(|i| if i % 2 == 0 { 1.0 } else { -0.5 - i as f32 }).collect();
        let (mut s_ref, mut p_ref, mut m_ref, mut mask_ref) =
            (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0u32; n]);
        for j in 0..n {
            let term = |i: usize| if coeff[i] == 1.0 { xs[i][j] } else { coeff[i] * xs[i][j] };
            let mut s = term(0);
            let mut p = xs[0][j];
            for i in 1..k {
                s += term(i);
                p *= xs[i][j];
            }
            s_ref[j] = if relu { s.max(0.0) } else { s };
            p_ref[j] = p;
            let (mut m, mut at) = (xs[0][j], 0);
            if k > 1 {
                (m, at) = if xs[0][j] > xs[1][j] { (xs[0][j], 0) } else { (xs[1][j], 1) };
            }
            for (i, x) in xs.iter().enumerate().skip(2) {
                if x[j] > m {
                    (m, at) = (x[j], i as u32);
                }
            }
            (m_ref[j], mask_ref[j]) = (m, at);
        }
        prop_assert_eq!(bits(&sum(&refs, &coeff, relu)), bits(&s_ref));
        prop_assert_eq!(bits(&prod(&refs)), bits(&p_ref));
        let (mut y, mut mask) = (uninit(n), vec![7u32; n]);
        eltwise_max(&refs, &mut y, &mut mask).unwrap();
        prop_assert_eq!(bits(&init(y)), bits(&m_ref));
        prop_assert_eq!(mask, mask_ref);
    }

    /// Concat forward then backward returns the parts, and the forward is the row-wise join.
    #[test]
    fn concat_round_trips(outer in 0usize..6, rows in proptest::collection::vec(0usize..50, 1..4), seed in 0u64..1000) {
        let mut r = rng(seed);
        let parts: Vec<Vec<f32>> = rows.iter().map(|&w| uniform(&mut r, outer * w)).collect();
        let refs: Vec<&[f32]> = parts.iter().map(Vec::as_slice).collect();
        let total: usize = rows.iter().sum();
        let mut y = uninit(outer * total);
        concat_forward(outer, &refs, &mut y).unwrap();
        let y = init(y);
        let mut want = Vec::new();
        for o in 0..outer {
            for (p, &w) in parts.iter().zip(&rows) {
                want.extend_from_slice(&p[o * w..(o + 1) * w]);
            }
        }
        prop_assert_eq!(&y, &want);
        let mut outs: Vec<Vec<MaybeUninit<f32>>> = parts.iter().map(|p| uninit(p.len())).collect();
        {
            let mut views: Vec<&mut [MaybeUninit<f32>]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
            concat_backward(outer, &y, &mut views).unwrap();
        }
        let back: Vec<Vec<f32>> = outs.into_iter().map(init).collect();
        prop_assert_eq!(back, parts);
    }
}

/// Caffe's GradientChecker on PROD (each input's gradient), SUM with coefficients and MAX.
fn as_refs(v: &[Vec<f32>]) -> Vec<&[f32]> {
    v.iter().map(Vec::as_slice).collect()
}

#[test]
fn gradients_match_finite_differences() {
    let n = 57;
    let xs = inputs(3, 3, n);
    let top = uniform(&mut rng(4), n);
    let gc = GradientChecker { step: 1e-3, tol: 1e-2 };
    let coeff = [1.0, -2.0, 0.5];
    for i in 0..3 {
        let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let (mut dp, mut ds, mut dm) = (uninit(n), uninit(n), uninit(n));
        eltwise_prod_backward(&refs, i, &top, &mut dp).unwrap();
        scaled_copy(&top, coeff[i], &mut ds).unwrap();
        let (mut y, mut mask) = (uninit(n), vec![0; n]);
        eltwise_max(&refs, &mut y, &mut mask).unwrap();
        eltwise_max_backward(&mask, i, &top, &mut dm).unwrap();
        let with = |x: &[f32]| {
            let mut v: Vec<&[f32]> = refs.clone();
            v[i] = x;
            v.iter().map(|s| s.to_vec()).collect::<Vec<_>>()
        };
        let probes = probe_indices(n, n, 0);
        gc.check("prod", (&xs[i], &init(dp)), &top, &probes, |x| prod(&as_refs(&with(x))));
        gc.check("sum", (&xs[i], &init(ds)), &top, &probes, |x| {
            sum(&as_refs(&with(x)), &coeff, false)
        });
        gc.check("max", (&xs[i], &init(dm)), &top, &probes, |x| {
            let v = with(x);
            let (mut y, mut m) = (uninit(n), vec![0; n]);
            eltwise_max(&as_refs(&v), &mut y, &mut m).unwrap();
            init(y)
        });
    }
}

/// Caffe's MAX: a tie between the first two inputs goes to the second, later ties stay.
#[test]
fn max_ties_follow_caffe() {
    let (a, b, c) = ([1.0f32, 2.0, f32::NAN], [1.0f32, 1.0, 0.0], [1.0f32, 2.0, 0.0]);
    let (mut y, mut mask) = (uninit(3), vec![9; 3]);
    eltwise_max(&[&a, &b, &c], &mut y, &mut mask).unwrap();
    assert_eq!(mask, [1, 0, 1]);
    assert_eq!(init(y), [1.0, 2.0, 0.0]);
}

#[test]
fn bad_lengths_are_errors() {
    let mut y = uninit(3);
    assert!(eltwise_sum(&[&[1.0, 2.0, 3.0], &[1.0, 2.0]], &[1.0, 1.0], false, &mut y).is_err());
    assert!(eltwise_sum(&[&[1.0, 2.0, 3.0]], &[1.0, 1.0], false, &mut y).is_err());
    assert!(eltwise_prod(&[], &mut y).is_err());
    assert!(eltwise_prod_backward(&[&[1.0, 2.0, 3.0]], 1, &[0.0; 3], &mut y).is_err());
    assert!(eltwise_max(&[&[1.0, 2.0, 3.0]], &mut y, &mut [0; 2]).is_err());
    assert!(concat_forward(2, &[&[1.0, 2.0, 3.0]], &mut y).is_err());
    assert!(scaled_copy(&[1.0], 2.0, &mut y).is_err());
}
