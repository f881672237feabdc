//! The geometry of a 2-D convolution ([`ConvGeometry`]: output sizes, buffer lengths,
//! validation) and the checks it shares with pooling's geometry
//! ([`PoolGeometry`](crate::PoolGeometry)): positive sizes and sizes that fit the address space.
//! im2col, the GEMM convolution and Winograd all read it; it depends on none of them.

use std::fmt::Debug;

use crate::error::{Result, geometry};

/// Fails naming the first field of `fields` that is 0 (`"{name} is 0 in {whole:?}"`).
pub(crate) fn check_positive(
    kernel: &'static str,
    fields: &[(&str, usize)],
    whole: &impl Debug,
) -> Result<()> {
    match fields.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(geometry(kernel, format!("{name} is 0 in {whole:?}"))),
        None => Ok(()),
    }
}

/// A buffer length the kernels can index: at most a quarter of `isize::MAX` elements.
pub(crate) fn fits(len: usize) -> bool {
    len <= isize::MAX as usize / 4
}

/// Fails with `"sizes overflow usize in {whole:?}"` unless `ok`.
pub(crate) fn check_sizes(kernel: &'static str, ok: bool, whole: &impl Debug) -> Result<()> {
    if ok { Ok(()) } else { Err(geometry(kernel, format!("sizes overflow usize in {whole:?}"))) }
}

/// One 2-D convolution, Caffe semantics (NCHW input, weights `[out, in/groups, kh, kw]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    /// Input channels (all groups together).
    pub in_channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output channels (all groups together), Caffe's `num_output`.
    pub out_channels: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Zero padding added above and below.
    pub pad_h: usize,
    /// Zero padding added left and right.
    pub pad_w: usize,
    /// Vertical dilation (1 = dense kernel).
    pub dilation_h: usize,
    /// Horizontal dilation (1 = dense kernel).
    pub dilation_w: usize,
    /// Channel groups: input and output channels split into this many independent convolutions.
    pub groups: usize,
}

/// The product of `dims`, or `None` on overflow.
fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// `(in + 2 pad - (dilation (kernel - 1) + 1)) / stride + 1`, or 0 when the geometry is invalid.
fn conv_out(input: usize, pad: usize, kernel: usize, dilation: usize, stride: usize) -> usize {
    let extent = dilation.saturating_mul(kernel.saturating_sub(1)).saturating_add(1);
    match (input.saturating_add(pad.saturating_mul(2))).checked_sub(extent) {
        Some(room) if stride > 0 && kernel > 0 => (room / stride).saturating_add(1),
        _ => 0,
    }
}

impl ConvGeometry {
    /// Output height: `(in_h + 2*pad_h - (dilation_h*(kernel_h-1)+1)) / stride_h + 1` (0 if invalid).
    pub fn out_h(&self) -> usize {
        conv_out(self.in_h, self.pad_h, self.kernel_h, self.dilation_h, self.stride_h)
    }

    /// Output width: `(in_w + 2*pad_w - (dilation_w*(kernel_w-1)+1)) / stride_w + 1` (0 if invalid).
    pub fn out_w(&self) -> usize {
        conv_out(self.in_w, self.pad_w, self.kernel_w, self.dilation_w, self.stride_w)
    }

    /// Weight elements: `out_channels * in_channels/groups * kernel_h * kernel_w`.
    /// Saturates at `usize::MAX` when the product overflows (which [`ConvGeometry::validate`] rejects).
    pub fn weight_len(&self) -> usize {
        let per_group = self.in_channels / self.groups.max(1);
        product(&[self.out_channels, per_group, self.kernel_h, self.kernel_w]).unwrap_or(usize::MAX)
    }

    /// Elements of one input sample (`in_channels * in_h * in_w`).
    pub fn input_len(&self) -> usize {
        product(&[self.in_channels, self.in_h, self.in_w]).unwrap_or(usize::MAX)
    }

    /// Elements of one output sample (`out_channels * out_h * out_w`).
    pub fn output_len(&self) -> usize {
        product(&[self.out_channels, self.out_h(), self.out_w()]).unwrap_or(usize::MAX)
    }

    /// Checks every size is positive, `groups` divides both channel counts and the dilated kernel
    /// fits in the padded input (and that no size overflows).
    pub fn validate(&self) -> Result<()> {
        const K: &str = "ConvGeometry";
        let fields = [
            ("in_channels", self.in_channels),
            ("in_h", self.in_h),
            ("in_w", self.in_w),
            ("out_channels", self.out_channels),
            ("kernel_h", self.kernel_h),
            ("kernel_w", self.kernel_w),
            ("stride_h", self.stride_h),
            ("stride_w", self.stride_w),
            ("dilation_h", self.dilation_h),
            ("dilation_w", self.dilation_w),
            ("groups", self.groups),
        ];
        check_positive(K, &fields, self)?;
        if !self.in_channels.is_multiple_of(self.groups)
            || !self.out_channels.is_multiple_of(self.groups)
        {
            return Err(geometry(
                K,
                format!(
                    "groups {} must divide in_channels {} and out_channels {}",
                    self.groups, self.in_channels, self.out_channels
                ),
            ));
        }
        let axes = [
            ("height", self.in_h, self.pad_h, self.kernel_h, self.dilation_h),
            ("width", self.in_w, self.pad_w, self.kernel_w, self.dilation_w),
        ];
        for (axis, input, pad, kernel, dilation) in axes {
            let padded = pad.checked_mul(2).and_then(|p| p.checked_add(input));
            let extent = dilation.checked_mul(kernel - 1).and_then(|e| e.checked_add(1));
            match (padded, extent) {
                (Some(p), Some(e)) if e <= p => {}
                _ => {
                    return Err(geometry(
                        K,
                        format!(
                            "dilated kernel {axis} {kernel} (dilation {dilation}) is larger than \
                             the padded input {axis} {input} + 2*{pad}"
                        ),
                    ));
                }
            }
        }
        let (oh, ow) = (self.out_h(), self.out_w());
        let per_group = self.in_channels / self.groups;
        let sizes = [
            product(&[self.in_channels, self.in_h, self.in_w]),
            product(&[self.out_channels, oh, ow]),
            product(&[self.out_channels, per_group, self.kernel_h, self.kernel_w]),
            product(&[self.in_channels, self.kernel_h, self.kernel_w, oh, ow]),
        ];
        check_sizes(K, sizes.iter().all(|s| s.is_some_and(fits)), self)
    }

    /// True for a 1x1, stride-1, unpadded convolution: the input is its own column buffer.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kernel_h == 1
            && self.kernel_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_h == 0
            && self.pad_w == 0
    }

    /// Column-buffer elements for one sample (0 when pointwise).
    pub(crate) fn col_len(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.in_channels * self.kernel_h * self.kernel_w * self.out_h() * self.out_w()
        }
    }

    /// `(out channels per group, col rows per group, out_h * out_w)`.
    pub(crate) fn group_dims(&self) -> (usize, usize, usize) {
        let kg = self.in_channels / self.groups * self.kernel_h * self.kernel_w;
        (self.out_channels / self.groups, kg, self.out_h() * self.out_w())
    }
}
