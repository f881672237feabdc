//! Caffe's `im2col` / `col2im` for one sample, with dilation, padding and per-axis stride.
//!
//! The column buffer has `channels * kernel_h * kernel_w` rows and `out_h * out_w` columns;
//! row `(c * kernel_h + ki) * kernel_w + kj` holds input channel `c` sampled at kernel tap
//! `(ki, kj)` for every output position (zero where the tap falls into the padding).

use crate::geometry::ConvGeometry;
use rayon::prelude::*;

/// For kernel tap offset `off` (`k * dilation - pad`), the output range `[lo, hi)` whose taps
/// `o * stride + off` fall inside `[0, len)`, and the input index of the first one.
#[inline]
fn valid_range(off: isize, stride: usize, len: usize, out: usize) -> (usize, usize, usize) {
    let s = stride as isize;
    let lo = if off >= 0 { 0 } else { ((-off + s - 1) / s) as usize };
    let room = len as isize - off;
    let hi = if room <= 0 { 0 } else { ((room + s - 1) / s) as usize };
    let hi = hi.min(out);
    let lo = lo.min(hi);
    let first = ((lo as isize * s + off).max(0) as usize).min(len);
    (lo, hi, first)
}

/// Per-tap precomputed row and column ranges.
struct Taps {
    /// `(lo, hi, first_input_row)` per `ki`.
    rows: Vec<(usize, usize, usize)>,
    /// `(lo, hi, first_input_col)` per `kj`.
    cols: Vec<(usize, usize, usize)>,
}

fn taps(g: &ConvGeometry) -> Taps {
    let (oh, ow) = (g.out_h(), g.out_w());
    let rows = (0..g.kernel_h)
        .map(|ki| {
            let off = (ki * g.dilation_h) as isize - g.pad_h as isize;
            valid_range(off, g.stride_h, g.in_h, oh)
        })
        .collect();
    let cols = (0..g.kernel_w)
        .map(|kj| {
            let off = (kj * g.dilation_w) as isize - g.pad_w as isize;
            valid_range(off, g.stride_w, g.in_w, ow)
        })
        .collect();
    Taps { rows, cols }
}

/// Fills `col` (`in_channels * kh * kw` x `out_h * out_w`) from one sample `x` (`C x H x W`).
pub(crate) fn im2col(g: &ConvGeometry, x: &[f32], col: &mut [f32]) {
    let t = taps(g);
    let (hw, per_plane) = (g.in_h * g.in_w, g.kernel_h * g.kernel_w * g.out_h() * g.out_w());
    let planes = x[..g.in_channels * hw].chunks_exact(hw);
    for (plane, rows) in planes.zip(col[..g.in_channels * per_plane].chunks_exact_mut(per_plane)) {
        im2col_plane(g, &t, plane, rows);
    }
}

/// [`im2col`] with the input channels spread over the rayon pool (for one sample on several
/// threads, where the serial copy would leave the other threads idle).
pub(crate) fn im2col_par(g: &ConvGeometry, x: &[f32], col: &mut [f32]) {
    let t = taps(g);
    let (hw, per_plane) = (g.in_h * g.in_w, g.kernel_h * g.kernel_w * g.out_h() * g.out_w());
    let planes = x[..g.in_channels * hw].par_chunks_exact(hw);
    let rows = col[..g.in_channels * per_plane].par_chunks_exact_mut(per_plane);
    planes.zip(rows).for_each(|(plane, rows)| im2col_plane(g, &t, plane, rows));
}

/// The `kh * kw` column rows of one input channel `plane` (`H x W`).
fn im2col_plane(g: &ConvGeometry, t: &Taps, plane: &[f32], rows: &mut [f32]) {
    let w = g.in_w;
    let ow = g.out_w();
    let ohw = g.out_h() * ow;
    let mut rows = rows.chunks_exact_mut(ohw);
    for &(ylo, yhi, y0) in &t.rows {
        for &(xlo, xhi, x0) in &t.cols {
            let Some(row) = rows.next() else { return };
            row[..ylo * ow].fill(0.0);
            row[yhi * ow..].fill(0.0);
            let n = xhi - xlo;
            for (r, out) in row[ylo * ow..yhi * ow].chunks_exact_mut(ow).enumerate() {
                let iy = y0 + r * g.stride_h;
                let src = &plane[iy * w..(iy + 1) * w];
                out[..xlo].fill(0.0);
                out[xhi..].fill(0.0);
                let dst = &mut out[xlo..xhi];
                if g.stride_w == 1 {
                    dst.copy_from_slice(&src[x0..x0 + n]);
                } else {
                    for (d, s) in dst.iter_mut().zip(src[x0..].iter().step_by(g.stride_w)) {
                        *d = *s;
                    }
                }
            }
        }
    }
}

/// Accumulates `col` back into one sample `x` (`C x H x W`); the caller zeroes `x` first.
pub(crate) fn col2im(g: &ConvGeometry, col: &[f32], x: &mut [f32]) {
    let (h, w) = (g.in_h, g.in_w);
    let (oh, ow) = (g.out_h(), g.out_w());
    let ohw = oh * ow;
    let t = taps(g);
    let mut rows = col[..g.in_channels * g.kernel_h * g.kernel_w * ohw].chunks_exact(ohw);
    for plane in x[..g.in_channels * h * w].chunks_exact_mut(h * w) {
        for &(ylo, yhi, y0) in &t.rows {
            for &(xlo, xhi, x0) in &t.cols {
                let Some(row) = rows.next() else { return };
                let n = xhi - xlo;
                for (r, src_row) in row[ylo * ow..yhi * ow].chunks_exact(ow).enumerate() {
                    let iy = y0 + r * g.stride_h;
                    let dst = &mut plane[iy * w..(iy + 1) * w];
                    let src = &src_row[xlo..xhi];
                    if g.stride_w == 1 {
                        for (d, s) in dst[x0..x0 + n].iter_mut().zip(src) {
                            *d += *s;
                        }
                    } else {
                        for (d, s) in dst[x0..].iter_mut().step_by(g.stride_w).zip(src) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}
