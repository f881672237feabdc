//! Caffe pooling (MAX and AVE, global, padding, ceil-mode output with Caffe's clip rule),
//! parallel over the `N x C` planes.

use crate::error::{KernelError, Result, check_len, geometry};
use crate::geometry::{check_positive, check_sizes, fits};
use crate::simd::multiversion;
use rayon::prelude::*;

/// Pooling method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolMethod {
    /// Maximum over the window (padding never wins).
    Max,
    /// Average over the window, divided by the padded window size (Caffe's rule).
    Ave,
}

/// One 2-D pooling, Caffe semantics (NCHW planes, ceil-mode output size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolGeometry {
    /// Channels per sample.
    pub channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Window height.
    pub kernel_h: usize,
    /// Window width.
    pub kernel_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Implicit padding above and below.
    pub pad_h: usize,
    /// Implicit padding left and right.
    pub pad_w: usize,
}

/// Caffe's pooled size along one axis; `clip` is true when either axis has padding.
fn pool_out(input: usize, pad: usize, kernel: usize, stride: usize, clip: bool) -> usize {
    let padded = input.saturating_add(pad.saturating_mul(2));
    let Some(room) = padded.checked_sub(kernel) else { return 0 };
    if stride == 0 {
        return 0;
    }
    let mut out = room.div_ceil(stride).saturating_add(1);
    if clip && (out - 1).saturating_mul(stride) >= input.saturating_add(pad) {
        out -= 1;
    }
    out
}

/// A window along one axis: `(start, end, divisor_extent)` where `[start, end)` is the window
/// clipped to the real input and `divisor_extent` is its extent clipped to the padded input.
#[inline]
pub(crate) fn window(
    o: usize,
    stride: usize,
    pad: usize,
    kernel: usize,
    input: usize,
) -> (usize, usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let end_padded = (start + kernel as isize).min((input + pad) as isize);
    let extent = (end_padded - start) as usize;
    let end = end_padded.min(input as isize).max(0) as usize;
    (start.max(0) as usize, end, extent)
}

impl PoolGeometry {
    /// A global pooling over the whole plane: kernel = input, stride 1, pad 0.
    pub fn global(channels: usize, in_h: usize, in_w: usize) -> Self {
        Self {
            channels,
            in_h,
            in_w,
            kernel_h: in_h,
            kernel_w: in_w,
            stride_h: 1,
            stride_w: 1,
            pad_h: 0,
            pad_w: 0,
        }
    }

    fn clips(&self) -> bool {
        self.pad_h > 0 || self.pad_w > 0
    }

    /// Output height, Caffe's rule: `ceil((in_h + 2*pad_h - kernel_h) / stride_h) + 1`, then, when
    /// the layer has any padding (`pad_h` or `pad_w`, as Caffe tests both), drop the last window if
    /// it would start at or beyond `in_h + pad_h`. Returns 0 for an invalid geometry.
    pub fn out_h(&self) -> usize {
        pool_out(self.in_h, self.pad_h, self.kernel_h, self.stride_h, self.clips())
    }

    /// Output width, same rule as [`PoolGeometry::out_h`].
    pub fn out_w(&self) -> usize {
        pool_out(self.in_w, self.pad_w, self.kernel_w, self.stride_w, self.clips())
    }

    /// Elements of one input sample (`channels * in_h * in_w`).
    pub fn input_len(&self) -> usize {
        self.channels.saturating_mul(self.in_h).saturating_mul(self.in_w)
    }

    /// Elements of one output sample (`channels * out_h * out_w`).
    pub fn output_len(&self) -> usize {
        self.channels.saturating_mul(self.out_h()).saturating_mul(self.out_w())
    }

