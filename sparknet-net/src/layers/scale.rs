//! `Scale`: multiplies by a learned (one bottom) or given (second bottom) factor broadcast over
//! the axes `axis .. axis + num_axes` (default 1..2: per channel), plus an optional learned bias
//! (`bias_term`). Shares its broadcasting rules with [`super::bias`].
//!
//! On the CPU it is one pass of `sparknet_kernels::channel_affine` on the rayon pool (an
//! in-place ReLU after it runs inside that pass, see [`Layer::fuse_relu`]), and its backward one
//! pass of `channel_scale_backward`; other devices use candle's ops.

use candle::Tensor;
use sparknet_kernels::{ChannelAffine, ChannelShape};

use crate::cpu::{HostView, kernel_err, new_host};

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, canonical_axis, want};
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// Caffe's factor shape for Scale/Bias with one bottom: `bottom[axis .. axis + num_axes]`
/// (`num_axes = -1`: to the end).
pub(crate) fn param_shape(
    layer: &str,
    bottom: &[usize],
    axis: i32,
    num_axes: i32,
) -> Result<(usize, Shape)> {
    let a = if bottom.is_empty() && axis == 0 {
        0
    } else {
        canonical_axis(layer, "axis", axis, bottom.len())?
    };
    let end = match num_axes {
        -1 => bottom.len(),
        n if n >= 0 && a + n as usize <= bottom.len() => a + n as usize,
        n => {
            return Err(Error::invalid(
                layer,
                "num_axes",
                format!("{n} from axis {a} exceeds the {}-D bottom", bottom.len()),
            ));
        }
    };
    Ok((a, bottom[a..end].to_vec()))
}

/// Reshapes `factor` (of shape `bottom[axis .. axis + k]`) to broadcast against `bottom`.
pub(crate) fn broadcastable(
    layer: &str,
    factor: &Tensor,
    bottom: &[usize],
    axis: usize,
) -> Result<Tensor> {
    let f = factor.dims();
    if axis + f.len() > bottom.len() || bottom[axis..axis + f.len()] != *f {
        return Err(Error::ShapeMismatch {
            layer: layer.to_string(),
            what: format!("factor against bottom axes from {axis} (bottom {bottom:?})"),
            expected: bottom[axis.min(bottom.len())..(axis + f.len()).min(bottom.len())].to_vec(),
            got: f.to_vec(),
        });
    }
    let mut shape = vec![1usize; bottom.len()];
    shape[axis..axis + f.len()].copy_from_slice(f);
    Ok(factor.reshape(shape)?)
}

/// Sums `g` (shaped like the bottom) down to a blob of `shape` that sits at bottom axes
/// `axis..axis + shape.len()` (the gradient of a broadcast factor or bias).
pub(crate) fn reduce_to(g: &Tensor, shape: &[usize], axis: usize) -> Result<Tensor> {
    let mut r = g.clone();
    for ax in (0..g.rank()).rev() {
        if ax < axis || ax >= axis + shape.len() {
            r = r.sum_keepdim(ax)?;
        }
    }
    Ok(r.reshape(shape)?)
}

/// The Scale layer.
pub struct Scale {
    name: String,
    axis: i32,
    num_axes: i32,
    bias_term: bool,
    two_bottoms: bool,
    /// An in-place ReLU fused into the forward pass.
    relu: bool,
}

/// The `outer x channels x inner` view of `bottom` for a factor of `factor` dims at `axis`.
fn channel_shape(bottom: &[usize], factor: &[usize], axis: usize) -> ChannelShape {
    ChannelShape {
        outer: bottom[..axis].iter().product(),
        channels: factor.iter().product(),
        inner: bottom[axis + factor.len()..].iter().product(),
    }
}

/// Builds a Scale layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.scale_param.clone().unwrap_or_default();
    Ok(Box::new(Scale {
        name: p.name().to_string(),
        axis: q.axis(),
        num_axes: q.num_axes(),
        bias_term: q.bias_term(),
        two_bottoms: p.bottom.len() == 2,
        relu: false,
    }))
}

