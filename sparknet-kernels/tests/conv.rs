//! Convolution kernels against a direct-loop reference and finite differences.

mod common;

use common::*;
use sparknet_kernels::{
    Activation, ConvGeometry, Epilogue, KernelError, Workspace, conv2d_backward_data,
    conv2d_backward_params, conv2d_forward, conv2d_forward_with,
};

#[allow(clippy::too_many_arguments)]
fn geom(
    (in_channels, in_h, in_w): (usize, usize, usize),
    out_channels: usize,
    (kernel_h, kernel_w): (usize, usize),
    (stride_h, stride_w): (usize, usize),
    (pad_h, pad_w): (usize, usize),
    (dilation_h, dilation_w): (usize, usize),
    groups: usize,
) -> ConvGeometry {
    ConvGeometry {
        in_channels,
        in_h,
        in_w,
        out_channels,
        kernel_h,
        kernel_w,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dilation_h,
        dilation_w,
        groups,
    }
}

/// `(geometry, batch)` cases: LeNet conv2-like, groups + dilation + asymmetric everything,
/// depthwise, pointwise, strided 1x1, kernel filling the padded input, stride > kernel, batch 1.
fn cases() -> Vec<(ConvGeometry, usize)> {
    vec![
        (geom((6, 12, 12), 8, (5, 5), (1, 1), (0, 0), (1, 1), 1), 3),
        (geom((4, 9, 11), 6, (3, 2), (2, 1), (1, 2), (2, 1), 2), 3),
        (geom((3, 7, 6), 4, (2, 3), (1, 3), (2, 0), (1, 2), 1), 2),
        (geom((4, 8, 8), 4, (3, 3), (1, 1), (1, 1), (1, 1), 4), 5),
        (geom((6, 5, 7), 4, (1, 1), (1, 1), (0, 0), (1, 1), 2), 2),
        (geom((5, 7, 7), 3, (1, 1), (2, 2), (0, 0), (1, 1), 1), 2),
        (geom((2, 4, 3), 3, (6, 5), (1, 1), (1, 1), (1, 1), 1), 2),
        (geom((3, 10, 9), 2, (2, 2), (3, 4), (1, 0), (1, 1), 1), 3),
        (geom((8, 9, 9), 6, (3, 3), (2, 2), (1, 1), (1, 1), 2), 1),
        // Planes of >= 256 pixels: the weight gradient goes through transposed columns.
        (geom((3, 20, 20), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1), 2),
        (geom((4, 17, 16), 4, (3, 3), (1, 1), (1, 1), (1, 1), 2), 2),
        (geom((3, 16, 16), 2, (1, 1), (1, 1), (0, 0), (1, 1), 1), 2),
        // Batch 1 with enough output channels that a multi-thread forward splits them in bands.
        (geom((4, 6, 6), 40, (3, 3), (1, 1), (1, 1), (1, 1), 1), 1),
        (geom((4, 6, 6), 70, (3, 3), (1, 1), (1, 1), (1, 1), 2), 1),
    ]
}

/// [`cases`] plus outputs of more than one cache tile even on one thread, split by columns
/// (positions outnumber channels), then by rows (channels outnumber positions). Forward only:
/// their weight gradients sum thousands of products, beyond the backward tests' tolerance.
fn forward_cases() -> Vec<(ConvGeometry, usize)> {
    let mut all = cases();
    all.push((geom((3, 64, 64), 16, (3, 3), (1, 1), (1, 1), (1, 1), 1), 1));
    all.push((geom((8, 8, 8), 600, (1, 1), (1, 1), (0, 0), (1, 1), 1), 1));
    all
}

/// Runs `f` under rayon pools of 1, 3 and 5 threads (all batch plans: sequential samples with a
/// threaded GEMM, per-sample chunks with partial weight gradients, and chunks that each run a
/// threaded GEMM, e.g. batch 2 on 5 threads).
fn with_pools(mut f: impl FnMut(usize) + Send) {
    for threads in [1, 3, 5] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| f(threads));
    }
}

