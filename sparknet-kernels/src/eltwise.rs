//! Caffe's Eltwise (SUM with coefficients, PROD, MAX with its mask), forward and backward, the
//! scaled copy SUM's backward (and Dropout) needs, and Concat's copies, on the rayon pool and the
//! CPU's widest vectors. The arithmetic follows Caffe's `EltwiseLayer` operation by operation,
//! so the results are its results.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::error::{Result, check_len, geometry};
use crate::simd::multiversion;

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

fn check_inputs(kernel: &'static str, inputs: &[&[f32]], len: usize) -> Result<()> {
    if inputs.is_empty() {
        return Err(geometry(kernel, "no inputs".into()));
    }
    for x in inputs {
        check_len(kernel, "inputs[i]", len, x.len())?;
    }
    Ok(())
}

/// Views a fully written `MaybeUninit` chunk as initialised values.
///
/// # Safety
/// Every element of `y` must have been written.
unsafe fn assume_init(y: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the caller guarantees every element
    // is initialised.
    unsafe { std::slice::from_raw_parts_mut(y.as_mut_ptr().cast::<f32>(), y.len()) }
}

/// Eltwise SUM: `y = coeff[0] * x[0] + coeff[1] * x[1] + ...` in Caffe's order (a coefficient
/// of 1 multiplies nothing), then `max(y, 0)` when `relu` is set (an in-place ReLU fused into
/// the layer). `y` may start uninitialised.
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) for inputs, coefficients or `y` of the
/// wrong length; [`KernelError::Geometry`](crate::KernelError::Geometry) for no inputs.
pub fn eltwise_sum(
    inputs: &[&[f32]],
    coeff: &[f32],
    relu: bool,
    y: &mut [MaybeUninit<f32>],
) -> Result<()> {
    const K: &str = "eltwise_sum";
    check_inputs(K, inputs, y.len())?;
    check_len(K, "coeff", inputs.len(), coeff.len())?;
    y.par_chunks_mut(CHUNK).enumerate().for_each(|(t, y)| {
        let r = t * CHUNK..t * CHUNK + y.len();
        scaled_row(&inputs[0][r.clone()], coeff[0], y);
        // SAFETY: `scaled_row` wrote every element of `y`.
        let y = unsafe { assume_init(y) };
        for (x, &c) in inputs[1..].iter().zip(&coeff[1..]) {
            axpy_row(&x[r.clone()], c, y);
        }
        if relu {
            relu_row(y);
        }
    });
    Ok(())
}

/// Eltwise PROD: `y = x[0] * x[1] * ...` (also Dropout's `x * mask`). `y` may start
/// uninitialised.
///
/// # Errors
/// As [`eltwise_sum`].
pub fn eltwise_prod(inputs: &[&[f32]], y: &mut [MaybeUninit<f32>]) -> Result<()> {
    const K: &str = "eltwise_prod";
    check_inputs(K, inputs, y.len())?;
    y.par_chunks_mut(CHUNK).enumerate().for_each(|(t, y)| {
        let r = t * CHUNK..t * CHUNK + y.len();
        scaled_row(&inputs[0][r.clone()], 1.0, y);
        // SAFETY: `scaled_row` wrote every element of `y`.
        let y = unsafe { assume_init(y) };
        for x in &inputs[1..] {
            mul_row(&x[r.clone()], y);
        }
    });
    Ok(())
}

/// Eltwise PROD's gradient for input `index` (Caffe's `stable_prod_grad`):
/// `dx = (product of the other inputs, in order) * dy`. `dx` may start uninitialised.
///
/// # Errors
/// As [`eltwise_sum`], and an `index` outside the inputs.
pub fn eltwise_prod_backward(
    inputs: &[&[f32]],
    index: usize,
    dy: &[f32],
    dx: &mut [MaybeUninit<f32>],
) -> Result<()> {
    const K: &str = "eltwise_prod_backward";
    check_inputs(K, inputs, dx.len())?;
    check_len(K, "dy", dx.len(), dy.len())?;
    if index >= inputs.len() {
        return Err(geometry(K, format!("index {index} of {} inputs", inputs.len())));
    }
    dx.par_chunks_mut(CHUNK).enumerate().for_each(|(t, dx)| {
        let r = t * CHUNK..t * CHUNK + dx.len();
        let mut others = inputs.iter().enumerate().filter(|&(j, _)| j != index).map(|(_, x)| x);
        match others.next() {
            None => scaled_row(&dy[r], 1.0, dx),
            Some(first) => {
                scaled_row(&first[r.clone()], 1.0, dx);
                // SAFETY: `scaled_row` wrote every element of `dx`.
                let dx = unsafe { assume_init(dx) };
                for x in others {
                    mul_row(&x[r.clone()], dx);
                }
                mul_row(&dy[r], dx);
            }
        }
    });
    Ok(())
}

