//! 2-D convolution with Caffe semantics: im2col + one GEMM per sample and group.

use crate::blas::{MatRef, gemm_into, gemm_into_colmajor, gemm_strided, parallelism};
use crate::error::{Result, check_len, geometry};
use crate::geometry::ConvGeometry;
use crate::im2col::{col2im, im2col, im2col_par};
use crate::simd::multiversion;
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Reusable scratch space (im2col column buffers and per-thread partial weight gradients).
///
/// It grows to the largest size a call needs and never shrinks, so after the first call of a
/// layer the kernels allocate nothing. Keep one per layer (or share one between layers that run
/// one after another: the contents do not carry over between calls).
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    buf: Vec<f32>,
}

impl Workspace {
    /// An empty workspace (allocates on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Scratch floats currently held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing has been allocated yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The first `len` scratch floats, growing the buffer when needed.
    pub(crate) fn take(&mut self, len: usize) -> &mut [f32] {
        if self.buf.len() < len {
            self.buf.resize(len, 0.0);
        }
        &mut self.buf[..len]
    }
}

/// How a batch is split over the rayon pool.
pub(crate) struct Plan {
    /// Samples per parallel chunk.
    pub(crate) per_chunk: usize,
    /// Number of chunks (each with its own scratch).
    pub(crate) chunks: usize,
    /// GEMM parallelism inside one chunk.
    pub(crate) inner: Parallelism,
}

/// Per-sample parallelism when there are at least two samples and two threads; otherwise one
/// sample at a time with a multithreaded GEMM.
pub(crate) fn plan(batch: usize) -> Plan {
    let threads = rayon::current_num_threads().max(1);
    if batch >= 2 && threads > 1 {
        let per_chunk = batch.div_ceil(threads.min(batch));
        let chunks = batch.div_ceil(per_chunk);
        Plan { per_chunk, chunks, inner: parallelism(threads / chunks) }
    } else {
        Plan { per_chunk: batch.max(1), chunks: 1, inner: parallelism(threads) }
    }
}

/// Checks the geometry and the batch-scaled lengths of an input- and an output-shaped slice.
fn check_io(
    kernel: &'static str,
    g: &ConvGeometry,
    batch: usize,
    input: (&'static str, usize),
    output: (&'static str, usize),
    weight: usize,
) -> Result<()> {
    g.validate()?;
    let scaled = |per: usize, what: &str| {
        per.checked_mul(batch)
            .ok_or_else(|| geometry(kernel, format!("batch {batch} x {what} {per} overflows")))
    };
    check_len(kernel, input.0, scaled(g.input_len(), input.0)?, input.1)?;
    check_len(kernel, output.0, scaled(g.output_len(), output.0)?, output.1)?;
    check_len(kernel, "weight", g.weight_len(), weight)
}

/// An elementwise function [`conv2d_forward_with`] applies to the output after the bias, band by
/// band while the output is still in cache (Caffe runs it as a separate in-place layer, which
/// reads and writes the whole blob once more).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Activation {
    /// The output as is.
    #[default]
    Identity,
    /// Caffe's ReLU: `y > 0 ? y : negative_slope * y` (for slope 0, `max(y, 0)`, which maps
    /// NaN to 0 as candle's `relu` does).
    Relu {
        /// Caffe's `relu_param.negative_slope`.
        negative_slope: f32,
    },
}

impl Activation {
    /// Applies the function to every element of `y` in place.
    pub fn apply(self, y: &mut [f32]) {
        if self != Activation::Identity {
            activate(self, y);
        }
    }
}

multiversion! {
    /// [`apply_activation`] on the widest vectors the CPU has.
    fn activate(act: Activation, y: &mut [f32]) => apply_activation;
}

#[inline(always)] // compiled into each of `multiversion!`'s copies
pub(crate) fn apply_activation(act: Activation, y: &mut [f32]) {
    match act {
        Activation::Identity => {}
        Activation::Relu { negative_slope: 0.0 } => {
            for v in y {
                *v = v.max(0.0);
            }
        }
        Activation::Relu { negative_slope } => {
            for v in y {
                *v = if *v > 0.0 { *v } else { negative_slope * *v };
            }
        }
    }
}

/// What [`conv2d_forward_with`] adds to `W * im2col(x)`: an optional bias per output channel,
/// then an [`Activation`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Epilogue<'a> {
    /// One value per output channel (`out_channels` long), or none.
    pub bias: Option<&'a [f32]>,
    /// Applied after the bias.
    pub activation: Activation,
}

/// The output of one sample and group, shared by the tasks that each write one tile of it.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut MaybeUninit<f32>,
    /// Columns (output positions) per row (output channel).
    cols: usize,
}

