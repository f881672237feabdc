//! Local response normalisation, Caffe's ACROSS_CHANNELS and WITHIN_CHANNEL, parallel over the
//! `N x C` planes.

use crate::error::{Result, check_len, geometry};
use rayon::prelude::*;
use std::cell::RefCell;

/// LRN parameters (Caffe's `lrn_param`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrnParams {
    /// Window size: channels (ACROSS_CHANNELS) or the side of a square (WITHIN_CHANNEL). Odd.
    pub local_size: usize,
    /// Scaling parameter alpha.
    pub alpha: f32,
    /// Exponent beta.
    pub beta: f32,
    /// Additive constant k (ACROSS_CHANNELS only; Caffe's WITHIN_CHANNEL uses 1).
    pub k: f32,
}

/// `s^-beta`, with a fast exact path for Caffe's usual beta = 0.75.
#[inline]
fn pow_neg(s: f32, beta: f32) -> f32 {
    if beta == 0.75 {
        let r = s.sqrt();
        1.0 / (r * r.sqrt())
    } else {
        s.powf(-beta)
    }
}

/// The blob an LRN runs over: `batch x channels x height x width`, NCHW, contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LrnGeometry {
    /// Samples.
    pub batch: usize,
    /// Channels per sample.
    pub channels: usize,
    /// Plane height.
    pub height: usize,
    /// Plane width.
    pub width: usize,
}

impl LrnGeometry {
    /// The geometry of an `[n, c, h, w]` blob.
    pub fn new(batch: usize, channels: usize, height: usize, width: usize) -> Self {
        Self { batch, channels, height, width }
    }
}

