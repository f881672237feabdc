//! Pooling kernels against direct Caffe-definition loops and finite differences.

mod common;

use common::*;
use rand::seq::SliceRandom;
use sparknet_kernels::{KernelError, PoolGeometry, PoolMethod, pool2d_backward, pool2d_forward};

fn geom(
    c: usize,
    (in_h, in_w): (usize, usize),
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (ph, pw): (usize, usize),
) -> PoolGeometry {
    PoolGeometry {
        channels: c,
        in_h,
        in_w,
        kernel_h: kh,
        kernel_w: kw,
        stride_h: sh,
        stride_w: sw,
        pad_h: ph,
        pad_w: pw,
    }
}

/// Direct pooling from Caffe's definition, tap by tap. Returns `(output, argmax)` in f64; for AVE
/// the divisor counts every tap inside the padded input `[-pad, in + pad)`.
fn pool_ref(g: &PoolGeometry, batch: usize, method: PoolMethod, x: &[f32]) -> (Vec<f64>, Vec<u32>) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let mut y = Vec::new();
    let mut arg = Vec::new();
    for plane in x.chunks(g.in_h * g.in_w).take(batch * g.channels) {
        for py in 0..oh {
            for px in 0..ow {
                let (mut best, mut at, mut sum, mut count) =
                    (f64::NEG_INFINITY, u32::MAX, 0.0, 0usize);
                for ki in 0..g.kernel_h {
                    for kj in 0..g.kernel_w {
                        let iy = (py * g.stride_h + ki) as isize - g.pad_h as isize;
                        let ix = (px * g.stride_w + kj) as isize - g.pad_w as isize;
                        let in_padded =
                            iy < (g.in_h + g.pad_h) as isize && ix < (g.in_w + g.pad_w) as isize;
                        count += usize::from(in_padded);
                        if iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize {
                            continue;
                        }
                        let i = iy as usize * g.in_w + ix as usize;
                        let v = plane[i] as f64;
                        sum += v;
                        if v > best {
                            (best, at) = (v, i as u32);
                        }
                    }
                }
                match method {
                    PoolMethod::Max => y.push(best),
                    PoolMethod::Ave => y.push(sum / count as f64),
                }
                arg.push(at);
            }
        }
    }
    (y, arg)
}

/// Distinct values spaced 0.05 apart, shuffled: finite differences with step 1e-2 never move a max.
fn distinct(seed: u64, len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..len).map(|i| i as f32 * 0.05 - len as f32 * 0.025).collect();
    v.shuffle(&mut rng(seed));
    v
}

fn cases() -> Vec<(PoolGeometry, usize)> {
    vec![
        (geom(3, (32, 32), (3, 3), (2, 2), (0, 0)), 2), // CIFAR-10 quick: 32 -> 16 (ceil mode)
        (geom(2, (5, 5), (2, 2), (2, 2), (1, 1)), 3),   // clip rule: ceil gives 4, clipped to 3
        (geom(2, (7, 6), (3, 2), (2, 3), (1, 1)), 2),   // asymmetric kernel/stride
        (geom(4, (6, 9), (3, 3), (1, 2), (0, 1)), 2),   // pad only on w (Caffe clips both axes)
        (geom(2, (12, 12), (2, 2), (2, 2), (0, 0)), 2), // LeNet: kernel == stride
        (geom(3, (11, 11), (3, 3), (2, 2), (1, 1)), 1), // ResNet-style stem pool
        (PoolGeometry::global(3, 5, 7), 2),
        (geom(2, (27, 27), (3, 3), (2, 2), (0, 0)), 1), // SqueezeNet/AlexNet: interior runs
        (geom(2, (20, 23), (5, 4), (3, 3), (2, 1)), 1), // stride 3 with padding
    ]
}

