//! `BatchNorm`: `(x - mean) / sqrt(var + eps)` per channel (axis 1). Its three blobs are Caffe's:
//! running mean sum, running variance sum and the moving-average scale factor; the statistics
//! used are `blob / factor` (0 when the factor is 0). TEST (or `use_global_stats: true`) uses the
//! stored statistics; TRAIN uses the batch's (biased variance, as Caffe normalises) and updates
//! the blobs exactly as Caffe does: `factor = factor * maf + 1`, `mean_sum = mean + maf *
//! mean_sum`, `var_sum = m/(m-1) * var + maf * var_sum` (`maf` = `moving_average_fraction`,
//! `m` = values per channel), handed to the net through [`Layer::take_param_updates`].
//!
//! On the CPU the layer runs `sparknet_kernels`' BatchNorm kernels on the rayon pool (one
//! channel per task: statistics, then the normalised output while the channel is in cache);
//! other devices use candle's ops.

use candle::Tensor;
use sparknet_kernels::{ChannelAffine, ChannelShape};

use crate::cpu::{HostView, from_host, kernel_err, new_host, with_host};

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, host_vec, want};
use crate::proto::{LayerParameter, Phase};
use crate::{Error, Result};

/// The BatchNorm layer.
pub struct BatchNorm {
    name: String,
    use_global_stats: Option<bool>,
    eps: f32,
    maf: f32,
    /// New statistics blobs from the last TRAIN forward, for the net to store.
    updates: Option<Vec<Tensor>>,
    /// 1 / sqrt(var + eps) of the last forward, shaped for broadcasting, and whether the
    /// statistics were the batch's.
    inv_std: Option<(Tensor, bool)>,
    /// CPU path: per-channel mean, variance and 1 / sqrt(var + eps) of the last forward (kept
    /// across passes, so a warm layer allocates none of them), and whether the statistics were
    /// the batch's.
    host: HostStats,
}

#[derive(Default)]
struct HostStats {
    mean: Vec<f32>,
    var: Vec<f32>,
    inv_std: Vec<f32>,
    batch: Option<bool>,
}

/// The `outer x channels x inner` view of a BatchNorm bottom (channel axis 1).
fn channel_shape(dims: &[usize]) -> ChannelShape {
    ChannelShape { outer: dims[0], channels: dims[1], inner: dims[2..].iter().product() }
}

/// Builds a BatchNorm layer.
///
/// # Errors
/// None in practice.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.batch_norm_param.unwrap_or_default();
    Ok(Box::new(BatchNorm {
        name: p.name().to_string(),
        use_global_stats: q.use_global_stats,
        eps: q.eps(),
        maf: q.moving_average_fraction(),
        updates: None,
        inv_std: None,
        host: HostStats::default(),
    }))
}

