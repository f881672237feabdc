//! Single-precision GEMM on top of the `gemm` crate: the public row-major [`sgemm`] and the
//! strided helper the convolution kernels use.

use crate::error::{Result, check_len, geometry};
use crate::simd::multiversion;
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

/// The one call into `gemm`: `dst = alpha * lhs * rhs (+ dst if accumulate)`, element `(i, j)` of
/// the `m x n` result at `dst + i * dst_rs + j * dst_cs`.
///
/// # Safety
/// `dst` must be valid for reads and writes at every such element, and nothing else may access
/// those elements during the call.
///
/// # Panics
/// When a view does not fit its slice or the shapes disagree: callers validate the user's slices
/// first, so this guards internal invariants only (and keeps the `gemm` call sound).
unsafe fn gemm_raw(
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    alpha: f32,
    accumulate: bool,
    par: Parallelism,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert!(rhs.rows == k && lhs.in_bounds() && rhs.in_bounds());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: (i, j) is an element of the result; the caller vouches for it.
                    unsafe { *dst.add(i * dst_rs + j * dst_cs) = 0.0 };
                }
            }
        }
        return;
    }
    // SAFETY: the assert proves every element the two read-only views address lies inside its
    // slice; the caller vouches for `dst`'s elements, which therefore cannot alias the views'
    // shared borrows. gemm computes dst := a*dst + b*lhs*rhs and reads dst only when `read_dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
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

/// `dst (row-major m x n, leading dimension n) = alpha * lhs * rhs (+ dst if accumulate)`.
///
/// # Panics
/// As [`gemm_raw`], or when `dst` is shorter than `m x n`.
pub(crate) fn gemm_into(
    dst: &mut [f32],
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    alpha: f32,
    accumulate: bool,
    par: Parallelism,
) {
    assert!(dst.len() >= lhs.rows * rhs.cols);
    // SAFETY: `dst` is a unique borrow holding all m x n elements (row stride n).
    unsafe { gemm_raw(dst.as_mut_ptr(), (rhs.cols, 1), lhs, rhs, alpha, accumulate, par) }
}

/// `dst = lhs * rhs (+ dst if accumulate)` with the `m x n` result stored **column-major** in
/// `dst` (element `(i, j)` at `dst[j * m + i]`), the layout `gemm`'s microkernels write natively.
///
/// # Panics
/// As [`gemm_into`].
pub(crate) fn gemm_into_colmajor(
    dst: &mut [f32],
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    accumulate: bool,
    par: Parallelism,
) {
    assert!(dst.len() >= lhs.rows * rhs.cols);
    // SAFETY: `dst` is a unique borrow holding all m x n elements (column stride m).
    unsafe { gemm_raw(dst.as_mut_ptr(), (1, lhs.rows), lhs, rhs, 1.0, accumulate, par) }
}

/// `dst = lhs * rhs (+ dst if accumulate)` for a strided destination: element `(i, j)` of the
/// `m x n` result lives at `dst + i * dst_rs + j`. Single-threaded.
///
/// # Safety
/// As [`gemm_raw`]'s: `dst` valid for reads and writes at every such element, and nothing else
/// reads or writes those elements during the call (other threads may use the rest of the buffer).
pub(crate) unsafe fn gemm_strided(
    dst: *mut f32,
    dst_rs: usize,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    accumulate: bool,
) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm_raw(dst, (dst_rs, 1), lhs, rhs, 1.0, accumulate, Parallelism::None) }
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

