//! LRN kernels against direct formulas and finite differences.

mod common;

use common::*;
use sparknet_kernels::{
    KernelError, LrnGeometry, LrnParams, lrn_across_backward, lrn_across_forward,
    lrn_within_backward, lrn_within_forward,
};

/// Direct ACROSS_CHANNELS: `y = x * (k + alpha/size * sum_{|c'-c| <= size/2} x[c']^2)^-beta`.
fn across_ref(p: &LrnParams, [n, c, h, w]: [usize; 4], x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let half = (p.local_size / 2) as isize;
    let (mut y, mut s) = (vec![0f64; x.len()], vec![0f64; x.len()]);
    for ni in 0..n {
        for ci in 0..c {
            for j in 0..h * w {
                let mut sum = 0f64;
                for cj in ci as isize - half..=ci as isize + half {
                    if (0..c as isize).contains(&cj) {
                        let v = x[(ni * c + cj as usize) * h * w + j] as f64;
                        sum += v * v;
                    }
                }
                let i = (ni * c + ci) * h * w + j;
                s[i] = p.k as f64 + p.alpha as f64 / p.local_size as f64 * sum;
                y[i] = x[i] as f64 * s[i].powf(-p.beta as f64);
            }
        }
    }
    (y, s)
}

/// Direct WITHIN_CHANNEL: `y = x * (1 + alpha/size^2 * sum over the clipped size x size window of x^2)^-beta`.
fn within_ref(p: &LrnParams, [n, c, h, w]: [usize; 4], x: &[f32]) -> Vec<f64> {
    let half = (p.local_size / 2) as isize;
    let mut y = vec![0f64; x.len()];
    for plane in 0..n * c {
        for yy in 0..h as isize {
            for xx in 0..w as isize {
                let mut sum = 0f64;
                for dy in -half..=half {
                    for dx in -half..=half {
                        let (iy, ix) = (yy + dy, xx + dx);
                        if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                            let v = x[plane * h * w + iy as usize * w + ix as usize] as f64;
                            sum += v * v;
                        }
                    }
                }
                let i = plane * h * w + yy as usize * w + xx as usize;
                let s = 1.0 + p.alpha as f64 / (p.local_size * p.local_size) as f64 * sum;
                y[i] = x[i] as f64 * s.powf(-p.beta as f64);
            }
        }
    }
    y
}

/// `(params, [n, c, h, w])`: AlexNet-like (beta 0.75 fast path), a non-0.75 beta, a window wider
/// than the channel count, and size 1; strong alphas so the nonlinear part matters.
fn cases() -> Vec<(LrnParams, [usize; 4])> {
    let p = |local_size, alpha, beta, k| LrnParams { local_size, alpha, beta, k };
    vec![
        (p(5, 0.9, 0.75, 1.0), [2, 7, 3, 4]),
        (p(3, 1.5, 0.6, 2.0), [3, 4, 5, 2]),
        (p(9, 0.7, 0.75, 1.5), [1, 4, 3, 3]),
        (p(1, 0.5, 1.2, 1.0), [2, 3, 2, 2]),
    ]
}

#[test]
fn across_forward_matches_direct_formula() {
    for (ci, (p, dims)) in cases().into_iter().enumerate() {
        let x = uniform(&mut rng(ci as u64), dims.iter().product());
        let (mut y, mut s) = (vec![f32::NAN; x.len()], vec![f32::NAN; x.len()]);
        let [n, c, h, w] = dims;
        lrn_across_forward(&p, &LrnGeometry::new(n, c, h, w), &x, &mut y, &mut s).unwrap();
        let (y_ref, s_ref) = across_ref(&p, dims, &x);
        assert_close(&format!("case {ci} output"), &y, &y_ref, 1e-5);
        assert_close(&format!("case {ci} scale"), &s, &s_ref, 1e-5);
    }
}

#[test]
fn within_forward_matches_direct_formula() {
    for (ci, (p, dims)) in cases().into_iter().enumerate() {
        let x = uniform(&mut rng(10 + ci as u64), dims.iter().product());
        let mut y = vec![f32::NAN; x.len()];
        let [n, c, h, w] = dims;
        lrn_within_forward(&p, &LrnGeometry::new(n, c, h, w), &x, &mut y).unwrap();
        assert_close(&format!("case {ci} output"), &y, &within_ref(&p, dims, &x), 1e-5);
    }
}

/// GradientChecker: step 1e-2, tolerance 2e-3 relative to max(1, |gradient|), every input probed.
#[test]
fn backward_matches_finite_differences() {
    const CHECK: GradientChecker = GradientChecker { step: 1e-2, tol: 2e-3 };
    for (ci, (p, dims)) in cases().into_iter().enumerate() {
        let [n, c, h, w] = dims;
        let mut r = rng(20 + ci as u64);
        let x: Vec<f32> = uniform(&mut r, dims.iter().product()).iter().map(|v| 2.0 * v).collect();
        let top = uniform(&mut r, x.len());
        let probes = probe_indices(x.len(), 200, ci as u64);

        let (mut y, mut s) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        lrn_across_forward(&p, &LrnGeometry::new(n, c, h, w), &x, &mut y, &mut s).unwrap();
        let mut gx = vec![f32::NAN; x.len()];
        lrn_across_backward(&p, &LrnGeometry::new(n, c, h, w), &x, &y, &s, &top, &mut gx).unwrap();
        CHECK.check(&format!("case {ci} across"), (&x, &gx), &top, &probes, |xp| {
            let (mut y, mut s) = (vec![0.0; xp.len()], vec![0.0; xp.len()]);
            lrn_across_forward(&p, &LrnGeometry::new(n, c, h, w), xp, &mut y, &mut s).unwrap();
            y
        });

        let mut gx = vec![f32::NAN; x.len()];
        lrn_within_backward(&p, &LrnGeometry::new(n, c, h, w), &x, &top, &mut gx).unwrap();
        CHECK.check(&format!("case {ci} within"), (&x, &gx), &top, &probes, |xp| {
            let mut y = vec![0.0; xp.len()];
            lrn_within_forward(&p, &LrnGeometry::new(n, c, h, w), xp, &mut y).unwrap();
            y
        });
    }
}

#[test]
fn bad_input_is_an_error() {
    let p = LrnParams { local_size: 4, alpha: 1e-4, beta: 0.75, k: 1.0 };
    let x = vec![0.0; 24];
    let (mut y, mut s) = (vec![0.0; 24], vec![0.0; 24]);
    let err =
        lrn_across_forward(&p, &LrnGeometry::new(1, 2, 3, 4), &x, &mut y, &mut s).unwrap_err();
    assert!(err.to_string().contains("odd"), "{err}");
    let p = LrnParams { local_size: 5, ..p };
    let err =
        lrn_across_forward(&p, &LrnGeometry::new(1, 2, 3, 5), &x, &mut y, &mut s).unwrap_err();
    assert!(
        matches!(err, KernelError::Length { kernel: "lrn_across_forward", what: "input", .. }),
        "{err}"
    );
    let err =
        lrn_within_backward(&p, &LrnGeometry::new(1, 2, 3, 4), &x, &x[1..], &mut y).unwrap_err();
    assert!(err.to_string().contains("grad_output"), "{err}");
    let err = lrn_across_backward(&p, &LrnGeometry::new(1, 2, 3, 4), &x, &x, &x[2..], &x, &mut y)
        .unwrap_err();
    assert!(err.to_string().contains("scale"), "{err}");
}
