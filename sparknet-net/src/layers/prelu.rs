//! `PReLU`: `y = max(0, x) + a_c * min(0, x)` with one learnable slope per channel (axis 1), or
//! one for all when `channel_shared`.

use candle::Tensor;

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, want};
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// The PReLU layer.
pub struct PRelu {
    name: String,
    shared: bool,
}

/// Builds a PReLU layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let shared = p.prelu_param.as_ref().is_some_and(|q| q.channel_shared());
    Ok(Box::new(PRelu { name: p.name().to_string(), shared }))
}

impl Layer for PRelu {
    fn kind(&self) -> &'static str {
        "PReLU"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn setup(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let s = &bottoms[0];
        if s.len() < 2 {
            return Err(Error::invalid(
                &self.name,
                "bottom shape",
                format!("{s:?}: needs at least 2 axes"),
            ));
        }
        Ok(vec![vec![if self.shared { 1 } else { s[1] }]])
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        Ok(vec![bottoms[0].clone()])
    }
    fn forward(
        &mut self,
        _ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let x = bottoms[0];
        let dims = x.dims();
        let mut bshape = vec![1usize; dims.len()];
        if !self.shared {
            bshape[1] = dims[1];
        }
        let a = params[0].reshape(bshape)?;
        let pos = x.relu()?;
        let neg = (x - &pos)?;
        Ok(vec![(pos + neg.broadcast_mul(&a)?)?])
    }
    fn backward(&mut self, args: &BackwardArgs<'_>) -> Result<Grads> {
        let (x, dy) = (args.bottoms[0], &args.top_diffs[0]);
        let dims = x.dims();
        let mut bshape = vec![1usize; dims.len()];
        if !self.shared {
            bshape[1] = dims[1];
        }
        let pos = x.gt(0f64)?.to_dtype(candle::DType::F32)?;
        let neg = (1.0 - &pos)?;
        let dx = want(args.propagate_down[0], || {
            let a = args.params[0].reshape(bshape.clone())?;
            Ok((dy * (&pos + neg.broadcast_mul(&a)?)?)?)
        })?;
        let da = want(args.param_down.first().copied().unwrap_or(false), || {
            let mut g = ((dy * x)? * &neg)?;
            for ax in (0..dims.len()).rev() {
                if self.shared || ax != 1 {
                    g = g.sum_keepdim(ax)?;
                }
            }
            Ok(g.reshape(args.params[0].dims())?)
        })?;
        Ok(Grads { bottoms: vec![dx], params: vec![da] })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn per_channel_slopes() {
        let mut l = layer("layer { name: 'p' type: 'PReLU' bottom: 'x' top: 'x' }").unwrap();
        let x = t(&[-1., 2., -3., 4.], &[1, 2, 2]);
        let y = run(l.as_mut(), &[x], &[t(&[0.5, 0.25], &[2])]).unwrap();
        close(&v(&y[0]), &[-0.5, 2., -0.75, 4.]);
    }
}
