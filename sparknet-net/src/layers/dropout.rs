//! `Dropout`: identity in TEST (Caffe scales at train time); in TRAIN each unit is kept with
//! probability `1 - dropout_ratio` and scaled by `1 / (1 - dropout_ratio)` (BVLC Caffe's
//! `DropoutLayer`; its `DropoutParameter` has no `scale_train`). The mask is drawn on the host
//! from the layer's seeded generator ([`Layer::set_rng`]) and kept for the backward pass. On
//! the CPU the mask buffer is reused across passes and `x * mask` runs on the rayon pool
//! (`sparknet_kernels::eltwise_prod`); other devices use candle's ops.

use candle::Tensor;

use crate::cpu::{HostView, kernel_err, new_host};

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape};
use crate::cpu::from_host;
use crate::fillers::Rng;
use crate::proto::{LayerParameter, Phase};
use crate::{Error, Result};

/// The Dropout layer.
pub struct Dropout {
    ratio: f32,
    /// The layer's generator (seeded by the net; seed 0 when built alone).
    rng: Rng,
    /// The last TRAIN mask (0 or `1 / (1 - ratio)` per unit), for the backward pass.
    mask: Option<Tensor>,
    /// CPU path: the last TRAIN mask, reused across passes.
    host_mask: Vec<f32>,
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
    Ok(Box::new(Dropout { ratio, rng: Rng::new(0), mask: None, host_mask: Vec::new() }))
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
    fn set_rng(&mut self, rng: Rng) {
        self.rng = rng;
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
        // The buffer becomes the mask tensor's storage (moved, not copied, on the CPU).
        let keep = 1.0 - f64::from(self.ratio);
        if ctx.device.is_cpu() {
            let m = &mut self.host_mask;
            m.resize(x.elem_count(), 0.0);
            self.rng.bernoulli(keep, (1.0 / keep) as f32, m);
            let xv = HostView::new(x)?;
            let y = new_host(x.dims(), &ctx.device, |y| {
                sparknet_kernels::eltwise_prod(&[xv.slice()?, m], y)
                    .map_err(|e| kernel_err("Dropout", e))
            })?;
            return Ok(vec![y]);
        }
        let mut mask = vec![0f32; x.elem_count()];
        self.rng.bernoulli(keep, (1.0 / keep) as f32, &mut mask);
        let mask = from_host(mask, x.dims(), &ctx.device)?.to_dtype(x.dtype())?;
        let y = (x * &mask)?;
        self.mask = Some(mask);
        Ok(vec![y])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let train = a.ctx.phase == Phase::Train && self.ratio > 0.0;
        if a.ctx.device.is_cpu() && a.propagate_down[0] && train {
            let dy = &a.top_diffs[0];
            let dyv = HostView::new(dy)?;
            let g = new_host(dy.dims(), dy.device(), |dx| {
                sparknet_kernels::eltwise_prod(&[dyv.slice()?, &self.host_mask], dx)
                    .map_err(|e| kernel_err("Dropout", e))
            })?;
            return Ok(Grads::bottoms(vec![Some(g)]));
        }
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
    use crate::fillers::Rng;
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

    #[test]
    fn masks_follow_the_seed() {
        let def = "layer { name: 'd' type: 'Dropout' bottom: 'x' top: 'y' }";
        let x = t(&[1.0; 256], &[256]);
        let masks = |seed: u64| {
            let mut l = layer(def).unwrap();
            l.set_rng(Rng::stream(seed, 3));
            (0..3)
                .map(|_| {
                    v(&run_phase(l.as_mut(), std::slice::from_ref(&x), &[], Phase::Train).unwrap()
                        [0])
                })
                .collect::<Vec<_>>()
        };
        let a = masks(7);
        assert_eq!(a, masks(7), "same seed, same masks pass after pass");
        assert_ne!(a, masks(8), "another seed, other masks");
        assert_ne!(a[0], a[1], "a fresh mask every pass");
        assert!(a.iter().flatten().all(|&e| e == 0.0 || e == 2.0));
    }
}
