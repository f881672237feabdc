//! Single-precision GEMM on top of the `gemm` crate: the public row-major [`sgemm`] and the
//! strided helper the convolution kernels use.

use crate::error::{Result, check_len, geometry};
use gemm::Parallelism;
use rayon::prelude::*;

/// A read-only strided matrix view: element `(i, j)` lives at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix at the start of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose of a row-major matrix stored as `cols x rows` (so this view is `rows x cols`).
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: 1, cs: rows }
    }

    /// True when every element the view addresses lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// The parallelism to hand to `gemm` for `threads` threads.
pub(crate) fn parallelism(threads: usize) -> Parallelism {
    if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None }
}

/// `dst (row-major m x n, leading dimension n) = alpha * lhs * rhs (+ dst if accumulate)`.
///
/// # Panics
/// When a view does not fit its slice or the shapes disagree: callers validate the user's slices
/// first, so this guards internal invariants only (and keeps the `unsafe` call sound).
pub(crate) fn gemm_into(
    dst: &mut [f32],
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    alpha: f32,
    accumulate: bool,
    par: Parallelism,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert!(rhs.rows == k && dst.len() >= m * n && lhs.in_bounds() && rhs.in_bounds());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above prove that every element the three strided views address lies
    // inside its slice (dst is m x n row-major within `dst.len() >= m * n`); `dst` is a unique
    // borrow, so it cannot alias `lhs` or `rhs`. gemm computes dst := a*dst + b*lhs*rhs and reads
    // dst only when `read_dst` is true.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}

/// Row-major SGEMM: `C = alpha * op(A) * op(B) + beta * C`, multithreaded through `gemm` with
/// `rayon::current_num_threads()` threads.
///
/// `op(A)` is `m x k`: `A` is stored `m x k` (or `k x m` when `trans_a`); `op(B)` is `k x n`: `B`
/// is stored `k x n` (or `n x k` when `trans_b`); `C` is `m x n`. Slice lengths must equal these
/// sizes exactly. With `beta == 0` the old contents of `C` are ignored (NaN included), as in BLAS.
#[allow(clippy::too_many_arguments)] // the agreed BLAS-style signature
pub fn sgemm(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) -> Result<()> {
    const K: &str = "sgemm";
    let size = |x: usize, y: usize, what| {
        x.checked_mul(y).ok_or_else(|| geometry(K, format!("{what} size {x} x {y} overflows")))
    };
    check_len(K, "a", size(m, k, "A")?, a.len())?;
    check_len(K, "b", size(k, n, "B")?, b.len())?;
    check_len(K, "c", size(m, n, "C")?, c.len())?;
    let lhs = if trans_a { MatRef::transposed(a, m, k) } else { MatRef::row_major(a, m, k) };
    let rhs = if trans_b { MatRef::transposed(b, k, n) } else { MatRef::row_major(b, k, n) };
    let accumulate = beta != 0.0;
    if accumulate && beta != 1.0 {
        c.iter_mut().for_each(|v| *v *= beta);
    }
    if alpha == 0.0 {
        // BLAS does not read A or B when alpha is zero.
        if !accumulate {
            c.fill(0.0);
        }
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    if m == 1 && threads > 1 && n >= 2 * COL_BAND_MIN {
        // A single row (InnerProduct at batch 1, a GEMV): each thread takes a band of columns,
        // which is a contiguous piece of `c`; `gemm`'s own threading did not scale here.
        let band = n.div_ceil(threads).max(COL_BAND_MIN);
        c.par_chunks_mut(band).enumerate().for_each(|(i, c)| {
            let j0 = i * band;
            let cols = MatRef {
                data: &rhs.data[j0 * rhs.cs..],
                rows: k,
                cols: c.len(),
                rs: rhs.rs,
                cs: rhs.cs,
            };
            gemm_into(c, lhs, cols, alpha, accumulate, Parallelism::None);
        });
        return Ok(());
    }
    gemm_into(c, lhs, rhs, alpha, accumulate, parallelism(threads));
    Ok(())
}

/// The fewest columns a thread takes when a one-row product is split by columns.
const COL_BAND_MIN: usize = 64;

/// Side of the square tiles [`transpose`] copies (a tile of each matrix stays in L1).
const TILE: usize = 16;

/// Row-major transpose: `dst` (`cols x rows`) = `src` (`rows x cols`)^T, tiled for the caches and
/// parallel over row bands with `rayon::current_num_threads()` threads.
///
/// InnerProduct keeps a transposed copy of a large weight matrix with it, because GEMM reads
/// `W^T` from a `N x K` row-major `W` through strided packing, which for AlexNet's fc6 costs
/// about three times the product itself (`sparknet-kernels/BENCH.md`).
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when a slice is not `rows * cols` long.
pub fn transpose(rows: usize, cols: usize, src: &[f32], dst: &mut [f32]) -> Result<()> {
    const K: &str = "transpose";
    let len = rows
        .checked_mul(cols)
        .ok_or_else(|| geometry(K, format!("size {rows} x {cols} overflows")))?;
    check_len(K, "src", len, src.len())?;
    check_len(K, "dst", len, dst.len())?;
    if len == 0 {
        return Ok(());
    }
    // Each task owns a band of TILE destination rows (= TILE source columns).
    dst.par_chunks_mut(TILE * rows).enumerate().for_each(|(band, out)| {
        let c0 = band * TILE;
        let width = out.len() / rows;
        for r0 in (0..rows).step_by(TILE) {
            let height = TILE.min(rows - r0);
            for dc in 0..width {
                let row = &mut out[dc * rows + r0..dc * rows + r0 + height];
                for (dr, v) in row.iter_mut().enumerate() {
                    *v = src[(r0 + dr) * cols + c0 + dc];
                }
            }
        }
    });
    Ok(())
}

/// The sum of `xs`, in 16 interleaved partial sums (vectorised; an in-order `f32` sum is one
/// long dependency chain, about 4x slower). The order differs from a left-to-right sum, so the
/// last bits may too.
pub fn sum(xs: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}