#[test]
fn output_sizes_follow_caffe() {
    assert_eq!((cases()[0].0.out_h(), cases()[0].0.out_w()), (16, 16));
    assert_eq!((cases()[1].0.out_h(), cases()[1].0.out_w()), (3, 3));
    let g = cases()[3].0;
    // h: ceil((6-3)/1)+1 = 4, (4-1)*1 >= 6+0? no -> 4; w: ceil((9+2-3)/2)+1 = 5, 8 >= 10? no -> 5.
    assert_eq!((g.out_h(), g.out_w()), (4, 5));
    assert_eq!(
        (PoolGeometry::global(3, 5, 7).out_h(), PoolGeometry::global(3, 5, 7).out_w()),
        (1, 1)
    );
    // GoogLeNet pool1: 112, k3 s2 -> 56; AlexNet pool1: 55, k3 s2 -> 27.
    assert_eq!(geom(1, (112, 55), (3, 3), (2, 2), (0, 0)).out_h(), 56);
    assert_eq!(geom(1, (112, 55), (3, 3), (2, 2), (0, 0)).out_w(), 27);
}

#[test]
fn forward_matches_direct_pooling() {
    for (ci, (g, batch)) in cases().into_iter().enumerate() {
        g.validate().unwrap();
        let x = uniform(&mut rng(ci as u64), batch * g.input_len());
        let (n_out, what) = (batch * g.output_len(), format!("case {ci}"));
        let mut y = vec![f32::NAN; n_out];
        let mut arg = vec![u32::MAX; n_out];
        pool2d_forward(&g, batch, PoolMethod::Max, &x, &mut y, Some(&mut arg)).unwrap();
        let (y_ref, arg_ref) = pool_ref(&g, batch, PoolMethod::Max, &x);
        assert_close(&format!("{what} max"), &y, &y_ref, 0.0);
        assert_eq!(arg, arg_ref, "{what} argmax");
        pool2d_forward(&g, batch, PoolMethod::Max, &x, &mut y, None).unwrap();
        assert_close(&format!("{what} max without argmax"), &y, &y_ref, 0.0);
        pool2d_forward(&g, batch, PoolMethod::Ave, &x, &mut y, None).unwrap();
        assert_close(&format!("{what} ave"), &y, &pool_ref(&g, batch, PoolMethod::Ave, &x).0, 1e-6);
    }
}

/// Many equal values (as after a ReLU: whole windows of zeros): the argmax must be Caffe's, the
/// first maximum in the window's row-by-row scan, or gradients go to other inputs than Caffe's.
#[test]
fn max_ties_pick_caffes_first_maximum() {
    use rand::Rng;
    let mut r = rng(7);
    for (ci, (g, batch)) in cases().into_iter().enumerate() {
        for trial in 0..4 {
            let x: Vec<f32> =
                (0..batch * g.input_len()).map(|_| r.random_range(0..3u8) as f32).collect();
            let n_out = batch * g.output_len();
            let (mut y, mut arg) = (vec![f32::NAN; n_out], vec![u32::MAX; n_out]);
            pool2d_forward(&g, batch, PoolMethod::Max, &x, &mut y, Some(&mut arg)).unwrap();
            let (y_ref, arg_ref) = pool_ref(&g, batch, PoolMethod::Max, &x);
            assert_close(&format!("case {ci} trial {trial} max"), &y, &y_ref, 0.0);
            assert_eq!(arg, arg_ref, "case {ci} trial {trial} argmax");
        }
    }
}

/// Without the argmax MAX runs a separate (separable) kernel: it must give the window scan's
/// values bit for bit, NaN and ties included.
#[test]
fn max_values_only_equal_the_scan() {
    use rand::Rng;
    let mut r = rng(11);
    for (ci, (g, batch)) in cases().into_iter().enumerate() {
        for trial in 0..4 {
            let x: Vec<f32> = (0..batch * g.input_len())
                .map(|_| match r.random_range(0..5u8) {
                    4 => f32::NAN,
                    v => f32::from(v) - 1.5,
                })
                .collect();
            let n_out = batch * g.output_len();
            let (mut with_arg, mut arg) = (vec![0.0; n_out], vec![0u32; n_out]);
            pool2d_forward(&g, batch, PoolMethod::Max, &x, &mut with_arg, Some(&mut arg)).unwrap();
            let mut values = vec![0.0; n_out];
            pool2d_forward(&g, batch, PoolMethod::Max, &x, &mut values, None).unwrap();
            for (i, (a, b)) in values.iter().zip(&with_arg).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "case {ci} trial {trial} output {i}: values-only {a}, scan {b} ({g:?})"
                );
            }
        }
    }
}

