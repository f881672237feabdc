//! `ContrastiveLoss`: for pairs (a, b) with similarity label y, `y d^2 + (1-y) max(margin - d, 0)^2`
//! (`legacy_version`: `max(margin - d^2, 0)`), summed and divided by `2 N`.

use candle::Tensor;

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, count, host_vec};
use crate::cpu::from_host;
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// The ContrastiveLoss layer.
pub struct ContrastiveLoss {
    name: String,
    margin: f32,
    legacy: bool,
}

/// Builds a ContrastiveLoss layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.contrastive_loss_param.unwrap_or_default();
    Ok(Box::new(ContrastiveLoss {
        name: p.name().to_string(),
        margin: q.margin(),
        legacy: q.legacy_version(),
    }))
}

impl Layer for ContrastiveLoss {
    fn kind(&self) -> &'static str {
        "ContrastiveLoss"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(3)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn loss_weight_default(&self) -> f32 {
        1.0
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let (a, b, y) = (&bottoms[0], &bottoms[1], &bottoms[2]);
        if a != b || a.is_empty() || count(y, 0, y.len()) != a[0] {
            return Err(Error::ShapeMismatch {
                layer: self.name.clone(),
                what: "pair bottoms and similarity labels".into(),
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
        let n = bottoms[0].dims()[0];
        let (a, b, y) = (host_vec(bottoms[0])?, host_vec(bottoms[1])?, host_vec(bottoms[2])?);
        let dim = a.len() / n.max(1);
        let mut loss = 0f64;
        for i in 0..n {
            let d2: f32 = (0..dim).map(|k| (a[i * dim + k] - b[i * dim + k]).powi(2)).sum();
            loss += f64::from(if y[i] != 0.0 {
                d2
            } else if self.legacy {
                (self.margin - d2).max(0.0)
            } else {
                (self.margin - d2.sqrt()).max(0.0).powi(2)
            });
        }
        Ok(vec![from_host(vec![(loss / (2.0 * n.max(1) as f64)) as f32], &[], &ctx.device)?])
    }
    fn backward(&mut self, args: &BackwardArgs<'_>) -> Result<Grads> {
        if args.propagate_down.get(2).copied().unwrap_or(false) {
            return Err(Error::invalid(&self.name, "propagate_down", "labels have no gradient"));
        }
        let n = args.bottoms[0].dims()[0];
        let (a, b, y) =
            (host_vec(args.bottoms[0])?, host_vec(args.bottoms[1])?, host_vec(args.bottoms[2])?);
        let dim = a.len() / n.max(1);
        let top = host_vec(&args.top_diffs[0])?[0] / n.max(1) as f32;
        // Gradient with respect to a; b gets its negation (Caffe's per-sample formulas).
        let mut ga = vec![0f32; a.len()];
        for i in 0..n {
            let diff: Vec<f32> = (0..dim).map(|k| a[i * dim + k] - b[i * dim + k]).collect();
            let d2: f32 = diff.iter().map(|d| d * d).sum();
            let coef = if y[i] != 0.0 {
                top
            } else if self.legacy {
                if self.margin - d2 > 0.0 { -top } else { 0.0 }
            } else {
                let dist = d2.sqrt();
                let mdist = self.margin - dist;
                if mdist > 0.0 { -top * mdist / (dist + 1e-4) } else { 0.0 }
            };
            (0..dim).for_each(|k| ga[i * dim + k] = coef * diff[k]);
        }
        let dev = &args.ctx.device;
        let gb: Vec<f32> = ga.iter().map(|v| -v).collect();
        let mut out = Vec::new();
        for (j, g) in [ga, gb].into_iter().enumerate() {
            out.push(if args.propagate_down[j] {
                Some(from_host(g, args.bottoms[j].dims(), dev)?)
            } else {
                None
            });
        }
        out.push(None);
        Ok(Grads::bottoms(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn similar_and_dissimilar_pairs() {
        let mut l = layer("layer { name: 'c' type: 'ContrastiveLoss' bottom: 'a' bottom: 'b' bottom: 'y' top: 'l' contrastive_loss_param { margin: 2 } }").unwrap();
        let y = run(
            l.as_mut(),
            &[t(&[0., 0., 0., 0.], &[2, 2]), t(&[3., 4., 1., 0.], &[2, 2]), t(&[1., 0.], &[2])],
            &[],
        )
        .unwrap();
        close(&v(&y[0]), &[(25. + 1.) / 4.]);
    }
}
