//! `SigmoidCrossEntropyLoss`: cross-entropy of `sigmoid(x)` against targets in [0, 1], computed
//! stably as Caffe does, skipping `ignore_label`, normalised per `loss_param` (VALID: the count
//! of non-ignored targets).

use candle::Tensor;

use super::softmax_loss::{mode, normalizer};
use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, count, host_vec};
use crate::cpu::from_host;
use crate::proto::LayerParameter;
use crate::proto::loss_parameter::NormalizationMode;
use crate::{Error, Result};

/// The SigmoidCrossEntropyLoss layer.
pub struct SigmoidCrossEntropyLoss {
    name: String,
    ignore: Option<i32>,
    mode: NormalizationMode,
}

/// Builds a SigmoidCrossEntropyLoss layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(SigmoidCrossEntropyLoss {
        name: p.name().to_string(),
        ignore: p.loss_param.as_ref().and_then(|l| l.ignore_label),
        mode: mode(p.loss_param.as_ref()),
    }))
}

impl Layer for SigmoidCrossEntropyLoss {
    fn kind(&self) -> &'static str {
        "SigmoidCrossEntropyLoss"
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
        if count(a, 0, a.len()) != count(b, 0, b.len()) {
            return Err(Error::ShapeMismatch {
                layer: self.name.clone(),
                what: "targets (one per input)".into(),
                expected: a.clone(),
                got: b.clone(),
            });
        }
        Ok(vec![vec![]])
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let s = bottoms[0].dims().to_vec();
        let x = host_vec(bottoms[0])?;
        let t = host_vec(bottoms[1])?;
        let (mut loss, mut valid) = (0f64, 0usize);
        for (&xi, &ti) in x.iter().zip(&t) {
            if self.ignore == Some(ti as i32) {
                continue;
            }
            let pos = if xi >= 0.0 { 1.0 } else { 0.0 };
            loss -= f64::from(xi * (ti - pos) - (1.0 + (xi - 2.0 * xi * pos).exp()).ln());
            valid += 1;
        }
        let outer = s.first().copied().unwrap_or(1);
        let norm = normalizer(self.mode, outer, count(&s, 1, s.len()), valid);
        Ok(vec![from_host(vec![(loss / f64::from(norm)) as f32], &[], &ctx.device)?])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        if a.propagate_down.get(1).copied().unwrap_or(false) {
            return Err(Error::invalid(&self.name, "propagate_down", "targets have no gradient"));
        }
        if !a.propagate_down[0] {
            return Ok(Grads::bottoms(vec![None, None]));
        }
        let s = a.bottoms[0].dims().to_vec();
        let x = host_vec(a.bottoms[0])?;
        let t = host_vec(a.bottoms[1])?;
        let mut valid = 0usize;
        // d/dx = sigmoid(x) - t; ignored targets get 0.
        let mut g: Vec<f32> = x
            .iter()
            .zip(&t)
            .map(|(&xi, &ti)| {
                if self.ignore == Some(ti as i32) {
                    0.0
                } else {
                    valid += 1;
                    1.0 / (1.0 + (-xi).exp()) - ti
                }
            })
            .collect();
        let outer = s.first().copied().unwrap_or(1);
        let norm = normalizer(self.mode, outer, count(&s, 1, s.len()), valid);
        let scale = host_vec(&a.top_diffs[0])?[0] / norm;
        g.iter_mut().for_each(|v| *v *= scale);
        Ok(Grads::bottoms(vec![Some(from_host(g, &s, &a.ctx.device)?), None]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn stable_cross_entropy() {
        let mut l = layer(
            "layer { name: 's' type: 'SigmoidCrossEntropyLoss' bottom: 'x' bottom: 't' top: 'l' }",
        )
        .unwrap();
        let y = run(l.as_mut(), &[t(&[0., 2.], &[1, 2]), t(&[1., 0.], &[1, 2])], &[]).unwrap();
        let sig2 = 1. / (1. + (-2f32).exp());
        close(&v(&y[0]), &[(2f32.ln() - (1. - sig2).ln()) / 2.]);
    }
}