#[test]
fn forward_matches_direct_convolution() {
    with_pools(|threads| {
        for (ci, (g, batch)) in forward_cases().into_iter().enumerate() {
            g.validate().unwrap();
            let mut r = rng(ci as u64);
            let x = uniform(&mut r, batch * g.input_len());
            let w = uniform(&mut r, g.weight_len());
            let b = uniform(&mut r, g.out_channels);
            let mut y = vec![f32::NAN; batch * g.output_len()];
            let mut ws = Workspace::default();
            conv2d_forward(&g, batch, &x, &w, Some(&b), &mut y, &mut ws).unwrap();
            let what = format!("case {ci} ({threads} threads) forward");
            assert_close(&what, &y, &conv_ref(&g, batch, &x, &w, Some(&b)), 1e-5);
            // No bias; and a warm workspace does not grow again.
            let held = ws.len();
            conv2d_forward(&g, batch, &x, &w, None, &mut y, &mut ws).unwrap();
            assert_close(&what, &y, &conv_ref(&g, batch, &x, &w, None), 1e-5);
            assert_eq!(ws.len(), held, "{what}: workspace grew on a warm call");
        }
    });
}

/// The fused activation gives exactly the separate pass's bits, on every split of the output,
/// into uninitialised memory (here: NaN-filled, which the kernel must never read).
#[test]
fn forward_with_relu_equals_forward_then_relu() {
    with_pools(|threads| {
        for (ci, (g, batch)) in forward_cases().into_iter().enumerate() {
            let mut r = rng(50 + ci as u64);
            let x = uniform(&mut r, batch * g.input_len());
            let w = uniform(&mut r, g.weight_len());
            let b = uniform(&mut r, g.out_channels);
            let mut ws = Workspace::default();
            for bias in [Some(&b[..]), None] {
                let mut expect = vec![0.0; batch * g.output_len()];
                conv2d_forward(&g, batch, &x, &w, bias, &mut expect, &mut ws).unwrap();
                let plain = expect.clone();
                for negative_slope in [0.0, 0.1] {
                    let activation = Activation::Relu { negative_slope };
                    let mut expect = plain.clone();
                    activation.apply(&mut expect);
                    let mut got = vec![std::mem::MaybeUninit::new(f32::NAN); expect.len()];
                    let epi = Epilogue { bias, activation };
                    conv2d_forward_with(&g, batch, &x, &w, epi, &mut got, &mut ws).unwrap();
                    for (i, (got, want)) in got.iter().zip(&expect).enumerate() {
                        // SAFETY: conv2d_forward_with returned Ok, so it wrote every element.
                        let got = unsafe { got.assume_init() };
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "case {ci} ({threads} threads, slope {negative_slope}) output {i}"
                        );
                    }
                }
            }
        }
    });
}

#[test]
fn backward_matches_direct_adjoint_and_accumulates() {
    with_pools(|threads| {
        for (ci, (g, batch)) in cases().into_iter().enumerate() {
            let mut r = rng(100 + ci as u64);
            let x = uniform(&mut r, batch * g.input_len());
            let w = uniform(&mut r, g.weight_len());
            let gy = uniform(&mut r, batch * g.output_len());
            let (gx_ref, gw_ref, gb_ref) = conv_adjoint_ref(&g, batch, &x, &w, &gy);
            let mut ws = Workspace::default();
            let what = format!("case {ci} ({threads} threads)");

            let mut gx = vec![f32::NAN; x.len()];
            conv2d_backward_data(&g, batch, &gy, &w, &mut gx, &mut ws).unwrap();
            assert_close(&format!("{what} grad_input"), &gx, &gx_ref, 1e-5);

            // Accumulation: start from 0.5 everywhere, add the gradient twice.
            let mut gw = vec![0.5f32; w.len()];
            let mut gb = vec![0.5f32; g.out_channels];
            for _ in 0..2 {
                conv2d_backward_params(&g, batch, &x, &gy, &mut gw, Some(&mut gb), &mut ws)
                    .unwrap();
            }
            let twice = |v: &[f64]| v.iter().map(|a| 0.5 + 2.0 * a).collect::<Vec<_>>();
            // Each weight gradient sums batch x out_h x out_w products (up to ~600 here) whose
            // signs cancel, in whatever order the GEMM takes: 5e-5 of the result's scale.
            assert_close(&format!("{what} grad_weight"), &gw, &twice(&gw_ref), 5e-5);
            assert_close(&format!("{what} grad_bias"), &gb, &twice(&gb_ref), 1e-5);
        }
    });
}

