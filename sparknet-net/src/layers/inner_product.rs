//! `InnerProduct`: `y = x W^T + b` over the axes from `axis` on (`transpose: true` stores W as
//! `K x N`). CPU: `sparknet_kernels::sgemm`; other devices: candle's `matmul`.
//!
//! On the CPU, GEMM reads `W^T` from Caffe's `N x K` weights through strided packing, which for
//! a large matrix costs more than the product itself (AlexNet's fc6 at batch 16: about 4x; see
//! `sparknet-kernels/BENCH.md`). So for weights of at least [`COPY_MIN`] elements the layer keeps
//! a `K x N` copy, made again only when a new weight tensor arrives (after a solver step): a
//! repeated forward pass reuses it, and a training step pays one transpose, about what the strided
//! packing cost. One sample (`M = 1`, `transpose: false`) is a matrix-vector product instead
//! (`sparknet_kernels::gemv`), which streams Caffe's `N x K` weights once and needs no copy.
//! Which path runs depends only on the shape, so results never depend on history.

use candle::{Tensor, TensorId};

/// Weights of at least this many elements (4 MiB of f32, beyond the L2 cache) are multiplied
/// through a `K x N` copy.
pub const COPY_MIN: usize = 1 << 20;

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, canonical_axis, count};
use crate::cpu::{from_host, kernel_err, with_host};
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// The InnerProduct layer.
pub struct InnerProduct {
    name: String,
    num_output: usize,
    bias_term: bool,
    transpose: bool,
    axis: i32,
    k: usize,
    /// `K x N` copy of the weights with this id (CPU, `transpose: false`, at least
    /// [`COPY_MIN`] elements).
    transposed: Option<(TensorId, Vec<f32>)>,
}

/// Builds an InnerProduct layer.
///
/// # Errors
/// A missing `num_output`.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.inner_product_param.clone().unwrap_or_default();
    if q.num_output.is_none() {
        return Err(Error::invalid(p.name(), "num_output", "missing"));
    }
    Ok(Box::new(InnerProduct {
        name: p.name().to_string(),
        num_output: q.num_output() as usize,
        bias_term: q.bias_term(),
        transpose: q.transpose(),
        axis: q.axis(),
        k: 0,
        transposed: None,
    }))
}