    /// Checks positive sizes, `pad < kernel` (Caffe's check), a kernel that fits the padded input,
    /// that every window overlaps the real input, and that sizes do not overflow.
    pub fn validate(&self) -> Result<()> {
        const K: &str = "PoolGeometry";
        let fields = [
            ("channels", self.channels),
            ("in_h", self.in_h),
            ("in_w", self.in_w),
            ("kernel_h", self.kernel_h),
            ("kernel_w", self.kernel_w),
            ("stride_h", self.stride_h),
            ("stride_w", self.stride_w),
        ];
        check_positive(K, &fields, self)?;
        let big = usize::MAX / 8;
        let dims = [
            self.channels,
            self.in_h,
            self.in_w,
            self.pad_h,
            self.pad_w,
            self.kernel_h,
            self.kernel_w,
        ];
        let small = dims.iter().chain([&self.stride_h, &self.stride_w]).all(|&v| v <= big);
        check_sizes(K, small && fits(self.input_len()), self)?;
        let axes = [
            ("height", self.in_h, self.pad_h, self.kernel_h, self.stride_h, self.out_h()),
            ("width", self.in_w, self.pad_w, self.kernel_w, self.stride_w, self.out_w()),
        ];
        for (axis, input, pad, kernel, stride, out) in axes {
            if pad >= kernel {
                return Err(geometry(
                    K,
                    format!("pad {axis} {pad} must be smaller than kernel {kernel}"),
                ));
            }
            if kernel > input + 2 * pad {
                return Err(geometry(
                    K,
                    format!(
                        "kernel {axis} {kernel} is larger than the padded input {input} + 2*{pad}"
                    ),
                ));
            }
            if (out - 1) * stride >= input + pad {
                return Err(geometry(
                    K,
                    format!(
                        "the last {axis} window (start {}) lies entirely in the padding or beyond \
                         the input {input} (stride {stride} > kernel {kernel}?)",
                        (out - 1) * stride
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn check(
        &self,
        kernel: &'static str,
        batch: usize,
        io: [(&'static str, usize, bool); 2],
    ) -> Result<()> {
        self.validate()?;
        for (what, len, is_input) in io {
            let per = if is_input { self.input_len() } else { self.output_len() };
            let expected = per.checked_mul(batch).ok_or_else(|| {
                geometry(kernel, format!("batch {batch} x {what} {per} overflows"))
            })?;
            check_len(kernel, what, expected, len)?;
        }
        Ok(())
    }
}

/// Max over each window of one plane with its flat argmax (first maximum wins, as in Caffe): the
/// direct window scan.
fn max_plane_argmax(g: &PoolGeometry, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    let (ow, w) = (g.out_w(), g.in_w);
    for (py, y_row) in y.chunks_exact_mut(ow).enumerate() {
        let (hs, he, _) = window(py, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
        let rows = &x[hs * w..he * w];
        for (px, out) in y_row.iter_mut().enumerate() {
            let (ws, we, _) = window(px, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
            // Windows are never empty (validate), so start from the first tap; `>` keeps the
            // first of equal maxima.
            let (mut best, mut at) = (rows[ws], ws);
            for (r, row) in rows.chunks_exact(w).enumerate() {
                for (dx, &v) in row[ws..we].iter().enumerate() {
                    let greater = v > best;
                    best = if greater { v } else { best };
                    at = if greater { r * w + ws + dx } else { at };
                }
            }
            *out = best;
            arg[py * ow + px] = (hs * w + at) as u32;
        }
    }
}

multiversion! {
    /// [`max_plane_values`] on the widest vectors the CPU has.
    fn max_values(g: &PoolGeometry, x: &[f32], y: &mut [f32], s: &mut MaxScratch) => max_plane_values;
}

/// Max over each window of one plane without the argmax (inference): separable, first the
/// maximum of every input column over the window's rows (a vectorised pass over whole rows),
/// then the maximum over each window's columns of those. Exactly the values of the window scan,
/// which keeps its first tap and replaces it by any greater one: NaN taps never win, and a NaN
/// first tap is never replaced. So both passes take the maximum over non-NaN values, and a
/// window whose first tap is NaN gives NaN. (With the argmax, mixed f32/u32 selects compile to
/// branches, which on real activations made a separable version slower than the scan, so that
/// one stays direct.)
#[inline(always)] // compiled into each of `multiversion!`'s copies
fn max_plane_values(g: &PoolGeometry, x: &[f32], y: &mut [f32], s: &mut MaxScratch) {
    let (ow, w) = (g.out_w(), g.in_w);
    s.prepare(g);
    for (py, y_row) in y.chunks_exact_mut(ow).enumerate() {
        let (hs, he, _) = window(py, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
        s.cur.copy_from_slice(&x[hs * w..(hs + 1) * w]);
        for r in hs + 1..he {
            // Written to the other buffer: `*m = if v > *m { v } else { *m }` in place becomes
            // a conditional store that does not vectorise.
            let rows = s.next.iter_mut().zip(s.cur.iter().zip(&x[r * w..(r + 1) * w]));
            for (n, (&m, &v)) in rows {
                *n = if v > m || m.is_nan() { v } else { m };
            }
            std::mem::swap(&mut s.cur, &mut s.next);
        }
        s.columns(g, &x[hs * w..(hs + 1) * w], y_row);
    }
}

/// Per-thread scratch of [`max_plane_values`]: the column maxima of the current window rows
/// (two buffers, written alternately), their stride phases, and the horizontal windows.
#[derive(Default)]
struct MaxScratch {
    cur: Vec<f32>,
    next: Vec<f32>,
    /// `cur` split by column modulo `stride_w`: phase `r` holds columns `r, r + s, r + 2s, ...`
    /// (each phase padded to the same length), so a window tap is a contiguous run over outputs.
    phases: Vec<f32>,
    /// The same split of the window's first input row (for the NaN rule).
    first: Vec<f32>,
    acc: Vec<f32>,
    tmp: Vec<f32>,
    /// `(start, end)` of each output column's window, clipped to the input.
    windows: Vec<(usize, usize)>,
    /// Outputs `[lo, hi)` whose window lies wholly inside the input.
    interior: (usize, usize),
    /// Length of one phase.
    phase_len: usize,
}

impl MaxScratch {
    /// Sizes the buffers and computes the column windows for `g` (cheap when unchanged).
    #[inline(always)] // compiled into each of `multiversion!`'s copies
    fn prepare(&mut self, g: &PoolGeometry) {
        let (ow, w, sw) = (g.out_w(), g.in_w, g.stride_w);
        self.cur.resize(w, 0.0);
        self.next.resize(w, 0.0);
        self.windows.clear();
        self.windows.extend((0..ow).map(|px| {
            let (ws, we, _) = window(px, sw, g.pad_w, g.kernel_w, w);
            (ws, we)
        }));
        // Interior: px * sw >= pad_w and px * sw - pad_w + kernel_w <= w.
        let lo = g.pad_w.div_ceil(sw).min(ow);
        let hi = if w + g.pad_w >= g.kernel_w {
            ((w + g.pad_w - g.kernel_w) / sw + 1).min(ow)
        } else {
            0
        };
        self.interior = (lo, hi.max(lo));
        self.phase_len = w.div_ceil(sw);
        self.phases.resize(sw * self.phase_len, 0.0);
        self.first.resize(sw * self.phase_len, 0.0);
        let n = self.interior.1 - self.interior.0;
        self.acc.resize(n, 0.0);
        self.tmp.resize(n, 0.0);
    }

    /// One output row from the column maxima in `cur`; `first` is the window's first input row.
    /// Each output keeps its first tap and takes any greater later tap, skipping NaN (as the
    /// vertical pass did), then is NaN when the window's first tap (top left) is NaN.
    #[inline(always)] // compiled into each of `multiversion!`'s copies
    fn columns(&mut self, g: &PoolGeometry, first: &[f32], y_row: &mut [f32]) {
        let (lo, hi) = self.interior;
        for px in (0..lo).chain(hi..y_row.len()) {
            let (ws, we) = self.windows[px];
            let mut best = self.cur[ws];
            for &v in &self.cur[ws + 1..we] {
                best = if v > best || best.is_nan() { v } else { best };
            }
            y_row[px] = if first[ws].is_nan() { first[ws] } else { best };
        }
        if lo == hi {
            return;
        }
        let (sw, pl) = (g.stride_w, self.phase_len);
        split_phases(&self.cur, sw, pl, &mut self.phases);
        split_phases(first, sw, pl, &mut self.first);
        // Output px's tap j reads column px * sw - pad_w + j = (lo + i) * sw + d with
        // d = lo * sw - pad_w + j >= 0: phase d % sw, element i + d / sw.
        let base = lo * sw - g.pad_w;
        let tap = |j: usize| {
            let d = base + j;
            let start = (d % sw) * pl + d / sw;
            start..start + (hi - lo)
        };
        self.acc.copy_from_slice(&self.phases[tap(0)]);
        for j in 1..g.kernel_w {
            let pairs = self.tmp.iter_mut().zip(self.acc.iter().zip(&self.phases[tap(j)]));
            for (t, (&b, &v)) in pairs {
                *t = if v > b || b.is_nan() { v } else { b };
            }
            std::mem::swap(&mut self.acc, &mut self.tmp);
        }
        let outs = y_row[lo..hi].iter_mut().zip(self.acc.iter().zip(&self.first[tap(0)]));
        for (out, (&best, &f)) in outs {
            *out = if f.is_nan() { f } else { best };
        }
    }
}

/// Splits `row` by index modulo `stride` into `out`: phase `r` (at `r * len`) holds
/// `row[r], row[r + stride], ...`; the unused tail of a phase is left as it was.
#[inline(always)] // compiled into each of `multiversion!`'s copies
fn split_phases(row: &[f32], stride: usize, len: usize, out: &mut [f32]) {
    if stride == 1 {
        out[..row.len()].copy_from_slice(row);
        return;
    }
    if stride == 2 {
        // The common case (3x3/2 and 2x2/2 windows), as one loop the compiler vectorises.
        let (even, odd) = out.split_at_mut(len);
        for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2)) {
            *e = pair[0];
            *o = pair[1];
        }
        if row.len() % 2 == 1 {
            even[row.len() / 2] = row[row.len() - 1];
        }
        return;
    }
    let groups = row.chunks_exact(stride);
    let tail = groups.remainder();
    for (i, group) in groups.enumerate() {
        for (r, &v) in group.iter().enumerate() {
            out[r * len + i] = v;
        }
    }
    let i = row.len() / stride;
    for (r, &v) in tail.iter().enumerate() {
        out[r * len + i] = v;
    }
}

/// Sum over the real-input part of each window divided by the padded-window size.
fn ave_plane(g: &PoolGeometry, x: &[f32], y: &mut [f32]) {
    let (ow, w) = (g.out_w(), g.in_w);
    for (py, y_row) in y.chunks_exact_mut(ow).enumerate() {
        let (hs, he, eh) = window(py, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
        let rows = &x[hs * w..he * w];
        for (px, out) in y_row.iter_mut().enumerate() {
            let (ws, we, ew) = window(px, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
            let sum: f32 = rows.chunks_exact(w).map(|row| row[ws..we].iter().sum::<f32>()).sum();
            *out = sum / (eh * ew) as f32;
        }
    }
}

/// Forward pooling over `batch x channels` planes. **Overwrites** `output` (and `argmax`).
///
/// MAX writes each window's maximum and, when `argmax` is given (same length as `output`), the
/// flat index `h * in_w + w` of the maximum within its plane (the first maximum wins, as in
/// Caffe). AVE divides the sum over the real-input part of the window by the size of the window
/// clipped to the padded input `[-pad, in + pad)` (Caffe's divisor); `argmax` must be `None`.
pub fn pool2d_forward(
    g: &PoolGeometry,
    batch: usize,
    method: PoolMethod,
    input: &[f32],
    output: &mut [f32],
    argmax: Option<&mut [u32]>,
) -> Result<()> {
    const K: &str = "pool2d_forward";
    g.check(K, batch, [("input", input.len(), true), ("output", output.len(), false)])?;
    if let Some(a) = &argmax {
        check_len(K, "argmax", output.len(), a.len())?;
        if g.in_h * g.in_w > u32::MAX as usize {
            return Err(geometry(
                K,
                format!("plane {}x{} too large for u32 argmax", g.in_h, g.in_w),
            ));
        }
        if method == PoolMethod::Ave {
            return Err(KernelError::MissingArgument {
                kernel: K,
                reason: "argmax is only produced by MAX pooling; pass None for AVE",
            });
        }
    }
    let (ip, op) = (g.in_h * g.in_w, g.out_h() * g.out_w());
    if batch == 0 || op == 0 {
        return Ok(());
    }
    let planes = output.par_chunks_mut(op).zip(input.par_chunks(ip));
    match (method, argmax) {
        (PoolMethod::Max, Some(a)) => {
            planes.zip(a.par_chunks_mut(op)).for_each(|((y, x), a)| max_plane_argmax(g, x, y, a))
        }
        (PoolMethod::Max, None) => {
            planes.for_each_init(MaxScratch::default, |s, (y, x)| max_values(g, x, y, s))
        }
        (PoolMethod::Ave, _) => planes.for_each(|(y, x)| ave_plane(g, x, y)),
    }
    Ok(())
}

/// Backward pooling. **Overwrites** `grad_input`.
///
/// MAX routes each output gradient to the input position recorded in `argmax` (required: the
/// forward pass's argmax; gradients of windows sharing a maximum add up). AVE spreads each output
/// gradient divided by the padded-window size over the real-input part of its window.
pub fn pool2d_backward(
    g: &PoolGeometry,
    batch: usize,
    method: PoolMethod,
    grad_output: &[f32],
    argmax: Option<&[u32]>,
    grad_input: &mut [f32],
) -> Result<()> {
    const K: &str = "pool2d_backward";
    let io = [("grad_input", grad_input.len(), true), ("grad_output", grad_output.len(), false)];
    g.check(K, batch, io)?;
    let (ip, op) = (g.in_h * g.in_w, g.out_h() * g.out_w());
    let planes = grad_input.par_chunks_mut(ip).zip(grad_output.par_chunks(op.max(1)));
    match method {
        PoolMethod::Max => {
            let a = argmax.ok_or(KernelError::MissingArgument {
                kernel: K,
                reason: "MAX pooling backward needs the argmax written by pool2d_forward",
            })?;
            check_len(K, "argmax", grad_output.len(), a.len())?;
            if let Some(bad) = a.iter().find(|&&i| i as usize >= ip) {
                return Err(geometry(K, format!("argmax {bad} is outside the {ip}-element plane")));
            }
            planes.zip(a.par_chunks(op.max(1))).for_each(|((gx, gy), a)| {
                gx.fill(0.0);
                for (&i, &d) in a.iter().zip(gy) {
                    gx[i as usize] += d;
                }
            });
        }
        PoolMethod::Ave => planes.for_each(|(gx, gy)| {
            gx.fill(0.0);
            let (oh, ow, w) = (g.out_h(), g.out_w(), g.in_w);
            for py in 0..oh {
                let (hs, he, eh) = window(py, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
                for px in 0..ow {
                    let (ws, we, ew) = window(px, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
                    let d = gy[py * ow + px] / (eh * ew) as f32;
                    for iy in hs..he {
                        gx[iy * w + ws..iy * w + we].iter_mut().for_each(|v| *v += d);
                    }
                }
            }
        }),
    }
    Ok(())
}
