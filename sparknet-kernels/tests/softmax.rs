//! Softmax and SoftmaxWithLoss kernels: property tests against the f64 formulas on random
//! shapes (contiguous and strided class axes), gradient checks by central differences, ignored
//! labels, and errors for bad labels and lengths.

#![allow(clippy::needless_range_loop)] // the reference loops index like the formulas

mod common;

use std::mem::MaybeUninit;

use common::{GradientChecker, assert_close, probe_indices, rng, uniform};
use proptest::prelude::*;
use sparknet_kernels::{
    KernelError, SoftmaxShape, softmax_backward, softmax_forward, softmax_loss_backward,
    softmax_loss_forward,
};

fn uninit(n: usize) -> Vec<MaybeUninit<f32>> {
    vec![MaybeUninit::new(f32::NAN); n]
}

fn init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    // SAFETY: the kernels returned Ok, so every element was written.
    v.into_iter().map(|v| unsafe { v.assume_init() }).collect()
}

fn softmax(s: &SoftmaxShape, x: &[f32]) -> Vec<f32> {
    let mut y = uninit(s.len());
    softmax_forward(s, x, &mut y).unwrap();
    init(y)
}

fn softmax_ref(s: &SoftmaxShape, x: &[f32]) -> Vec<f64> {
    let mut y = vec![0f64; s.len()];
    for o in 0..s.outer {
        for i in 0..s.inner {
            let at = |k: usize| (o * s.classes + k) * s.inner + i;
            let max = (0..s.classes).map(|k| x[at(k)] as f64).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..s.classes).map(|k| (x[at(k)] as f64 - max).exp()).sum();
            for k in 0..s.classes {
                y[at(k)] = (x[at(k)] as f64 - max).exp() / sum;
            }
        }
    }
    y
}

fn shapes() -> impl Strategy<Value = SoftmaxShape> {
    (1usize..5, 1usize..12, 1usize..9).prop_map(|(outer, classes, inner)| SoftmaxShape {
        outer,
        classes,
        inner,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Forward and backward against the formulas in f64.
    #[test]
    fn softmax_matches_the_formula(s in shapes(), seed in 0u64..1000) {
        let mut r = rng(seed);
        let x: Vec<f32> = uniform(&mut r, s.len()).iter().map(|v| v * 20.0).collect();
        let dy = uniform(&mut r, s.len());
        let y = softmax(&s, &x);
        assert_close("y", &y, &softmax_ref(&s, &x), 1e-6);
        let mut dx = uninit(s.len());
        softmax_backward(&s, &y, &dy, &mut dx).unwrap();
        let mut want = vec![0f64; s.len()];
        for o in 0..s.outer { for i in 0..s.inner {
            let at = |k: usize| (o * s.classes + k) * s.inner + i;
            let dot: f64 = (0..s.classes).map(|k| y[at(k)] as f64 * dy[at(k)] as f64).sum();
            for k in 0..s.classes {
                want[at(k)] = y[at(k)] as f64 * (dy[at(k)] as f64 - dot);
            }
        }}
        assert_close("dx", &init(dx), &want, 1e-6);
    }

    /// The loss and its gradient against `-ln p[label]` and `p - onehot`, with an ignored label.
    #[test]
    fn loss_matches_the_formula(s in shapes(), seed in 0u64..1000) {
        let mut r = rng(seed);
        let x = uniform(&mut r, s.len());
        let p = softmax(&s, &x);
        let labels: Vec<f32> =
            (0..s.outer * s.inner).map(|j| ((j * 7 + seed as usize) % (s.classes + 1)) as f32).collect();
        let ignore = Some(s.classes as i32); // label == classes is ignored
        let (loss, valid) = softmax_loss_forward(&s, &p, &labels, ignore).unwrap();
        let (mut lr, mut vr) = (0f64, 0);
        let mut want = vec![0f64; s.len()];
        for o in 0..s.outer { for i in 0..s.inner {
            let l = labels[o * s.inner + i] as usize;
            if l == s.classes { continue; }
            lr -= (p[(o * s.classes + l) * s.inner + i] as f64).ln();
            vr += 1;
            for k in 0..s.classes {
                let at = (o * s.classes + k) * s.inner + i;
                want[at] = 0.5 * (p[at] as f64 - f64::from(u8::from(k == l)));
            }
        }}
        prop_assert_eq!(valid, vr);
        prop_assert!((loss - lr).abs() <= 1e-5 * lr.abs().max(1.0));
        let mut dx = uninit(s.len());
        softmax_loss_backward(&s, &p, &labels, ignore, 0.5, &mut dx).unwrap();
        assert_close("dx", &init(dx), &want, 1e-6);
    }
}

/// Caffe's GradientChecker on Softmax and on the loss (as a function of the logits).
#[test]
fn gradients_match_finite_differences() {
    for s in [
        SoftmaxShape { outer: 3, classes: 5, inner: 1 },
        SoftmaxShape { outer: 2, classes: 3, inner: 4 },
    ] {
        let mut r = rng(8);
        let x = uniform(&mut r, s.len());
        let top = uniform(&mut r, s.len());
        let y = softmax(&s, &x);
        let mut dx = uninit(s.len());
        softmax_backward(&s, &y, &top, &mut dx).unwrap();
        let gc = GradientChecker { step: 1e-2, tol: 1e-2 };
        let probes = probe_indices(s.len(), 64, 1);
        gc.check("softmax", (&x, &init(dx)), &top, &probes, |x| softmax(&s, x));
        let labels: Vec<f32> = (0..s.outer * s.inner).map(|j| (j % s.classes) as f32).collect();
        let mut dx = uninit(s.len());
        softmax_loss_backward(&s, &y, &labels, None, 1.0, &mut dx).unwrap();
        gc.check("loss", (&x, &init(dx)), &[1.0], &probes, |x| {
            vec![softmax_loss_forward(&s, &softmax(&s, x), &labels, None).unwrap().0 as f32]
        });
    }
}

#[test]
fn bad_labels_and_lengths_are_errors() {
    let s = SoftmaxShape { outer: 2, classes: 3, inner: 1 };
    let p = [0.2f32; 6];
    let e = softmax_loss_forward(&s, &p, &[0.0, 3.0], None).unwrap_err();
    assert!(matches!(e, KernelError::Geometry { .. }), "{e}");
    assert!(softmax_loss_forward(&s, &p, &[0.0, -1.0], Some(-1)).is_ok());
    assert!(softmax_loss_forward(&s, &p, &[0.0], None).is_err());
    let mut y = uninit(5);
    assert!(softmax_forward(&s, &p, &mut y).is_err());
}
