//! 3x3, stride-1 convolution by Winograd's minimal filtering F(4x4, 3x3) (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each 4x4 block of outputs ("tile") is computed from the 6x6 input patch under it:
//! `Y = A^T [ (G g G^T) ⊙ (B^T d B) ] A`, where the elementwise product over the 36 transformed
//! positions, summed over input channels, is one GEMM per position: `M[e] = U[e] V[e]` with
//! `U[e]` the transformed weights (`out x in` channels) and `V[e]` the transformed patches
//! (`in` channels `x` tiles). That is 36 multiply-adds per tile and channel pair where im2col +
//! GEMM needs 144, and no column buffer.
//!
//! The result differs from direct convolution by rounding only (the transforms use the
//! constants 1/4, 1/6, 1/12 and 1/24 and small integers); the tests bound it against a direct
//! f64 reference.
//!
//! Transforms run on [`LANES`] tiles at once (fixed-size arrays the compiler keeps in vector
//! registers, compiled for the CPU's widest vectors by `multiversion!`).

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;

use crate::blas::{MatRef, gemm_into};
use crate::conv::{Epilogue, Workspace, apply_activation, plan};
use crate::error::{Result, check_len, geometry};
use crate::geometry::ConvGeometry;
use crate::simd::multiversion;

/// Tiles transformed together.
const LANES: usize = 16;
/// One value per tile of a chunk.
type Lanes = [f32; LANES];
/// Output tile side.
const M: usize = 4;
/// Input patch side (`M + 3 - 1`).
const P: usize = 6;
/// Transformed positions per tile.
const E: usize = P * P;

/// True when `g` can run as [`conv2d_forward_winograd`] and is worth it: a 3x3 kernel, stride 1,
/// dilation 1 (any padding and groups), with at least 32 input and 8 output channels per
/// group. Each of the 36 products sums over the input channels only, so with fewer of them the
/// GEMMs are too shallow to run fast (SqueezeNet's 16-channel expand3x3 layers took 1.3x as long
/// as im2col + GEMM; its 32- to 64-channel ones 0.65-0.8x).
pub fn winograd_applicable(g: &ConvGeometry) -> bool {
    let groups = g.groups.max(1);
    (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.dilation_h, g.dilation_w)
        == (3, 3, 1, 1, 1, 1)
        && g.in_channels / groups >= MIN_IN
        && g.out_channels / groups >= 8
        && g.validate().is_ok()
}

/// The fewest input channels per group [`winograd_applicable`] accepts.
const MIN_IN: usize = 32;

/// `(tiles down, tiles across, tiles)` of one output plane.
fn tiles(g: &ConvGeometry) -> (usize, usize, usize) {
    let (th, tw) = (g.out_h().div_ceil(M), g.out_w().div_ceil(M));
    (th, tw, th * tw)
}

/// Length of [`winograd_weights`]' output: `36 x out_channels x in_channels/groups`.
pub fn winograd_weights_len(g: &ConvGeometry) -> usize {
    E * g.out_channels * (g.in_channels / g.groups.max(1))
}

/// Transforms Caffe's `[out, in/groups, 3, 3]` weights into `U = G g G^T` per output and input
/// channel, laid out per group as 36 row-major `out/groups x in/groups` matrices. **Overwrites**
/// `out` ([`winograd_weights_len`] long). Do it once per weight update.
///
/// # Errors
/// A geometry [`winograd_applicable`] rejects, or lengths that disagree with it.
pub fn winograd_weights(g: &ConvGeometry, weight: &[f32], out: &mut [f32]) -> Result<()> {
    const K: &str = "winograd_weights";
    if !winograd_applicable(g) {
        return Err(geometry(
            K,
            format!("not a 3x3 stride-1 convolution with enough channels: {g:?}"),
        ));
    }
    check_len(K, "weight", g.weight_len(), weight.len())?;
    check_len(K, "out", winograd_weights_len(g), out.len())?;
    let (kg, cg) = (g.out_channels / g.groups, g.in_channels / g.groups);
    for (grp, u) in out.chunks_exact_mut(E * kg * cg).enumerate() {
        for k in 0..kg {
            for c in 0..cg {
                let at = ((grp * kg + k) * cg + c) * 9;
                let w = &weight[at..at + 9];
                // G g: 6x3, then (G g) G^T: 6x6.
                let mut gg = [[0f32; 3]; P];
                for j in 0..3 {
                    let col = g_transform([w[j], w[3 + j], w[6 + j]]);
                    for (i, v) in col.into_iter().enumerate() {
                        gg[i][j] = v;
                    }
                }
                for (i, row) in gg.iter().enumerate() {
                    for (j, v) in g_transform(*row).into_iter().enumerate() {
                        u[((i * P + j) * kg + k) * cg + c] = v;
                    }
                }
            }
        }
    }
    Ok(())
}

