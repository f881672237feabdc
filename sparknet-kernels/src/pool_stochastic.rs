//! Caffe's STOCHASTIC pooling (Zeiler and Fergus, 2013) on the CPU, parallel over the `N x C`
//! planes.
//!
//! BVLC Caffe implements it only on the GPU (`pooling_layer.cu`: `StoPoolForwardTrain`,
//! `StoPoolForwardTest`, `StoPoolBackward`; the CPU path is `NOT_IMPLEMENTED`); these kernels
//! follow the GPU code step for step:
//! - TRAIN: each window draws one of its elements with probability proportional to its value.
//!   The caller supplies one uniform `u` in `[0, 1)` per output (Caffe's `rand_idx_`, filled by
//!   `caffe_gpu_rng_uniform`); the kernel sums the window in row-major order, sets the threshold
//!   `u * sum` and picks the first element whose running sum is `>=` the threshold. The output is
//!   that element's value and its flat index `h * in_w + w` within the plane is recorded; backward
//!   routes each output gradient to it.
//! - TEST: the probability-weighted average `sum(x * x) / (FLT_MIN + sum(x))` over the window.
//!
//! Activations are assumed non-negative (Caffe's precondition; STOCHASTIC pooling follows a
//! ReLU). Outside that domain the kernels stay defined and never panic: TRAIN applies the same
//! rule, and when no running sum reaches the threshold (possible with negative or NaN values)
//! it picks the window's last element.
//!
//! Caffe rejects padding for STOCHASTIC pooling ("Padding implemented only for average and max
//! pooling"), so these kernels require `pad_h == pad_w == 0`; the output size is Caffe's ceil
//! rule ([`PoolGeometry::out_h`]) and windows are clipped to the input.

use crate::error::{Result, check_len, geometry};
use crate::pool::{PoolGeometry, PoolMethod, pool2d_backward, window};
use rayon::prelude::*;