/// Matrix-vector product `y = W x (+ bias)` for a row-major `n x k` matrix `W`: InnerProduct
/// at batch 1 with Caffe's `N x K` weights. **Overwrites** `y` (`n` long).
///
/// Each output is one dot product over a contiguous row of `W`, so the matrix streams from
/// memory once, in order, and nothing is packed; rows are spread over the rayon pool. This is
/// memory-bound (AlexNet's fc6 reads 151 MB per call), which is why it beats a GEMM with one
/// row, whose packing copies the matrix first.
///
/// # Errors
/// [`KernelError::Length`](crate::KernelError::Length) when a slice disagrees with `n`, `k`.
pub fn gemv(
    n: usize,
    k: usize,
    w: &[f32],
    x: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    const K: &str = "gemv";
    let len = n.checked_mul(k).ok_or_else(|| geometry(K, format!("size {n} x {k} overflows")))?;
    check_len(K, "w", len, w.len())?;
    check_len(K, "x", k, x.len())?;
    check_len(K, "y", n, y.len())?;
    if let Some(b) = bias {
        check_len(K, "bias", n, b.len())?;
    }
    if n == 0 {
        return Ok(());
    }
    if k == 0 {
        match bias {
            Some(b) => y.copy_from_slice(b),
            None => y.fill(0.0),
        }
        return Ok(());
    }
    // About 256 KiB of matrix per task (whole groups of four rows): enough to amortise
    // scheduling, small enough to balance.
    let rows = (GEMV_TASK_FLOATS / k / 4 * 4).clamp(4, n.next_multiple_of(4));
    y.par_chunks_mut(rows).zip(w.par_chunks(rows * k)).enumerate().for_each(|(i, (y, w))| {
        let b = bias.map(|b| &b[i * rows..i * rows + y.len()]);
        gemv_rows(w, x, b, y);
    });
    Ok(())
}

/// Matrix floats per [`gemv`] task.
const GEMV_TASK_FLOATS: usize = 64 * 1024;

multiversion! {
    /// [`gemv_rows_body`] on the widest vectors the CPU has.
    fn gemv_rows(w: &[f32], x: &[f32], bias: Option<&[f32]>, y: &mut [f32]) => gemv_rows_body;
}

/// `y[i] = dot(row i of w, x) (+ bias[i])` for the `y.len()` rows of `w`, four rows at a time
/// (each vector of `x` loaded once for all four; one vector of partial sums per row).
#[inline(always)] // compiled into each of `multiversion!`'s copies
fn gemv_rows_body(w: &[f32], x: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let k = x.len();
    let done = y.len() / 4 * 4;
    let (quads, rest) = y.split_at_mut(done);
    for (q, (rows, out)) in w.chunks_exact(4 * k).zip(quads.chunks_exact_mut(4)).enumerate() {
        let (r01, r23) = rows.split_at(2 * k);
        let d = dot4([&r01[..k], &r01[k..], &r23[..k], &r23[k..]], x);
        for (j, (o, d)) in out.iter_mut().zip(d).enumerate() {
            *o = d + bias.map_or(0.0, |b| b[4 * q + j]);
        }
    }
    for (i, (row, out)) in w[done * k..].chunks_exact(k).zip(rest).enumerate() {
        *out = dot4([row, row, row, row], x)[0] + bias.map_or(0.0, |b| b[done + i]);
    }
}

/// Vector width of [`dot4`]'s partial sums.
const LANES: usize = 16;

