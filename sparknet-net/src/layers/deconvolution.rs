//! `Deconvolution`: the transpose of Convolution (Caffe's weights are `C_in x num_output/group x
//! kh x kw`; output size `stride*(in-1) + dilation*(k-1)+1 - 2*pad`).
//!
//! CPU: `sparknet_kernels::conv2d_backward_data` with the convolution's roles swapped (the
//! deconvolution's output is that convolution's input), plus the bias. Other devices: candle's
//! `conv_transpose2d` (no groups, equal strides/pads/dilations).

use candle::Tensor;
use sparknet_kernels::{ConvGeometry, Workspace};

use super::convolution::{ConvSpec, nchw};
use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape};
use crate::cpu::{from_host, kernel_err, with_host};
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// The Deconvolution layer.
pub struct Deconvolution {
    name: String,
    spec: ConvSpec,
    ws: Workspace,
}

/// Builds a Deconvolution layer.
///
/// # Errors
/// Invalid `convolution_param`.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let spec = ConvSpec::parse(p.name(), p.convolution_param.as_ref())?;
    Ok(Box::new(Deconvolution { name: p.name().to_string(), spec, ws: Workspace::new() }))
}

impl Deconvolution {
    fn out_size(&self, h: usize, w: usize) -> Result<[usize; 2]> {
        let s = &self.spec;
        let mut out = [0; 2];
        for (i, x) in [h, w].into_iter().enumerate() {
            let full = s.stride[i] * x.saturating_sub(1) + s.dilation[i] * (s.kernel[i] - 1) + 1;
            out[i] = full.checked_sub(2 * s.pad[i]).filter(|&o| o > 0).ok_or_else(|| {
                Error::invalid(
                    &self.name,
                    "pad",
                    format!("padding {:?} leaves no output for input {h}x{w}", s.pad),
                )
            })?;
        }
        Ok(out)
    }

    /// The convolution whose data-gradient this deconvolution computes.
    fn geometry(&self, c: usize, h: usize, w: usize) -> Result<ConvGeometry> {
        let [oh, ow] = self.out_size(h, w)?;
        Ok(self.spec.geometry(self.spec.num_output, oh, ow, c))
    }
}

impl Layer for Deconvolution {
    fn kind(&self) -> &'static str {
        "Deconvolution"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn setup(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let [_, c, _, _] = nchw(&self.name, &bottoms[0])?;
        let s = &self.spec;
        if c % s.group != 0 {
            return Err(Error::invalid(
                &self.name,
                "group",
                format!("{} does not divide the {c} input channels", s.group),
            ));
        }
        let mut shapes = vec![vec![c, s.num_output / s.group, s.kernel[0], s.kernel[1]]];
        if s.bias_term {
            shapes.push(vec![s.num_output]);
        }
        Ok(shapes)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let [n, _, h, w] = nchw(&self.name, &bottoms[0])?;
        let [oh, ow] = self.out_size(h, w)?;
        Ok(vec![vec![n, self.spec.num_output, oh, ow]])
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let x = bottoms[0];
        let [n, c, h, w] = nchw(&self.name, x.dims())?;
        let no = self.spec.num_output;
        if !ctx.device.is_cpu() {
            let s = &self.spec;
            if s.group != 1
                || s.stride[0] != s.stride[1]
                || s.pad[0] != s.pad[1]
                || s.dilation[0] != s.dilation[1]
            {
                return Err(Error::Unsupported {
                    layer: self.name.clone(),
                    kind: "Deconvolution".into(),
                    context: " (groups or unequal strides/pads need the CPU kernels)".into(),
                });
            }
            let mut y = x.conv_transpose2d(&params[0], s.pad[0], 0, s.stride[0], s.dilation[0])?;
            if s.bias_term {
                y = y.broadcast_add(&params[1].reshape((1, no, 1, 1))?)?;
            }
            return Ok(vec![y]);
        }
        let g = self.geometry(c, h, w)?;
        let mut out = vec![0f32; n * g.input_len()];
        let name = &self.name;
        let ws = &mut self.ws;
        with_host(x, |xs| {
            with_host(&params[0], |wt| {
                sparknet_kernels::conv2d_backward_data(&g, n, xs, wt, &mut out, ws)
                    .map_err(|e| kernel_err(name, e))
            })
        })?;
        if self.spec.bias_term {
            let plane = g.in_h * g.in_w;
            with_host(&params[1], |b| {
                for (i, chunk) in out.chunks_mut(plane).enumerate() {
                    let bias = b[i % no];
                    chunk.iter_mut().for_each(|v| *v += bias);
                }
                Ok(())
            })?;
        }
        Ok(vec![from_host(out, &[n, no, g.in_h, g.in_w], &ctx.device)?])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let x = a.bottoms[0];
        let [n, c, h, w] = nchw(&self.name, x.dims())?;
        let no = self.spec.num_output;
        let g = self.geometry(c, h, w)?;
        let (name, ws, dev) = (&self.name, &mut self.ws, &a.ctx.device);
        let mut grads = Grads::default();
        with_host(&a.top_diffs[0], |dy| {
            // The deconvolution's top is the geometry's input: weight gradient with the roles
            // swapped, bias gradient the per-channel sum of the top diff.
            grads.params.push(if a.param_down[0] {
                let mut gw = vec![0f32; g.weight_len()];
                with_host(x, |xs| {
                    sparknet_kernels::conv2d_backward_params(&g, n, dy, xs, &mut gw, None, ws)
                        .map_err(|e| kernel_err(name, e))
                })?;
                Some(from_host(gw, a.params[0].dims(), dev)?)
            } else {
                None
            });
            if self.spec.bias_term {
                grads.params.push(if a.param_down.get(1).copied().unwrap_or(false) {
                    let plane = g.in_h * g.in_w;
                    let mut gb = vec![0f32; no];
                    for (i, chunk) in dy.chunks(plane).enumerate() {
                        gb[i % no] += sparknet_kernels::sum(chunk);
                    }
                    Some(from_host(gb, &[no], dev)?)
                } else {
                    None
                });
            }
            if a.propagate_down[0] {
                let mut gx = vec![0f32; n * c * h * w];
                with_host(&a.params[0], |wt| {
                    sparknet_kernels::conv2d_forward(&g, n, dy, wt, None, &mut gx, ws)
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

    #[test]
    fn stride_two_deconvolution_by_hand() {
        let mut l = layer(
            "layer { name: 'd' type: 'Deconvolution' bottom: 'x' top: 'y' \
            convolution_param { num_output: 1 kernel_size: 2 stride: 2 } }",
        )
        .unwrap();
        let x = t(&[1., 2.], &[1, 1, 1, 2]);
        let w = t(&[1., 2., 3., 4.], &[1, 1, 2, 2]);
        let b = t(&[10.], &[1]);
        let y = run(l.as_mut(), &[x], &[w, b]).unwrap();
        assert_eq!(y[0].dims(), &[1, 1, 2, 4]);
        close(&v(&y[0]), &[11., 12., 12., 14., 13., 14., 16., 18.]);
    }
}
