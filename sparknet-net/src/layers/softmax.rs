//! `Softmax` along `softmax_param.axis` (default 1), max-subtracted as Caffe computes it. On
//! the CPU, `sparknet_kernels::softmax_forward` / `softmax_backward` on the rayon pool; other
//! devices use candle's ops.

use candle::Tensor;
use sparknet_kernels::SoftmaxShape;

use crate::cpu::{HostView, kernel_err, new_host};

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, canonical_axis, want};
use crate::Result;
use crate::proto::LayerParameter;

/// The Softmax layer.
pub struct Softmax {
    name: String,
    axis: i32,
}

/// Builds a Softmax layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(Softmax {
        name: p.name().to_string(),
        axis: p.softmax_param.as_ref().map_or(1, |s| s.axis()),
    }))
}

/// Softmax of `x` along `axis` (any device).
///
/// # Errors
/// candle errors.
pub fn softmax(x: &Tensor, axis: usize) -> Result<Tensor> {
    if x.device().is_cpu() {
        let s = softmax_shape(x.dims(), axis);
        let xv = HostView::new(x)?;
        return new_host(x.dims(), x.device(), |y| {
            sparknet_kernels::softmax_forward(&s, xv.slice()?, y)
                .map_err(|e| kernel_err("Softmax", e))
        });
    }
    let max = x.max_keepdim(axis)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(axis)?;
    Ok(e.broadcast_div(&sum)?)
}

/// The `outer x classes x inner` view of `dims` around `axis`.
pub(crate) fn softmax_shape(dims: &[usize], axis: usize) -> SoftmaxShape {
    SoftmaxShape {
        outer: dims[..axis].iter().product(),
        classes: dims[axis],
        inner: dims[axis + 1..].iter().product(),
    }
}

impl Layer for Softmax {
    fn kind(&self) -> &'static str {
        "Softmax"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        canonical_axis(&self.name, "axis", self.axis, bottoms[0].len())?;
        Ok(vec![bottoms[0].clone()])
    }
    fn forward(
        &mut self,
        _ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let axis = canonical_axis(&self.name, "axis", self.axis, bottoms[0].rank())?;
        Ok(vec![softmax(bottoms[0], axis)?])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let axis = canonical_axis(&self.name, "axis", self.axis, a.bottoms[0].rank())?;
        let g = want(a.propagate_down[0], || {
            // dx = y * (dy - sum(dy * y) along the axis).
            let (y, dy) = (a.tops[0], &a.top_diffs[0]);
            if a.ctx.device.is_cpu() {
                let s = softmax_shape(y.dims(), axis);
                let (yv, dyv) = (HostView::new(y)?, HostView::new(dy)?);
                return new_host(y.dims(), y.device(), |dx| {
                    sparknet_kernels::softmax_backward(&s, yv.slice()?, dyv.slice()?, dx)
                        .map_err(|e| kernel_err(&self.name, e))
                });
            }
            let dot = (dy * y)?.sum_keepdim(axis)?;
            Ok((y * dy.broadcast_sub(&dot)?)?)
        })?;
        Ok(Grads::bottoms(vec![g]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn along_the_channel_axis() {
        let mut l = layer("layer { name: 's' type: 'Softmax' bottom: 'x' top: 'y' }").unwrap();
        // 1 x 2 x 2: softmax over the 2 channels at each of 2 positions.
        let y = run(l.as_mut(), &[t(&[0., 1000., 0., 1000.], &[1, 2, 2])], &[]).unwrap();
        close(&v(&y[0]), &[0.5, 0.5, 0.5, 0.5]);
        let mut l = layer(
            "layer { name: 's' type: 'Softmax' bottom: 'x' top: 'y' softmax_param { axis: -1 } }",
        )
        .unwrap();
        let y = run(l.as_mut(), &[t(&[0., 2f32.ln()], &[1, 2])], &[]).unwrap();
        close(&v(&y[0]), &[1. / 3., 2. / 3.]);
    }
}