/// Eltwise MAX as Caffe computes it: `y = max` of the inputs, `mask` = the input it came from
/// (between inputs 0 and 1 a tie or NaN goes to input 1, `a > b ? a : b`; later inputs replace
/// the maximum only when strictly greater). `y` may start uninitialised; `mask` is overwritten.
///
/// # Errors
/// As [`eltwise_sum`], and a `mask` of the wrong length.
pub fn eltwise_max(inputs: &[&[f32]], y: &mut [MaybeUninit<f32>], mask: &mut [u32]) -> Result<()> {
    const K: &str = "eltwise_max";
    check_inputs(K, inputs, y.len())?;
    check_len(K, "mask", y.len(), mask.len())?;
    y.par_chunks_mut(CHUNK).zip(mask.par_chunks_mut(CHUNK)).enumerate().for_each(
        |(t, (y, mask))| {
            let r = t * CHUNK..t * CHUNK + y.len();
            if inputs.len() == 1 {
                scaled_row(&inputs[0][r], 1.0, y);
                mask.fill(0);
                return;
            }
            let (a, b) = (&inputs[0][r.clone()], &inputs[1][r.clone()]);
            for (((y, m), &a), &b) in y.iter_mut().zip(mask.iter_mut()).zip(a).zip(b) {
                let first = a > b;
                y.write(if first { a } else { b });
                *m = u32::from(!first);
            }
            // SAFETY: the loop above wrote every element of `y`.
            let y = unsafe { assume_init(y) };
            for (i, x) in inputs.iter().enumerate().skip(2) {
                for ((y, m), &v) in y.iter_mut().zip(mask.iter_mut()).zip(&x[r.clone()]) {
                    if v > *y {
                        *y = v;
                        *m = i as u32;
                    }
                }
            }
        },
    );
    Ok(())
}

/// Eltwise MAX's gradient for input `index`: `dx = mask == index ? dy : 0`. `dx` may start
/// uninitialised.
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when the lengths differ.
pub fn eltwise_max_backward(
    mask: &[u32],
    index: usize,
    dy: &[f32],
    dx: &mut [MaybeUninit<f32>],
) -> Result<()> {
    const K: &str = "eltwise_max_backward";
    check_len(K, "mask", dx.len(), mask.len())?;
    check_len(K, "dy", dx.len(), dy.len())?;
    let index = index as u32;
    dx.par_chunks_mut(CHUNK).zip(dy.par_chunks(CHUNK)).zip(mask.par_chunks(CHUNK)).for_each(
        |((dx, dy), mask)| {
            for ((g, &d), &m) in dx.iter_mut().zip(dy).zip(mask) {
                g.write(if m == index { d } else { 0.0 });
            }
        },
    );
    Ok(())
}

/// `y = alpha * x` (a plain copy for `alpha = 1`): Eltwise SUM's gradient per input. `y` may
/// start uninitialised.
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when the lengths differ.
pub fn scaled_copy(x: &[f32], alpha: f32, y: &mut [MaybeUninit<f32>]) -> Result<()> {
    check_len("scaled_copy", "y", x.len(), y.len())?;
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| scaled_row(x, alpha, y));
    Ok(())
}