/// `G x` for one 3-vector (`G` is F(4, 3)'s 6x3 kernel transform).
fn g_transform([g0, g1, g2]: [f32; 3]) -> [f32; P] {
    [
        g0 / 4.0,
        -(g0 + g1 + g2) / 6.0,
        -(g0 - g1 + g2) / 6.0,
        g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
        g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
        g2,
    ]
}

/// `B^T d` on six vectors of lanes (`B^T` is F(4, 3)'s 6x6 input transform).
#[inline(always)]
fn bt(d: &[Lanes; P]) -> [Lanes; P] {
    let mut o = [[0f32; LANES]; P];
    for l in 0..LANES {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        o[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        o[1][l] = -4.0 * (d1 + d2) + (d3 + d4);
        o[2][l] = 4.0 * (d1 - d2) + (d4 - d3);
        o[3][l] = 2.0 * (d3 - d1) + (d4 - d2);
        o[4][l] = 2.0 * (d1 - d3) + (d4 - d2);
        o[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    o
}

/// `A^T m` on six vectors of lanes (`A^T` is F(4, 3)'s 4x6 output transform).
#[inline(always)]
fn at(m: &[Lanes; P]) -> [Lanes; M] {
    let mut o = [[0f32; LANES]; M];
    for l in 0..LANES {
        let [m0, m1, m2, m3, m4, m5] = [m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]];
        let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        o[0][l] = m0 + s12 + s34;
        o[1][l] = d12 + 2.0 * d34;
        o[2][l] = s12 + 4.0 * s34;
        o[3][l] = d12 + 8.0 * d34 + m5;
    }
    o
}

/// What one sample's transforms need to know.
#[derive(Clone, Copy)]
struct Layout {
    g: ConvGeometry,
    /// Input and output channels per group.
    cg: usize,
    kg: usize,
    /// Tiles across, tiles in all.
    tw: usize,
    t: usize,
}

multiversion! {
    /// [`input_channel_body`] on the widest vectors the CPU has.
    fn input_channel(l: Layout, plane: &[f32], v: &mut [f32]) => input_channel_body;
}

/// Transforms every tile of one input channel `plane` into `v` (`36 x tiles`, position-major).
#[inline(always)]
fn input_channel_body(l: Layout, plane: &[f32], v: &mut [f32]) {
    let (h, w) = (l.g.in_h as isize, l.g.in_w as isize);
    let (ph, pw) = (l.g.pad_h as isize, l.g.pad_w as isize);
    for t0 in (0..l.t).step_by(LANES) {
        let mut d = [[[0f32; LANES]; P]; P];
        for lane in 0..LANES.min(l.t - t0) {
            let t = t0 + lane;
            let (y0, x0) = ((t / l.tw * M) as isize - ph, (t % l.tw * M) as isize - pw);
            if y0 >= 0 && x0 >= 0 && y0 + P as isize <= h && x0 + P as isize <= w {
                let base = (y0 * w + x0) as usize;
                for (i, row) in d.iter_mut().enumerate() {
                    let src = &plane[base + i * w as usize..base + i * w as usize + P];
                    for (j, &s) in src.iter().enumerate() {
                        row[j][lane] = s;
                    }
                }
            } else {
                for (i, row) in d.iter_mut().enumerate() {
                    let y = y0 + i as isize;
                    for (j, col) in row.iter_mut().enumerate() {
                        let x = x0 + j as isize;
                        let inside = (0..h).contains(&y) && (0..w).contains(&x);
                        col[lane] = if inside { plane[(y * w + x) as usize] } else { 0.0 };
                    }
                }
            }
        }
        // B^T along each patch row, then along each column.
        let rows = d.map(|row| bt(&row));
        for b in 0..P {
            let col = [rows[0][b], rows[1][b], rows[2][b], rows[3][b], rows[4][b], rows[5][b]];
            for (a, vals) in bt(&col).iter().enumerate() {
                let n = LANES.min(l.t - t0);
                v[(a * P + b) * l.t + t0..][..n].copy_from_slice(&vals[..n]);
            }
        }
    }
}

multiversion! {
    /// [`output_channel_body`] on the widest vectors the CPU has.
    fn output_channel(l: Layout, m: &[f32], k: usize, b: f32, e: Epilogue<'_>, y: &mut [MaybeUninit<f32>]) => output_channel_body;
}

/// Output channel `k` of the group (`y`: its plane) from the products `m` (36 `kg x tiles`
/// matrices), plus bias `b`, then the activation.
#[inline(always)]
fn output_channel_body(
    l: Layout,
    m: &[f32],
    k: usize,
    b: f32,
    e: Epilogue<'_>,
    y: &mut [MaybeUninit<f32>],
) {
    let (oh, ow) = (l.g.out_h(), l.g.out_w());
    let act = e.activation;
    for t0 in (0..l.t).step_by(LANES) {
        let n = LANES.min(l.t - t0);
        let mut s = [[[0f32; LANES]; P]; P];
        for (pos, lanes) in s.iter_mut().flatten().enumerate() {
            lanes[..n].copy_from_slice(&m[(pos * l.kg + k) * l.t + t0..][..n]);
        }
        // A^T along each column of the 6x6, then along each of the 4 resulting rows.
        let mut cols = [[[0f32; LANES]; M]; P];
        for (j, col) in cols.iter_mut().enumerate() {
            *col = at(&[s[0][j], s[1][j], s[2][j], s[3][j], s[4][j], s[5][j]]);
        }
        let mut out = [[[0f32; LANES]; M]; M];
        for (a, row) in out.iter_mut().enumerate() {
            *row = at(&[cols[0][a], cols[1][a], cols[2][a], cols[3][a], cols[4][a], cols[5][a]]);
            for lanes in row.iter_mut() {
                for v in lanes.iter_mut() {
                    *v += b;
                }
                apply_activation(act, lanes);
            }
        }
        for lane in 0..n {
            let t = t0 + lane;
            let (oy, ox) = (t / l.tw * M, t % l.tw * M);
            for (a, row) in out.iter().enumerate().take(oh - oy) {
                let dst = &mut y[(oy + a) * ow + ox..][..M.min(ow - ox)];
                for (bcol, d) in dst.iter_mut().enumerate() {
                    d.write(row[bcol][lane]);
                }
            }
        }
    }
}

/// Forward convolution by F(4x4, 3x3): `output[n] = act(W * input[n] + bias)` with the
/// weights given transformed ([`winograd_weights`]). Shapes as in
/// [`conv2d_forward`](crate::conv2d_forward); `output` may be uninitialised and is fully
/// written when this returns `Ok` (nothing is written on `Err`).
///
/// # Errors
/// A geometry [`winograd_applicable`] rejects, or slice lengths that disagree with it.
pub fn conv2d_forward_winograd(
    g: &ConvGeometry,
    batch: usize,
    input: &[f32],
    transformed: &[f32],
    epilogue: Epilogue<'_>,
    output: &mut [MaybeUninit<f32>],
    ws: &mut Workspace,
) -> Result<()> {
    const K: &str = "conv2d_forward_winograd";
    if !winograd_applicable(g) {
        return Err(geometry(
            K,
            format!("not a 3x3 stride-1 convolution with enough channels: {g:?}"),
        ));
    }
    let scaled = |per: usize| {
        per.checked_mul(batch).ok_or_else(|| geometry(K, format!("batch {batch} overflows")))
    };
    check_len(K, "input", scaled(g.input_len())?, input.len())?;
    check_len(K, "output", scaled(g.output_len())?, output.len())?;
    check_len(K, "transformed", winograd_weights_len(g), transformed.len())?;
    if let Some(b) = epilogue.bias {
        check_len(K, "bias", g.out_channels, b.len())?;
    }
    if batch == 0 {
        return Ok(());
    }
    let (_, tw, t) = tiles(g);
    let (cg, kg) = (g.in_channels / g.groups, g.out_channels / g.groups);
    let l = Layout { g: *g, cg, kg, tw, t };
    let per_chunk = E * t * (cg + kg);
    let p = plan(batch);
    let scratch = ws.take(p.chunks * per_chunk);
    let (in_s, out_s) = (g.input_len(), g.output_len());
    output
        .par_chunks_mut(p.per_chunk * out_s)
        .zip(input.par_chunks(p.per_chunk * in_s))
        .zip(scratch.par_chunks_mut(per_chunk))
        .for_each(|((ys, xs), scratch)| {
            let threads = match p.inner {
                Parallelism::Rayon(n) => n,
                _ => 1,
            };
            for (y, x) in ys.chunks_exact_mut(out_s).zip(xs.chunks_exact(in_s)) {
                sample(l, x, transformed, epilogue, y, scratch, threads);
            }
        });
    Ok(())
}

/// One sample, group by group: transform the input channels, 36 GEMMs, transform back.
fn sample(
    l: Layout,
    x: &[f32],
    u: &[f32],
    e: Epilogue<'_>,
    y: &mut [MaybeUninit<f32>],
    scratch: &mut [f32],
    threads: usize,
) {
    let (g, t, cg, kg) = (l.g, l.t, l.cg, l.kg);
    let (hw, ohw) = (g.in_h * g.in_w, g.out_h() * g.out_w());
    let (v, m) = scratch.split_at_mut(E * cg * t);
    let par = threads > 1;
    for grp in 0..g.groups {
        let x = &x[grp * cg * hw..(grp + 1) * cg * hw];
        let u = &u[grp * E * kg * cg..(grp + 1) * E * kg * cg];
        let y = &mut y[grp * kg * ohw..(grp + 1) * kg * ohw];
        let bias = e.bias.map(|b| &b[grp * kg..(grp + 1) * kg]);
        // V: per input channel, 36 x tiles.
        let input = |(plane, v): (&[f32], &mut [f32])| input_channel(l, plane, v);
        if par {
            x.par_chunks_exact(hw).zip(v.par_chunks_exact_mut(E * t)).for_each(input);
        } else {
            x.chunks_exact(hw).zip(v.chunks_exact_mut(E * t)).for_each(input);
        }
        // M[e] = U[e] V[e]: `kg x cg` times `cg x tiles` (V[e]'s rows are 36 x tiles apart).
        let v = &*v;
        let product = |(pos, m): (usize, &mut [f32])| {
            let lhs = MatRef::row_major(&u[pos * kg * cg..(pos + 1) * kg * cg], kg, cg);
            let rhs = MatRef { data: &v[pos * t..], rows: cg, cols: t, rs: E * t, cs: 1 };
            gemm_into(m, lhs, rhs, 1.0, false, Parallelism::None);
        };
        if par {
            m.par_chunks_exact_mut(kg * t).enumerate().for_each(product);
        } else {
            m.chunks_exact_mut(kg * t).enumerate().for_each(product);
        }
        // Y: per output channel.
        let m = &*m;
        let output = |(k, y): (usize, &mut [MaybeUninit<f32>])| {
            output_channel(l, m, k, bias.map_or(0.0, |b| b[k]), e, y);
        };
        if par {
            y.par_chunks_exact_mut(ohw).enumerate().for_each(output);
        } else {
            y.chunks_exact_mut(ohw).enumerate().for_each(output);
        }
    }
}