/// GradientChecker: step 1e-2, tolerance 2e-3 relative to max(1, |gradient|); the loss is
/// `sum(output * top)` over f32 outputs, accumulated in f64.
#[test]
fn backward_matches_finite_differences() {
    const CHECK: GradientChecker = GradientChecker { step: 1e-2, tol: 2e-3 };
    for (ci, (g, batch)) in cases().into_iter().enumerate() {
        let mut r = rng(200 + ci as u64);
        let x = uniform(&mut r, batch * g.input_len());
        let w = uniform(&mut r, g.weight_len());
        let b = uniform(&mut r, g.out_channels);
        let top = uniform(&mut r, batch * g.output_len());
        let mut ws = Workspace::default();
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; top.len()];
            conv2d_forward(&g, batch, x, w, Some(b), &mut y, &mut Workspace::default()).unwrap();
            y
        };
        let mut gx = vec![0.0; x.len()];
        conv2d_backward_data(&g, batch, &top, &w, &mut gx, &mut ws).unwrap();
        let (mut gw, mut gb) = (vec![0.0; w.len()], vec![0.0; b.len()]);
        conv2d_backward_params(&g, batch, &x, &top, &mut gw, Some(&mut gb), &mut ws).unwrap();
        let what = format!("case {ci}");
        let probes = probe_indices(x.len(), 40, ci as u64);
        CHECK.check(&format!("{what} d/dx"), (&x, &gx), &top, &probes, |xp| fwd(xp, &w, &b));
        let probes = probe_indices(w.len(), 40, ci as u64);
        CHECK.check(&format!("{what} d/dw"), (&w, &gw), &top, &probes, |wp| fwd(&x, wp, &b));
        let probes = probe_indices(b.len(), 40, ci as u64);
        CHECK.check(&format!("{what} d/db"), (&b, &gb), &top, &probes, |bp| fwd(&x, &w, bp));
    }
}

#[test]
fn geometry_arithmetic_matches_caffe() {
    // LeNet conv1: 28 -> 24; CIFAR-10 quick conv1: 32 pad 2 k5 -> 32; AlexNet conv1: 227 k11 s4 -> 55.
    assert_eq!(geom((1, 28, 28), 20, (5, 5), (1, 1), (0, 0), (1, 1), 1).out_h(), 24);
    assert_eq!(geom((3, 32, 32), 32, (5, 5), (1, 1), (2, 2), (1, 1), 1).out_w(), 32);
    let alex = geom((3, 227, 227), 96, (11, 11), (4, 4), (0, 0), (1, 1), 1);
    assert_eq!((alex.out_h(), alex.out_w(), alex.weight_len()), (55, 55, 96 * 3 * 121));
    // Dilation 2 of a 3x3 kernel spans 5: 10 + 2 - 5 + 1 = 8.
    assert_eq!(geom((1, 10, 10), 1, (3, 3), (1, 1), (1, 1), (2, 2), 1).out_h(), 8);
    let grouped = geom((96, 27, 27), 256, (5, 5), (1, 1), (2, 2), (1, 1), 2);
    assert_eq!(grouped.weight_len(), 256 * 48 * 25);
}

