//! `Dropout`: identity in TEST (Caffe scales at train time); in TRAIN each unit is kept with
//! probability `1 - dropout_ratio` and scaled by `1 / (1 - dropout_ratio)` (the mask is kept for
//! the backward pass).

use candle::Tensor;

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape};
use crate::proto::{LayerParameter, Phase};
use crate::{Error, Result};

/// The Dropout layer.
pub struct Dropout {
    ratio: f32,
    /// The last TRAIN mask (already scaled), for the backward pass.
    mask: Option<Tensor>,
}

/// Builds a Dropout layer.
///
/// # Errors
/// A ratio outside `[0, 1)`.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let ratio = p.dropout_param.as_ref().map_or(0.5, |d| d.dropout_ratio());
    if !(0.0..1.0).contains(&ratio) {
        return Err(Error::invalid(
            p.name(),
            "dropout_ratio",
            format!("{ratio}: must be in [0, 1)"),
        ));
    }
    Ok(Box::new(Dropout { ratio, mask: None }))
}

impl Layer for Dropout {
    fn kind(&self) -> &'static str {
        "Dropout"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        Ok(vec![bottoms[0].clone()])
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let x = bottoms[0];
        if ctx.phase == Phase::Test || self.ratio == 0.0 {
            return Ok(vec![x.clone()]);
        }
        let keep = x.rand_like(0.0, 1.0)?.ge(f64::from(self.ratio))?.to_dtype(x.dtype())?;
        let mask = keep.affine(1.0 / (1.0 - f64::from(self.ratio)), 0.0)?;
        let y = (x * &mask)?;
        self.mask = Some(mask);
        Ok(vec![y])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let g = match (&self.mask, a.propagate_down[0]) {
            (_, false) => None,
            (Some(mask), true) if a.ctx.phase == Phase::Train && self.ratio > 0.0 => {
                Some((&a.top_diffs[0] * mask)?)
            }
            (_, true) => Some(a.top_diffs[0].clone()),
        };
        Ok(Grads::bottoms(vec![g]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{layer, run, run_phase, t, v};
    use crate::proto::Phase;

    #[test]
    fn identity_in_test_scaled_mask_in_train() {
        let mut l = layer("layer { name: 'd' type: 'Dropout' bottom: 'x' top: 'x' dropout_param { dropout_ratio: 0.75 } }").unwrap();
        let x = t(&[1.0; 1000], &[1000]);
        assert_eq!(v(&run(l.as_mut(), std::slice::from_ref(&x), &[]).unwrap()[0]), vec![1.0; 1000]);
        let y = v(&run_phase(l.as_mut(), &[x], &[], Phase::Train).unwrap()[0]);
        assert!(y.iter().all(|&e| e == 0.0 || e == 4.0));
        let kept = y.iter().filter(|&&e| e == 4.0).count();
        assert!((150..350).contains(&kept), "about a quarter kept: {kept}");
    }
}
