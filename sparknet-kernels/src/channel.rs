//! Per-channel kernels over a blob seen as `outer x channels x inner` (NCHW with channel axis 1:
//! `outer = N`, `inner = H * W`): Caffe's BatchNorm (batch statistics, forward and backward),
//! the per-channel affine map that BatchNorm with stored statistics, Scale, Bias and their fused
//! ReLU share, and Scale's backward.
//!
//! Reductions run one channel per rayon task: a channel's rows are summed in 16 f32 lanes per
//! row and the rows in f64, and the same task then writes that channel's outputs while its rows
//! are still in cache. Elementwise maps run over chunks of whole rows.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::error::{Result, check_len, geometry};
use crate::simd::multiversion;

/// Elements per rayon task of an elementwise pass.
const CHUNK: usize = 1 << 14;

/// A blob seen as `outer x channels x inner`, row-major: element `(o, c, i)` is at
/// `(o * channels + c) * inner + i`. For Caffe's BatchNorm and the default Scale, `outer` is
/// the batch and `inner` the spatial size; for Scale with `axis`/`num_axes`, `channels` is the
/// product of the factor's axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelShape {
    /// Product of the axes before the channel axes.
    pub outer: usize,
    /// Product of the channel axes (the per-channel vectors' length).
    pub channels: usize,
    /// Product of the axes after the channel axes.
    pub inner: usize,
}

impl ChannelShape {
    /// Elements of the blob.
    pub fn len(&self) -> usize {
        self.outer * self.channels * self.inner
    }

    /// True when the blob has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per channel (`outer * inner`), the count Caffe's BatchNorm averages over.
    pub fn per_channel(&self) -> usize {
        self.outer * self.inner
    }

    fn offset(&self, o: usize, c: usize) -> usize {
        (o * self.channels + c) * self.inner
    }
}

/// The per-channel affine map `y = ((x - shift[c]) * scale[c]) * scale2[c] + bias[c]`, then
/// `max(y, 0)` when `relu` is set; absent terms are skipped (not computed as 0 or 1), so each
/// form is bit for bit the separate Caffe layers: BatchNorm with stored statistics is
/// `shift = mean, scale = 1 / sqrt(var + eps)`, Scale is `scale = gamma` (+ `bias = beta`),
/// and BatchNorm followed by Scale is `shift, scale, scale2 = gamma, bias = beta`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelAffine<'a> {
    /// Subtracted first (BatchNorm's mean).
    pub shift: Option<&'a [f32]>,
    /// Then multiplied (BatchNorm's `1 / sqrt(var + eps)`, or Scale's factor).
    pub scale: Option<&'a [f32]>,
    /// Then multiplied again (a Scale after a BatchNorm).
    pub scale2: Option<&'a [f32]>,
    /// Then added (Scale's or Bias's bias).
    pub bias: Option<&'a [f32]>,
    /// Then rectified (an in-place ReLU fused into the layer).
    pub relu: bool,
}

/// Applies [`ChannelAffine`] to `x`, writing `y` (which may start uninitialised; fully written
/// when this returns `Ok`).
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when `x`, `y` or a per-channel vector
/// disagrees with `s`.
pub fn channel_affine(
    s: &ChannelShape,
    op: &ChannelAffine<'_>,
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
) -> Result<()> {
    const K: &str = "channel_affine";
    check_len(K, "x", s.len(), x.len())?;
    check_len(K, "y", s.len(), y.len())?;
    for (what, v) in
        [("shift", op.shift), ("scale", op.scale), ("scale2", op.scale2), ("bias", op.bias)]
    {
        if let Some(v) = v {
            check_len(K, what, s.channels, v.len())?;
        }
    }
    if s.is_empty() {
        return Ok(());
    }
    let inner = s.inner;
    let rows_per_task = (CHUNK / inner).max(1);
    let pick = |v: Option<&[f32]>, c: usize, none: f32| v.map_or(none, |v| v[c]);
    y.par_chunks_mut(rows_per_task * inner)
        .zip(x.par_chunks(rows_per_task * inner))
        .enumerate()
        .for_each(|(t, (y, x))| {
            for (r, (y, x)) in y.chunks_mut(inner).zip(x.chunks(inner)).enumerate() {
                let c = (t * rows_per_task + r) % s.channels;
                let terms = Terms {
                    shift: op.shift.map(|v| v[c]),
                    scale: op.scale.map(|v| v[c]),
                    scale2: op.scale2.map(|v| v[c]),
                    bias: pick(op.bias, c, 0.0),
                    has_bias: op.bias.is_some(),
                    relu: op.relu,
                };
                affine_row(x, terms, y);
            }
        });
    Ok(())
}

