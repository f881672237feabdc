//! `LRN`: local response normalisation, ACROSS_CHANNELS (`x * (k + alpha/n * sum x^2)^-beta` over
//! `local_size` neighbouring channels) and WITHIN_CHANNEL (Caffe's: `x * (1 + alpha * avg x^2)^-beta`
//! over a `local_size^2` spatial window, zero padded). Runs `sparknet_kernels`' LRN on the host.

use candle::Tensor;
use sparknet_kernels::LrnParams;

use super::convolution::nchw;
use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape};
use crate::cpu::{from_host, kernel_err, with_host};
use crate::proto::LayerParameter;
use crate::proto::lrn_parameter::NormRegion;
use crate::{Error, Result};

/// The LRN layer.
pub struct Lrn {
    name: String,
    params: LrnParams,
    within: bool,
    /// ACROSS_CHANNELS' scale from the last forward (kept for the backward pass).
    scale: Vec<f32>,
}

/// Builds an LRN layer.
///
/// # Errors
/// An even or zero `local_size` (Caffe requires it odd).
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.lrn_param.unwrap_or_default();
    let local_size = q.local_size() as usize;
    if local_size == 0 || local_size.is_multiple_of(2) {
        return Err(Error::invalid(p.name(), "local_size", format!("{local_size}: must be odd")));
    }
    Ok(Box::new(Lrn {
        name: p.name().to_string(),
        params: LrnParams { local_size, alpha: q.alpha(), beta: q.beta(), k: q.k() },
        within: q.norm_region() == NormRegion::WithinChannel,
        scale: Vec::new(),
    }))
}

impl Layer for Lrn {
    fn kind(&self) -> &'static str {
        "LRN"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        nchw(&self.name, &bottoms[0])?;
        Ok(vec![bottoms[0].clone()])
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let x = bottoms[0];
        let [n, c, h, w] = nchw(&self.name, x.dims())?;
        let g = sparknet_kernels::LrnGeometry::new(n, c, h, w);
        let mut y = vec![0f32; x.elem_count()];
        let (name, p, within) = (&self.name, &self.params, self.within);
        let scale = &mut self.scale;
        with_host(x, |xs| {
            let r = if within {
                sparknet_kernels::lrn_within_forward(p, &g, xs, &mut y)
            } else {
                scale.resize(xs.len(), 0.0);
                sparknet_kernels::lrn_across_forward(p, &g, xs, &mut y, scale)
            };
            r.map_err(|e| kernel_err(name, e))
        })?;
        Ok(vec![from_host(y, x.dims(), &ctx.device)?])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        if !a.propagate_down[0] {
            return Ok(Grads::bottoms(vec![None]));
        }
        let x = a.bottoms[0];
        let [n, c, h, w] = nchw(&self.name, x.dims())?;
        let g = sparknet_kernels::LrnGeometry::new(n, c, h, w);
        let mut gx = vec![0f32; x.elem_count()];
        let (name, p, within, scale) = (&self.name, &self.params, self.within, &self.scale);
        with_host(x, |xs| {
            with_host(&a.top_diffs[0], |dy| {
                with_host(a.tops[0], |ys| {
                    if within {
                        sparknet_kernels::lrn_within_backward(p, &g, xs, dy, &mut gx)
                    } else {
                        sparknet_kernels::lrn_across_backward(p, &g, xs, ys, scale, dy, &mut gx)
                    }
                    .map_err(|e| kernel_err(name, e))
                })
            })
        })?;
        Ok(Grads::bottoms(vec![Some(from_host(gx, x.dims(), &a.ctx.device)?)]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn across_channels_by_hand() {
        let mut l = layer("layer { name: 'n' type: 'LRN' bottom: 'x' top: 'y' lrn_param { local_size: 3 alpha: 3 beta: 0.5 k: 2 } }").unwrap();
        let y = run(l.as_mut(), &[t(&[1., 2., 3.], &[1, 3, 1, 1])], &[]).unwrap();
        // scale_c = 2 + 3/3 * sum of squares over {c-1, c, c+1}.
        let s = [2. + 5., 2. + 14., 2. + 13.];
        close(&v(&y[0]), &[1. / f32::sqrt(s[0]), 2. / f32::sqrt(s[1]), 3. / f32::sqrt(s[2])]);
    }

    #[test]
    fn within_channel_by_hand() {
        let mut l = layer("layer { name: 'n' type: 'LRN' bottom: 'x' top: 'y' lrn_param { local_size: 3 alpha: 9 beta: 1 norm_region: WITHIN_CHANNEL } }").unwrap();
        let y = run(l.as_mut(), &[t(&[1., 2., 0., 0.], &[1, 1, 1, 4])], &[]).unwrap();
        // avg over a 3x3 zero-padded window (divisor 9): 1 + 9 * sum/9 = 1 + sum of squares in row window.
        close(&v(&y[0]), &[1. / 6., 2. / 6., 0., 0.]);
    }
}