impl Layer for Scale {
    fn kind(&self) -> &'static str {
        "Scale"
    }
    fn bottoms(&self) -> Count {
        Count::Between(1, 2)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn setup(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let factor = if self.two_bottoms {
            let a = canonical_axis(&self.name, "axis", self.axis, bottoms[0].len())?;
            let f = &bottoms[1];
            if a + f.len() > bottoms[0].len() || bottoms[0][a..a + f.len()] != *f.as_slice() {
                return Err(Error::ShapeMismatch {
                    layer: self.name.clone(),
                    what: "scale bottom against bottom 0".into(),
                    expected: bottoms[0][a..].to_vec(),
                    got: f.clone(),
                });
            }
            f.clone()
        } else {
            param_shape(&self.name, &bottoms[0], self.axis, self.num_axes)?.1
        };
        let mut shapes = Vec::new();
        if !self.two_bottoms {
            shapes.push(factor.clone());
        }
        if self.bias_term {
            shapes.push(factor);
        }
        Ok(shapes)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        Ok(vec![bottoms[0].clone()])
    }
    fn fuse_relu(&mut self, negative_slope: f32) -> bool {
        // Scale's backward reads its bottom and factor, never its top, so the rectified top
        // changes nothing there; ReLU's own backward then masks the gradient.
        self.relu = negative_slope == 0.0;
        self.relu
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let x = bottoms[0];
        let a = canonical_axis(&self.name, "axis", self.axis, x.rank())?;
        let (factor, bias) = if self.two_bottoms {
            (bottoms[1], params.first())
        } else {
            (&params[0], params.get(1))
        };
        let bias = bias.filter(|_| self.bias_term);
        let fb = broadcastable(&self.name, factor, x.dims(), a)?;
        if let Some(b) = bias {
            broadcastable(&self.name, b, x.dims(), a)?;
        }
        if ctx.device.is_cpu() {
            let s = channel_shape(x.dims(), factor.dims(), a);
            let err = |e| kernel_err(&self.name, e);
            let (xv, fv) = (HostView::new(x)?, HostView::new(factor)?);
            let bv = bias.map(HostView::new).transpose()?;
            let op = ChannelAffine {
                scale: Some(fv.slice()?),
                bias: bv.as_ref().map(HostView::slice).transpose()?,
                relu: self.relu,
                ..ChannelAffine::default()
            };
            let y = new_host(x.dims(), &ctx.device, |y| {
                sparknet_kernels::channel_affine(&s, &op, xv.slice()?, y).map_err(err)
            })?;
            return Ok(vec![y]);
        }
        let mut y = x.broadcast_mul(&fb)?;
        if let Some(b) = bias {
            y = y.broadcast_add(&broadcastable(&self.name, b, x.dims(), a)?)?;
        }
        if self.relu {
            y = y.relu()?;
        }
        Ok(vec![y])
    }
    fn backward(&mut self, args: &BackwardArgs<'_>) -> Result<Grads> {
        let (x, dy) = (args.bottoms[0], &args.top_diffs[0]);
        let a = canonical_axis(&self.name, "axis", self.axis, x.rank())?;
        let factor = if self.two_bottoms { args.bottoms[1] } else { &args.params[0] };
        if args.ctx.device.is_cpu() {
            return self.backward_host(args, factor, a);
        }
        let dx = want(args.propagate_down[0], || {
            Ok(dy.broadcast_mul(&broadcastable(&self.name, factor, x.dims(), a)?)?)
        })?;
        let want_factor = if self.two_bottoms {
            args.propagate_down.get(1).copied().unwrap_or(false)
        } else {
            args.param_down.first().copied().unwrap_or(false)
        };
        let dfactor = want(want_factor, || reduce_to(&(dy * x)?, factor.dims(), a))?;
        let bias_index = usize::from(!self.two_bottoms);
        let dbias = match args.params.get(bias_index) {
            Some(b) if self.bias_term => {
                want(args.param_down.get(bias_index).copied().unwrap_or(false), || {
                    reduce_to(dy, b.dims(), a)
                })?
            }
            _ => None,
        };
        Ok(if self.two_bottoms {
            Grads { bottoms: vec![dx, dfactor], params: vec![dbias] }
        } else {
            Grads { bottoms: vec![dx], params: vec![dfactor, dbias] }
        })
    }
}