/// One channel's terms of a [`ChannelAffine`].
#[derive(Clone, Copy)]
struct Terms {
    shift: Option<f32>,
    scale: Option<f32>,
    scale2: Option<f32>,
    bias: f32,
    has_bias: bool,
    relu: bool,
}

multiversion! {
    /// [`affine_body`] on the widest vectors the CPU has.
    fn affine_row(x: &[f32], t: Terms, y: &mut [MaybeUninit<f32>]) => affine_body;
}

#[inline(always)] // compiled into each of `multiversion!`'s copies
fn affine_body(x: &[f32], t: Terms, y: &mut [MaybeUninit<f32>]) {
    // One specialised loop per combination that occurs (the branches are per row, not per
    // element): BatchNorm, Scale, Scale + bias, BatchNorm + Scale + bias, each +- ReLU.
    macro_rules! pass {
        ($f:expr) => {
            if t.relu {
                for (y, &x) in y.iter_mut().zip(x) {
                    y.write(($f)(x).max(0.0));
                }
            } else {
                for (y, &x) in y.iter_mut().zip(x) {
                    y.write(($f)(x));
                }
            }
        };
    }
    let b = t.bias;
    match (t.shift, t.scale, t.scale2, t.has_bias) {
        (None, None, None, false) => pass!(|x: f32| x),
        (None, None, None, true) => pass!(|x: f32| x + b),
        (None, Some(a), None, false) => pass!(|x: f32| x * a),
        (None, Some(a), None, true) => pass!(|x: f32| x * a + b),
        (Some(m), Some(a), None, false) => pass!(|x: f32| (x - m) * a),
        (Some(m), Some(a), Some(g), false) => pass!(|x: f32| (x - m) * a * g),
        (Some(m), Some(a), Some(g), true) => pass!(|x: f32| (x - m) * a * g + b),
        (Some(m), Some(a), None, true) => pass!(|x: f32| (x - m) * a + b),
        (shift, scale, scale2, _) => {
            let (m, a, g) = (shift, scale, scale2);
            pass!(|x: f32| {
                let mut v = m.map_or(x, |m| x - m);
                if let Some(a) = a {
                    v *= a;
                }
                if let Some(g) = g {
                    v *= g;
                }
                if t.has_bias { v + b } else { v }
            })
        }
    }
}

/// A pointer to an output blob that channel tasks write in disjoint rows.
struct Out<T>(*mut T, usize);

// SAFETY: `Out` is only used to hand disjoint rows of one `&mut [T]` to rayon tasks (each
// channel's rows belong to exactly one task), so sharing the pointer never aliases a write.
unsafe impl<T: Send> Sync for Out<T> {}

impl<T> Out<T> {
    fn new(s: &mut [T]) -> Self {
        Out(s.as_mut_ptr(), s.len())
    }