/// Concat's forward: each of the `outer` rows of `y` is the inputs' rows side by side (input
/// `i` of `outer * row_i` values contributes rows of `row_i`). `y` may start uninitialised.
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when an input's length is not a multiple
/// of `outer` or `y` is not the inputs' total length.
pub fn concat_forward(outer: usize, inputs: &[&[f32]], y: &mut [MaybeUninit<f32>]) -> Result<()> {
    const K: &str = "concat_forward";
    let rows = concat_rows(K, outer, inputs.iter().map(|x| x.len()))?;
    let total: usize = rows.iter().sum();
    check_len(K, "y", outer * total, y.len())?;
    if total == 0 {
        return Ok(());
    }
    y.par_chunks_mut(total).enumerate().for_each(|(o, y)| {
        let mut at = 0;
        for (x, &r) in inputs.iter().zip(&rows) {
            scaled_row(&x[o * r..(o + 1) * r], 1.0, &mut y[at..at + r]);
            at += r;
        }
    });
    Ok(())
}

/// Concat's backward: each output gets its columns of `dy`'s `outer` rows (the inverse of
/// [`concat_forward`]). The outputs may start uninitialised.
///
/// # Errors
/// As [`concat_forward`], with `dy` in `y`'s place.
pub fn concat_backward(
    outer: usize,
    dy: &[f32],
    outputs: &mut [&mut [MaybeUninit<f32>]],
) -> Result<()> {
    const K: &str = "concat_backward";
    let rows = concat_rows(K, outer, outputs.iter().map(|x| x.len()))?;
    let total: usize = rows.iter().sum();
    check_len(K, "dy", outer * total, dy.len())?;
    let starts: Vec<usize> =
        rows.iter().scan(0, |s, &r| Some(std::mem::replace(s, *s + r))).collect();
    outputs.par_iter_mut().zip(rows.par_iter().zip(starts)).for_each(|(dx, (&r, start))| {
        if r == 0 {
            return;
        }
        dx.par_chunks_mut(r).enumerate().for_each(|(o, dx)| {
            let at = o * total + start;
            scaled_row(&dy[at..at + r], 1.0, dx);
        });
    });
    Ok(())
}

fn concat_rows(
    kernel: &'static str,
    outer: usize,
    lens: impl Iterator<Item = usize>,
) -> Result<Vec<usize>> {
    lens.map(|len| {
        if outer == 0 {
            check_len(kernel, "inputs[i]", 0, len)?;
            return Ok(0);
        }
        if len % outer != 0 {
            return Err(geometry(kernel, format!("a part of {len} values is not {outer} rows")));
        }
        Ok(len / outer)
    })
    .collect()
}

multiversion! {
    /// [`scaled_body`] on the widest vectors the CPU has.
    fn scaled_row(x: &[f32], alpha: f32, y: &mut [MaybeUninit<f32>]) => scaled_body;
}

#[inline(always)] // compiled into each of `multiversion!`'s copies
fn scaled_body(x: &[f32], alpha: f32, y: &mut [MaybeUninit<f32>]) {
    if alpha == 1.0 {
        for (y, &x) in y.iter_mut().zip(x) {
            y.write(x);
        }
    } else {
        for (y, &x) in y.iter_mut().zip(x) {
            y.write(alpha * x);
        }
    }
}

multiversion! {
    /// [`axpy_body`] on the widest vectors the CPU has.
    fn axpy_row(x: &[f32], alpha: f32, y: &mut [f32]) => axpy_body;
}

#[inline(always)] // compiled into each of `multiversion!`'s copies
fn axpy_body(x: &[f32], alpha: f32, y: &mut [f32]) {
    if alpha == 1.0 {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += x;
        }
    } else {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += alpha * x;
        }
    }
}

multiversion! {
    /// [`mul_body`] on the widest vectors the CPU has.
    fn mul_row(x: &[f32], y: &mut [f32]) => mul_body;
}

#[inline(always)] // compiled into each of `multiversion!`'s copies
fn mul_body(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y *= x;
    }
}

multiversion! {
    /// [`relu_body`] on the widest vectors the CPU has.
    fn relu_row(y: &mut [f32]) => relu_body;
}

#[inline(always)] // compiled into each of `multiversion!`'s copies
fn relu_body(y: &mut [f32]) {
    for y in y.iter_mut() {
        *y = y.max(0.0);
    }
}