impl Layer for BatchNorm {
    fn kind(&self) -> &'static str {
        "BatchNorm"
    }
    fn blobs_are_statistics(&self) -> bool {
        true
    }
    /// Mean 0, variance 1 and scale factor 1 (Caffe fills them with zeros, which makes a deep net
    /// built with random weights overflow).
    fn neutral_statistics(&self, blobs: &mut [Tensor]) -> Result<()> {
        if let [mean, var, factor] = blobs {
            *mean = mean.zeros_like()?;
            *var = var.ones_like()?;
            *factor = factor.ones_like()?;
        }
        Ok(())
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn setup(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let s = &bottoms[0];
        if s.len() < 2 {
            return Err(Error::invalid(
                &self.name,
                "bottom shape",
                format!("{s:?}: needs a channel axis"),
            ));
        }
        Ok(vec![vec![s[1]], vec![s[1]], vec![1]])
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        Ok(vec![bottoms[0].clone()])
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        if ctx.device.is_cpu() {
            return self.forward_host(ctx, bottoms[0], params);
        }
        let x = bottoms[0];
        let dims = x.dims();
        let c = dims[1];
        let mut bshape = vec![1usize; dims.len()];
        bshape[1] = c;
        let global = self.use_global_stats.unwrap_or(ctx.phase == Phase::Test);
        let (mean, var) = if global {
            let factor = host_vec(&params[2])?[0];
            let scale = if factor == 0.0 { 0.0 } else { 1.0 / f64::from(factor) };
            (params[0].affine(scale, 0.0)?, params[1].affine(scale, 0.0)?)
        } else {
            // Per-channel batch statistics over N and the spatial axes.
            let perm: Vec<usize> =
                std::iter::once(1).chain((0..dims.len()).filter(|&a| a != 1)).collect();
            let xc = x.permute(perm)?.contiguous()?.reshape((c, ()))?;
            let mean = xc.mean(1)?;
            let var = xc.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.mean(1)?;
            if ctx.phase == Phase::Train && params.len() == 3 {
                let m = x.elem_count() / c.max(1);
                let correction = if m > 1 { m as f64 / (m as f64 - 1.0) } else { 1.0 };
                let maf = f64::from(self.maf);
                self.updates = Some(vec![
                    (&mean + params[0].affine(maf, 0.0)?)?,
                    (var.affine(correction, 0.0)? + params[1].affine(maf, 0.0)?)?,
                    params[2].affine(maf, 1.0)?,
                ]);
            }
            (mean, var)
        };
        let mean = mean.reshape(bshape.clone())?;
        let inv_std = (var + f64::from(self.eps))?.sqrt()?.recip()?.reshape(bshape)?;
        let y = x.broadcast_sub(&mean)?.broadcast_mul(&inv_std)?;
        self.inv_std = Some((inv_std, !global));
        Ok(vec![y])
    }
    fn take_param_updates(&mut self) -> Option<Vec<Tensor>> {
        self.updates.take()
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        if a.ctx.device.is_cpu() {
            return self.backward_host(a);
        }
        let Some((inv_std, batch)) = self.inv_std.clone() else {
            return Err(Error::out_of_order(&self.name, "backward before forward"));
        };
        let g = want(a.propagate_down[0], || {
            let dy = &a.top_diffs[0];
            if !batch {
                return Ok(dy.broadcast_mul(&inv_std)?);
            }
            // Caffe: dx = (dy - mean(dy) - mean(dy * y) * y) / sqrt(var + eps), means per
            // channel over N and the spatial axes.
            let y = a.tops[0];
            let per_channel_mean = |t: &Tensor| -> Result<Tensor> {
                let mut r = t.clone();
                for ax in (0..t.rank()).rev().filter(|&ax| ax != 1) {
                    r = r.mean_keepdim(ax)?;
                }
                Ok(r)
            };
            let m1 = per_channel_mean(dy)?;
            let m2 = per_channel_mean(&(dy * y)?)?;
            Ok(dy.broadcast_sub(&m1)?.sub(&y.broadcast_mul(&m2)?)?.broadcast_mul(&inv_std)?)
        })?;
        Ok(Grads { bottoms: vec![g], params: vec![None, None, None] })
    }
}

