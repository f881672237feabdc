//! `Slice`: splits a bottom along `axis` (or legacy `slice_dim`) at `slice_point`s, or into equal
//! parts (one per top) when none are given.

use candle::Tensor;

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, canonical_axis, want};
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// The Slice layer.
pub struct Slice {
    name: String,
    axis: i32,
    points: Vec<usize>,
    n_tops: usize,
}

/// Builds a Slice layer.
///
/// # Errors
/// A slice_point count other than tops - 1.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.slice_param.clone().unwrap_or_default();
    let axis =
        if q.axis.is_none() && q.slice_dim.is_some() { q.slice_dim() as i32 } else { q.axis() };
    let points: Vec<usize> = q.slice_point.iter().map(|&v| v as usize).collect();
    if !points.is_empty() && points.len() + 1 != p.top.len() {
        return Err(Error::invalid(
            p.name(),
            "slice_point",
            format!("{} points for {} tops", points.len(), p.top.len()),
        ));
    }
    Ok(Box::new(Slice { name: p.name().to_string(), axis, points, n_tops: p.top.len() }))
}

impl Slice {
    fn ranges(&self, dim: usize) -> Result<Vec<(usize, usize)>> {
        let bounds: Vec<usize> = if self.points.is_empty() {
            if !dim.is_multiple_of(self.n_tops) {
                return Err(Error::invalid(
                    &self.name,
                    "top",
                    format!("axis size {dim} is not divisible into {} tops", self.n_tops),
                ));
            }
            (0..=self.n_tops).map(|i| i * dim / self.n_tops).collect()
        } else {
            std::iter::once(0)
                .chain(self.points.iter().copied())
                .chain(std::iter::once(dim))
                .collect()
        };
        if bounds.windows(2).any(|w| w[1] <= w[0]) {
            return Err(Error::invalid(
                &self.name,
                "slice_point",
                format!("{:?} must increase strictly within (0, {dim})", self.points),
            ));
        }
        Ok(bounds.windows(2).map(|w| (w[0], w[1] - w[0])).collect())
    }
}

impl Layer for Slice {
    fn kind(&self) -> &'static str {
        "Slice"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::AtLeast(1)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let a = canonical_axis(&self.name, "axis", self.axis, bottoms[0].len())?;
        Ok(self
            .ranges(bottoms[0][a])?
            .into_iter()
            .map(|(_, len)| {
                let mut s = bottoms[0].clone();
                s[a] = len;
                s
            })
            .collect())
    }
    fn forward(
        &mut self,
        _ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let x = bottoms[0];
        let a = canonical_axis(&self.name, "axis", self.axis, x.rank())?;
        self.ranges(x.dims()[a])?
            .into_iter()
            .map(|(s, l)| Ok(x.narrow(a, s, l)?.contiguous()?))
            .collect()
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let ax = canonical_axis(&self.name, "axis", self.axis, a.bottoms[0].rank())?;
        let g = want(a.propagate_down[0], || Ok(Tensor::cat(a.top_diffs, ax)?))?;
        Ok(Grads::bottoms(vec![g]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn points_and_equal_parts() {
        let x = t(&[1., 2., 3., 4., 5., 6.], &[1, 6]);
        let mut l = layer("layer { name: 's' type: 'Slice' bottom: 'x' top: 'a' top: 'b' slice_param { slice_point: 1 } }").unwrap();
        let y = run(l.as_mut(), std::slice::from_ref(&x), &[]).unwrap();
        close(&v(&y[0]), &[1.]);
        close(&v(&y[1]), &[2., 3., 4., 5., 6.]);
        let mut l =
            layer("layer { name: 's' type: 'Slice' bottom: 'x' top: 'a' top: 'b' top: 'c' }")
                .unwrap();
        let y = run(l.as_mut(), &[x], &[]).unwrap();
        close(&v(&y[2]), &[5., 6.]);
    }
}
