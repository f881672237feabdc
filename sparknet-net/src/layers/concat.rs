//! `Concat`: joins bottoms along `axis` (or the legacy `concat_dim`). On the CPU the copies
//! run on the rayon pool (`sparknet_kernels::concat_forward` / `concat_backward`); other
//! devices use candle's `cat` and `narrow`.

use std::mem::MaybeUninit;

use candle::Tensor;

use crate::cpu::{HostView, kernel_err};

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, canonical_axis, want};
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// The Concat layer.
pub struct Concat {
    name: String,
    axis: i32,
}

/// Builds a Concat layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.concat_param.unwrap_or_default();
    let axis =
        if q.axis.is_none() && q.concat_dim.is_some() { q.concat_dim() as i32 } else { q.axis() };
    Ok(Box::new(Concat { name: p.name().to_string(), axis }))
}

impl Layer for Concat {
    fn kind(&self) -> &'static str {
        "Concat"
    }
    fn bottoms(&self) -> Count {
        Count::AtLeast(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let a = canonical_axis(&self.name, "axis", self.axis, bottoms[0].len())?;
        let mut top = bottoms[0].clone();
        for b in &bottoms[1..] {
            let same_rank = b.len() == top.len();
            if !same_rank || (0..b.len()).any(|i| i != a && b[i] != top[i]) {
                return Err(Error::ShapeMismatch {
                    layer: self.name.clone(),
                    what: format!("bottoms (all axes but {a} must agree)"),
                    expected: bottoms[0].clone(),
                    got: b.clone(),
                });
            }
            top[a] += b[a];
        }
        Ok(vec![top])
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let a = canonical_axis(&self.name, "axis", self.axis, bottoms[0].rank())?;
        if ctx.device.is_cpu() {
            let mut dims = bottoms[0].dims().to_vec();
            dims[a] = bottoms.iter().map(|b| b.dims()[a]).sum();
            let outer = dims[..a].iter().product();
            let views = bottoms.iter().map(|b| HostView::new(b)).collect::<Result<Vec<_>>>()?;
            let xs = views.iter().map(HostView::slice).collect::<Result<Vec<_>>>()?;
            let y = crate::cpu::new_host(&dims, &ctx.device, |y| {
                sparknet_kernels::concat_forward(outer, &xs, y)
                    .map_err(|e| kernel_err(&self.name, e))
            })?;
            return Ok(vec![y]);
        }
        Ok(vec![Tensor::cat(bottoms, a)?])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let ax = canonical_axis(&self.name, "axis", self.axis, a.bottoms[0].rank())?;
        if a.ctx.device.is_cpu() {
            return self.backward_host(a, ax);
        }
        let mut start = 0;
        let mut out = Vec::new();
        for (b, &down) in a.bottoms.iter().zip(a.propagate_down) {
            let len = b.dims()[ax];
            out.push(want(down, || Ok(a.top_diffs[0].narrow(ax, start, len)?.contiguous()?))?);
            start += len;
        }
        Ok(Grads::bottoms(out))
    }
}

impl Concat {
    /// Every bottom's slice of the top gradient in one parallel pass (unwanted ones dropped).
    fn backward_host(&self, a: &BackwardArgs<'_>, ax: usize) -> Result<Grads> {
        let dy = &a.top_diffs[0];
        let outer: usize = dy.dims()[..ax].iter().product();
        let mut bufs: Vec<Vec<f32>> =
            a.bottoms.iter().map(|b| Vec::with_capacity(b.elem_count())).collect();
        {
            let mut outs: Vec<&mut [MaybeUninit<f32>]> = bufs
                .iter_mut()
                .zip(a.bottoms)
                .map(|(v, b)| &mut v.spare_capacity_mut()[..b.elem_count()])
                .collect();
            let dyv = HostView::new(dy)?;
            sparknet_kernels::concat_backward(outer, dyv.slice()?, &mut outs)
                .map_err(|e| kernel_err(&self.name, e))?;
        }
        let mut out = Vec::with_capacity(bufs.len());
        for ((mut v, b), &down) in bufs.into_iter().zip(a.bottoms).zip(a.propagate_down) {
            // SAFETY: `concat_backward` returned Ok, so it wrote all `elem_count` values of
            // each output, the first `elem_count` elements of `v`'s capacity.
            unsafe { v.set_len(b.elem_count()) };
            out.push(want(down, || crate::cpu::from_host(v, b.dims(), b.device()))?);
        }
        Ok(Grads::bottoms(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn channel_concat() {
        let mut l =
            layer("layer { name: 'c' type: 'Concat' bottom: 'a' bottom: 'b' top: 'y' }").unwrap();
        let y = run(l.as_mut(), &[t(&[1., 2.], &[1, 1, 2]), t(&[3., 4., 5., 6.], &[1, 2, 2])], &[])
            .unwrap();
        assert_eq!(y[0].dims(), &[1, 3, 2]);
        close(&v(&y[0]), &[1., 2., 3., 4., 5., 6.]);
    }
}