    /// The row `start .. start + len`.
    ///
    /// # Safety
    /// No other live reference may overlap this row (the callers give each channel's rows to
    /// one task only).
    #[allow(clippy::mut_from_ref)] // disjointness is the caller's contract, see above
    unsafe fn row(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.1, "row {start}+{len} outside {}", self.1);
        // SAFETY: in bounds (checked above); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// Caffe's BatchNorm forward with the batch's statistics: per channel, `mean` and the biased
/// `var` over the `outer * inner` values, `inv_std = 1 / sqrt(var + eps)`, and
/// `y = (x - mean) * inv_std` (two passes for the statistics, as Caffe computes them).
/// `y` may start uninitialised.
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when a slice disagrees with `s`;
/// [`KernelError::Geometry`](crate::KernelError::Geometry) for a channel with no values.
pub fn batch_norm_forward_train(
    s: &ChannelShape,
    x: &[f32],
    eps: f32,
    y: &mut [MaybeUninit<f32>],
    mean: &mut [f32],
    var: &mut [f32],
    inv_std: &mut [f32],
) -> Result<()> {
    const K: &str = "batch_norm_forward_train";
    check_len(K, "x", s.len(), x.len())?;
    check_len(K, "y", s.len(), y.len())?;
    check_len(K, "mean", s.channels, mean.len())?;
    check_len(K, "var", s.channels, var.len())?;
    check_len(K, "inv_std", s.channels, inv_std.len())?;
    if s.channels > 0 && s.per_channel() == 0 {
        return Err(geometry(K, format!("{s:?}: no values per channel")));
    }
    let out = Out::new(y);
    let m = s.per_channel() as f64;
    mean.par_iter_mut().zip(var.par_iter_mut()).zip(inv_std.par_iter_mut()).enumerate().for_each(
        |(c, ((mean, var), inv))| {
            let rows = || (0..s.outer).map(|o| s.offset(o, c));
            let sum: f64 = rows().map(|at| f64::from(row_sum(&x[at..at + s.inner]))).sum();
            let mu = (sum / m) as f32;
            let sq: f64 = rows().map(|at| f64::from(row_sq_dev(&x[at..at + s.inner], mu))).sum();
            let v = (sq / m) as f32;
            let a = 1.0 / (v + eps).sqrt();
            (*mean, *var, *inv) = (mu, v, a);
            let t = Terms {
                shift: Some(mu),
                scale: Some(a),
                scale2: None,
                bias: 0.0,
                has_bias: false,
                relu: false,
            };
            for at in rows() {
                // SAFETY: row `(o, c)` is written by channel `c`'s task only.
                let y = unsafe { out.row(at, s.inner) };
                affine_row(&x[at..at + s.inner], t, y);
            }
        },
    );
    Ok(())
}

/// Caffe's BatchNorm backward with the batch's statistics:
/// `dx = (dy - mean(dy) - mean(dy * y) * y) * inv_std`, the means per channel over the
/// `outer * inner` values, `y` the normalised forward output. `dx` may start uninitialised.
/// (With stored statistics the gradient is `dy * inv_std`: [`channel_affine`] with `scale`.)
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when a slice disagrees with `s`.
pub fn batch_norm_backward_train(
    s: &ChannelShape,
    y: &[f32],
    dy: &[f32],
    inv_std: &[f32],
    dx: &mut [MaybeUninit<f32>],
) -> Result<()> {
    const K: &str = "batch_norm_backward_train";
    check_len(K, "y", s.len(), y.len())?;
    check_len(K, "dy", s.len(), dy.len())?;
    check_len(K, "dx", s.len(), dx.len())?;
    check_len(K, "inv_std", s.channels, inv_std.len())?;
    let out = Out::new(dx);
    let m = s.per_channel().max(1) as f64;
    (0..s.channels).into_par_iter().for_each(|c| {
        let rows = || (0..s.outer).map(|o| s.offset(o, c));
        let (mut sd, mut sdy) = (0f64, 0f64);
        for at in rows() {
            let r = at..at + s.inner;
            sd += f64::from(row_sum(&dy[r.clone()]));
            sdy += f64::from(row_dot(&dy[r.clone()], &y[r]));
        }
        let (m1, m2) = ((sd / m) as f32, (sdy / m) as f32);
        for at in rows() {
            let r = at..at + s.inner;
            // SAFETY: row `(o, c)` is written by channel `c`'s task only.
            let dx = unsafe { out.row(at, s.inner) };
            bn_backward_row(&dy[r.clone()], &y[r], m1, m2, inv_std[c], dx);
        }
    });
    Ok(())
}

/// Scale's backward: `dx = dy * scale[c]`, `dscale[c] = sum(dy * x)` and `dbias[c] = sum(dy)`
/// over each channel's values; each output only when given (`dx` may start uninitialised;
/// `dscale` and `dbias` are overwritten, not accumulated).
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when a slice disagrees with `s`.
pub fn channel_scale_backward(
    s: &ChannelShape,
    x: &[f32],
    dy: &[f32],
    scale: &[f32],
    dx: Option<&mut [MaybeUninit<f32>]>,
    dscale: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
) -> Result<()> {
    const K: &str = "channel_scale_backward";
    check_len(K, "x", s.len(), x.len())?;
    check_len(K, "dy", s.len(), dy.len())?;
    check_len(K, "scale", s.channels, scale.len())?;
    if let Some(dx) = &dx {
        check_len(K, "dx", s.len(), dx.len())?;
    }
    if let Some(d) = &dscale {
        check_len(K, "dscale", s.channels, d.len())?;
    }
    if let Some(d) = &dbias {
        check_len(K, "dbias", s.channels, d.len())?;
    }
    let out = dx.map(Out::new);
    let dscale = dscale.map(Out::new);
    let dbias = dbias.map(Out::new);
    (0..s.channels).into_par_iter().for_each(|c| {
        let (mut ds, mut db) = (0f64, 0f64);
        let t = Terms {
            shift: None,
            scale: Some(scale[c]),
            scale2: None,
            bias: 0.0,
            has_bias: false,
            relu: false,
        };
        for o in 0..s.outer {
            let at = s.offset(o, c);
            let r = at..at + s.inner;
            if dscale.is_some() {
                ds += f64::from(row_dot(&dy[r.clone()], &x[r.clone()]));
            }
            if dbias.is_some() {
                db += f64::from(row_sum(&dy[r.clone()]));
            }
            if let Some(out) = &out {
                // SAFETY: row `(o, c)` is written by channel `c`'s task only.
                let dx = unsafe { out.row(at, s.inner) };
                affine_row(&dy[r], t, dx);
            }
        }
        // SAFETY: element `c` of each per-channel output is written by task `c` only.
        unsafe {
            if let Some(d) = &dscale {
                d.row(c, 1)[0] = ds as f32;
            }
            if let Some(d) = &dbias {
                d.row(c, 1)[0] = db as f32;
            }
        }
    });
    Ok(())
}

/// BatchNorm's stored statistics: `mean = mean_sum / factor` and
/// `inv_std = 1 / sqrt(var_sum / factor + eps)` per channel, with Caffe's rule that a zero
/// `factor` gives zero statistics (Caffe's blobs hold sums scaled by the moving-average factor).
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when the vectors' lengths differ.
pub fn batch_norm_global_stats(
    mean_sum: &[f32],
    var_sum: &[f32],
    factor: f32,
    eps: f32,
    mean: &mut [f32],
    inv_std: &mut [f32],
) -> Result<()> {
    const K: &str = "batch_norm_global_stats";
    let c = mean_sum.len();
    check_len(K, "var_sum", c, var_sum.len())?;
    check_len(K, "mean", c, mean.len())?;
    check_len(K, "inv_std", c, inv_std.len())?;
    let k = if factor == 0.0 { 0.0 } else { 1.0 / factor };
    for i in 0..c {
        mean[i] = mean_sum[i] * k;
        inv_std[i] = 1.0 / (var_sum[i] * k + eps).sqrt();
    }
    Ok(())
}

/// Caffe's moving-average update of BatchNorm's blobs after a TRAIN forward:
/// `factor = factor * maf + 1`, `mean_sum = mean + maf * mean_sum`,
/// `var_sum = m / (m - 1) * var + maf * var_sum` (`m` values per channel; the unbiased
/// correction is 1 when `m` is 1), in place.
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when the vectors' lengths differ.
pub fn batch_norm_update_stats(
    mean: &[f32],
    var: &[f32],
    per_channel: usize,
    maf: f32,
    blobs: (&mut [f32], &mut [f32], &mut f32),
) -> Result<()> {
    const K: &str = "batch_norm_update_stats";
    let (mean_sum, var_sum, factor) = blobs;
    let c = mean.len();
    check_len(K, "var", c, var.len())?;
    check_len(K, "mean_sum", c, mean_sum.len())?;
    check_len(K, "var_sum", c, var_sum.len())?;
    let m = per_channel as f32;
    let correction = if per_channel > 1 { m / (m - 1.0) } else { 1.0 };
    for i in 0..c {
        mean_sum[i] = mean[i] + maf * mean_sum[i];
        var_sum[i] = correction * var[i] + maf * var_sum[i];
    }
    *factor = *factor * maf + 1.0;
    Ok(())
}

/// Lanes of the row reductions (enough for AVX-512's 16 floats).
const LANES: usize = 16;

multiversion! {
    /// Sum of a row in [`LANES`] f32 lanes.
    fn row_sum(x: &[f32]) -> f32 => row_sum_body;
}

#[inline(always)] // compiled into each of `multiversion!`'s copies
fn row_sum_body(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for ch in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += v;
    }
    acc.iter().sum()
}