// SAFETY: `Out` is only used by `product_tiles`, whose tasks write pairwise disjoint tiles of
// the buffer it points to while the caller's `&mut` borrow of that buffer is held.
unsafe impl Send for Out {}
// SAFETY: as above.
unsafe impl Sync for Out {}

impl Out {
    /// The address of element `(r, c)` (a method, so closures capture the whole `Out`, which
    /// is `Send`, rather than its raw pointer field).
    fn at(&self, r: usize, c: usize) -> *mut MaybeUninit<f32> {
        self.ptr.wrapping_add(r * self.cols + c)
    }
}

/// Output floats per tile: about a quarter of a core's L2, so the bias fill, the GEMM's
/// accumulation and the activation all find the tile in cache.
const TILE_FLOATS: usize = 32 * 1024;

/// The fewest rows or columns a tile has.
const TILE_MIN: usize = 16;

/// `y = act(w * rhs + bias)` (`y` is `w.rows x rhs.cols`, row-major, written without being
/// read, so it may start uninitialised), in tiles of about
/// [`TILE_FLOATS`] outputs, run on the rayon pool when `threads > 1`.
///
/// The split is along the longer side of `y`: bands of output channels when there are more
/// channels than positions (each tile then packs only its rows of the weights), blocks of
/// columns otherwise (each packs only its columns of `rhs`). Every element gets its bias first
/// and the GEMM accumulates onto it, so the result is bit-identical to adding it afterwards.
fn product_tiles(
    y: &mut [MaybeUninit<f32>],
    w: &[f32],
    rhs: MatRef<'_>,
    bias: Option<&[f32]>,
    act: Activation,
    threads: usize,
) {
    let (k, n) = (rhs.rows, rhs.cols);
    let m = y.len() / n.max(1);
    if m == 0 || n == 0 {
        return;
    }
    let by_rows = m > n;
    let long = if by_rows { m } else { n };
    let short = if by_rows { n } else { m };
    let parts = (m * n).div_ceil(TILE_FLOATS).max(threads).min(long.div_ceil(TILE_MIN)).max(1);
    let step = long.div_ceil(parts);
    let tiles = long.div_ceil(step);
    let out = Out { ptr: y.as_mut_ptr(), cols: n };
    let tile = |t: usize| {
        let (lo, hi) = (t * step, ((t + 1) * step).min(long));
        let (r0, r1, c0, c1) = if by_rows { (lo, hi, 0, short) } else { (0, short, lo, hi) };
        let lhs = MatRef::row_major(&w[r0 * k..r1 * k], r1 - r0, k);
        let cols = MatRef { data: &rhs.data[c0 * rhs.cs..], rows: k, cols: c1 - c0, ..rhs };
        // SAFETY: tile `t` covers rows r0..r1 and columns c0..c1 of the `m x n` buffer `y` (still mutably borrowed by this function); tiles of one call are disjoint
        // (consecutive ranges along one side, the whole other side), so no two tasks touch the
        // same element, and every row segment formed below lies inside `y`. Without a bias
        // the GEMM overwrites the tile without reading it; with one, the fill initialises it
        // first. Either way the tile is initialised before it is viewed as `f32` for `act`.
        unsafe {
            let at = out.at(r0, c0);
            let row = |i: usize| std::slice::from_raw_parts_mut(at.add(i * out.cols), c1 - c0);
            if let Some(b) = bias {
                for (i, &b) in b[r0..r1].iter().enumerate() {
                    row(i).fill(MaybeUninit::new(b));
                }
            }
            gemm_strided(at.cast::<f32>(), out.cols, lhs, cols, bias.is_some());
            if act != Activation::Identity {
                for i in 0..r1 - r0 {
                    let row = std::slice::from_raw_parts_mut(at.add(i * out.cols).cast(), c1 - c0);
                    act.apply(row);
                }
            }
        }
    };
    if threads > 1 && tiles > 1 {
        (0..tiles).into_par_iter().for_each(tile);
    } else {
        (0..tiles).for_each(tile);
    }
}