/// The prologue every LRN kernel shares: checks `local_size` is odd and every slice of `lens`
/// holds the whole blob; returns the plane size `h * w`, or `None` when the blob is empty
/// (nothing to compute).
fn prologue(
    kernel: &'static str,
    p: &LrnParams,
    g: &LrnGeometry,
    lens: &[(&'static str, usize)],
) -> Result<Option<usize>> {
    if p.local_size == 0 || p.local_size.is_multiple_of(2) {
        return Err(geometry(
            kernel,
            format!("local_size {} must be odd (as Caffe requires)", p.local_size),
        ));
    }
    let dims = [g.batch, g.channels, g.height, g.width];
    let total = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| geometry(kernel, format!("shape {dims:?} overflows usize")))?;
    for &(what, len) in lens {
        check_len(kernel, what, total, len)?;
    }
    Ok((total > 0).then_some(g.height * g.width))
}

/// ACROSS_CHANNELS forward: `scale = k + alpha/local_size * sum of x^2 over the local_size
/// channels centred on c` (clipped to the real channels), `output = input * scale^-beta`.
///
/// All slices are `n x c x h x w`. **Overwrites** `output` and `scale` (kept for the backward).
pub fn lrn_across_forward(
    p: &LrnParams,
    g: &LrnGeometry,
    input: &[f32],
    output: &mut [f32],
    scale: &mut [f32],
) -> Result<()> {
    const K: &str = "lrn_across_forward";
    let lens = [("input", input.len()), ("output", output.len()), ("scale", scale.len())];
    let Some(hw) = prologue(K, p, g, &lens)? else { return Ok(()) };
    let c = g.channels;
    let half = (p.local_size - 1) / 2;
    let coeff = p.alpha / p.local_size as f32;
    output.par_chunks_mut(hw).zip(scale.par_chunks_mut(hw)).enumerate().for_each(|(i, (y, s))| {
        let (ni, ci) = (i / c, i % c);
        let sample = &input[ni * c * hw..(ni + 1) * c * hw];
        s.fill(0.0);
        for cj in ci.saturating_sub(half)..(ci + half + 1).min(c) {
            for (acc, &v) in s.iter_mut().zip(&sample[cj * hw..(cj + 1) * hw]) {
                *acc += v * v;
            }
        }
        let x = &sample[ci * hw..(ci + 1) * hw];
        for ((yv, sv), &xv) in y.iter_mut().zip(s.iter_mut()).zip(x) {
            *sv = p.k + coeff * *sv;
            *yv = xv * pow_neg(*sv, p.beta);
        }
    });
    Ok(())
}

/// ACROSS_CHANNELS backward (Caffe's formula):
/// `grad_input = grad_output * scale^-beta - 2*alpha*beta/local_size * input *
/// sum over the channels c' whose window holds c of grad_output[c'] * output[c'] / scale[c']`.
///
/// `output` and `scale` come from [`lrn_across_forward`]. **Overwrites** `grad_input`.
pub fn lrn_across_backward(
    p: &LrnParams,
    g: &LrnGeometry,
    input: &[f32],
    output: &[f32],
    scale: &[f32],
    grad_output: &[f32],
    grad_input: &mut [f32],
) -> Result<()> {
    const K: &str = "lrn_across_backward";
    let lens = [
        ("input", input.len()),
        ("output", output.len()),
        ("scale", scale.len()),
        ("grad_output", grad_output.len()),
        ("grad_input", grad_input.len()),
    ];
    let Some(hw) = prologue(K, p, g, &lens)? else { return Ok(()) };
    let c = g.channels;
    let half = (p.local_size - 1) / 2;
    let ratio = 2.0 * p.alpha * p.beta / p.local_size as f32;
    grad_input.par_chunks_mut(hw).enumerate().for_each(|(i, gx)| {
        let (ni, ci) = (i / c, i % c);
        let base = ni * c * hw;
        gx.fill(0.0);
        // The window is symmetric, so the channels whose window holds ci are ci-half..=ci+half.
        for cj in ci.saturating_sub(half)..(ci + half + 1).min(c) {
            let r = base + cj * hw..base + (cj + 1) * hw;
            let terms = grad_output[r.clone()].iter().zip(&output[r.clone()]).zip(&scale[r]);
            for (acc, ((&d, &y), &s)) in gx.iter_mut().zip(terms) {
                *acc += d * y / s;
            }
        }
        let r = base + ci * hw..base + (ci + 1) * hw;
        let own = grad_output[r.clone()].iter().zip(&scale[r.clone()]).zip(&input[r]);
        for (g, ((&d, &s), &x)) in gx.iter_mut().zip(own) {
            *g = d * pow_neg(s, p.beta) - ratio * x * *g;
        }
    });
    Ok(())
}

/// Box sum of `f(x)` over the `size x size` window centred on each pixel, clipped to the plane.
fn box_sum(src: &[f32], h: usize, w: usize, size: usize, dst: &mut [f32], f: impl Fn(f32) -> f32) {
    let half = (size - 1) / 2;
    for y in 0..h {
        let (y0, y1) = (y.saturating_sub(half), (y + half + 1).min(h));
        for x in 0..w {
            let (x0, x1) = (x.saturating_sub(half), (x + half + 1).min(w));
            let mut acc = 0.0f32;
            for yy in y0..y1 {
                acc += src[yy * w + x0..yy * w + x1].iter().map(|&v| f(v)).sum::<f32>();
            }
            dst[y * w + x] = acc;
        }
    }
}

thread_local! {
    /// Per-thread scratch for WITHIN_CHANNEL backward (two planes); grows, never shrinks.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// WITHIN_CHANNEL forward, Caffe's definition: `scale = 1 + alpha * avg`, where `avg` is the
/// average of x^2 over the `local_size x local_size` window centred on each pixel (zero padding
/// of `(local_size-1)/2`, divisor `local_size^2`); `output = input * scale^-beta`. Caffe builds
/// this from AVE pooling and a power layer with shift 1, so `k` is not used.
///
/// **Overwrites** `output`.
pub fn lrn_within_forward(
    p: &LrnParams,
    g: &LrnGeometry,
    input: &[f32],
    output: &mut [f32],
) -> Result<()> {
    const K: &str = "lrn_within_forward";
    let lens = [("input", input.len()), ("output", output.len())];
    let Some(hw) = prologue(K, p, g, &lens)? else { return Ok(()) };
    let (h, w) = (g.height, g.width);
    let coeff = p.alpha / (p.local_size as f32 * p.local_size as f32);
    output.par_chunks_mut(hw).zip(input.par_chunks(hw)).for_each(|(y, x)| {
        box_sum(x, h, w, p.local_size, y, |v| v * v);
        for (yv, &xv) in y.iter_mut().zip(x) {
            *yv = xv * pow_neg(1.0 + coeff * *yv, p.beta);
        }
    });
    Ok(())
}

/// WITHIN_CHANNEL backward of [`lrn_within_forward`] (recomputes the scale).
/// **Overwrites** `grad_input`.
pub fn lrn_within_backward(
    p: &LrnParams,
    g: &LrnGeometry,
    input: &[f32],
    grad_output: &[f32],
    grad_input: &mut [f32],
) -> Result<()> {
    const K: &str = "lrn_within_backward";
    let lens = [
        ("input", input.len()),
        ("grad_output", grad_output.len()),
        ("grad_input", grad_input.len()),
    ];
    let Some(hw) = prologue(K, p, g, &lens)? else { return Ok(()) };
    let (h, w) = (g.height, g.width);
    let coeff = p.alpha / (p.local_size as f32 * p.local_size as f32);
    let ratio = 2.0 * p.beta * coeff;
    let planes =
        grad_input.par_chunks_mut(hw).zip(input.par_chunks(hw)).zip(grad_output.par_chunks(hw));
    planes.for_each(|((gx, x), gy)| {
        SCRATCH.with_borrow_mut(|buf| {
            if buf.len() < 2 * hw {
                buf.resize(2 * hw, 0.0);
            }
            let (s, t) = buf[..2 * hw].split_at_mut(hw);
            box_sum(x, h, w, p.local_size, s, |v| v * v);
            // s <- scale; t <- grad * x * scale^(-beta-1)
            for (((sv, tv), &xv), &d) in s.iter_mut().zip(t.iter_mut()).zip(x).zip(gy) {
                *sv = 1.0 + coeff * *sv;
                *tv = d * xv * pow_neg(*sv, p.beta) / *sv;
            }
            // The centred window is symmetric: the pixels whose window holds q are q's window.
            box_sum(t, h, w, p.local_size, gx, |v| v);
            for (((g, &sv), &xv), &d) in gx.iter_mut().zip(s.iter()).zip(x).zip(gy) {
                *g = d * pow_neg(sv, p.beta) - ratio * xv * *g;
            }
        });
    });
    Ok(())
}
