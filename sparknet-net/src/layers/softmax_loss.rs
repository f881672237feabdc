//! `SoftmaxWithLoss`: softmax along `axis` then the mean negative log-likelihood of the labels,
//! skipping `ignore_label`, divided per `loss_param.normalization` (VALID by default; the legacy
//! `normalize: false` means BATCH_SIZE). An optional second top holds the probabilities.

use candle::Tensor;

use super::softmax::{softmax, softmax_shape};
use super::{
    BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, canonical_axis, count, host_vec,
};
use crate::cpu::{HostView, from_host, kernel_err, new_host};
use crate::proto::loss_parameter::NormalizationMode;
use crate::proto::{LayerParameter, LossParameter};
use crate::{Error, Result};

/// Caffe's `LossLayer::GetNormalizer` (never below 1).
pub(crate) fn normalizer(mode: NormalizationMode, outer: usize, inner: usize, valid: usize) -> f32 {
    let n = match mode {
        NormalizationMode::Full => (outer * inner) as f32,
        NormalizationMode::Valid => valid as f32,
        NormalizationMode::BatchSize => outer as f32,
        NormalizationMode::None => 1.0,
    };
    n.max(1.0)
}

/// The effective normalisation of a `loss_param`.
pub(crate) fn mode(p: Option<&LossParameter>) -> NormalizationMode {
    match p {
        Some(q) if q.normalization.is_none() && q.normalize.is_some() => {
            if q.normalize() {
                NormalizationMode::Valid
            } else {
                NormalizationMode::BatchSize
            }
        }
        Some(q) => q.normalization(),
        None => NormalizationMode::Valid,
    }
}

/// The SoftmaxWithLoss layer.
pub struct SoftmaxWithLoss {
    name: String,
    axis: i32,
    ignore: Option<i32>,
    mode: NormalizationMode,
    n_tops: usize,
    /// CPU path: the probabilities and valid-label count of the last forward, for backward.
    last: Option<(Tensor, usize)>,
}

/// Builds a SoftmaxWithLoss layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(SoftmaxWithLoss {
        name: p.name().to_string(),
        axis: p.softmax_param.as_ref().map_or(1, |s| s.axis()),
        ignore: p.loss_param.as_ref().and_then(|l| l.ignore_label),
        mode: mode(p.loss_param.as_ref()),
        n_tops: p.top.len(),
        last: None,
    }))
}

