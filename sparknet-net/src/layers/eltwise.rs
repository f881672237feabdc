//! `Eltwise`: elementwise SUM (with per-bottom `coeff`), PROD or MAX of equally shaped bottoms.
//!
//! On the CPU each operation is one pass of `sparknet_kernels`' Eltwise kernels on the rayon
//! pool, in Caffe's operation order (MAX keeps Caffe's mask: a tie between the first two bottoms
//! goes to the second); an in-place ReLU after a SUM runs inside it ([`Layer::fuse_relu`], the
//! residual join of ResNets). Other devices use candle's ops.

use candle::Tensor;

use crate::cpu::{HostView, kernel_err, new_host};

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, want};
use crate::proto::LayerParameter;
use crate::proto::eltwise_parameter::EltwiseOp;
use crate::{Error, Result};

/// The Eltwise layer.
pub struct Eltwise {
    name: String,
    op: EltwiseOp,
    coeff: Vec<f32>,
    /// An in-place ReLU fused into a SUM.
    relu: bool,
    /// MAX on the CPU: the bottom each output came from (kept across passes).
    mask: Vec<u32>,
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
    Ok(Box::new(Eltwise { name: p.name().to_string(), op, coeff, relu: false, mask: Vec::new() }))
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
    fn fuse_relu(&mut self, negative_slope: f32) -> bool {
        // SUM's backward reads no top; ReLU's backward masks the gradient on the rectified top.
        self.relu = self.op == EltwiseOp::Sum && negative_slope == 0.0;
        self.relu
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        if ctx.device.is_cpu() {
            return self.forward_host(ctx, bottoms);
        }
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
        if self.relu {
            acc = acc.relu()?;
        }
        Ok(vec![acc])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        if a.ctx.device.is_cpu() {
            return self.backward_host(a);
        }
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

impl Eltwise {
    fn forward_host(&mut self, ctx: &ForwardCtx, bottoms: &[&Tensor]) -> Result<Vec<Tensor>> {
        let views = bottoms.iter().map(|b| HostView::new(b)).collect::<Result<Vec<_>>>()?;
        let xs = views.iter().map(HostView::slice).collect::<Result<Vec<_>>>()?;
        let err = |e| kernel_err(&self.name, e);
        let dims = bottoms[0].dims();
        let y = new_host(dims, &ctx.device, |y| match self.op {
            EltwiseOp::Sum => {
                sparknet_kernels::eltwise_sum(&xs, &self.coeff, self.relu, y).map_err(err)
            }
            EltwiseOp::Prod => sparknet_kernels::eltwise_prod(&xs, y).map_err(err),
            EltwiseOp::Max => {
                self.mask.resize(y.len(), 0);
                sparknet_kernels::eltwise_max(&xs, y, &mut self.mask).map_err(err)
            }
        })?;
        Ok(vec![y])
    }

    fn backward_host(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let dy = &a.top_diffs[0];
        let dyv = HostView::new(dy)?;
        let dys = dyv.slice()?;
        let err = |e| kernel_err(&self.name, e);
        let views = if self.op == EltwiseOp::Prod {
            a.bottoms.iter().map(|b| HostView::new(b)).collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let xs = views.iter().map(HostView::slice).collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(a.bottoms.len());
        for (i, &down) in a.propagate_down.iter().enumerate() {
            out.push(want(down, || {
                new_host(dy.dims(), dy.device(), |dx| match self.op {
                    EltwiseOp::Sum => {
                        sparknet_kernels::scaled_copy(dys, self.coeff[i], dx).map_err(err)
                    }
                    EltwiseOp::Prod => {
                        sparknet_kernels::eltwise_prod_backward(&xs, i, dys, dx).map_err(err)
                    }
                    EltwiseOp::Max => {
                        sparknet_kernels::eltwise_max_backward(&self.mask, i, dys, dx).map_err(err)
                    }
                })
            })?);
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
