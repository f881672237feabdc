//! `Softmax` along `softmax_param.axis` (default 1), max-subtracted as Caffe computes it.

use candle::Tensor;

use super::{Count, ForwardCtx, Layer, Shape, canonical_axis};
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
    let max = x.max_keepdim(axis)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(axis)?;
    Ok(e.broadcast_div(&sum)?)
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
