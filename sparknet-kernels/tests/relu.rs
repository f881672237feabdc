//! Caffe's ReLU over blobs: the formulas element by element (NaN, signed zero, slopes), several
//! rayon chunks, every thread count, and length errors.

use std::mem::MaybeUninit;

use sparknet_kernels::{relu_backward, relu_forward};

fn values(n: usize) -> Vec<f32> {
    let special = [f32::NAN, -0.0, 0.0, f32::INFINITY, f32::NEG_INFINITY, -1e-30, 1e-30];
    (0..n)
        .map(|i| match i % 11 {
            k if k < special.len() => special[k],
            _ => ((i * 7919) % 2001) as f32 / 1000.0 - 1.0,
        })
        .collect()
}

fn init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    // SAFETY: the kernels returned Ok, so every element was written.
    v.into_iter().map(|v| unsafe { v.assume_init() }).collect()
}

#[test]
fn relu_matches_caffes_formulas_bit_for_bit() {
    let n = 70_001; // several rayon chunks and a ragged tail
    let x = values(n);
    let dy: Vec<f32> = x.iter().rev().map(|v| if v.is_nan() { 0.5 } else { v * 3.0 }).collect();
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for slope in [0.0f32, 0.1, 2.0] {
                let mut y = vec![MaybeUninit::new(f32::NAN); n];
                relu_forward(&x, slope, &mut y).unwrap();
                let mut dx = vec![MaybeUninit::new(f32::NAN); n];
                relu_backward(&x, &dy, slope, &mut dx).unwrap();
                let (y, dx) = (init(y), init(dx));
                for i in 0..n {
                    let want = if slope == 0.0 {
                        x[i].max(0.0)
                    } else if x[i] > 0.0 {
                        x[i]
                    } else {
                        slope * x[i]
                    };
                    assert_eq!(
                        y[i].to_bits(),
                        want.to_bits(),
                        "forward {i} (x {}, slope {slope})",
                        x[i]
                    );
                    let g = dy[i] * if x[i] > 0.0 { 1.0 } else { slope };
                    assert_eq!(dx[i].to_bits(), g.to_bits(), "backward {i} (slope {slope})");
                }
            }
        });
    }
    let mut short = vec![MaybeUninit::new(0.0); 3];
    assert!(relu_forward(&[1.0; 4], 0.0, &mut short).is_err());
    assert!(relu_backward(&[1.0; 3], &[1.0; 4], 0.0, &mut short).is_err());
}