impl Layer for InnerProduct {
    fn kind(&self) -> &'static str {
        "InnerProduct"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn setup(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let s = &bottoms[0];
        let axis = canonical_axis(&self.name, "axis", self.axis, s.len())?;
        self.k = count(s, axis, s.len());
        let w = if self.transpose {
            vec![self.k, self.num_output]
        } else {
            vec![self.num_output, self.k]
        };
        let mut shapes = vec![w];
        if self.bias_term {
            shapes.push(vec![self.num_output]);
        }
        Ok(shapes)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let s = &bottoms[0];
        let axis = canonical_axis(&self.name, "axis", self.axis, s.len())?;
        let k = count(s, axis, s.len());
        if self.k != 0 && k != self.k {
            return Err(Error::ShapeMismatch {
                layer: self.name.clone(),
                what: format!("input size from axis {axis} (the weights' K = {})", self.k),
                expected: vec![self.k],
                got: s.clone(),
            });
        }
        let mut top = s[..axis].to_vec();
        top.push(self.num_output);
        Ok(vec![top])
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let x = bottoms[0];
        let dims = x.dims().to_vec();
        let axis = canonical_axis(&self.name, "axis", self.axis, dims.len())?;
        let (m, k, n) = (count(&dims, 0, axis), count(&dims, axis, dims.len()), self.num_output);
        let mut top = dims[..axis].to_vec();
        top.push(n);
        if !ctx.device.is_cpu() {
            let x2 = x.reshape((m, k))?;
            let w = if self.transpose { params[0].clone() } else { params[0].t()? };
            let mut y = x2.matmul(&w)?;
            if self.bias_term {
                y = y.broadcast_add(&params[1])?;
            }
            return Ok(vec![y.reshape(top)?]);
        }
        let name = &self.name;
        if m == 1 && !self.transpose {
            // One sample: a matrix-vector product straight over Caffe's `N x K` weights (no
            // copy, no packing; the weights stream from memory once).
            let mut y = vec![0f32; n];
            with_host(x, |xs| {
                with_host(&params[0], |w| {
                    let mut run = |b: Option<&[f32]>| {
                        sparknet_kernels::gemv(n, k, w, xs, b, &mut y)
                            .map_err(|e| kernel_err(name, e))
                    };
                    match params.get(1).filter(|_| self.bias_term) {
                        Some(bias) => with_host(bias, |b| run(Some(b))),
                        None => run(None),
                    }
                })
            })?;
            return Ok(vec![from_host(y, &top, &ctx.device)?]);
        }
        let mut y = vec![0f32; m * n];
        if self.bias_term {
            with_host(&params[1], |b| {
                y.chunks_mut(n).for_each(|row| row.copy_from_slice(b));
                Ok(())
            })?;
        }
        let beta = if self.bias_term { 1.0 } else { 0.0 };
        let id = params[0].id();
        let copy = !self.transpose && n * k >= COPY_MIN;
        if copy && self.transposed.as_ref().is_none_or(|(t, _)| *t != id) {
            let mut wt = self.transposed.take().map(|(_, v)| v).unwrap_or_default();
            wt.resize(n * k, 0.0);
            with_host(&params[0], |w| {
                sparknet_kernels::transpose(n, k, w, &mut wt).map_err(|e| kernel_err(name, e))
            })?;
            self.transposed = Some((id, wt));
        }
        with_host(x, |xs| match self.transposed.as_ref().filter(|_| copy) {
            Some((_, wt)) => {
                sparknet_kernels::sgemm(false, false, m, n, k, 1.0, xs, wt, beta, &mut y)
                    .map_err(|e| kernel_err(name, e))
            }
            None => with_host(&params[0], |w| {
                sparknet_kernels::sgemm(false, !self.transpose, m, n, k, 1.0, xs, w, beta, &mut y)
                    .map_err(|e| kernel_err(name, e))
            }),
        })?;
        Ok(vec![from_host(y, &top, &ctx.device)?])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let x = a.bottoms[0];
        let dims = x.dims().to_vec();
        let axis = canonical_axis(&self.name, "axis", self.axis, dims.len())?;
        let (m, k, n) = (count(&dims, 0, axis), count(&dims, axis, dims.len()), self.num_output);
        let (name, tr, dev) = (&self.name, self.transpose, &a.ctx.device);
        let e = |e| kernel_err(name, e);
        let mut grads = Grads::default();
        with_host(&a.top_diffs[0], |dy| {
            grads.params.push(if a.param_down[0] {
                let mut gw = vec![0f32; n * k];
                with_host(x, |xs| {
                    if tr {
                        // W is K x N: dW = x^T dy.
                        sparknet_kernels::sgemm(true, false, k, n, m, 1.0, xs, dy, 0.0, &mut gw)
                    } else {
                        // W is N x K: dW = dy^T x.
                        sparknet_kernels::sgemm(true, false, n, k, m, 1.0, dy, xs, 0.0, &mut gw)
                    }
                    .map_err(e)
                })?;
                Some(from_host(gw, a.params[0].dims(), dev)?)
            } else {
                None
            });
            if self.bias_term {
                grads.params.push(if a.param_down.get(1).copied().unwrap_or(false) {
                    let mut gb = vec![0f32; n];
                    for row in dy.chunks(n) {
                        gb.iter_mut().zip(row).for_each(|(b, v)| *b += v);
                    }
                    Some(from_host(gb, &[n], dev)?)
                } else {
                    None
                });
            }
            if a.propagate_down[0] {
                let mut gx = vec![0f32; m * k];
                with_host(&a.params[0], |w| {
                    sparknet_kernels::sgemm(false, tr, m, k, n, 1.0, dy, w, 0.0, &mut gx).map_err(e)
                })?;
                grads.bottoms.push(Some(from_host(gx, &dims, dev)?));
            }
            Ok(())
        })?;
        Ok(grads)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn flattens_from_axis_and_adds_bias() {
        let mut l = layer("layer { name: 'ip' type: 'InnerProduct' bottom: 'x' top: 'y' inner_product_param { num_output: 2 } }").unwrap();
        let x = t(&[1., 2., 3., 4.], &[1, 2, 2, 1]);
        let w = t(&[1., 0., 0., 1., 1., 1., 1., 1.], &[2, 4]);
        let y = run(l.as_mut(), std::slice::from_ref(&x), &[w, t(&[0.5, -1.], &[2])]).unwrap();
        assert_eq!(y[0].dims(), &[1, 2]);
        close(&v(&y[0]), &[5.5, 9.]);
        let mut l = layer("layer { name: 'ip' type: 'InnerProduct' bottom: 'x' top: 'y' inner_product_param { num_output: 2 transpose: true bias_term: false axis: 2 } }").unwrap();
        let y = run(l.as_mut(), &[x], &[t(&[1., 2., 3., 4.], &[2, 2])]).unwrap();
        assert_eq!(y[0].dims(), &[1, 2, 2]);
        close(&v(&y[0]), &[1. + 6., 2. + 8., 3. + 12., 6. + 16.]);
    }

    /// Weights large enough for the K x N copy: the products are right, repeated passes are
    /// bit-identical, and a new weight tensor is never served from a stale copy.
    #[test]
    fn transposed_weight_copy_follows_the_weights() {
        let (m, n, k) = (2usize, 1024usize, super::COPY_MIN / 1024);
        let mut l = layer("layer { name: 'ip' type: 'InnerProduct' bottom: 'x' top: 'y' inner_product_param { num_output: 1024 bias_term: false } }").unwrap();
        let xs: Vec<f32> = (0..m * k).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let x = t(&xs, &[m, k]);
        let weights = |seed: usize| -> Vec<f32> {
            (0..n * k).map(|i| (((i + seed) * 7919) % 13) as f32 * 0.125 - 0.75).collect()
        };
        let direct = |w: &[f32]| -> Vec<f32> {
            let mut y = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    let d: f64 =
                        (0..k).map(|p| f64::from(xs[i * k + p]) * f64::from(w[j * k + p])).sum();
                    y[i * n + j] = d as f32;
                }
            }
            y
        };
        let (w1, w2) = (weights(0), weights(5));
        let (t1, t2) = (t(&w1, &[n, k]), t(&w2, &[n, k]));
        let first =
            v(&run(l.as_mut(), std::slice::from_ref(&x), std::slice::from_ref(&t1)).unwrap()[0]);
        close(&first, &direct(&w1));
        let again =
            v(&run(l.as_mut(), std::slice::from_ref(&x), std::slice::from_ref(&t1)).unwrap()[0]);
        assert_eq!(first, again, "a repeated pass is bit-identical");
        let other =
            v(&run(l.as_mut(), std::slice::from_ref(&x), std::slice::from_ref(&t2)).unwrap()[0]);
        close(&other, &direct(&w2));
        let back =
            v(&run(l.as_mut(), std::slice::from_ref(&x), std::slice::from_ref(&t1)).unwrap()[0]);
        assert_eq!(first, back, "back to the first weights");
    }
}
