//! Caffe's Softmax along one axis of a blob seen as `outer x classes x inner` (forward,
//! max-subtracted as Caffe computes it, and backward), and SoftmaxWithLoss's loss and gradient
//! from the probabilities, on the rayon pool (over the `outer` blocks).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::error::{Result, check_len, geometry};

/// A blob seen as `outer x classes x inner` (softmax along the middle axis): element
/// `(o, k, i)` is at `(o * classes + k) * inner + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftmaxShape {
    /// Product of the axes before the softmax axis.
    pub outer: usize,
    /// The softmax axis's size.
    pub classes: usize,
    /// Product of the axes after the softmax axis.
    pub inner: usize,
}

impl SoftmaxShape {
    /// Elements of the blob.
    pub fn len(&self) -> usize {
        self.outer * self.classes * self.inner
    }

    /// True when the blob has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn block(&self) -> usize {
        self.classes * self.inner
    }
}

/// Softmax along the middle axis: `y = exp(x - max) / sum(exp(x - max))`, the max and sum per
/// `(o, i)` over the classes. `y` may start uninitialised.
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when `x` or `y` disagrees with `s`.
pub fn softmax_forward(s: &SoftmaxShape, x: &[f32], y: &mut [MaybeUninit<f32>]) -> Result<()> {
    const K: &str = "softmax_forward";
    check_len(K, "x", s.len(), x.len())?;
    check_len(K, "y", s.len(), y.len())?;
    if s.is_empty() {
        return Ok(());
    }
    let (classes, inner) = (s.classes, s.inner);
    y.par_chunks_mut(s.block()).zip(x.par_chunks(s.block())).for_each(|(y, x)| {
        if inner == 1 {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (y, &x) in y.iter_mut().zip(x) {
                let e = (x - max).exp();
                sum += e;
                y.write(e);
            }
            for y in y.iter_mut() {
                // SAFETY: written in the loop above.
                let v = unsafe { y.assume_init() };
                y.write(v / sum);
            }
            return;
        }
        // Strided classes: work on whole rows of `inner` positions at a time.
        let mut max = x[..inner].to_vec();
        for k in 1..classes {
            for (m, &v) in max.iter_mut().zip(&x[k * inner..(k + 1) * inner]) {
                *m = m.max(v);
            }
        }
        let mut sum = vec![0f32; inner];
        for k in 0..classes {
            let r = k * inner..(k + 1) * inner;
            for (((y, &x), &m), s) in y[r.clone()].iter_mut().zip(&x[r]).zip(&max).zip(&mut sum) {
                let e = (x - m).exp();
                *s += e;
                y.write(e);
            }
        }
        for k in 0..classes {
            for (y, &s) in y[k * inner..(k + 1) * inner].iter_mut().zip(&sum) {
                // SAFETY: written in the loop above.
                let v = unsafe { y.assume_init() };
                y.write(v / s);
            }
        }
    });
    Ok(())
}

/// Softmax's gradient: `dx = y * (dy - sum(dy * y))`, the sum per `(o, i)` over the classes.
/// `dx` may start uninitialised.
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when a slice disagrees with `s`.
pub fn softmax_backward(
    s: &SoftmaxShape,
    y: &[f32],
    dy: &[f32],
    dx: &mut [MaybeUninit<f32>],
) -> Result<()> {
    const K: &str = "softmax_backward";
    check_len(K, "y", s.len(), y.len())?;
    check_len(K, "dy", s.len(), dy.len())?;
    check_len(K, "dx", s.len(), dx.len())?;
    if s.is_empty() {
        return Ok(());
    }
    let (classes, inner) = (s.classes, s.inner);
    let blocks = dx.par_chunks_mut(s.block()).zip(y.par_chunks(s.block()));
    blocks.zip(dy.par_chunks(s.block())).for_each(|((dx, y), dy)| {
        if inner == 1 {
            let dot: f32 = y.iter().zip(dy).map(|(&a, &b)| a * b).sum();
            for ((g, &y), &d) in dx.iter_mut().zip(y).zip(dy) {
                g.write(y * (d - dot));
            }
            return;
        }
        let mut dot = vec![0f32; inner];
        for k in 0..classes {
            let r = k * inner..(k + 1) * inner;
            for ((d, &a), &b) in dot.iter_mut().zip(&y[r.clone()]).zip(&dy[r]) {
                *d += a * b;
            }
        }
        for k in 0..classes {
            let r = k * inner..(k + 1) * inner;
            let rows = dx[r.clone()].iter_mut().zip(&y[r.clone()]).zip(&dy[r]);
            for (((g, &y), &d), &dot) in rows.zip(&dot) {
                g.write(y * (d - dot));
            }
        }
    });
    Ok(())
}

