//! `Crop`: crops bottom 0 to bottom 1's shape on the axes from `axis` (default 2), starting at
//! `offset` (one value for all cropped axes, or one per axis).

use candle::Tensor;

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, canonical_axis, want};
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// The Crop layer.
pub struct Crop {
    name: String,
    axis: i32,
    offset: Vec<usize>,
}

/// Builds a Crop layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.crop_param.clone().unwrap_or_default();
    Ok(Box::new(Crop {
        name: p.name().to_string(),
        axis: q.axis(),
        offset: q.offset.iter().map(|&o| o as usize).collect(),
    }))
}

impl Crop {
    /// (start, len) per axis.
    fn plan(&self, a: &[usize], b: &[usize]) -> Result<Vec<(usize, usize)>> {
        if a.len() != b.len() {
            return Err(Error::ShapeMismatch {
                layer: self.name.clone(),
                what: "rank of the reference bottom".into(),
                expected: a.to_vec(),
                got: b.to_vec(),
            });
        }
        let start = canonical_axis(&self.name, "axis", self.axis, a.len())?;
        let n_crop = a.len() - start;
        if self.offset.len() > 1 && self.offset.len() != n_crop {
            return Err(Error::invalid(
                &self.name,
                "offset",
                format!("{} values for {n_crop} cropped axes", self.offset.len()),
            ));
        }
        (0..a.len())
            .map(|i| {
                if i < start {
                    return Ok((0, a[i]));
                }
                let off = match self.offset.len() {
                    0 => 0,
                    1 => self.offset[0],
                    _ => self.offset[i - start],
                };
                if off + b[i] > a[i] {
                    return Err(Error::ShapeMismatch {
                        layer: self.name.clone(),
                        what: format!("crop of axis {i} at offset {off}"),
                        expected: a.to_vec(),
                        got: b.to_vec(),
                    });
                }
                Ok((off, b[i]))
            })
            .collect()
    }
}

impl Layer for Crop {
    fn kind(&self) -> &'static str {
        "Crop"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(2)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        Ok(vec![self.plan(&bottoms[0], &bottoms[1])?.into_iter().map(|(_, l)| l).collect()])
    }
    fn forward(
        &mut self,
        _ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let mut y = bottoms[0].clone();
        for (i, (s, l)) in self.plan(bottoms[0].dims(), bottoms[1].dims())?.into_iter().enumerate()
        {
            if l != y.dims()[i] {
                y = y.narrow(i, s, l)?;
            }
        }
        Ok(vec![y.contiguous()?])
    }
    fn backward(&mut self, args: &BackwardArgs<'_>) -> Result<Grads> {
        let dims = args.bottoms[0].dims();
        let dx = want(args.propagate_down[0], || {
            // The top diff in its window, zeros around it.
            let mut g = args.top_diffs[0].clone();
            for (i, (s, l)) in self.plan(dims, args.bottoms[1].dims())?.into_iter().enumerate() {
                if l != dims[i] {
                    g = g.pad_with_zeros(i, s, dims[i] - s - l)?;
                }
            }
            Ok(g)
        })?;
        Ok(Grads::bottoms(vec![dx, None]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn spatial_crop_with_offset() {
        let mut l = layer("layer { name: 'c' type: 'Crop' bottom: 'a' bottom: 'b' top: 'y' crop_param { offset: 1 } }").unwrap();
        let a = t(&(0..16).map(|v| v as f32).collect::<Vec<_>>(), &[1, 1, 4, 4]);
        let y = run(l.as_mut(), &[a, t(&[0.; 4], &[1, 1, 2, 2])], &[]).unwrap();
        close(&v(&y[0]), &[5., 6., 9., 10.]);
    }
}
