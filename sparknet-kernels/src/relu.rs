//! Caffe's ReLU over whole blobs, forward and backward, on the rayon pool and the CPU's widest
//! vectors (the same formulas as [`Activation::apply`](crate::Activation::apply)).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::error::{Result, check_len};
use crate::simd::multiversion;

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// `y = x > 0 ? x : negative_slope * x` (for slope 0, `max(x, 0)`, which maps NaN to 0 as
/// candle's `relu` does). `y` may be uninitialised; it is fully written when this returns `Ok`.
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when `y` is not as long as `x`.
pub fn relu_forward(x: &[f32], negative_slope: f32, y: &mut [MaybeUninit<f32>]) -> Result<()> {
    check_len("relu_forward", "y", x.len(), y.len())?;
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| {
        forward_chunk(x, negative_slope, y);
    });
    Ok(())
}

/// `dx = dy * (x > 0 ? 1 : negative_slope)`, Caffe's ReLU gradient (`x` may be the layer's input
/// or, in place, its output: both select the same factor for `negative_slope >= 0`). `dx` may be
/// uninitialised; it is fully written when this returns `Ok`.
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when the lengths differ.
pub fn relu_backward(
    x: &[f32],
    dy: &[f32],
    negative_slope: f32,
    dx: &mut [MaybeUninit<f32>],
) -> Result<()> {
    check_len("relu_backward", "dy", x.len(), dy.len())?;
    check_len("relu_backward", "dx", x.len(), dx.len())?;
    let pieces = dx.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK));
    pieces.zip(dy.par_chunks(CHUNK)).for_each(|((dx, x), dy)| {
        backward_chunk(x, dy, negative_slope, dx);
    });
    Ok(())
}

multiversion! {
    /// [`forward_body`] on the widest vectors the CPU has.
    fn forward_chunk(x: &[f32], slope: f32, y: &mut [MaybeUninit<f32>]) => forward_body;
}

#[inline(always)] // compiled into each of `multiversion!`'s copies
fn forward_body(x: &[f32], slope: f32, y: &mut [MaybeUninit<f32>]) {
    if slope == 0.0 {
        for (y, &x) in y.iter_mut().zip(x) {
            y.write(x.max(0.0));
        }
    } else {
        for (y, &x) in y.iter_mut().zip(x) {
            y.write(if x > 0.0 { x } else { slope * x });
        }
    }
}

multiversion! {
    /// [`backward_body`] on the widest vectors the CPU has.
    fn backward_chunk(x: &[f32], dy: &[f32], slope: f32, dx: &mut [MaybeUninit<f32>]) => backward_body;
}

#[inline(always)] // compiled into each of `multiversion!`'s copies
fn backward_body(x: &[f32], dy: &[f32], slope: f32, dx: &mut [MaybeUninit<f32>]) {
    for ((g, &x), &d) in dx.iter_mut().zip(x).zip(dy) {
        g.write(d * if x > 0.0 { 1.0 } else { slope });
    }
}
