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
