//! Shared test helpers: seeded random data, direct (naive) reference kernels, and Caffe's
//! GradientChecker method (central differences on `loss = sum(output * top_diff)`).
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sparknet_kernels::ConvGeometry;

/// A seeded generator.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `len` uniform values in `[-1, 1)`.
pub fn uniform(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Asserts `|a - b| <= tol * max(1, |a|, |b|)` element-wise, naming the first failure.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let scale = 1f64.max(e.abs()).max((a as f64).abs());
        assert!(
            (a as f64 - e).abs() <= tol * scale,
            "{what}[{i}]: got {a}, expected {e} (tol {tol})"
        );
    }
}

/// Direct convolution in f64: `y[n,o,oy,ox] = b[o] + sum w[o,ci,ki,kj] * x[n, grp*cg+ci, iy, ix]`.
pub fn conv_ref(
    g: &ConvGeometry,
    batch: usize,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
) -> Vec<f64> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let cg = g.in_channels / g.groups;
    let mg = g.out_channels / g.groups;
    let mut y = vec![0f64; batch * g.out_channels * oh * ow];
    for n in 0..batch {
        for o in 0..g.out_channels {
            let grp = o / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[o] as f64);
                    for ci in 0..cg {
                        for ki in 0..g.kernel_h {
                            for kj in 0..g.kernel_w {
                                let iy = (oy * g.stride_h + ki * g.dilation_h) as isize
                                    - g.pad_h as isize;
                                let ix = (ox * g.stride_w + kj * g.dilation_w) as isize
                                    - g.pad_w as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= g.in_h as isize
                                    || ix >= g.in_w as isize
                                {
                                    continue;
                                }
                                let c = grp * cg + ci;
                                let xv = x[((n * g.in_channels + c) * g.in_h + iy as usize)
                                    * g.in_w
                                    + ix as usize];
                                let wv = w[((o * cg + ci) * g.kernel_h + ki) * g.kernel_w + kj];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((n * g.out_channels + o) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    y
}

/// Indices to probe in a finite-difference check: all of them when few, else a seeded sample.
pub fn probe_indices(len: usize, max: usize, seed: u64) -> Vec<usize> {
    if len <= max {
        return (0..len).collect();
    }
    let mut r = rng(seed);
    (0..max).map(|_| r.random_range(0..len)).collect()
}

/// Caffe's GradientChecker: for each probed `i`, the central difference
/// `(L(x + step e_i) - L(x - step e_i)) / (2 step)` of `L = sum(f(x) * top)` (accumulated in f64)
/// must match `analytic[i]` within `tol * max(1, |analytic|, |numeric|)`.
pub struct GradientChecker {
    /// Finite-difference step.
    pub step: f32,
    /// Relative tolerance.
    pub tol: f64,
}

impl GradientChecker {
    /// Checks `analytic` (the gradient of `sum(f(x) * top)`) at the `probes` indices of `x`.
    pub fn check(
        &self,
        what: &str,
        (x, analytic): (&[f32], &[f32]),
        top: &[f32],
        probes: &[usize],
        mut f: impl FnMut(&[f32]) -> Vec<f32>,
    ) {
        let (step, tol) = (self.step, self.tol);
        let loss =
            |y: Vec<f32>| -> f64 { y.iter().zip(top).map(|(&a, &b)| a as f64 * b as f64).sum() };
        let mut xp = x.to_vec();
        for &i in probes {
            xp[i] = x[i] + step;
            let plus = loss(f(&xp));
            xp[i] = x[i] - step;
            let minus = loss(f(&xp));
            xp[i] = x[i];
            let numeric = (plus - minus) / (2.0 * step as f64);
            let a = analytic[i] as f64;
            let scale = 1f64.max(a.abs()).max(numeric.abs());
            assert!(
                (a - numeric).abs() <= tol * scale,
                "{what}[{i}]: analytic {a}, numeric {numeric} (step {step}, tol {tol})"
            );
        }
    }
}

/// Direct adjoint of [`conv_ref`] in f64: `(grad_input, grad_weight, grad_bias)` for top gradient `gy`.
pub fn conv_adjoint_ref(
    g: &ConvGeometry,
    batch: usize,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let cg = g.in_channels / g.groups;
    let mg = g.out_channels / g.groups;
    let mut gx = vec![0f64; x.len()];
    let mut gw = vec![0f64; w.len()];
    let mut gb = vec![0f64; g.out_channels];
    for n in 0..batch {
        for o in 0..g.out_channels {
            let grp = o / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = gy[((n * g.out_channels + o) * oh + oy) * ow + ox] as f64;
                    gb[o] += d;
                    for ci in 0..cg {
                        for ki in 0..g.kernel_h {
                            for kj in 0..g.kernel_w {
                                let iy = (oy * g.stride_h + ki * g.dilation_h) as isize
                                    - g.pad_h as isize;
                                let ix = (ox * g.stride_w + kj * g.dilation_w) as isize
                                    - g.pad_w as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= g.in_h as isize
                                    || ix >= g.in_w as isize
                                {
                                    continue;
                                }
                                let c = grp * cg + ci;
                                let xi = ((n * g.in_channels + c) * g.in_h + iy as usize) * g.in_w
                                    + ix as usize;
                                let wi = ((o * cg + ci) * g.kernel_h + ki) * g.kernel_w + kj;
                                gx[xi] += w[wi] as f64 * d;
                                gw[wi] += x[xi] as f64 * d;
                            }
                        }
                    }
                }
            }
        }
    }
    (gx, gw, gb)
}
