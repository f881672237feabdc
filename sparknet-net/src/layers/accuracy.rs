//! `Accuracy`: the fraction of samples whose true label is among the `top_k` scores along `axis`
//! (Caffe counts the true class and every class scoring at least as high), skipping
//! `ignore_label`. An optional second top holds the per-class accuracy. Computed on the host.

use candle::Tensor;

use super::{Count, ForwardCtx, Layer, Shape, canonical_axis, count, host_vec};
use crate::cpu::from_host;
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// The Accuracy layer.
pub struct Accuracy {
    name: String,
    top_k: usize,
    axis: i32,
    ignore: Option<i32>,
    n_tops: usize,
}

/// Builds an Accuracy layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.accuracy_param.unwrap_or_default();
    Ok(Box::new(Accuracy {
        name: p.name().to_string(),
        top_k: q.top_k() as usize,
        axis: q.axis(),
        ignore: q.ignore_label,
        n_tops: p.top.len(),
    }))
}

impl Layer for Accuracy {
    fn kind(&self) -> &'static str {
        "Accuracy"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(2)
    }
    fn tops(&self) -> Count {
        Count::Between(1, 2)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let s = &bottoms[0];
        let a = canonical_axis(&self.name, "axis", self.axis, s.len())?;
        let (outer, inner) = (count(s, 0, a), count(s, a + 1, s.len()));
        if count(&bottoms[1], 0, bottoms[1].len()) != outer * inner {
            return Err(Error::ShapeMismatch {
                layer: self.name.clone(),
                what: format!("labels (one per prediction of {s:?} along axis {a})"),
                expected: vec![outer * inner],
                got: bottoms[1].clone(),
            });
        }
        if self.top_k > s[a] {
            return Err(Error::invalid(
                &self.name,
                "top_k",
                format!("{} exceeds the {} classes", self.top_k, s[a]),
            ));
        }
        Ok(vec![vec![], vec![s[a]]])
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let s = bottoms[0].dims().to_vec();
        let a = canonical_axis(&self.name, "axis", self.axis, s.len())?;
        let (outer, classes, inner) = (count(&s, 0, a), s[a], count(&s, a + 1, s.len()));
        let x = host_vec(bottoms[0])?;
        let labels = host_vec(bottoms[1])?;
        let (mut correct, mut total) = (0usize, 0usize);
        let mut per_class = vec![(0usize, 0usize); classes];
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
                let at = |c: usize| x[(i * classes + c) * inner + j];
                let truth = at(label as usize);
                let better = (0..classes).filter(|&c| at(c) >= truth).count();
                let hit = better <= self.top_k;
                total += 1;
                per_class[label as usize].1 += 1;
                if hit {
                    correct += 1;
                    per_class[label as usize].0 += 1;
                }
            }
        }
        let acc = if total == 0 { 0.0 } else { correct as f32 / total as f32 };
        let mut tops = vec![from_host(vec![acc], &[], &ctx.device)?];
        if self.n_tops == 2 {
            let pc = per_class
                .iter()
                .map(|&(c, t)| if t == 0 { 0.0 } else { c as f32 / t as f32 })
                .collect();
            tops.push(from_host(pc, &[classes], &ctx.device)?);
        }
        Ok(tops)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn top1_top2_and_ignore() {
        let scores = t(&[0.1, 0.7, 0.2, 0.5, 0.3, 0.2, 0.3, 0.3, 0.4], &[3, 3]);
        let labels = t(&[2., 0., 0.], &[3]);
        let mut l =
            layer("layer { name: 'a' type: 'Accuracy' bottom: 's' bottom: 'l' top: 'acc' }")
                .unwrap();
        close(&v(&run(l.as_mut(), &[scores.clone(), labels.clone()], &[]).unwrap()[0]), &[1. / 3.]);
        let mut l = layer("layer { name: 'a' type: 'Accuracy' bottom: 's' bottom: 'l' top: 'acc' accuracy_param { top_k: 2 } }").unwrap();
        // Row 3's true class ties with another and loses to a third: ties count as better.
        close(&v(&run(l.as_mut(), &[scores.clone(), labels.clone()], &[]).unwrap()[0]), &[2. / 3.]);
        let mut l = layer("layer { name: 'a' type: 'Accuracy' bottom: 's' bottom: 'l' top: 'acc' accuracy_param { ignore_label: 2 } }").unwrap();
        close(&v(&run(l.as_mut(), &[scores, labels], &[]).unwrap()[0]), &[0.5]);
    }
}