/// Reads a label stored as a float (Caffe's label blobs), checking it is a class or `ignore`.
fn label_at(
    kernel: &'static str,
    labels: &[f32],
    at: usize,
    classes: usize,
    ignore: Option<i32>,
) -> Result<Option<usize>> {
    let label = labels[at] as i32;
    if ignore == Some(label) {
        return Ok(None);
    }
    if label < 0 || label as usize >= classes {
        return Err(geometry(kernel, format!("label {label} outside [0, {classes})")));
    }
    Ok(Some(label as usize))
}

/// SoftmaxWithLoss's forward from the probabilities: the sum over the `outer * inner`
/// positions of `-ln(max(prob[label], FLT_MIN))` (accumulated in f64) and the number of
/// positions whose label is not `ignore`. The caller divides by Caffe's normaliser.
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) for `prob` or `labels` of the wrong
/// length; [`KernelError::Geometry`](crate::KernelError::Geometry) for a label outside
/// `[0, classes)` that is not `ignore`.
pub fn softmax_loss_forward(
    s: &SoftmaxShape,
    prob: &[f32],
    labels: &[f32],
    ignore: Option<i32>,
) -> Result<(f64, usize)> {
    const K: &str = "softmax_loss_forward";
    check_len(K, "prob", s.len(), prob.len())?;
    check_len(K, "labels", s.outer * s.inner, labels.len())?;
    let (mut loss, mut valid) = (0f64, 0usize);
    for o in 0..s.outer {
        for i in 0..s.inner {
            let Some(k) = label_at(K, labels, o * s.inner + i, s.classes, ignore)? else {
                continue;
            };
            let p = prob[(o * s.classes + k) * s.inner + i];
            loss -= f64::from(p.max(f32::MIN_POSITIVE).ln());
            valid += 1;
        }
    }
    Ok((loss, valid))
}

/// SoftmaxWithLoss's gradient: `dx = (prob - onehot(label)) * scale`, zero at positions whose
/// label is `ignore` (`scale` = the loss weight over Caffe's normaliser). `dx` may start
/// uninitialised.
///
/// # Errors
/// As [`softmax_loss_forward`], and a `dx` of the wrong length.
pub fn softmax_loss_backward(
    s: &SoftmaxShape,
    prob: &[f32],
    labels: &[f32],
    ignore: Option<i32>,
    scale: f32,
    dx: &mut [MaybeUninit<f32>],
) -> Result<()> {
    const K: &str = "softmax_loss_backward";
    check_len(K, "prob", s.len(), prob.len())?;
    check_len(K, "labels", s.outer * s.inner, labels.len())?;
    check_len(K, "dx", s.len(), dx.len())?;
    if s.is_empty() {
        return Ok(());
    }
    let (classes, inner) = (s.classes, s.inner);
    let blocks = dx.par_chunks_mut(s.block()).zip(prob.par_chunks(s.block())).enumerate();
    blocks.try_for_each(|(o, (dx, p))| -> Result<()> {
        for i in 0..inner {
            let label = label_at(K, labels, o * inner + i, classes, ignore)?;
            for k in 0..classes {
                let at = k * inner + i;
                let v = match label {
                    None => 0.0,
                    Some(l) if l == k => (p[at] - 1.0) * scale,
                    Some(_) => p[at] * scale,
                };
                dx[at].write(v);
            }
        }
        Ok(())
    })
}
