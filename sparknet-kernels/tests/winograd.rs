//! Winograd F(4x4, 3x3) convolution against the direct f64 reference.

mod common;

use std::mem::MaybeUninit;

use common::*;
use sparknet_kernels::{
    Activation, ConvGeometry, Epilogue, Workspace, conv2d_forward_winograd, winograd_applicable,
    winograd_weights, winograd_weights_len,
};

fn geom(
    c: usize,
    (h, w): (usize, usize),
    k: usize,
    pad: (usize, usize),
    groups: usize,
) -> ConvGeometry {
    ConvGeometry {
        in_channels: c,
        in_h: h,
        in_w: w,
        out_channels: k,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        pad_h: pad.0,
        pad_w: pad.1,
        dilation_h: 1,
        dilation_w: 1,
        groups,
    }
}

/// Planes that are and are not multiples of the 4x4 tile, pads 0, 1 and 2 (and unequal), one
/// tile or fewer, more than 16 tiles (several lane chunks), groups, batches 1 and 3.
fn cases() -> Vec<(ConvGeometry, usize)> {
    vec![
        (geom(32, (10, 10), 8, (1, 1), 1), 1),
        (geom(48, (13, 13), 24, (1, 1), 1), 3),
        (geom(33, (7, 11), 10, (0, 2), 1), 2),
        (geom(32, (3, 3), 8, (1, 1), 1), 1),
        (geom(32, (5, 4), 12, (0, 1), 1), 1),
        (geom(64, (21, 19), 16, (1, 1), 2), 1),
        (geom(40, (18, 18), 40, (2, 2), 1), 3),
    ]
}

#[test]
fn winograd_matches_direct_convolution() {
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for (ci, (g, batch)) in cases().into_iter().enumerate() {
                assert!(winograd_applicable(&g), "case {ci}");
                let mut r = rng(900 + ci as u64);
                let x = uniform(&mut r, batch * g.input_len());
                let w = uniform(&mut r, g.weight_len());
                let b = uniform(&mut r, g.out_channels);
                let mut u = vec![0.0; winograd_weights_len(&g)];
                winograd_weights(&g, &w, &mut u).unwrap();
                let mut ws = Workspace::default();
                for (bias, relu) in [(Some(&b[..]), false), (None, false), (Some(&b[..]), true)] {
                    let mut want = conv_ref(&g, batch, &x, &w, bias);
                    if relu {
                        want.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                    let activation = if relu {
                        Activation::Relu { negative_slope: 0.0 }
                    } else {
                        Activation::Identity
                    };
                    let mut y = vec![MaybeUninit::new(f32::NAN); want.len()];
                    let epi = Epilogue { bias, activation };
                    conv2d_forward_winograd(&g, batch, &x, &u, epi, &mut y, &mut ws).unwrap();
                    // SAFETY: Ok means every element was written.
                    let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
                    let what = format!(
                        "case {ci} ({threads} threads, bias {}, relu {relu})",
                        bias.is_some()
                    );
                    // F(4x4, 3x3) rounds more than a direct sum (its transforms scale values
                    // up and back down): the error is bounded relative to the largest output,
                    // not to each one. Measured up to 4e-6 of it here.
                    let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
                    for (i, (&a, &e)) in y.iter().zip(&want).enumerate() {
                        let err = (a as f64 - e).abs();
                        assert!(err <= 1e-5 * scale, "{what}[{i}]: {a} vs {e} (scale {scale})");
                    }
                }
            }
        });
    }
}

#[test]
fn winograd_rejects_other_geometries_and_lengths() {
    let g = geom(32, (6, 6), 8, (1, 1), 1);
    let mut strided = g;
    strided.stride_h = 2;
    let mut few = g;
    few.in_channels = 16;
    assert!(!winograd_applicable(&strided) && !winograd_applicable(&few));
    let mut u = vec![0.0; winograd_weights_len(&g)];
    assert!(winograd_weights(&strided, &[0.0; 8 * 32 * 9], &mut u).is_err());
    assert!(winograd_weights(&g, &[0.0; 10], &mut u).is_err());
    let x = vec![0.0; g.input_len()];
    let mut y = vec![MaybeUninit::new(0.0); g.output_len()];
    let mut ws = Workspace::default();
    let epi = Epilogue::default();
    assert!(conv2d_forward_winograd(&g, 1, &x[1..], &u, epi, &mut y, &mut ws).is_err());
    assert!(conv2d_forward_winograd(&g, 1, &x, &u[1..], epi, &mut y, &mut ws).is_err());
    assert!(conv2d_forward_winograd(&few, 1, &x, &u, epi, &mut y, &mut ws).is_err());
}