#[test]
fn ave_divides_by_the_padded_window() {
    // 2x2 ones, kernel 2 stride 1 pad 1: 3x3 windows, each holding 1, 2 or 4 ones; the divisor
    // is always 4 (all taps lie inside the padded input [-1, 3)).
    let g = geom(1, (2, 2), (2, 2), (1, 1), (1, 1));
    let mut y = vec![0.0; 9];
    pool2d_forward(&g, 1, PoolMethod::Ave, &[1.0; 4], &mut y, None).unwrap();
    assert_eq!(y, [0.25, 0.5, 0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 0.25]);
    // Ceil mode overhangs the padded input: 3 wide, k3 s2 p1 -> ceil(2/2)+1 = 2 windows; the
    // second covers [1, 4) clipped to the padded [.., 4) = 3 taps, 2 of them real.
    let g = geom(1, (1, 3), (1, 3), (1, 2), (0, 1));
    let mut y = vec![0.0; 2];
    pool2d_forward(&g, 1, PoolMethod::Ave, &[3.0, 6.0, 9.0], &mut y, None).unwrap();
    assert_eq!(y, [(3.0 + 6.0) / 3.0, (6.0 + 9.0) / 3.0]);
}

/// GradientChecker for both methods: step 1e-2, tolerance 1e-3 relative to max(1, |gradient|);
/// the inputs are distinct and 0.05 apart so no step changes a window's maximum.
#[test]
fn backward_matches_finite_differences() {
    const CHECK: GradientChecker = GradientChecker { step: 1e-2, tol: 1e-3 };
    for (ci, (g, batch)) in cases().into_iter().enumerate() {
        let x = distinct(ci as u64, batch * g.input_len());
        let top = uniform(&mut rng(50 + ci as u64), batch * g.output_len());
        for method in [PoolMethod::Max, PoolMethod::Ave] {
            let mut y = vec![0.0; top.len()];
            let mut arg = vec![0u32; top.len()];
            let arg_opt = (method == PoolMethod::Max).then_some(&mut arg[..]);
            pool2d_forward(&g, batch, method, &x, &mut y, arg_opt).unwrap();
            let mut gx = vec![f32::NAN; x.len()];
            let arg_ref = (method == PoolMethod::Max).then_some(&arg[..]);
            pool2d_backward(&g, batch, method, &top, arg_ref, &mut gx).unwrap();
            let probes = probe_indices(x.len(), 80, ci as u64);
            CHECK.check(&format!("case {ci} {method:?}"), (&x, &gx), &top, &probes, |xp| {
                let mut y = vec![0.0; top.len()];
                pool2d_forward(&g, batch, method, xp, &mut y, None).unwrap();
                y
            });
        }
    }
}

#[test]
fn max_gradient_is_the_full_gradient() {
    // candle 0.11's max_pool2d backward returned a quarter of this.
    let g = geom(1, (4, 4), (2, 2), (2, 2), (0, 0));
    let x: Vec<f32> = (0..16).map(|i| i as f32).collect();
    let (mut y, mut arg) = (vec![0.0; 4], vec![0u32; 4]);
    pool2d_forward(&g, 1, PoolMethod::Max, &x, &mut y, Some(&mut arg)).unwrap();
    assert_eq!((y, arg.clone()), (vec![5.0, 7.0, 13.0, 15.0], vec![5, 7, 13, 15]));
    let mut gx = vec![0.0; 16];
    pool2d_backward(&g, 1, PoolMethod::Max, &[1.0; 4], Some(&arg), &mut gx).unwrap();
    assert_eq!(gx.iter().sum::<f32>(), 4.0);
    assert_eq!((gx[5], gx[7], gx[13], gx[15]), (1.0, 1.0, 1.0, 1.0));
    // Overlapping windows sharing a maximum add up; ties keep the first maximum.
    let g = geom(1, (1, 3), (1, 2), (1, 1), (0, 0));
    let (mut y, mut arg) = (vec![0.0; 2], vec![0u32; 2]);
    pool2d_forward(&g, 1, PoolMethod::Max, &[1.0, 2.0, 2.0], &mut y, Some(&mut arg)).unwrap();
    assert_eq!(arg, [1, 1]);
    let mut gx = vec![0.0; 3];
    pool2d_backward(&g, 1, PoolMethod::Max, &[0.5, 0.25], Some(&arg), &mut gx).unwrap();
    assert_eq!(gx, [0.0, 0.75, 0.0]);
}

