//! `Convolution`: Caffe's 2-D convolution (`convolution_param`: num_output, kernel/stride/pad/
//! dilation as one value, one per spatial axis, or `*_h`/`*_w`; group; bias_term).
//!
//! CPU: `sparknet_kernels::conv2d_forward_with` (im2col + GEMM) on the tensors' host slices, or,
//! for 3x3 stride-1 kernels with at least 8 channels per group in and out, Winograd's F(4x4, 3x3)
//! (`sparknet_kernels::conv2d_forward_winograd`; the transformed weights are kept with the layer
//! and made again when a new weight tensor arrives). Other devices: candle's `conv2d` (equal
//! strides and dilations on both axes).

use candle::Tensor;
use candle::TensorId;
use sparknet_kernels::{
    Activation, ConvGeometry, Epilogue, Workspace, conv2d_forward_winograd, conv2d_forward_with,
    winograd_applicable, winograd_weights, winograd_weights_len,
};

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape};
use crate::cpu::{from_host, kernel_err, with_host};
use crate::proto::{ConvolutionParameter, LayerParameter};
use crate::{Error, Result};

/// The parsed `convolution_param` shared by Convolution and Deconvolution.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSpec {
    /// `num_output`.
    pub num_output: usize,
    /// `bias_term`.
    pub bias_term: bool,
    /// Kernel (h, w).
    pub kernel: [usize; 2],
    /// Stride (h, w).
    pub stride: [usize; 2],
    /// Padding (h, w).
    pub pad: [usize; 2],
    /// Dilation (h, w).
    pub dilation: [usize; 2],
    /// `group`.
    pub group: usize,
}

/// One per-axis value from Caffe's repeated field or its `_h`/`_w` pair.
fn per_axis(
    layer: &str,
    field: &str,
    list: &[u32],
    h: Option<u32>,
    w: Option<u32>,
    default: usize,
) -> Result<[usize; 2]> {
    if h.is_some() || w.is_some() {
        if !list.is_empty() {
            return Err(Error::invalid(
                layer,
                field,
                format!("either {field} or {field}_h/{field}_w, not both"),
            ));
        }
        let (Some(h), Some(w)) = (h, w) else {
            return Err(Error::invalid(
                layer,
                field,
                format!("{field}_h and {field}_w must be given together"),
            ));
        };
        return Ok([h as usize, w as usize]);
    }
    match list {
        [] => Ok([default; 2]),
        [v] => Ok([*v as usize; 2]),
        [a, b] => Ok([*a as usize, *b as usize]),
        _ => Err(Error::Unsupported {
            layer: layer.to_string(),
            kind: "Convolution".to_string(),
            context: format!(" ({} {field} values: only 2-D convolution is supported)", list.len()),
        }),
    }
}

impl ConvSpec {
    /// Parses and validates `convolution_param` of layer `layer`.
    ///
    /// # Errors
    /// Missing num_output/kernel, zero sizes, N-D kernels, axis other than 1.
    pub fn parse(layer: &str, p: Option<&ConvolutionParameter>) -> Result<ConvSpec> {
        let p = p.ok_or_else(|| Error::invalid(layer, "convolution_param", "missing"))?;
        if p.num_output.is_none() {
            return Err(Error::invalid(layer, "num_output", "missing"));
        }
        if p.axis() != 1 {
            return Err(Error::invalid(
                layer,
                "axis",
                format!("{} (only the channel axis 1 is supported)", p.axis()),
            ));
        }
        let kernel = per_axis(layer, "kernel_size", &p.kernel_size, p.kernel_h, p.kernel_w, 0)?;
        let kernel = if p.kernel_size.is_empty() && p.kernel_h.is_none() {
            return Err(Error::invalid(layer, "kernel_size", "missing"));
        } else {
            kernel
        };
        let stride = per_axis(layer, "stride", &p.stride, p.stride_h, p.stride_w, 1)?;
        let pad = per_axis(layer, "pad", &p.pad, p.pad_h, p.pad_w, 0)?;
        let dilation = per_axis(layer, "dilation", &p.dilation, None, None, 1)?;
        let spec = ConvSpec {
            num_output: p.num_output() as usize,
            bias_term: p.bias_term(),
            kernel,
            stride,
            pad,
            dilation,
            group: p.group() as usize,
        };
        if spec.kernel.contains(&0) || spec.stride.contains(&0) || spec.dilation.contains(&0) {
            return Err(Error::invalid(layer, "kernel/stride/dilation", "must be positive"));
        }
        if spec.group == 0 || !spec.num_output.is_multiple_of(spec.group) {
            return Err(Error::invalid(
                layer,
                "group",
                format!("{} does not divide num_output {}", spec.group, spec.num_output),
            ));
        }
        Ok(spec)
    }

