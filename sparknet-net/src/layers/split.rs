//! `Split`: copies one bottom to several tops (Caffe inserts it where a blob feeds several
//! layers; its backward will sum the tops' diffs). Candle tensors are shared, not copied.

use candle::Tensor;

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, want};
use crate::Result;
use crate::proto::LayerParameter;

/// The Split layer.
pub struct Split {
    n: usize,
}

/// Builds a Split layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(Split { n: p.top.len() }))
}

impl Layer for Split {
    fn kind(&self) -> &'static str {
        "Split"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::AtLeast(1)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        Ok(vec![bottoms[0].clone(); self.n])
    }
    fn forward(
        &mut self,
        _ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        Ok(vec![bottoms[0].clone(); self.n])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        // Fan-out: the bottom's diff is the sum of the tops' diffs.
        let g = want(a.propagate_down[0], || {
            let mut sum = a.top_diffs[0].clone();
            for d in &a.top_diffs[1..] {
                sum = (sum + d)?;
            }
            Ok(sum)
        })?;
        Ok(Grads::bottoms(vec![g]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{layer, run, t, v};

    #[test]
    fn every_top_is_the_bottom() {
        let mut l =
            layer("layer { name: 's' type: 'Split' bottom: 'x' top: 'a' top: 'b' top: 'c' }")
                .unwrap();
        let y = run(l.as_mut(), &[t(&[1., 2.], &[2])], &[]).unwrap();
        assert_eq!(y.len(), 3);
        assert!(y.iter().all(|t| v(t) == [1., 2.]));
    }
}
