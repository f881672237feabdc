//! `Bias`: adds a learned (one bottom) or given (second bottom) bias broadcast over the axes
//! `axis .. axis + num_axes`, with Scale's broadcasting rules.

use candle::Tensor;

use super::scale::{broadcastable, param_shape, reduce_to};
use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, canonical_axis, want};
use crate::Result;
use crate::proto::LayerParameter;

/// The Bias layer.
pub struct Bias {
    name: String,
    axis: i32,
    num_axes: i32,
    two_bottoms: bool,
}

/// Builds a Bias layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.bias_param.clone().unwrap_or_default();
    Ok(Box::new(Bias {
        name: p.name().to_string(),
        axis: q.axis(),
        num_axes: q.num_axes(),
        two_bottoms: p.bottom.len() == 2,
    }))
}

impl Layer for Bias {
    fn kind(&self) -> &'static str {
        "Bias"
    }
    fn bottoms(&self) -> Count {
        Count::Between(1, 2)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn setup(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        if self.two_bottoms {
            return Ok(Vec::new());
        }
        Ok(vec![param_shape(&self.name, &bottoms[0], self.axis, self.num_axes)?.1])
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
        let a = canonical_axis(&self.name, "axis", self.axis, x.rank())?;
        let b = if self.two_bottoms { bottoms[1] } else { &params[0] };
        Ok(vec![x.broadcast_add(&broadcastable(&self.name, b, x.dims(), a)?)?])
    }
    fn backward(&mut self, args: &BackwardArgs<'_>) -> Result<Grads> {
        let dy = &args.top_diffs[0];
        let a = canonical_axis(&self.name, "axis", self.axis, args.bottoms[0].rank())?;
        let dx = want(args.propagate_down[0], || Ok(dy.clone()))?;
        Ok(if self.two_bottoms {
            let b = args.bottoms[1];
            let db = want(args.propagate_down.get(1).copied().unwrap_or(false), || {
                reduce_to(dy, b.dims(), a)
            })?;
            Grads { bottoms: vec![dx, db], params: Vec::new() }
        } else {
            let db = want(args.param_down.first().copied().unwrap_or(false), || {
                reduce_to(dy, args.params[0].dims(), a)
            })?;
            Grads { bottoms: vec![dx], params: vec![db] }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn learned_and_given_bias() {
        let mut l = layer("layer { name: 'b' type: 'Bias' bottom: 'x' top: 'y' }").unwrap();
        let y =
            run(l.as_mut(), &[t(&[1., 2., 3., 4.], &[1, 2, 2])], &[t(&[10., 20.], &[2])]).unwrap();
        close(&v(&y[0]), &[11., 12., 23., 24.]);
        let mut l = layer("layer { name: 'b' type: 'Bias' bottom: 'x' bottom: 'c' top: 'y' bias_param { axis: -1 } }").unwrap();
        let y = run(l.as_mut(), &[t(&[1., 2., 3., 4.], &[2, 2]), t(&[5., 6.], &[2])], &[]).unwrap();
        close(&v(&y[0]), &[6., 8., 8., 10.]);
    }
}