    /// The kernels' geometry for input `c x h x w` producing `out_channels`.
    pub fn geometry(&self, c: usize, h: usize, w: usize, out_channels: usize) -> ConvGeometry {
        ConvGeometry {
            in_channels: c,
            in_h: h,
            in_w: w,
            out_channels,
            kernel_h: self.kernel[0],
            kernel_w: self.kernel[1],
            stride_h: self.stride[0],
            stride_w: self.stride[1],
            pad_h: self.pad[0],
            pad_w: self.pad[1],
            dilation_h: self.dilation[0],
            dilation_w: self.dilation[1],
            groups: self.group,
        }
    }
}

/// A 4-D bottom's (n, c, h, w).
pub(crate) fn nchw(layer: &str, s: &[usize]) -> Result<[usize; 4]> {
    match s {
        [n, c, h, w] => Ok([*n, *c, *h, *w]),
        _ => Err(Error::invalid(
            layer,
            "bottom shape",
            format!("{s:?}: a 4-D (N, C, H, W) blob is required"),
        )),
    }
}

/// Candle's convolution (any device), with explicit zero padding when pad_h != pad_w.
pub(crate) fn candle_conv(layer: &str, spec: &ConvSpec, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if spec.stride[0] != spec.stride[1] || spec.dilation[0] != spec.dilation[1] {
        return Err(Error::Unsupported {
            layer: layer.to_string(),
            kind: "Convolution".to_string(),
            context: " (unequal strides or dilations need the CPU kernels)".to_string(),
        });
    }
    let (x, pad) = if spec.pad[0] == spec.pad[1] {
        (x.clone(), spec.pad[0])
    } else {
        (
            x.pad_with_zeros(2, spec.pad[0], spec.pad[0])?.pad_with_zeros(
                3,
                spec.pad[1],
                spec.pad[1],
            )?,
            0,
        )
    };
    Ok(x.conv2d(w, pad, spec.stride[0], spec.dilation[0], spec.group)?)
}

/// The Convolution layer.
pub struct Convolution {
    name: String,
    spec: ConvSpec,
    geom: Option<ConvGeometry>,
    ws: Workspace,
    /// An in-place ReLU the net fused into this layer ([`Layer::fuse_relu`]).
    activation: Activation,
    /// Winograd-transformed weights of the weight tensor with this id (CPU, 3x3 stride 1).
    winograd: Option<(TensorId, Vec<f32>)>,
}

/// Builds a Convolution layer.
///
/// # Errors
/// Invalid `convolution_param`.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let spec = ConvSpec::parse(p.name(), p.convolution_param.as_ref())?;
    Ok(Box::new(Convolution {
        name: p.name().to_string(),
        spec,
        geom: None,
        ws: Workspace::new(),
        activation: Activation::Identity,
        winograd: None,
    }))
}

