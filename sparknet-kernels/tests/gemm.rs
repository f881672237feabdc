//! `sgemm` against a direct triple loop, for every transpose combination.

mod common;

use common::*;
use sparknet_kernels::{KernelError, sgemm};

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