impl Scale {
    /// The CPU backward: one `channel_scale_backward` pass for every wanted gradient.
    fn backward_host(&self, args: &BackwardArgs<'_>, factor: &Tensor, a: usize) -> Result<Grads> {
        let (x, dy) = (args.bottoms[0], &args.top_diffs[0]);
        let s = channel_shape(x.dims(), factor.dims(), a);
        let want_dx = args.propagate_down[0];
        let want_factor = if self.two_bottoms {
            args.propagate_down.get(1).copied().unwrap_or(false)
        } else {
            args.param_down.first().copied().unwrap_or(false)
        };
        let bias_index = usize::from(!self.two_bottoms);
        let want_bias = self.bias_term
            && args.params.get(bias_index).is_some()
            && args.param_down.get(bias_index).copied().unwrap_or(false);
        let (xv, dyv, fv) = (HostView::new(x)?, HostView::new(dy)?, HostView::new(factor)?);
        let mut dfactor = vec![0f32; if want_factor { s.channels } else { 0 }];
        let mut dbias = vec![0f32; if want_bias { s.channels } else { 0 }];
        let run = |dx: Option<&mut [std::mem::MaybeUninit<f32>]>,
                   df: &mut Vec<f32>,
                   db: &mut Vec<f32>|
         -> Result<()> {
            sparknet_kernels::channel_scale_backward(
                &s,
                xv.slice()?,
                dyv.slice()?,
                fv.slice()?,
                dx,
                want_factor.then_some(df.as_mut_slice()),
                want_bias.then_some(db.as_mut_slice()),
            )
            .map_err(|e| kernel_err(&self.name, e))
        };
        let dx = if want_dx {
            Some(new_host(x.dims(), x.device(), |dx| run(Some(dx), &mut dfactor, &mut dbias))?)
        } else {
            run(None, &mut dfactor, &mut dbias)?;
            None
        };
        let device = x.device();
        let dfactor = want(want_factor, || {
            crate::cpu::from_host(std::mem::take(&mut dfactor), factor.dims(), device)
        })?;
        let dbias = want(want_bias, || {
            crate::cpu::from_host(std::mem::take(&mut dbias), factor.dims(), device)
        })?;
        Ok(if self.two_bottoms {
            Grads { bottoms: vec![dx, dfactor], params: vec![dbias] }
        } else {
            Grads { bottoms: vec![dx], params: vec![dfactor, dbias] }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn per_channel_scale_and_bias() {
        let mut l = layer("layer { name: 's' type: 'Scale' bottom: 'x' top: 'x' scale_param { bias_term: true } }").unwrap();
        let x = t(&[1., 2., 3., 4.], &[1, 2, 2]);
        let y = run(l.as_mut(), &[x], &[t(&[2., 3.], &[2]), t(&[1., -1.], &[2])]).unwrap();
        close(&v(&y[0]), &[3., 5., 8., 11.]);
    }

    #[test]
    fn two_bottom_form_and_num_axes() {
        let mut l = layer("layer { name: 's' type: 'Scale' bottom: 'x' bottom: 'f' top: 'y' scale_param { axis: 0 } }").unwrap();
        let y =
            run(l.as_mut(), &[t(&[1., 2., 3., 4.], &[2, 2]), t(&[10., 100.], &[2])], &[]).unwrap();
        close(&v(&y[0]), &[10., 20., 300., 400.]);
        let mut l = layer("layer { name: 's' type: 'Scale' bottom: 'x' top: 'y' scale_param { axis: 0 num_axes: -1 } }").unwrap();
        let y = run(l.as_mut(), &[t(&[1., 2., 3., 4.], &[2, 2])], &[t(&[1., 2., 3., 4.], &[2, 2])])
            .unwrap();
        close(&v(&y[0]), &[1., 4., 9., 16.]);
    }
}
