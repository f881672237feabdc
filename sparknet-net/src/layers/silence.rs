//! `Silence`: consumes its bottoms and produces nothing (keeps unused tops from being outputs).

use candle::Tensor;

use super::{Count, ForwardCtx, Layer, Shape};
use crate::Result;
use crate::proto::LayerParameter;

/// The Silence layer.
pub struct Silence;

/// Builds a Silence layer.
///
/// # Errors
/// None in practice.
pub fn new(_p: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(Silence))
}

impl Layer for Silence {
    fn kind(&self) -> &'static str {
        "Silence"
    }
    fn bottoms(&self) -> Count {
        Count::AtLeast(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(0)
    }
    fn reshape(&mut self, _bottoms: &[Shape]) -> Result<Vec<Shape>> {
        Ok(Vec::new())
    }
    fn forward(
        &mut self,
        _ctx: &ForwardCtx,
        _bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{layer, run, t};

    #[test]
    fn consumes_and_produces_nothing() {
        let mut l = layer("layer { name: 's' type: 'Silence' bottom: 'x' bottom: 'y' }").unwrap();
        assert!(run(l.as_mut(), &[t(&[1.], &[1]), t(&[2.], &[1])], &[]).unwrap().is_empty());
    }
}