/// Four dot products with `x`: per row one vector of [`LANES`] partial sums, then those and
/// the tail (`x.len() % LANES` elements) in order. (Written as whole-chunk loops over
/// `chunks_exact`, so the compiler sees every index in bounds and keeps the sums in registers;
/// the variants with more sums per row measured slower.)
#[inline(always)]
fn dot4(rows: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
    let (mut s0, mut s1, mut s2, mut s3) =
        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let [r0, r1, r2, r3] = rows.map(|r| r.chunks_exact(LANES));
    let chunks = x.chunks_exact(LANES).zip(r0).zip(r1).zip(r2).zip(r3);
    for ((((x, a), b), c), d) in chunks {
        for j in 0..LANES {
            s0[j] += a[j] * x[j];
            s1[j] += b[j] * x[j];
            s2[j] += c[j] * x[j];
            s3[j] += d[j] * x[j];
        }
    }
    let n = x.len() / LANES * LANES;
    let mut out = [0f32; 4];
    for ((o, s), row) in out.iter_mut().zip([s0, s1, s2, s3]).zip(rows) {
        let tail: f32 = row[n..].iter().zip(&x[n..]).map(|(a, b)| a * b).sum();
        *o = s.iter().sum::<f32>() + tail;
    }
    out
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

/// `dst` (`cols x rows`) = `src` (`rows x cols`)^T on the calling thread (the convolution's
/// per-sample column transposes). Lengths are the caller's invariant (`rows * cols` each).
pub(crate) fn transpose_seq(rows: usize, cols: usize, src: &[f32], dst: &mut [f32]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2() {
        // SAFETY: the CPU has AVX2 (checked just above), all `transpose_avx2` requires.
        unsafe { transpose_avx2(rows, cols, src, dst) };
        return;
    }
    transpose_edges(rows, cols, 0, 0, src, dst);
}

/// The elements of rows `rb..` and, above them, of columns `cb..` (what 8 x 8 blocks leave).
fn transpose_edges(rows: usize, cols: usize, rb: usize, cb: usize, src: &[f32], dst: &mut [f32]) {
    for r in 0..rows {
        for c in if r < rb { cb } else { 0 }..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// [`transpose_seq`] in 8 x 8 blocks: eight row loads, the classic unpack / shuffle / lane
/// permute sequence, eight column stores.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transpose_avx2(rows: usize, cols: usize, src: &[f32], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    const B: usize = 8;
    let (rb, cb) = (rows / B * B, cols / B * B);
    for r0 in (0..rb).step_by(B) {
        for c0 in (0..cb).step_by(B) {
            // SAFETY: r0 + 7 < rows and c0 + 7 < cols, so each load reads 8 floats of row
            // r0 + i inside `src` (rows * cols long, asserted by the caller) and each store writes
            // 8 floats of row c0 + j inside `dst`; unaligned loads and stores need no alignment.
            unsafe {
                let ld = |i: usize| _mm256_loadu_ps(src.as_ptr().add((r0 + i) * cols + c0));
                let (a0, a1, a2, a3) = (ld(0), ld(1), ld(2), ld(3));
                let (a4, a5, a6, a7) = (ld(4), ld(5), ld(6), ld(7));
                let t0 = _mm256_unpacklo_ps(a0, a1);
                let t1 = _mm256_unpackhi_ps(a0, a1);
                let t2 = _mm256_unpacklo_ps(a2, a3);
                let t3 = _mm256_unpackhi_ps(a2, a3);
                let t4 = _mm256_unpacklo_ps(a4, a5);
                let t5 = _mm256_unpackhi_ps(a4, a5);
                let t6 = _mm256_unpacklo_ps(a6, a7);
                let t7 = _mm256_unpackhi_ps(a6, a7);
                let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let cols_out = [
                    _mm256_permute2f128_ps::<0x20>(s0, s4),
                    _mm256_permute2f128_ps::<0x20>(s1, s5),
                    _mm256_permute2f128_ps::<0x20>(s2, s6),
                    _mm256_permute2f128_ps::<0x20>(s3, s7),
                    _mm256_permute2f128_ps::<0x31>(s0, s4),
                    _mm256_permute2f128_ps::<0x31>(s1, s5),
                    _mm256_permute2f128_ps::<0x31>(s2, s6),
                    _mm256_permute2f128_ps::<0x31>(s3, s7),
                ];
                for (j, v) in cols_out.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.as_mut_ptr().add((c0 + j) * rows + r0), v);
                }
            }
        }
    }
    transpose_edges(rows, cols, rb, cb, src, dst);
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

#[cfg(test)]
mod tests {
    /// The per-sample transpose (8 x 8 AVX2 blocks where the CPU has them, element by element
    /// at the edges and elsewhere) against the definition, on shapes around the block size.
    #[test]
    fn transpose_seq_matches_the_definition() {
        for (rows, cols) in [(1, 1), (8, 8), (7, 9), (16, 24), (17, 33), (75, 1024), (3, 64)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            super::transpose_seq(rows, cols, &src, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * rows + r], src[r * cols + c], "{rows}x{cols} at ({r}, {c})");
                }
            }
        }
    }
}