impl Layer for Convolution {
    fn kind(&self) -> &'static str {
        "Convolution"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn fuse_relu(&mut self, negative_slope: f32) -> bool {
        self.activation = Activation::Relu { negative_slope };
        true
    }
    fn setup(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let [_, c, _, _] = nchw(&self.name, &bottoms[0])?;
        if c % self.spec.group != 0 {
            return Err(Error::invalid(
                &self.name,
                "group",
                format!("{} does not divide the {c} input channels", self.spec.group),
            ));
        }
        let s = &self.spec;
        let mut shapes = vec![vec![s.num_output, c / s.group, s.kernel[0], s.kernel[1]]];
        if s.bias_term {
            shapes.push(vec![s.num_output]);
        }
        Ok(shapes)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let [n, c, h, w] = nchw(&self.name, &bottoms[0])?;
        let g = self.spec.geometry(c, h, w, self.spec.num_output);
        g.validate().map_err(|e| kernel_err(&self.name, e))?;
        let top = vec![n, self.spec.num_output, g.out_h(), g.out_w()];
        self.geom = Some(g);
        Ok(vec![top])
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let x = bottoms[0];
        let [n, c, h, w] = nchw(&self.name, x.dims())?;
        if !ctx.device.is_cpu() {
            let mut y = candle_conv(&self.name, &self.spec, x, &params[0])?;
            if self.spec.bias_term {
                y = y.broadcast_add(&params[1].reshape((1, self.spec.num_output, 1, 1))?)?;
            }
            if let Activation::Relu { negative_slope } = self.activation {
                let pos = y.relu()?;
                y = if negative_slope == 0.0 {
                    pos
                } else {
                    (&pos + (&y - &pos)?.affine(f64::from(negative_slope), 0.0)?)?
                };
            }
            return Ok(vec![y]);
        }
        let g = match self.geom {
            Some(g) if (g.in_channels, g.in_h, g.in_w) == (c, h, w) => g,
            _ => self.spec.geometry(c, h, w, self.spec.num_output),
        };
        let len = n * g.output_len();
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let spare = &mut out.spare_capacity_mut()[..len];
        let name = &self.name;
        let winograd = winograd_applicable(&g);
        let id = params[0].id();
        if winograd && self.winograd.as_ref().is_none_or(|(t, _)| *t != id) {
            let mut u = self.winograd.take().map(|(_, u)| u).unwrap_or_default();
            u.resize(winograd_weights_len(&g), 0.0);
            with_host(&params[0], |w| {
                winograd_weights(&g, w, &mut u).map_err(|e| kernel_err(name, e))
            })?;
            self.winograd = Some((id, u));
        }
        let transformed = self.winograd.as_ref().filter(|_| winograd).map(|(_, u)| &u[..]);
        let ws = &mut self.ws;
        with_host(x, |xs| {
            with_host(&params[0], |ws_w| {
                let activation = self.activation;
                let mut run = |bias: Option<&[f32]>| {
                    let epi = Epilogue { bias, activation };
                    match transformed {
                        Some(u) => conv2d_forward_winograd(&g, n, xs, u, epi, spare, ws),
                        None => conv2d_forward_with(&g, n, xs, ws_w, epi, spare, ws),
                    }
                    .map_err(|e| kernel_err(name, e))
                };
                match params.get(1).filter(|_| self.spec.bias_term) {
                    Some(bias) => with_host(bias, |b| run(Some(b))),
                    None => run(None),
                }
            })
        })?;
        // SAFETY: `conv2d_forward_with` returned Ok, so it wrote all `len` elements of `spare`,
        // the first `len` elements of `out`'s capacity.
        unsafe { out.set_len(len) };
        Ok(vec![from_host(out, &[n, self.spec.num_output, g.out_h(), g.out_w()], &ctx.device)?])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let x = a.bottoms[0];
        let [n, c, h, w] = nchw(&self.name, x.dims())?;
        let g = self.spec.geometry(c, h, w, self.spec.num_output);
        let (name, ws, dev) = (&self.name, &mut self.ws, &a.ctx.device);
        let want_b = self.spec.bias_term && a.param_down.get(1).copied().unwrap_or(false);
        let mut grads = Grads::default();
        with_host(&a.top_diffs[0], |dy| {
            if a.param_down[0] || want_b {
                let mut gw = vec![0f32; g.weight_len()];
                let mut gb = vec![0f32; if want_b { self.spec.num_output } else { 0 }];
                with_host(x, |xs| {
                    sparknet_kernels::conv2d_backward_params(
                        &g,
                        n,
                        xs,
                        dy,
                        &mut gw,
                        if want_b { Some(&mut gb[..]) } else { None },
                        ws,
                    )
                    .map_err(|e| kernel_err(name, e))
                })?;
                grads.params.push(if a.param_down[0] {
                    Some(from_host(gw, a.params[0].dims(), dev)?)
                } else {
                    None
                });
                if want_b {
                    grads.params.push(Some(from_host(gb, a.params[1].dims(), dev)?));
                }
            }
            if a.propagate_down[0] {
                let mut gx = vec![0f32; n * g.input_len()];
                with_host(&a.params[0], |wt| {
                    sparknet_kernels::conv2d_backward_data(&g, n, dy, wt, &mut gx, ws)
                        .map_err(|e| kernel_err(name, e))
                })?;
                grads.bottoms.push(Some(from_host(gx, x.dims(), dev)?));
            }
            Ok(())
        })?;
        Ok(grads)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};
    use super::*;

