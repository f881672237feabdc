//! `EuclideanLoss`: `sum((a - b)^2) / (2 N)` with N the batch size (axis 0).

use candle::Tensor;

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, count, host_vec};
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// The EuclideanLoss layer.
pub struct EuclideanLoss {
    name: String,
}

/// Builds a EuclideanLoss layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(EuclideanLoss { name: p.name().to_string() }))
}

impl Layer for EuclideanLoss {
    fn kind(&self) -> &'static str {
        "EuclideanLoss"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(2)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn loss_weight_default(&self) -> f32 {
        1.0
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let (a, b) = (&bottoms[0], &bottoms[1]);
        if a.is_empty()
            || count(a, 1, a.len()) != count(b, 1, b.len())
            || a[0] != b.first().copied().unwrap_or(0)
        {
            return Err(Error::ShapeMismatch {
                layer: self.name.clone(),
                what: "bottoms".into(),
                expected: a.clone(),
                got: b.clone(),
            });
        }
        Ok(vec![vec![]])
    }
    fn forward(
        &mut self,
        _ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let n = bottoms[0].dims()[0].max(1) as f64;
        let d = (bottoms[0].flatten_all()? - bottoms[1].flatten_all()?)?;
        Ok(vec![d.sqr()?.sum_all()?.affine(0.5 / n, 0.0)?])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let n = a.bottoms[0].dims()[0].max(1) as f64;
        let top = f64::from(host_vec(&a.top_diffs[0])?[0]);
        let d = (a.bottoms[0].flatten_all()? - a.bottoms[1].flatten_all()?)?;
        let mut out = Vec::new();
        for (i, sign) in [(0usize, 1.0), (1, -1.0)] {
            out.push(if a.propagate_down.get(i).copied().unwrap_or(false) {
                Some(d.affine(sign * top / n, 0.0)?.reshape(a.bottoms[i].dims())?)
            } else {
                None
            });
        }
        Ok(Grads::bottoms(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn half_mean_squared_distance() {
        let mut l =
            layer("layer { name: 'e' type: 'EuclideanLoss' bottom: 'a' bottom: 'b' top: 'l' }")
                .unwrap();
        let y =
            run(l.as_mut(), &[t(&[1., 2., 3., 4.], &[2, 2]), t(&[0., 2., 3., 7.], &[2, 2])], &[])
                .unwrap();
        close(&v(&y[0]), &[(1. + 9.) / 4.]);
    }
}