/// `y = act(W * im2col(x) + bias)` for one sample. With several threads (`par`), the sample
/// itself is split: im2col over input channels, then the product in tiles over the threads,
/// bias and activation included, so no serial pass is left.
fn forward_sample(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    epi: Epilogue<'_>,
    y: &mut [MaybeUninit<f32>],
    col: &mut [f32],
    par: Parallelism,
) {
    let (mg, kg, ohw) = g.group_dims();
    let threads = match par {
        Parallelism::Rayon(t) => t.max(1),
        _ => 1,
    };
    let src: &[f32] = match (g.is_pointwise(), threads > 1) {
        (true, _) => x,
        (false, true) => {
            im2col_par(g, x, col);
            col
        }
        (false, false) => {
            im2col(g, x, col);
            col
        }
    };
    for grp in 0..g.groups {
        let y = &mut y[grp * mg * ohw..(grp + 1) * mg * ohw];
        let w = &w[grp * mg * kg..(grp + 1) * mg * kg];
        let b = epi.bias.map(|b| &b[grp * mg..(grp + 1) * mg]);
        let rhs = MatRef::row_major(&src[grp * kg * ohw..(grp + 1) * kg * ohw], kg, ohw);
        product_tiles(y, w, rhs, b, epi.activation, threads);
    }
}

/// Forward convolution: `output[n] = W * im2col(input[n]) (+ bias per output channel)`.
///
/// Shapes: `input` is `batch x in_channels x in_h x in_w`, `weight` is
/// `out_channels x in_channels/groups x kernel_h x kernel_w`, `bias` is `out_channels`,
/// `output` is `batch x out_channels x out_h x out_w`. **Overwrites** `output`.
pub fn conv2d_forward(
    g: &ConvGeometry,
    batch: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
    ws: &mut Workspace,
) -> Result<()> {
    let epi = Epilogue { bias, activation: Activation::Identity };
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and `conv2d_forward_with` only ever
    // stores initialised values into its output (it never writes `MaybeUninit::uninit()`), so
    // `output` holds valid `f32`s whenever the borrow ends.
    let output = unsafe { &mut *(std::ptr::from_mut(output) as *mut [MaybeUninit<f32>]) };
    conv2d_forward_with(g, batch, input, weight, epi, output, ws)
}

/// [`conv2d_forward`] followed by an [`Activation`]: `output[n] = act(W * im2col(input[n]) +
/// bias)`, the activation applied while each tile of the output is still in cache. Bit-identical
/// to [`conv2d_forward`] then [`Activation::apply`].
///
/// `output` may be uninitialised (a fresh `Vec::with_capacity`'s spare capacity): it is never
/// read, and when this returns `Ok` every element of it has been written. On `Err` nothing has
/// been written.
pub fn conv2d_forward_with(
    g: &ConvGeometry,
    batch: usize,
    input: &[f32],
    weight: &[f32],
    epilogue: Epilogue<'_>,
    output: &mut [MaybeUninit<f32>],
    ws: &mut Workspace,
) -> Result<()> {
    const K: &str = "conv2d_forward";
    check_io(K, g, batch, ("input", input.len()), ("output", output.len()), weight.len())?;
    if let Some(b) = epilogue.bias {
        check_len(K, "bias", g.out_channels, b.len())?;
    }
    if batch == 0 {
        return Ok(());
    }
    let (in_s, out_s, col_len) = (g.input_len(), g.output_len(), g.col_len().max(1));
    let p = plan(batch);
    let cols = ws.take(p.chunks * col_len);
    output
        .par_chunks_mut(p.per_chunk * out_s)
        .zip(input.par_chunks(p.per_chunk * in_s))
        .zip(cols.par_chunks_mut(col_len))
        .for_each(|((ys, xs), col)| {
            for (y, x) in ys.chunks_exact_mut(out_s).zip(xs.chunks_exact(in_s)) {
                forward_sample(g, x, weight, epilogue, y, col, p.inner);
            }
        });
    Ok(())
}

/// Gradient with respect to the input: `grad_input[n] = col2im(W^T * grad_output[n])`.
///
/// Shapes as in [`conv2d_forward`] (`grad_output` shaped like `output`, `grad_input` like
/// `input`). **Overwrites** `grad_input`. This is also Deconvolution's forward pass.
pub fn conv2d_backward_data(
    g: &ConvGeometry,
    batch: usize,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
    ws: &mut Workspace,
) -> Result<()> {
    const K: &str = "conv2d_backward_data";
    let (gi, go) = (("grad_input", grad_input.len()), ("grad_output", grad_output.len()));
    check_io(K, g, batch, gi, go, weight.len())?;
    if batch == 0 {
        return Ok(());
    }
    let (in_s, out_s, col_len) = (g.input_len(), g.output_len(), g.col_len().max(1));
    let (mg, kg, ohw) = g.group_dims();
    let p = plan(batch);
    let cols = ws.take(p.chunks * col_len);
    grad_input
        .par_chunks_mut(p.per_chunk * in_s)
        .zip(grad_output.par_chunks(p.per_chunk * out_s))
        .zip(cols.par_chunks_mut(col_len))
        .for_each(|((gxs, gys), col)| {
            for (gx, gy) in gxs.chunks_exact_mut(in_s).zip(gys.chunks_exact(out_s)) {
                let pointwise = g.is_pointwise();
                let dst: &mut [f32] = if pointwise { gx } else { col };
                for grp in 0..g.groups {
                    gemm_into(
                        &mut dst[grp * kg * ohw..(grp + 1) * kg * ohw],
                        MatRef::transposed(&weight[grp * mg * kg..(grp + 1) * mg * kg], kg, mg),
                        MatRef::row_major(&gy[grp * mg * ohw..(grp + 1) * mg * ohw], mg, ohw),
                        1.0,
                        false,
                        p.inner,
                    );
                }
                if !pointwise {
                    gx.fill(0.0);
                    col2im(g, col, gx);
                }
            }
        });
    Ok(())
}

