//! Caffe's hot CPU kernels on plain `f32` slices: im2col + GEMM convolution (forward with a
//! fused bias and ReLU, backward data, backward parameters; groups, dilation, per-axis
//! pad/stride), Winograd F(4x4, 3x3) for 3x3 stride-1 forward passes, Caffe pooling (MAX/AVE,
//! global, ceil-mode output with Caffe's clip rule; STOCHASTIC from caller-drawn uniforms), LRN
//! (ACROSS_CHANNELS, WITHIN_CHANNEL), a row-major [`sgemm`] and a [`gemv`] for InnerProduct.
//!
//! ```
//! use sparknet_kernels::{ConvGeometry, Workspace, conv2d_forward};
//!
//! // One 1x4x4 input, two 3x3 filters, pad 1, stride 1: output 2x4x4.
//! let g = ConvGeometry {
//!     in_channels: 1, in_h: 4, in_w: 4, out_channels: 2,
//!     kernel_h: 3, kernel_w: 3, stride_h: 1, stride_w: 1,
//!     pad_h: 1, pad_w: 1, dilation_h: 1, dilation_w: 1, groups: 1,
//! };
//! let input = vec![1.0f32; 16];
//! let mut weight = vec![0.0f32; g.weight_len()];
//! weight[4] = 2.0; // filter 0: centre tap 2 (doubles the input)
//! weight[9..18].fill(1.0); // filter 1: box sum
//! let mut output = vec![0.0f32; 2 * g.out_h() * g.out_w()];
//! let mut ws = Workspace::default();
//! conv2d_forward(&g, 1, &input, &weight, Some(&[0.0, 0.5]), &mut output, &mut ws)?;
//! assert_eq!(output[0], 2.0);
//! assert_eq!(output[16], 4.5); // corner: 4 ones in the window + bias 0.5
//! assert_eq!(output[16 + 5], 9.5); // interior: 9 ones + bias 0.5
//! # Ok::<(), sparknet_kernels::KernelError>(())
//! ```
//!
//! # Layout conventions
//! - Activations are NCHW, contiguous, row-major: element `(n, c, h, w)` of a `N x C x H x W`
//!   blob is at `((n * C + c) * H + h) * W + w`, as in Caffe's blobs.
//! - Convolution weights are row-major `[out_channels, in_channels / groups, kernel_h, kernel_w]`
//!   (Caffe's weight blob); group `g` uses output channels `g*out/groups ..` and input channels
//!   `g*in/groups ..`. Biases are `[out_channels]`.
//! - Pooling argmax is a flat index `h * in_w + w` within the sample's plane, as Caffe's mask.
//! - Every length is checked against the geometry: a mismatch is an `Err` naming the kernel, the
//!   argument, the expected and the actual length. Nothing panics on bad input.
//!
//! # Overwrite or accumulate
//! | function | writes |
//! |---|---|
//! | [`conv2d_forward`] / [`conv2d_forward_with`] / [`conv2d_forward_winograd`] | overwrites `output` |
//! | [`conv2d_backward_data`] | overwrites `grad_input` |
//! | [`conv2d_backward_params`] | **accumulates** (`+=`) into `grad_weight` and `grad_bias` (Caffe accumulates parameter diffs; zero them once per iteration) |
//! | [`sgemm`] | `C = alpha * op(A) * op(B) + beta * C` (`beta = 0` overwrites, ignoring old `C`) |
//! | [`gemv`] | overwrites `y` |
//! | [`relu_forward`] / [`relu_backward`] | overwrite `y` / `dx` (may start uninitialised) |
//! | [`pool2d_forward`] / [`pool2d_backward`] | overwrite `output` + `argmax` / `grad_input` |
//! | [`stochastic_pool_forward_train`] / [`stochastic_pool_forward_test`] | overwrite `output` (+ `index`) |
//! | [`stochastic_pool_backward_train`] / [`stochastic_pool_backward_test`] | overwrite `grad_input` |
//! | [`lrn_across_forward`] / [`lrn_across_backward`] | overwrite `output` + `scale` / `grad_input` |
//! | [`lrn_within_forward`] / [`lrn_within_backward`] | overwrite `output` / `grad_input` |
//! | [`batch_norm_forward_train`] / [`batch_norm_backward_train`] / [`channel_affine`] | overwrite `y` (+ statistics) / `dx` (may start uninitialised) |
//! | [`channel_scale_backward`] | overwrites `dx`, `dscale`, `dbias` (not accumulated: the net accumulates) |
//! | [`eltwise_sum`] / [`eltwise_prod`] / [`eltwise_max`] and their backward, [`scaled_copy`], [`concat_forward`] / [`concat_backward`] | overwrite their outputs (may start uninitialised) |
//! | [`softmax_forward`] / [`softmax_backward`] / [`softmax_loss_backward`] | overwrite `y` / `dx` (may start uninitialised) |
//!
//! Deconvolution uses the same [`ConvGeometry`] with roles swapped: the geometry describes the
//! convolution whose *input* is the deconvolution's top. For a Deconvolution with bottom
//! `C x H x W`, `num_output` M, kernel k, stride s, pad p, dilation d (per axis) and `groups`,
//! use `ConvGeometry { in_channels: M, in_h: s*(H-1) + d*(k-1) + 1 - 2*p, out_channels: C, .. }`
//! with the same kernel/stride/pad/dilation/groups (then `out_h() == H`). Caffe's deconvolution
//! weight blob `[C, M/groups, kh, kw]` is exactly this geometry's weight layout. Then:
//! - forward: [`conv2d_backward_data`] (`grad_output` = bottom, `grad_input` = top), plus the
//!   bias per top channel added by the caller;
//! - backward data: [`conv2d_forward`] with `input` = top gradient, no bias, `output` = bottom
//!   gradient;
//! - weight gradient: [`conv2d_backward_params`] with `input` = top gradient and `grad_output` =
//!   bottom, `grad_bias` = `None` (the bias gradient is the sum of the top gradient per channel).
//!
//! The test `deconvolution_roles_match_direct_transposed_convolution` checks this mapping against
//! a direct scatter implementation and finite differences.
//!
//! # Threading
//! Everything runs on the current rayon pool, so `RAYON_NUM_THREADS` (or an enclosing
//! `ThreadPool::install`) sets the thread count; call the kernels from a thread of that pool
//! (as `sparknet-net`'s `Net` does), or each parallel loop first hands itself over to the pool
//! and the caller sleeps until it is done. Convolutions with a batch of two or more split the
//! batch into one chunk per thread, each with its own column buffer and single-threaded GEMMs
//! (per-thread partial weight gradients are summed at the end); a single sample is split itself:
//! im2col over input channels, then the forward product in cache-sized tiles of the output
//! (bias and activation included), Winograd's transforms over channels and its 36 GEMMs over
//! positions. Pooling and LRN run in parallel over the `N x C` planes, [`gemv`] over rows,
//! BatchNorm's and Scale's reductions one channel per task (statistics, then that channel's
//! outputs while it is in cache), the elementwise kernels over fixed-size chunks, Softmax over
//! its outer blocks. A
//! [`Workspace`] grows to the largest size a call needs and is reused, so a warm layer's column
//! buffers and partial gradients are never reallocated (inside each GEMM call the `gemm` crate
//! may still allocate its own packing buffer). Pooling and ACROSS_CHANNELS LRN need no scratch;
//! WITHIN_CHANNEL LRN backward keeps a per-thread scratch that only grows.
//!
//! # Instruction sets
//! The crate builds for the baseline target. The `gemm` crate picks AVX2 or AVX-512 kernels at
//! run time; the crate's own hottest loops (MAX pooling's values pass, the fused activation,
//! [`gemv`], Winograd's transforms) are compiled three times and dispatched at run time the same
//! way (`simd.rs`). Results do not depend on which copy runs.