#[test]
fn bad_input_is_an_error() {
    let g = cases()[0].0;
    let x = vec![0.0; g.input_len()];
    let mut y = vec![0.0; g.output_len()];
    let err = pool2d_forward(&g, 1, PoolMethod::Max, &x[1..], &mut y, None).unwrap_err();
    assert!(
        matches!(err, KernelError::Length { kernel: "pool2d_forward", what: "input", .. }),
        "{err}"
    );
    let mut arg = vec![0u32; 3];
    let err = pool2d_forward(&g, 1, PoolMethod::Max, &x, &mut y, Some(&mut arg)).unwrap_err();
    assert!(err.to_string().contains("argmax"), "{err}");
    let mut gx = vec![0.0; x.len()];
    let err = pool2d_backward(&g, 1, PoolMethod::Max, &y, None, &mut gx).unwrap_err();
    assert!(matches!(err, KernelError::MissingArgument { .. }), "{err}");
    let bad_arg = vec![u32::MAX; y.len()];
    let err = pool2d_backward(&g, 1, PoolMethod::Max, &y, Some(&bad_arg), &mut gx).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
    assert!(
        geom(1, (4, 4), (2, 2), (1, 1), (2, 0)).validate().unwrap_err().to_string().contains("pad")
    );
    assert!(geom(1, (4, 4), (5, 2), (1, 1), (0, 0)).validate().is_err());
    assert!(geom(1, (4, 4), (2, 2), (0, 1), (0, 0)).validate().is_err());
    // Stride beyond the kernel without padding would leave an empty last window.
    assert!(
        geom(1, (5, 5), (1, 1), (3, 3), (0, 0))
            .validate()
            .unwrap_err()
            .to_string()
            .contains("window")
    );
}

/// Seeded random geometries (asymmetric kernel/stride/pad, ceil mode, clip rule, batch 1-3):
/// forward MAX (with argmax) and AVE against the direct loops.
#[test]
fn random_geometries_match_direct_loops() {
    use rand::Rng;
    let mut r = rng(500);
    let mut tested = 0;
    while tested < 60 {
        let g = PoolGeometry {
            channels: r.random_range(1..=3),
            in_h: r.random_range(1..=10),
            in_w: r.random_range(1..=10),
            kernel_h: r.random_range(1..=4),
            kernel_w: r.random_range(1..=4),
            stride_h: r.random_range(1..=3),
            stride_w: r.random_range(1..=3),
            pad_h: r.random_range(0..=2),
            pad_w: r.random_range(0..=2),
        };
        if g.validate().is_err() {
            continue;
        }
        tested += 1;
        let batch = r.random_range(1..=3usize);
        let x = uniform(&mut r, batch * g.input_len());
        let what = format!("{g:?} batch {batch}");
        let (mut y, mut arg) =
            (vec![0.0; batch * g.output_len()], vec![0u32; batch * g.output_len()]);
        pool2d_forward(&g, batch, PoolMethod::Max, &x, &mut y, Some(&mut arg)).unwrap();
        let (y_ref, arg_ref) = pool_ref(&g, batch, PoolMethod::Max, &x);
        assert_close(&format!("{what} max"), &y, &y_ref, 0.0);
        assert_eq!(arg, arg_ref, "{what} argmax");
        pool2d_forward(&g, batch, PoolMethod::Ave, &x, &mut y, None).unwrap();
        assert_close(&format!("{what} ave"), &y, &pool_ref(&g, batch, PoolMethod::Ave, &x).0, 1e-6);
    }
}