/// `gw (+)= sum over the chunk's samples of grad_output[n] * im2col(input[n])^T`.
#[allow(clippy::too_many_arguments)] // private helper threading the per-chunk buffers
fn params_chunk(
    g: &ConvGeometry,
    xs: &[f32],
    gys: &[f32],
    gw: &mut [f32],
    col: &mut [f32],
    par: Parallelism,
    overwrite_first: bool,
) {
    let (mg, kg, ohw) = g.group_dims();
    let samples = xs.chunks_exact(g.input_len()).zip(gys.chunks_exact(g.output_len()));
    let rows = g.groups * kg;
    let (col, colt) = col.split_at_mut(rows * ohw);
    for (i, (x, gy)) in samples.enumerate() {
        let src: &[f32] = if g.is_pointwise() {
            x
        } else {
            im2col(g, x, col);
            col
        };
        for grp in 0..g.groups {
            let c = &src[grp * kg * ohw..(grp + 1) * kg * ohw];
            let ct = &mut colt[grp * kg * ohw..(grp + 1) * kg * ohw];
            crate::blas::transpose_seq(kg, ohw, c, ct);
            // gw = gy col^T, computed as gw^T = col gy^T written column-major (= gw row-major).
            gemm_into_colmajor(
                &mut gw[grp * mg * kg..(grp + 1) * mg * kg],
                MatRef::transposed(ct, kg, ohw),
                MatRef::transposed(&gy[grp * mg * ohw..(grp + 1) * mg * ohw], ohw, mg),
                !(overwrite_first && i == 0),
                par,
            );
        }
    }
}

/// Parameter gradients: `grad_weight += sum_n grad_output[n] * im2col(input[n])^T` and
/// `grad_bias[o] += sum over n, h, w of grad_output[n, o, h, w]`.
///
/// **Accumulates** (`+=`) into `grad_weight` and `grad_bias`, as Caffe accumulates parameter
/// diffs: the caller zeroes them at the start of an iteration.
pub fn conv2d_backward_params(
    g: &ConvGeometry,
    batch: usize,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
    ws: &mut Workspace,
) -> Result<()> {
    const K: &str = "conv2d_backward_params";
    let (i, go) = (("input", input.len()), ("grad_output", grad_output.len()));
    check_io(K, g, batch, i, go, grad_weight.len())?;
    if let Some(b) = &grad_bias {
        check_len(K, "grad_bias", g.out_channels, b.len())?;
    }
    if batch == 0 {
        return Ok(());
    }
    let (in_s, out_s) = (g.input_len(), g.output_len());
    let col_len = 2 * g.in_channels * g.kernel_h * g.kernel_w * g.out_h() * g.out_w();
    let wl = g.weight_len();
    let p = plan(batch);
    if p.chunks == 1 {
        let col = ws.take(col_len);
        params_chunk(g, input, grad_output, grad_weight, col, p.inner, false);
    } else {
        let buf = ws.take(p.chunks * (col_len + wl));
        let (cols, partials) = buf.split_at_mut(p.chunks * col_len);
        partials
            .par_chunks_mut(wl)
            .zip(cols.par_chunks_mut(col_len))
            .zip(
                input
                    .par_chunks(p.per_chunk * in_s)
                    .zip(grad_output.par_chunks(p.per_chunk * out_s)),
            )
            .for_each(|((gw, col), (xs, gys))| params_chunk(g, xs, gys, gw, col, p.inner, true));
        for part in partials.chunks_exact(wl) {
            grad_weight.iter_mut().zip(part).for_each(|(d, s)| *d += *s);
        }
    }
    if let Some(gb) = grad_bias {
        let ohw = g.out_h() * g.out_w();
        gb.par_iter_mut().enumerate().for_each(|(o, b)| {
            let total: f32 = grad_output
                .chunks_exact(out_s)
                .map(|gy| crate::blas::sum(&gy[o * ohw..(o + 1) * ohw]))
                .sum();
            *b += total;
        });
    }
    Ok(())
}