mod blas;
mod channel;
mod conv;
mod eltwise;
mod error;
mod geometry;
mod im2col;
mod lrn;
mod pool;
mod pool_stochastic;
mod relu;
mod softmax;
mod winograd;
#[macro_use]
mod simd;

pub use blas::{gemv, sgemm, sum, transpose};
pub use channel::{
    ChannelAffine, ChannelShape, batch_norm_backward_train, batch_norm_forward_train,
    batch_norm_global_stats, batch_norm_update_stats, channel_affine, channel_scale_backward,
};
pub use conv::{
    Activation, Epilogue, Workspace, conv2d_backward_data, conv2d_backward_params, conv2d_forward,
    conv2d_forward_with,
};
pub use eltwise::{
    concat_backward, concat_forward, eltwise_max, eltwise_max_backward, eltwise_prod,
    eltwise_prod_backward, eltwise_sum, scaled_copy,
};
pub use error::{KernelError, Result};
pub use geometry::ConvGeometry;
pub use lrn::{
    LrnGeometry, LrnParams, lrn_across_backward, lrn_across_forward, lrn_within_backward,
    lrn_within_forward,
};
pub use pool::{PoolGeometry, PoolMethod, pool2d_backward, pool2d_forward};
pub use pool_stochastic::{
    stochastic_pool_backward_test, stochastic_pool_backward_train, stochastic_pool_forward_test,
    stochastic_pool_forward_train,
};
pub use relu::{relu_backward, relu_forward};
pub use softmax::{
    SoftmaxShape, softmax_backward, softmax_forward, softmax_loss_backward, softmax_loss_forward,
};
pub use winograd::{
    conv2d_forward_winograd, winograd_applicable, winograd_weights, winograd_weights_len,
};