impl Layer for SoftmaxWithLoss {
    fn kind(&self) -> &'static str {
        "SoftmaxWithLoss"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(2)
    }
    fn tops(&self) -> Count {
        Count::Between(1, 2)
    }
    fn loss_weight_default(&self) -> f32 {
        1.0
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let s = &bottoms[0];
        let a = canonical_axis(&self.name, "axis", self.axis, s.len())?;
        let want = count(s, 0, a) * count(s, a + 1, s.len());
        if count(&bottoms[1], 0, bottoms[1].len()) != want {
            return Err(Error::ShapeMismatch {
                layer: self.name.clone(),
                what: format!("labels (one per prediction of {s:?})"),
                expected: vec![want],
                got: bottoms[1].clone(),
            });
        }
        Ok(vec![vec![], s.clone()])
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let s = bottoms[0].dims().to_vec();
        let a = canonical_axis(&self.name, "axis", self.axis, s.len())?;
        let prob = softmax(bottoms[0], a)?;
        if ctx.device.is_cpu() {
            let shape = softmax_shape(&s, a);
            let (pv, lv) = (HostView::new(&prob)?, HostView::new(bottoms[1])?);
            let (loss, valid) = sparknet_kernels::softmax_loss_forward(
                &shape,
                pv.slice()?,
                lv.slice()?,
                self.ignore,
            )
            .map_err(|e| kernel_err(&self.name, e))?;
            drop(pv);
            let n = normalizer(self.mode, shape.outer, shape.inner, valid);
            let value = (loss / f64::from(n)) as f32;
            let mut tops = vec![from_host(vec![value], &[], &ctx.device)?];
            if self.n_tops == 2 {
                tops.push(prob.clone());
            }
            self.last = Some((prob, valid));
            return Ok(tops);
        }
        let (outer, classes, inner) = (count(&s, 0, a), s[a], count(&s, a + 1, s.len()));
        let p = host_vec(&prob)?;
        let labels = host_vec(bottoms[1])?;
        let (mut loss, mut valid) = (0f64, 0usize);
        for i in 0..outer {
            for j in 0..inner {
                let label = labels[i * inner + j] as i32;
                if self.ignore == Some(label) {
                    continue;
                }
                if label < 0 || label as usize >= classes {
                    return Err(Error::invalid(
                        &self.name,
                        "label",
                        format!("{label} outside [0, {classes})"),
                    ));
                }
                loss -= f64::from(
                    p[(i * classes + label as usize) * inner + j].max(f32::MIN_POSITIVE).ln(),
                );
                valid += 1;
            }
        }
        let value = (loss / f64::from(normalizer(self.mode, outer, inner, valid))) as f32;
        let mut tops = vec![from_host(vec![value], &[], &ctx.device)?];
        if self.n_tops == 2 {
            tops.push(prob);
        }
        Ok(tops)
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        if a.propagate_down.get(1).copied().unwrap_or(false) {
            return Err(Error::invalid(&self.name, "propagate_down", "labels have no gradient"));
        }
        if !a.propagate_down[0] {
            return Ok(Grads::bottoms(vec![None, None]));
        }
        let s = a.bottoms[0].dims().to_vec();
        let ax = canonical_axis(&self.name, "axis", self.axis, s.len())?;
        if a.ctx.device.is_cpu()
            && let Some((prob, valid)) = &self.last
        {
            let shape = softmax_shape(&s, ax);
            let top = host_vec(&a.top_diffs[0])?[0];
            let scale = top / normalizer(self.mode, shape.outer, shape.inner, *valid);
            let (pv, lv) = (HostView::new(prob)?, HostView::new(a.bottoms[1])?);
            let g = new_host(&s, &a.ctx.device, |dx| {
                sparknet_kernels::softmax_loss_backward(
                    &shape,
                    pv.slice()?,
                    lv.slice()?,
                    self.ignore,
                    scale,
                    dx,
                )
                .map_err(|e| kernel_err(&self.name, e))
            })?;
            return Ok(Grads::bottoms(vec![Some(g), None]));
        }
        let (outer, classes, inner) = (count(&s, 0, ax), s[ax], count(&s, ax + 1, s.len()));
        let mut g = host_vec(&softmax(a.bottoms[0], ax)?)?;
        let labels = host_vec(a.bottoms[1])?;
        let mut valid = 0usize;
        for i in 0..outer {
            for j in 0..inner {
                let label = labels[i * inner + j] as i32;
                if self.ignore == Some(label) {
                    (0..classes).for_each(|c| g[(i * classes + c) * inner + j] = 0.0);
                    continue;
                }
                if label < 0 || label as usize >= classes {
                    return Err(Error::invalid(
                        &self.name,
                        "label",
                        format!("{label} outside [0, {classes})"),
                    ));
                }
                g[(i * classes + label as usize) * inner + j] -= 1.0;
                valid += 1;
            }
        }
        let top = host_vec(&a.top_diffs[0])?[0];
        let scale = top / normalizer(self.mode, outer, inner, valid);
        g.iter_mut().for_each(|v| *v *= scale);
        Ok(Grads::bottoms(vec![Some(from_host(g, &s, &a.ctx.device)?), None]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn mean_nll_with_ignore_and_normalization() {
        let x = t(&[0., 0., 2f32.ln(), 0., 0., 0.], &[3, 2]);
        let y = t(&[0., 0., 1.], &[3]);
        let mut l = layer(
            "layer { name: 'l' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'y' top: 'loss' }",
        )
        .unwrap();
        // -ln(1/2), -ln(2/3), -ln(1/2)
        let exact = (2f32.ln() + (1.5f32).ln() + 2f32.ln()) / 3.0;
        close(&v(&run(l.as_mut(), &[x.clone(), y.clone()], &[]).unwrap()[0]), &[exact]);
        let mut l = layer("layer { name: 'l' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'y' top: 'loss' loss_param { ignore_label: 1 normalization: BATCH_SIZE } }").unwrap();
        close(&v(&run(l.as_mut(), &[x, y], &[]).unwrap()[0]), &[(2f32.ln() + 1.5f32.ln()) / 3.0]);
    }
}