    #[test]
    fn hand_computed_convolution_with_pad_stride_and_bias() {
        let mut l = layer(
            "layer { name: 'c' type: 'Convolution' bottom: 'x' top: 'y' \
            convolution_param { num_output: 1 kernel_size: 2 stride: 2 pad: 1 } }",
        )
        .unwrap();
        let x = t(&[1., 2., 3., 4., 5., 6., 7., 8., 9.], &[1, 1, 3, 3]);
        let w = t(&[1., 10., 100., 1000.], &[1, 1, 2, 2]);
        let b = t(&[0.5], &[1]);
        let y = run(l.as_mut(), std::slice::from_ref(&x), &[w.clone(), b.clone()]).unwrap();
        assert_eq!(y[0].dims(), &[1, 1, 2, 2]);
        // Windows over the zero-padded 5x5 input at rows/cols {-1,0}, {1,2}.
        close(
            &v(&y[0]),
            &[
                1000.5,
                100. * 2. + 1000. * 3. + 0.5,
                10. * 4. + 1000. * 7. + 0.5,
                5. + 10. * 6. + 100. * 8. + 1000. * 9. + 0.5,
            ],
        );
        // The candle path used on other devices agrees.
        let spec = ConvSpec::parse(
            "c",
            Some(&ConvolutionParameter {
                num_output: Some(1),
                kernel_size: vec![2],
                stride: vec![2],
                pad: vec![1],
                ..Default::default()
            }),
        )
        .unwrap();
        let yc = candle_conv("c", &spec, &x, &w).unwrap().broadcast_add(&b).unwrap();
        close(&v(&yc), &v(&y[0]));
    }

    #[test]
    fn groups_and_rectangular_kernels() {
        let mut l = layer("layer { name: 'c' type: 'Convolution' bottom: 'x' top: 'y' \
            convolution_param { num_output: 2 kernel_h: 1 kernel_w: 2 group: 2 bias_term: false } }")
        .unwrap();
        let x = t(&[1., 2., 3., 4., 5., 6.], &[1, 2, 1, 3]);
        let w = t(&[1., 1., 2., -1.], &[2, 1, 1, 2]);
        let y = run(l.as_mut(), &[x], &[w]).unwrap();
        close(&v(&y[0]), &[3., 5., 2. * 4. - 5., 2. * 5. - 6.]);
    }

    #[test]
    fn bad_parameters_are_errors() {
        let e = layer(
            "layer { name: 'c' type: 'Convolution' bottom: 'x' top: 'y' convolution_param { kernel_size: 3 } }",
        );
        assert!(e.err().unwrap().to_string().contains("layer 'c': invalid num_output: missing"));
        let e = layer(
            "layer { name: 'c' type: 'Convolution' bottom: 'x' top: 'y' convolution_param { num_output: 3 kernel_size: 3 group: 2 } }",
        );
        assert!(e.err().unwrap().to_string().contains("group"));
    }
}