#[test]
fn bad_geometry_and_lengths_are_errors() {
    let good = geom((4, 8, 8), 6, (3, 3), (1, 1), (1, 1), (1, 1), 2);
    let bad_groups = ConvGeometry { groups: 3, ..good };
    assert!(matches!(bad_groups.validate(), Err(KernelError::Geometry { .. })));
    let zero_stride = ConvGeometry { stride_w: 0, ..good };
    assert!(zero_stride.validate().unwrap_err().to_string().contains("stride_w is 0"));
    let too_big = ConvGeometry { kernel_h: 11, ..good };
    assert!(too_big.validate().unwrap_err().to_string().contains("larger than the padded input"));
    let dilated = ConvGeometry { dilation_h: 5, ..good };
    assert!(dilated.validate().is_err());

    let mut ws = Workspace::default();
    let x = vec![0.0; 2 * good.input_len()];
    let w = vec![0.0; good.weight_len()];
    let mut y = vec![0.0; 2 * good.output_len()];
    let err = conv2d_forward(&good, 2, &x[1..], &w, None, &mut y, &mut ws).unwrap_err();
    assert_eq!(
        err,
        KernelError::Length {
            kernel: "conv2d_forward",
            what: "input",
            expected: x.len(),
            actual: x.len() - 1
        }
    );
    assert!(err.to_string().contains("conv2d_forward"));
    let err = conv2d_forward(&good, 2, &x, &w, Some(&[0.0; 5]), &mut y, &mut ws).unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
    let err = conv2d_forward(&too_big, 2, &x, &w, None, &mut y, &mut ws).unwrap_err();
    assert!(matches!(err, KernelError::Geometry { .. }));
    let mut gx = vec![0.0; x.len()];
    let err = conv2d_backward_data(&good, 2, &y, &w[1..], &mut gx, &mut ws).unwrap_err();
    assert!(err.to_string().contains("weight"), "{err}");
    let mut gw = vec![0.0; w.len()];
    let err = conv2d_backward_params(&good, 3, &x, &y, &mut gw, None, &mut ws).unwrap_err();
    assert!(err.to_string().contains("conv2d_backward_params"), "{err}");
    let mut gb = vec![0.0; 2];
    let err =
        conv2d_backward_params(&good, 2, &x, &y, &mut gw, Some(&mut gb), &mut ws).unwrap_err();
    assert!(err.to_string().contains("grad_bias"), "{err}");
    // An empty batch is valid and touches nothing.
    conv2d_forward(&good, 0, &[], &w, None, &mut [], &mut ws).unwrap();
}

