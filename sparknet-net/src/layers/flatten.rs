//! `Flatten`: merges the axes `axis ..= end_axis` (default 1 ..= -1) into one.

use candle::Tensor;

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, canonical_axis, count, want};
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// The Flatten layer.
pub struct Flatten {
    name: String,
    axis: i32,
    end_axis: i32,
}

/// Builds a Flatten layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.flatten_param.unwrap_or_default();
    Ok(Box::new(Flatten { name: p.name().to_string(), axis: q.axis(), end_axis: q.end_axis() }))
}

impl Layer for Flatten {
    fn kind(&self) -> &'static str {
        "Flatten"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let s = &bottoms[0];
        let a = canonical_axis(&self.name, "axis", self.axis, s.len())?;
        let e = canonical_axis(&self.name, "end_axis", self.end_axis, s.len())?;
        if e < a {
            return Err(Error::invalid(&self.name, "end_axis", format!("{e} is before axis {a}")));
        }
        let mut top = s[..a].to_vec();
        top.push(count(s, a, e + 1));
        top.extend_from_slice(&s[e + 1..]);
        Ok(vec![top])
    }
    fn forward(
        &mut self,
        _ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let shape = self.reshape(&[bottoms[0].dims().to_vec()])?.remove(0);
        Ok(vec![bottoms[0].reshape(shape)?])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let g = want(a.propagate_down[0], || Ok(a.top_diffs[0].reshape(a.bottoms[0].dims())?))?;
        Ok(Grads::bottoms(vec![g]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{layer, run, t};

    #[test]
    fn default_axes() {
        let mut l = layer("layer { name: 'f' type: 'Flatten' bottom: 'x' top: 'y' }").unwrap();
        let y = run(l.as_mut(), &[t(&[0.; 24], &[2, 3, 2, 2])], &[]).unwrap();
        assert_eq!(y[0].dims(), &[2, 12]);
        let mut l = layer("layer { name: 'f' type: 'Flatten' bottom: 'x' top: 'y' flatten_param { axis: 1 end_axis: 2 } }").unwrap();
        let y = run(l.as_mut(), &[t(&[0.; 24], &[2, 3, 2, 2])], &[]).unwrap();
        assert_eq!(y[0].dims(), &[2, 6, 2]);
    }
}
