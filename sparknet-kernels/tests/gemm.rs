//! `sgemm` against a direct triple loop, for every transpose combination; `gemv` likewise.

mod common;

use common::*;
use sparknet_kernels::{KernelError, gemv, sgemm};

fn reference(
    (ta, tb): (bool, bool),
    (m, n, k): (usize, usize, usize),
    (alpha, beta): (f32, f32),
    a: &[f32],
    b: &[f32],
    c: &[f32],
) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for l in 0..k {
                let av = if ta { a[l * m + i] } else { a[i * k + l] };
                let bv = if tb { b[j * k + l] } else { b[l * n + j] };
                acc += av as f64 * bv as f64;
            }
            let old = if beta == 0.0 { 0.0 } else { beta as f64 * c[i * n + j] as f64 };
            out[i * n + j] = alpha as f64 * acc + old;
        }
    }
    out
}

#[test]
fn matches_direct_loops() {
    let shapes = [(1, 1, 1), (7, 5, 3), (33, 17, 65), (64, 100, 500), (3, 200, 1)];
    let mut r = rng(7);
    for (si, &(m, n, k)) in shapes.iter().enumerate() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
                let a = uniform(&mut r, m * k);
                let b = uniform(&mut r, k * n);
                let mut c = uniform(&mut r, m * n);
                let expected = reference((ta, tb), (m, n, k), (alpha, beta), &a, &b, &c);
                if beta == 0.0 {
                    c.fill(f32::NAN); // beta = 0 ignores the old C, as BLAS does
                }
                sgemm(ta, tb, m, n, k, alpha, &a, &b, beta, &mut c).unwrap();
                // f32 accumulation over k up to 500 terms: 1e-4 relative to max(1, |c|).
                assert_close(
                    &format!("shape {si} ta {ta} tb {tb} alpha {alpha} beta {beta}"),
                    &c,
                    &expected,
                    1e-4,
                );
            }
        }
    }
}

/// One row (InnerProduct at batch 1) on several threads is split into column bands.
#[test]
fn one_row_in_column_bands() {
    for threads in [1, 2, 3, 7] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut r = rng(threads as u64);
            for (n, k) in [(129usize, 40usize), (1000, 17), (64, 3)] {
                for tb in [false, true] {
                    let a = uniform(&mut r, k);
                    let b = uniform(&mut r, k * n);
                    let c0 = uniform(&mut r, n);
                    for beta in [0.0, 1.0] {
                        let mut c = c0.clone();
                        sgemm(false, tb, 1, n, k, 1.5, &a, &b, beta, &mut c).unwrap();
                        let expected = reference((false, tb), (1, n, k), (1.5, beta), &a, &b, &c0);
                        let what = format!("{threads} threads, 1x{n}x{k} tb {tb} beta {beta}");
                        assert_close(&what, &c, &expected, 1e-5);
                    }
                }
            }
        });
    }
}

#[test]
fn degenerate_sizes_and_bad_lengths() {
    let mut c = vec![3.0; 6];
    sgemm(false, false, 2, 3, 0, 1.0, &[], &[], 0.5, &mut c).unwrap();
    assert_eq!(c, [1.5; 6]);
    sgemm(false, false, 2, 3, 1, 0.0, &[f32::NAN; 2], &[1.0; 3], 0.0, &mut c).unwrap();
    assert_eq!(c, [0.0; 6]);
    let err = sgemm(false, false, 2, 3, 4, 1.0, &[0.0; 7], &[0.0; 12], 0.0, &mut c).unwrap_err();
    assert_eq!(err, KernelError::Length { kernel: "sgemm", what: "a", expected: 8, actual: 7 });
    let err = sgemm(true, true, 2, 3, 4, 1.0, &[0.0; 8], &[0.0; 12], 0.0, &mut c[1..]).unwrap_err();
    assert!(err.to_string().contains("`c`"), "{err}");
}

#[test]
fn sum_equals_the_f64_sum() {
    for len in [0usize, 1, 15, 16, 17, 33, 1000, 4099] {
        let x = uniform(&mut rng(len as u64), len);
        let exact: f64 = x.iter().map(|&v| f64::from(v)).sum();
        let got = sparknet_kernels::sum(&x);
        assert!(
            (f64::from(got) - exact).abs() <= 1e-5 * (len as f64).max(1.0),
            "len {len}: {got} vs {exact}"
        );
    }
    assert_eq!(sparknet_kernels::sum(&[1.0; 37]), 37.0);
}

#[test]
fn transpose_is_the_transpose() {
    for (r, c) in [(1usize, 1usize), (3, 5), (16, 16), (17, 33), (40, 7)] {
        let x = uniform(&mut rng((r * 100 + c) as u64), r * c);
        let mut t = vec![f32::NAN; r * c];
        sparknet_kernels::transpose(r, c, &x, &mut t).unwrap();
        for i in 0..r {
            for j in 0..c {
                assert_eq!(t[j * r + i], x[i * c + j], "{r}x{c} at ({i}, {j})");
            }
        }
    }
    assert!(sparknet_kernels::transpose(2, 3, &[0.0; 5], &mut [0.0; 6]).is_err());
}

/// `gemv` against an f64 reference: row counts off the four-row groups, lengths off the vector
/// width, with and without bias, on one and several threads; bad lengths are errors.
#[test]
fn gemv_matches_reference() {
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for (ci, &(n, k)) in
                [(1, 1), (3, 17), (4, 16), (9, 100), (37, 2000), (130, 9)].iter().enumerate()
            {
                let mut r = rng(300 + ci as u64);
                let (w, x, b) = (uniform(&mut r, n * k), uniform(&mut r, k), uniform(&mut r, n));
                for bias in [Some(&b[..]), None] {
                    let want: Vec<f64> = (0..n)
                        .map(|i| {
                            let dot: f64 = (0..k).map(|j| w[i * k + j] as f64 * x[j] as f64).sum();
                            dot + bias.map_or(0.0, |b| b[i] as f64)
                        })
                        .collect();
                    let mut y = vec![f32::NAN; n];
                    gemv(n, k, &w, &x, bias, &mut y).unwrap();
                    assert_close(&format!("gemv {n}x{k} ({threads} threads)"), &y, &want, 1e-5);
                }
            }
        });
    }
    let mut y = vec![0.0; 3];
    assert!(gemv(3, 2, &[0.0; 5], &[0.0; 2], None, &mut y).is_err());
    assert!(gemv(3, 2, &[0.0; 6], &[0.0; 2], Some(&[0.0; 2]), &mut y).is_err());
    gemv(3, 0, &[], &[], Some(&[1.0, 2.0, 3.0]), &mut y).unwrap();
    assert_eq!(y, [1.0, 2.0, 3.0]);
}