/// Rejects padding (Caffe's rule) and checks the geometry and the lengths of `io`.
fn check(
    kernel: &'static str,
    g: &PoolGeometry,
    batch: usize,
    io: [(&'static str, usize, bool); 2],
) -> Result<()> {
    if g.pad_h != 0 || g.pad_w != 0 {
        return Err(geometry(
            kernel,
            format!(
                "STOCHASTIC pooling has no padding (Caffe's rule), got pad {}x{}",
                g.pad_h, g.pad_w
            ),
        ));
    }
    g.check(kernel, batch, io)
}

/// The window of output `o` of a plane: rows `hs..he`, columns `ws..we` (no padding).
#[inline]
fn bounds(g: &PoolGeometry, o: usize) -> (usize, usize, usize, usize) {
    let ow = g.out_w();
    let (hs, he, _) = window(o / ow, g.stride_h, 0, g.kernel_h, g.in_h);
    let (ws, we, _) = window(o % ow, g.stride_w, 0, g.kernel_w, g.in_w);
    (hs, he, ws, we)
}

/// `(FLT_MIN + sum(x), sum(x * x))` over a window, accumulated in row-major order as Caffe does.
#[inline]
fn sums(x: &[f32], w: usize, (hs, he, ws, we): (usize, usize, usize, usize)) -> (f32, f32) {
    let (mut s1, mut s2) = (f32::MIN_POSITIVE, 0f32);
    for r in hs..he {
        for &v in &x[r * w + ws..r * w + we] {
            s1 += v;
            s2 += v * v;
        }
    }
    (s1, s2)
}

fn train_plane(g: &PoolGeometry, x: &[f32], u: &[f32], y: &mut [f32], idx: &mut [u32]) {
    let w = g.in_w;
    for (o, ((y, idx), &u)) in y.iter_mut().zip(idx.iter_mut()).zip(u).enumerate() {
        let (hs, he, ws, we) = bounds(g, o);
        let mut sum = 0f32;
        for r in hs..he {
            sum += x[r * w + ws..r * w + we].iter().sum::<f32>();
        }
        let thres = u * sum;
        // Windows are never empty (validate); the last element is the fallback for inputs
        // outside Caffe's domain.
        let mut pick = (he - 1) * w + we - 1;
        let mut acc = 0f32;
        'find: for r in hs..he {
            for c in ws..we {
                acc += x[r * w + c];
                if acc >= thres {
                    pick = r * w + c;
                    break 'find;
                }
            }
        }
        *y = x[pick];
        *idx = pick as u32;
    }
}

/// STOCHASTIC pooling, TRAIN: samples one element per window. **Overwrites** `output` and
/// `index`.
///
/// `uniforms` holds one draw in `[0, 1)` per output (same length as `output`), from the
/// caller's seeded generator, so the result is a pure function of the inputs (and independent
/// of the thread count). `index` receives the flat index `h * in_w + w` of each sampled
/// element within its plane, as MAX pooling's argmax; [`stochastic_pool_backward_train`] takes
/// it back.
///
/// # Errors
/// Padding, an invalid geometry, wrong lengths, a plane too large for `u32` indices.
pub fn stochastic_pool_forward_train(
    g: &PoolGeometry,
    batch: usize,
    input: &[f32],
    uniforms: &[f32],
    output: &mut [f32],
    index: &mut [u32],
) -> Result<()> {
    const K: &str = "stochastic_pool_forward_train";
    check(K, g, batch, [("input", input.len(), true), ("output", output.len(), false)])?;
    check_len(K, "uniforms", output.len(), uniforms.len())?;
    check_len(K, "index", output.len(), index.len())?;
    if g.in_h * g.in_w > u32::MAX as usize {
        return Err(geometry(K, format!("plane {}x{} too large for u32 indices", g.in_h, g.in_w)));
    }
    let (ip, op) = (g.in_h * g.in_w, g.out_h() * g.out_w());
    if batch == 0 || op == 0 {
        return Ok(());
    }
    output
        .par_chunks_mut(op)
        .zip(index.par_chunks_mut(op))
        .zip(input.par_chunks(ip).zip(uniforms.par_chunks(op)))
        .for_each(|((y, idx), (x, u))| train_plane(g, x, u, y, idx));
    Ok(())
}

/// STOCHASTIC pooling, TEST: `sum(x * x) / (FLT_MIN + sum(x))` per window (Caffe's
/// `StoPoolForwardTest`; `FLT_MIN` keeps an all-zero window at 0). **Overwrites** `output`.
///
/// # Errors
/// Padding, an invalid geometry, wrong lengths.
pub fn stochastic_pool_forward_test(
    g: &PoolGeometry,
    batch: usize,
    input: &[f32],
    output: &mut [f32],
) -> Result<()> {
    const K: &str = "stochastic_pool_forward_test";
    check(K, g, batch, [("input", input.len(), true), ("output", output.len(), false)])?;
    let (ip, op) = (g.in_h * g.in_w, g.out_h() * g.out_w());
    if batch == 0 || op == 0 {
        return Ok(());
    }
    output.par_chunks_mut(op).zip(input.par_chunks(ip)).for_each(|(y, x)| {
        for (o, y) in y.iter_mut().enumerate() {
            let (s1, s2) = sums(x, g.in_w, bounds(g, o));
            *y = s2 / s1;
        }
    });
    Ok(())
}

/// Backward of [`stochastic_pool_forward_train`]: each output gradient goes to the element its
/// window sampled (`index` from the forward pass; windows that sampled the same element add
/// up), as Caffe's `StoPoolBackward`. **Overwrites** `grad_input`.
///
/// # Errors
/// Padding, an invalid geometry, wrong lengths, an index outside its plane.
pub fn stochastic_pool_backward_train(
    g: &PoolGeometry,
    batch: usize,
    grad_output: &[f32],
    index: &[u32],
    grad_input: &mut [f32],
) -> Result<()> {
    const K: &str = "stochastic_pool_backward_train";
    let io = [("grad_input", grad_input.len(), true), ("grad_output", grad_output.len(), false)];
    check(K, g, batch, io)?;
    // Routing by a recorded index is exactly MAX pooling's backward.
    pool2d_backward(g, batch, PoolMethod::Max, grad_output, Some(index), grad_input)
}

/// Backward of [`stochastic_pool_forward_test`]: the exact derivative of the TEST output,
/// `dy/dx_i = (2 * x_i - y) / (FLT_MIN + sum(x))` for every element `i` of the window.
/// **Overwrites** `grad_input`.
///
/// Caffe has no such gradient (its backward always routes through the last TRAIN sample); this
/// one keeps a TEST-phase net differentiable and agrees with finite differences.
///
/// # Errors
/// Padding, an invalid geometry, wrong lengths.
pub fn stochastic_pool_backward_test(
    g: &PoolGeometry,
    batch: usize,
    input: &[f32],
    grad_output: &[f32],
    grad_input: &mut [f32],
) -> Result<()> {
    const K: &str = "stochastic_pool_backward_test";
    let io = [("grad_input", grad_input.len(), true), ("grad_output", grad_output.len(), false)];
    check(K, g, batch, io)?;
    check_len(K, "input", grad_input.len(), input.len())?;
    let (ip, op, w) = (g.in_h * g.in_w, g.out_h() * g.out_w(), g.in_w);
    grad_input
        .par_chunks_mut(ip)
        .zip(input.par_chunks(ip))
        .zip(grad_output.par_chunks(op.max(1)))
        .for_each(|((gx, x), gy)| {
            gx.fill(0.0);
            for (o, &dy) in gy.iter().enumerate().take(op) {
                let b @ (hs, he, ws, we) = bounds(g, o);
                let (s1, s2) = sums(x, w, b);
                let (y, d) = (s2 / s1, dy / s1);
                for r in hs..he {
                    let row = r * w + ws..r * w + we;
                    for (gv, &v) in gx[row.clone()].iter_mut().zip(&x[row]) {
                        *gv += d * (2.0 * v - y);
                    }
                }
            }
        });
    Ok(())
}
