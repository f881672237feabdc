//! `Reshape`: replaces the axes `axis .. axis + num_axes` by `shape` (0 copies the bottom's
//! dimension, one -1 is inferred).

use candle::Tensor;

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, count, want};
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// The Reshape layer.
pub struct Reshape {
    name: String,
    dims: Vec<i64>,
    axis: i32,
    num_axes: i32,
}

/// Builds a Reshape layer.
///
/// # Errors
/// More than one -1, or dimensions below -1.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.reshape_param.clone().unwrap_or_default();
    let dims = q.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default();
    if dims.iter().filter(|&&d| d == -1).count() > 1 || dims.iter().any(|&d| d < -1) {
        return Err(Error::invalid(
            p.name(),
            "shape",
            format!("{dims:?}: at most one -1 and no other negative value"),
        ));
    }
    Ok(Box::new(Reshape {
        name: p.name().to_string(),
        dims,
        axis: q.axis(),
        num_axes: q.num_axes(),
    }))
}

impl Layer for Reshape {
    fn kind(&self) -> &'static str {
        "Reshape"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let s = &bottoms[0];
        let n = s.len() as i32;
        // Caffe: axis may be n (append); negative counts from n + 1.
        let start = if self.axis < 0 { n + 1 + self.axis } else { self.axis };
        if start < 0 || start > n {
            return Err(Error::invalid(
                &self.name,
                "axis",
                format!("{} out of range for {s:?}", self.axis),
            ));
        }
        let start = start as usize;
        let end = if self.num_axes == -1 { s.len() } else { start + self.num_axes.max(0) as usize };
        if end > s.len() {
            return Err(Error::invalid(
                &self.name,
                "num_axes",
                format!("{} from axis {start} exceeds {s:?}", self.num_axes),
            ));
        }
        let mut mid = Vec::with_capacity(self.dims.len());
        let mut infer = None;
        for (i, &d) in self.dims.iter().enumerate() {
            mid.push(match d {
                0 => *s.get(start + i).ok_or_else(|| {
                    Error::invalid(
                        &self.name,
                        "shape",
                        format!("0 at {i} copies a missing axis of {s:?}"),
                    )
                })?,
                -1 => {
                    infer = Some(i);
                    1
                }
                d => d as usize,
            });
        }
        let mut top = s[..start].to_vec();
        let known: usize =
            top.iter().product::<usize>() * mid.iter().product::<usize>() * count(s, end, s.len());
        let total: usize = s.iter().product();
        if let Some(i) = infer {
            if known == 0 || !total.is_multiple_of(known) {
                return Err(Error::invalid(
                    &self.name,
                    "shape",
                    format!("cannot infer -1: {total} elements by {known}"),
                ));
            }
            mid[i] = total / known;
        }
        top.extend(mid);
        top.extend_from_slice(&s[end..]);
        if top.iter().product::<usize>() != total {
            return Err(Error::ShapeMismatch {
                layer: self.name.clone(),
                what: "element count".into(),
                expected: s.clone(),
                got: top,
            });
        }
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
    fn zero_copies_and_minus_one_infers() {
        let mut l = layer("layer { name: 'r' type: 'Reshape' bottom: 'x' top: 'y' reshape_param { shape { dim: 0 dim: -1 dim: 2 } } }").unwrap();
        let y = run(l.as_mut(), &[t(&[0.; 24], &[2, 3, 4])], &[]).unwrap();
        assert_eq!(y[0].dims(), &[2, 6, 2]);
        let mut l = layer("layer { name: 'r' type: 'Reshape' bottom: 'x' top: 'y' reshape_param { shape { dim: 5 } } }").unwrap();
        let e = run(l.as_mut(), &[t(&[0.; 24], &[2, 3, 4])], &[]).unwrap_err().to_string();
        assert!(e.contains("layer 'r': element count"), "{e}");
    }
}
