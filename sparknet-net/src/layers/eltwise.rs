//! `Eltwise`: elementwise SUM (with per-bottom `coeff`), PROD or MAX of equally shaped bottoms.

use candle::Tensor;

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, want};
use crate::proto::LayerParameter;
use crate::proto::eltwise_parameter::EltwiseOp;
use crate::{Error, Result};

/// The Eltwise layer.
pub struct Eltwise {
    name: String,
    op: EltwiseOp,
    coeff: Vec<f32>,
}

/// Builds an Eltwise layer.
///
/// # Errors
/// `coeff` with a non-SUM operation or a count other than the bottom count.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.eltwise_param.clone().unwrap_or_default();
    let op = q.operation();
    if !q.coeff.is_empty() {
        if op != EltwiseOp::Sum {
            return Err(Error::invalid(
                p.name(),
                "coeff",
                "only the SUM operation takes coefficients",
            ));
        }
        if q.coeff.len() != p.bottom.len() {
            return Err(Error::invalid(
                p.name(),
                "coeff",
                format!("{} values for {} bottoms", q.coeff.len(), p.bottom.len()),
            ));
        }
    }
    let coeff = if q.coeff.is_empty() { vec![1.0; p.bottom.len()] } else { q.coeff };
    Ok(Box::new(Eltwise { name: p.name().to_string(), op, coeff }))
}

impl Layer for Eltwise {
    fn kind(&self) -> &'static str {
        "Eltwise"
    }
    fn bottoms(&self) -> Count {
        Count::AtLeast(2)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        for b in &bottoms[1..] {
            if b != &bottoms[0] {
                return Err(Error::ShapeMismatch {
                    layer: self.name.clone(),
                    what: "bottom shapes".into(),
                    expected: bottoms[0].clone(),
                    got: b.clone(),
                });
            }
        }
        Ok(vec![bottoms[0].clone()])
    }
    fn forward(
        &mut self,
        _ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let scaled = |i: usize| -> Result<Tensor> {
            let c = self.coeff[i];
            Ok(if c == 1.0 { bottoms[i].clone() } else { bottoms[i].affine(f64::from(c), 0.0)? })
        };
        let mut acc = match self.op {
            EltwiseOp::Sum => scaled(0)?,
            _ => bottoms[0].clone(),
        };
        for (i, b) in bottoms.iter().enumerate().skip(1) {
            acc = match self.op {
                EltwiseOp::Sum => (acc + scaled(i)?)?,
                EltwiseOp::Prod => (acc * *b)?,
                EltwiseOp::Max => acc.maximum(*b)?,
            };
        }
        Ok(vec![acc])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let (dy, y) = (&a.top_diffs[0], a.tops[0]);
        let mut out = Vec::new();
        // MAX: the first bottom holding the maximum takes the gradient (Caffe's strict `>`).
        let mut taken = y.zeros_like()?;
        for (i, b) in a.bottoms.iter().enumerate() {
            let down = a.propagate_down[i];
            out.push(match self.op {
                EltwiseOp::Sum => want(down, || Ok(dy.affine(f64::from(self.coeff[i]), 0.0)?))?,
                EltwiseOp::Prod => want(down, || {
                    let mut others = dy.clone();
                    for (j, o) in a.bottoms.iter().enumerate() {
                        if j != i {
                            others = (others * *o)?;
                        }
                    }
                    Ok(others)
                })?,
                EltwiseOp::Max => {
                    let here = (b.eq(y)?.to_dtype(candle::DType::F32)? * (1.0 - &taken)?)?;
                    taken = (taken + &here)?;
                    want(down, || Ok((dy * here)?))?
                }
            });
        }
        Ok(Grads::bottoms(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn sum_prod_max() {
        let a = t(&[1., -2., 3.], &[3]);
        let b = t(&[4., 5., -6.], &[3]);
        let mut l = layer("layer { name: 'e' type: 'Eltwise' bottom: 'a' bottom: 'b' top: 'y' eltwise_param { coeff: 1 coeff: -0.5 } }").unwrap();
        close(&v(&run(l.as_mut(), &[a.clone(), b.clone()], &[]).unwrap()[0]), &[-1., -4.5, 6.]);
        let mut l = layer("layer { name: 'e' type: 'Eltwise' bottom: 'a' bottom: 'b' top: 'y' eltwise_param { operation: PROD } }").unwrap();
        close(&v(&run(l.as_mut(), &[a.clone(), b.clone()], &[]).unwrap()[0]), &[4., -10., -18.]);
        let mut l = layer("layer { name: 'e' type: 'Eltwise' bottom: 'a' bottom: 'b' top: 'y' eltwise_param { operation: MAX } }").unwrap();
        close(&v(&run(l.as_mut(), &[a, b], &[]).unwrap()[0]), &[4., 5., 3.]);
    }

    #[test]
    fn mismatched_shapes_name_both() {
        let mut l =
            layer("layer { name: 'e' type: 'Eltwise' bottom: 'a' bottom: 'b' top: 'y' }").unwrap();
        let e = run(l.as_mut(), &[t(&[1., 2.], &[2]), t(&[1., 2., 3.], &[3])], &[])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "layer 'e': bottom shapes: expected shape [2], got [3]");
    }
}