impl BatchNorm {
    /// The CPU forward through `sparknet_kernels` (same semantics as the candle path).
    fn forward_host(
        &mut self,
        ctx: &ForwardCtx,
        x: &Tensor,
        params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let s = channel_shape(x.dims());
        let c = s.channels;
        let global = self.use_global_stats.unwrap_or(ctx.phase == Phase::Test);
        let h = &mut self.host;
        h.mean.resize(c, 0.0);
        h.var.resize(c, 0.0);
        h.inv_std.resize(c, 0.0);
        let err = |e| kernel_err(&self.name, e);
        let xv = HostView::new(x)?;
        let xs = xv.slice()?;
        let y = if global {
            let factor = host_vec(&params[2])?[0];
            with_host(&params[0], |m| {
                with_host(&params[1], |v| {
                    sparknet_kernels::batch_norm_global_stats(
                        m,
                        v,
                        factor,
                        self.eps,
                        &mut h.mean,
                        &mut h.inv_std,
                    )
                    .map_err(err)
                })
            })?;
            let op = ChannelAffine {
                shift: Some(&h.mean),
                scale: Some(&h.inv_std),
                ..ChannelAffine::default()
            };
            new_host(x.dims(), &ctx.device, |y| {
                sparknet_kernels::channel_affine(&s, &op, xs, y).map_err(err)
            })?
        } else {
            let y = new_host(x.dims(), &ctx.device, |y| {
                sparknet_kernels::batch_norm_forward_train(
                    &s,
                    xs,
                    self.eps,
                    y,
                    &mut h.mean,
                    &mut h.var,
                    &mut h.inv_std,
                )
                .map_err(err)
            })?;
            if ctx.phase == Phase::Train && params.len() == 3 {
                let (mut mean_sum, mut var_sum) = (host_vec(&params[0])?, host_vec(&params[1])?);
                let mut factor = host_vec(&params[2])?[0];
                sparknet_kernels::batch_norm_update_stats(
                    &h.mean,
                    &h.var,
                    s.per_channel(),
                    self.maf,
                    (&mut mean_sum, &mut var_sum, &mut factor),
                )
                .map_err(err)?;
                self.updates = Some(vec![
                    from_host(mean_sum, &[c], &ctx.device)?,
                    from_host(var_sum, &[c], &ctx.device)?,
                    from_host(vec![factor], &[1], &ctx.device)?,
                ]);
            }
            y
        };
        h.batch = Some(!global);
        Ok(vec![y])
    }

    /// The CPU backward through `sparknet_kernels`.
    fn backward_host(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        let Some(batch) = self.host.batch else {
            return Err(Error::out_of_order(&self.name, "backward before forward"));
        };
        let g = want(a.propagate_down[0], || {
            let dy = &a.top_diffs[0];
            let s = channel_shape(dy.dims());
            let h = &self.host;
            let err = |e| kernel_err(&self.name, e);
            let dyv = HostView::new(dy)?;
            let dys = dyv.slice()?;
            new_host(dy.dims(), dy.device(), |dx| {
                if batch {
                    with_host(a.tops[0], |y| {
                        sparknet_kernels::batch_norm_backward_train(&s, y, dys, &h.inv_std, dx)
                            .map_err(err)
                    })
                } else {
                    let op = ChannelAffine { scale: Some(&h.inv_std), ..ChannelAffine::default() };
                    sparknet_kernels::channel_affine(&s, &op, dys, dx).map_err(err)
                }
            })
        })?;
        Ok(Grads { bottoms: vec![g], params: vec![None, None, None] })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, run_phase, t, v};
    use crate::proto::Phase;

    #[test]
    fn global_stats_divide_by_the_scale_factor() {
        let mut l = layer("layer { name: 'bn' type: 'BatchNorm' bottom: 'x' top: 'x' batch_norm_param { eps: 0 } }").unwrap();
        let x = t(&[3., 5., 10., 20.], &[1, 2, 2]);
        // Sums 2*mean and 2*var with factor 2.
        let params = [t(&[2., 20.], &[2]), t(&[8., 50.], &[2]), t(&[2.], &[1])];
        let y = run(l.as_mut(), &[x], &params).unwrap();
        close(&v(&y[0]), &[1., 2., 0., 2.]);
    }

    #[test]
    fn train_uses_batch_statistics() {
        let mut l = layer("layer { name: 'bn' type: 'BatchNorm' bottom: 'x' top: 'x' batch_norm_param { eps: 0 } }").unwrap();
        let x = t(&[1., 3., 10., 30.], &[2, 2, 1]);
        let params = [t(&[0., 0.], &[2]), t(&[1., 1.], &[2]), t(&[1.], &[1])];
        let y = run_phase(l.as_mut(), &[x], &params, Phase::Train).unwrap();
        // channel 0: {1, 10} -> mean 5.5, std 4.5; channel 1: {3, 30} -> mean 16.5, std 13.5.
        close(&v(&y[0]), &[-1., -1., 1., 1.]);
    }
}