/// Direct Deconvolution (Caffe): every bottom pixel scatters `x * W` into the output, with
/// weights `[bottom_channels, num_output / groups, kh, kw]` and output size
/// `stride * (in - 1) + dilation * (kernel - 1) + 1 - 2 * pad`.
fn deconv_ref(g: &ConvGeometry, batch: usize, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f64> {
    // In the conv geometry the deconvolution's bottom is the conv output and its top the conv input.
    let (bh, bw, bc) = (g.out_h(), g.out_w(), g.out_channels);
    let (th, tw, tc) = (g.in_h, g.in_w, g.in_channels);
    let (bcg, tcg) = (bc / g.groups, tc / g.groups);
    let mut y = vec![0f64; batch * tc * th * tw];
    for n in 0..batch {
        for (m, bias) in b.iter().enumerate() {
            y[(n * tc + m) * th * tw..(n * tc + m + 1) * th * tw].fill(*bias as f64);
        }
        for c in 0..bc {
            let grp = c / bcg;
            for (h, wi) in (0..bh).flat_map(|h| (0..bw).map(move |wi| (h, wi))) {
                let v = x[((n * bc + c) * bh + h) * bw + wi] as f64;
                for ml in 0..tcg {
                    for ki in 0..g.kernel_h {
                        for kj in 0..g.kernel_w {
                            let oy =
                                (h * g.stride_h + ki * g.dilation_h) as isize - g.pad_h as isize;
                            let ox =
                                (wi * g.stride_w + kj * g.dilation_w) as isize - g.pad_w as isize;
                            if oy < 0 || ox < 0 || oy >= th as isize || ox >= tw as isize {
                                continue;
                            }
                            let m = grp * tcg + ml;
                            let wv = w[((c * tcg + ml) * g.kernel_h + ki) * g.kernel_w + kj] as f64;
                            y[((n * tc + m) * th + oy as usize) * tw + ox as usize] += v * wv;
                        }
                    }
                }
            }
        }
    }
    y
}

/// The documented Deconvolution mapping: forward = `conv2d_backward_data` + bias, backward data
/// = `conv2d_forward`, weight gradient = `conv2d_backward_params` with the roles swapped.
/// Finite differences: step 1e-2, tolerance 2e-3 relative to max(1, |gradient|).
#[test]
fn deconvolution_roles_match_direct_transposed_convolution() {
    const CHECK: GradientChecker = GradientChecker { step: 1e-2, tol: 2e-3 };
    // Deconvolution: bottom 4 x 5 x 4, num_output 6, kernel 3x2, stride 2x1, pad 1x0, groups 2:
    // top 6 x (2*4+3-2 = 9) x (3+2 = 5).
    let g = geom((6, 9, 5), 4, (3, 2), (2, 1), (1, 0), (1, 1), 2);
    assert_eq!((g.out_h(), g.out_w()), (5, 4));
    let batch = 2;
    let mut r = rng(300);
    let x = uniform(&mut r, batch * g.output_len());
    let w = uniform(&mut r, g.weight_len());
    let b = uniform(&mut r, g.in_channels);
    let top = uniform(&mut r, batch * g.input_len());
    let mut ws = Workspace::default();
    let deconv = |x: &[f32], w: &[f32], ws: &mut Workspace| {
        let mut y = vec![0.0; batch * g.input_len()];
        conv2d_backward_data(&g, batch, x, w, &mut y, ws).unwrap();
        for (i, v) in y.iter_mut().enumerate() {
            *v += b[(i / (g.in_h * g.in_w)) % g.in_channels];
        }
        y
    };
    assert_close(
        "deconv forward",
        &deconv(&x, &w, &mut ws),
        &deconv_ref(&g, batch, &x, &w, &b),
        1e-5,
    );

    let mut gx = vec![0.0; x.len()];
    conv2d_forward(&g, batch, &top, &w, None, &mut gx, &mut ws).unwrap();
    let mut gw = vec![0.0; w.len()];
    conv2d_backward_params(&g, batch, &top, &x, &mut gw, None, &mut ws).unwrap();
    let probes = probe_indices(x.len(), 60, 1);
    CHECK.check("deconv d/dx", (&x, &gx), &top, &probes, |xp| {
        deconv(xp, &w, &mut Workspace::default())
    });
    let probes = probe_indices(w.len(), 60, 2);
    CHECK.check("deconv d/dw", (&w, &gw), &top, &probes, |wp| {
        deconv(&x, wp, &mut Workspace::default())
    });
}

/// Seeded random geometries (groups, dilation, asymmetric kernel/stride/pad, batch 1-3): forward,
/// backward data and backward params against the direct loops.
#[test]
fn random_geometries_match_direct_loops() {
    use rand::Rng;
    let mut r = rng(400);
    let mut tested = 0;
    while tested < 40 {
        let groups = r.random_range(1..=3usize);
        let g = ConvGeometry {
            in_channels: groups * r.random_range(1..=3usize),
            in_h: r.random_range(1..=9),
            in_w: r.random_range(1..=9),
            out_channels: groups * r.random_range(1..=3usize),
            kernel_h: r.random_range(1..=4),
            kernel_w: r.random_range(1..=4),
            stride_h: r.random_range(1..=3),
            stride_w: r.random_range(1..=3),
            pad_h: r.random_range(0..=2),
            pad_w: r.random_range(0..=2),
            dilation_h: r.random_range(1..=2),
            dilation_w: r.random_range(1..=2),
            groups,
        };
        if g.validate().is_err() {
            continue;
        }
        tested += 1;
        let batch = r.random_range(1..=3usize);
        let x = uniform(&mut r, batch * g.input_len());
        let w = uniform(&mut r, g.weight_len());
        let gy = uniform(&mut r, batch * g.output_len());
        let mut ws = Workspace::default();
        let what = format!("{g:?} batch {batch}");
        let mut y = vec![0.0; gy.len()];
        conv2d_forward(&g, batch, &x, &w, None, &mut y, &mut ws).unwrap();
        assert_close(&format!("{what} forward"), &y, &conv_ref(&g, batch, &x, &w, None), 1e-5);
        let (gx_ref, gw_ref, _) = conv_adjoint_ref(&g, batch, &x, &w, &gy);
        let mut gx = vec![0.0; x.len()];
        conv2d_backward_data(&g, batch, &gy, &w, &mut gx, &mut ws).unwrap();
        assert_close(&format!("{what} grad_input"), &gx, &gx_ref, 1e-5);
        let mut gw = vec![0.0; w.len()];
        conv2d_backward_params(&g, batch, &x, &gy, &mut gw, None, &mut ws).unwrap();
        assert_close(&format!("{what} grad_weight"), &gw, &gw_ref, 1e-5);
    }
}
