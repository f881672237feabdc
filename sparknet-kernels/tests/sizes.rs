//! Property tests for the output-size arithmetic of convolution and pooling.

use proptest::prelude::*;
use sparknet_kernels::{ConvGeometry, PoolGeometry};

fn conv(input: usize, kernel: usize, stride: usize, pad: usize, dilation: usize) -> ConvGeometry {
    ConvGeometry {
        in_channels: 1,
        in_h: input,
        in_w: 3,
        out_channels: 1,
        kernel_h: kernel,
        kernel_w: 1,
        stride_h: stride,
        stride_w: 1,
        pad_h: pad,
        pad_w: 0,
        dilation_h: dilation,
        dilation_w: 1,
        groups: 1,
    }
}

fn pool(input: usize, kernel: usize, stride: usize, pad: usize, other_pad: usize) -> PoolGeometry {
    PoolGeometry {
        channels: 1,
        in_h: input,
        in_w: 9,
        kernel_h: kernel,
        kernel_w: 3,
        stride_h: stride,
        stride_w: 1,
        pad_h: pad,
        pad_w: other_pad,
    }
}

proptest! {
    /// The convolution output counts exactly the window positions that fit in the padded input.
    #[test]
    fn conv_out_counts_fitting_windows(input in 1usize..60, kernel in 1usize..8, stride in 1usize..6,
                                       pad in 0usize..5, dilation in 1usize..4) {
        let g = conv(input, kernel, stride, pad, dilation);
        let extent = dilation * (kernel - 1) + 1;
        let fitting = (0..=input + 2 * pad).filter(|o| o * stride + extent <= input + 2 * pad).count();
        prop_assert_eq!(g.out_h(), fitting);
        prop_assert_eq!(g.validate().is_ok(), fitting > 0);
    }

    /// Pooling follows Caffe's float formula `ceil((in + 2p - k) / s) + 1` minus the clip rule
    /// (applied on every axis when any axis has padding); every valid geometry's windows all
    /// start inside the real input or the leading padding and (for stride <= kernel) cover it.
    #[test]
    fn pool_out_follows_caffe(input in 1usize..60, kernel in 1usize..8, stride in 1usize..6,
                              pad in 0usize..4, other_pad in 0usize..2) {
        let g = pool(input, kernel, stride, pad, other_pad);
        prop_assume!(kernel <= input + 2 * pad);
        let caffe = ((input + 2 * pad - kernel) as f64 / stride as f64).ceil() as usize + 1;
        let clipped = if (pad > 0 || other_pad > 0) && (caffe - 1) * stride >= input + pad { caffe - 1 } else { caffe };
        prop_assert_eq!(g.out_h(), clipped);
        if g.validate().is_ok() {
            let out = g.out_h();
            prop_assert!((out - 1) * stride < input + pad, "last window starts in the trailing padding");
            if stride <= kernel {
                prop_assert!((out - 1) * stride + kernel >= input + pad, "windows do not cover the input");
            }
        } else {
            prop_assert!(pad >= kernel || (clipped - 1) * stride >= input + pad);
        }
    }
}

/// Small, huge or zero sizes: each field of a geometry.
fn any_size() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..6, Just(usize::MAX), Just(usize::MAX / 2), (1usize << 20)..(1usize << 40)]
}

proptest! {
    /// The size arithmetic never panics (it saturates), and `validate` rejects whatever would
    /// overflow, so the kernels can trust the sizes of a validated geometry.
    #[test]
    fn size_arithmetic_never_panics(v in proptest::collection::vec(any_size(), 13)) {
        let g = ConvGeometry {
            in_channels: v[0], in_h: v[1], in_w: v[2], out_channels: v[3], kernel_h: v[4],
            kernel_w: v[5], stride_h: v[6], stride_w: v[7], pad_h: v[8], pad_w: v[9],
            dilation_h: v[10], dilation_w: v[11], groups: v[12],
        };
        let sizes = (g.out_h(), g.out_w(), g.weight_len(), g.input_len(), g.output_len());
        if g.validate().is_ok() {
            prop_assert!(sizes.2 < usize::MAX && sizes.3 < usize::MAX && sizes.4 < usize::MAX);
            prop_assert!(sizes.0 > 0 && sizes.1 > 0);
        }
        let p = PoolGeometry {
            channels: v[0], in_h: v[1], in_w: v[2], kernel_h: v[4], kernel_w: v[5],
            stride_h: v[6], stride_w: v[7], pad_h: v[8], pad_w: v[9],
        };
        let sizes = (p.out_h(), p.out_w(), p.input_len(), p.output_len());
        if p.validate().is_ok() {
            prop_assert!(sizes.0 > 0 && sizes.1 > 0 && sizes.2 < usize::MAX && sizes.3 < usize::MAX);
        }
    }
}

/// Regression (found by `size_arithmetic_never_panics` in CI): a zero-sized pooling window on a
/// `usize::MAX` axis left a room of `usize::MAX`, and the `+ 1` of the output size overflowed.
#[test]
fn output_size_of_a_huge_axis_saturates() {
    let p = PoolGeometry {
        channels: 1,
        in_h: usize::MAX,
        in_w: 1,
        kernel_h: 0,
        kernel_w: 1,
        stride_h: 1,
        stride_w: 1,
        pad_h: 0,
        pad_w: 0,
    };
    assert_eq!(p.out_h(), usize::MAX);
    assert!(p.validate().is_err());
    let g = ConvGeometry {
        in_channels: 1,
        in_h: usize::MAX,
        in_w: 1,
        out_channels: 1,
        kernel_h: 1,
        kernel_w: 1,
        stride_h: 1,
        stride_w: 1,
        pad_h: 0,
        pad_w: 0,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
    };
    assert_eq!(g.out_h(), usize::MAX);
    assert!(g.validate().is_err());
}