multiversion! {
    /// Sum of `(x - m)^2` over a row in [`LANES`] f32 lanes.
    fn row_sq_dev(x: &[f32], m: f32) -> f32 => row_sq_dev_body;
}

#[inline(always)] // compiled into each of `multiversion!`'s copies
fn row_sq_dev_body(x: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for ch in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            let d = v - m;
            *a += d * d;
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        let d = v - m;
        *a += d * d;
    }
    acc.iter().sum()
}

multiversion! {
    /// Dot product of two rows in [`LANES`] f32 lanes.
    fn row_dot(a: &[f32], b: &[f32]) -> f32 => row_dot_body;
}

#[inline(always)] // compiled into each of `multiversion!`'s copies
fn row_dot_body(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    for ((s, &x), &y) in acc.iter_mut().zip(ca.remainder()).zip(cb.remainder()) {
        *s += x * y;
    }
    acc.iter().sum()
}

multiversion! {
    /// [`bn_backward_body`] on the widest vectors the CPU has.
    fn bn_backward_row(dy: &[f32], y: &[f32], m1: f32, m2: f32, inv: f32, dx: &mut [MaybeUninit<f32>]) => bn_backward_body;
}

#[inline(always)] // compiled into each of `multiversion!`'s copies
fn bn_backward_body(
    dy: &[f32],
    y: &[f32],
    m1: f32,
    m2: f32,
    inv: f32,
    dx: &mut [MaybeUninit<f32>],
) {
    for ((g, &d), &y) in dx.iter_mut().zip(dy).zip(y) {
        g.write((d - m1 - m2 * y) * inv);
    }
}
