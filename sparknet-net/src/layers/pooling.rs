//! `Pooling`: MAX, AVE and STOCHASTIC with Caffe's semantics (ceil-mode output size and its
//! clip rule, pad, global pooling, FLOOR round mode). AVE divides by the window clipped to the
//! padded input.
//!
//! STOCHASTIC (Caffe's GPU-only method, no padding) samples in TRAIN one element per window with
//! probability proportional to its value, from the layer's seeded generator
//! ([`Layer::set_rng`]: one uniform per output, as Caffe's `rand_idx_`), and routes the gradient
//! to it; in TEST it outputs `sum(x^2) / sum(x)` per window, whose exact derivative is its
//! backward (Caffe has none in TEST).
//!
//! Runs the `sparknet_kernels` pooling kernels (on the host for non-CPU devices: candle's pooling
//! has neither padding nor ceil mode). MAX and STOCHASTIC (TRAIN) keep their chosen indices for
//! the backward pass.

use candle::Tensor;
use sparknet_kernels::{
    PoolGeometry, PoolMethod, stochastic_pool_backward_test, stochastic_pool_backward_train,
    stochastic_pool_forward_test, stochastic_pool_forward_train,
};

use super::convolution::nchw;
use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape};
use crate::cpu::{from_host, kernel_err, with_host};
use crate::fillers::Rng;
use crate::proto::pooling_parameter::{PoolMethod as ProtoPool, RoundMode};
use crate::proto::{LayerParameter, Phase, PoolingParameter};
use crate::{Error, Result};

/// Caffe's pooling methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// MAX or AVE, both in `pool2d_forward`.
    Kernel(PoolMethod),
    /// STOCHASTIC.
    Stochastic,
}

/// The Pooling layer.
pub struct Pooling {
    name: String,
    method: Method,
    global: bool,
    floor: bool,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    /// MAX's argmax, or STOCHASTIC's sampled index in TRAIN, from the last forward (for the
    /// backward pass, and MAX's optional mask top).
    argmax: Vec<u32>,
    n_tops: usize,
    /// STOCHASTIC's generator (seeded by the net; seed 0 when built alone).
    rng: Rng,
    /// STOCHASTIC's uniforms of the last TRAIN forward (a buffer reused pass after pass).
    uniforms: Vec<f32>,
    /// Whether the last forward sampled (STOCHASTIC in TRAIN), which selects the backward.
    sampled: bool,
    /// Whether `argmax` belongs to the last MAX forward: a TEST forward with one top skips it
    /// (the values-only kernel is about 2x faster) and a backward after it recomputes it.
    argmax_ready: bool,
}

/// Builds a Pooling layer.
///
/// # Errors
/// Invalid or contradictory `pooling_param` (Caffe's checks, including no padding for
/// STOCHASTIC).
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let name = p.name().to_string();
    let pp: PoolingParameter = p.pooling_param.unwrap_or_default();
    let method = match pp.pool() {
        ProtoPool::Max => Method::Kernel(PoolMethod::Max),
        ProtoPool::Ave => Method::Kernel(PoolMethod::Ave),
        ProtoPool::Stochastic => Method::Stochastic,
    };
    let global = pp.global_pooling();
    let kernel = if global {
        if pp.kernel_size.is_some() || pp.kernel_h.is_some() || pp.kernel_w.is_some() {
            return Err(Error::invalid(
                &name,
                "kernel_size",
                "cannot be given with global_pooling",
            ));
        }
        [0, 0]
    } else if let Some(k) = pp.kernel_size {
        if pp.kernel_h.is_some() || pp.kernel_w.is_some() {
            return Err(Error::invalid(
                &name,
                "kernel_size",
                "either kernel_size or kernel_h/kernel_w",
            ));
        }
        [k as usize; 2]
    } else {
        match (pp.kernel_h, pp.kernel_w) {
            (Some(h), Some(w)) => [h as usize, w as usize],
            _ => {
                return Err(Error::invalid(
                    &name,
                    "kernel_size",
                    "missing (kernel_size or kernel_h + kernel_w)",
                ));
            }
        }
    };
    if !global && kernel.contains(&0) {
        return Err(Error::invalid(&name, "kernel_size", "must be positive"));
    }
    let pad = match (pp.pad_h, pp.pad_w) {
        (None, None) => [pp.pad() as usize; 2],
        (h, w) => [h.unwrap_or(0) as usize, w.unwrap_or(0) as usize],
    };
    let stride = match (pp.stride_h, pp.stride_w) {
        (None, None) => [pp.stride() as usize; 2],
        (h, w) => [h.unwrap_or(1) as usize, w.unwrap_or(1) as usize],
    };
    if global && (pad != [0, 0] || stride != [1, 1]) {
        return Err(Error::invalid(&name, "global_pooling", "requires pad 0 and stride 1"));
    }
    if stride.contains(&0) {
        return Err(Error::invalid(&name, "stride", "must be positive"));
    }
    if !global && (pad[0] >= kernel[0] || pad[1] >= kernel[1]) {
        return Err(Error::invalid(
            &name,
            "pad",
            format!("{pad:?} must be smaller than the kernel {kernel:?}"),
        ));
    }
    if method == Method::Stochastic && pad != [0, 0] {
        return Err(Error::invalid(
            &name,
            "pad",
            "padding is implemented only for MAX and AVE pooling (Caffe's rule), not STOCHASTIC",
        ));
    }
    let floor = pp.round_mode() == RoundMode::Floor;
    if p.top.len() == 2 && method != Method::Kernel(PoolMethod::Max) {
        return Err(Error::invalid(&name, "top", "only MAX pooling has a second (mask) top"));
    }
    Ok(Box::new(Pooling {
        name,
        method,
        global,
        floor,
        kernel,
        stride,
        pad,
        argmax: Vec::new(),
        n_tops: p.top.len(),
        rng: Rng::new(0),
        uniforms: Vec::new(),
        sampled: false,
        argmax_ready: false,
    }))
}

impl Pooling {
    fn geometry(&self, c: usize, h: usize, w: usize) -> PoolGeometry {
        if self.global {
            return PoolGeometry::global(c, h, w);
        }
        PoolGeometry {
            channels: c,
            in_h: h,
            in_w: w,
            kernel_h: self.kernel[0],
            kernel_w: self.kernel[1],
            stride_h: self.stride[0],
            stride_w: self.stride[1],
            pad_h: self.pad[0],
            pad_w: self.pad[1],
        }
    }

    /// Output (h, w): Caffe's ceil rule (the kernels' geometry), or floor when `round_mode: FLOOR`.
    fn out_hw(&self, g: &PoolGeometry) -> [usize; 2] {
        if !self.floor {
            return [g.out_h(), g.out_w()];
        }
        let f = |i: usize, p: usize, k: usize, s: usize| (i + 2 * p).saturating_sub(k) / s + 1;
        [f(g.in_h, g.pad_h, g.kernel_h, g.stride_h), f(g.in_w, g.pad_w, g.kernel_w, g.stride_w)]
    }
}

impl Layer for Pooling {
    fn kind(&self) -> &'static str {
        "Pooling"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        // Caffe allows a second top (the MAX mask).
        Count::Between(1, 2)
    }
    fn set_rng(&mut self, rng: Rng) {
        self.rng = rng;
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let [n, c, h, w] = nchw(&self.name, &bottoms[0])?;
        let g = self.geometry(c, h, w);
        g.validate().map_err(|e| kernel_err(&self.name, e))?;
        if self.floor && !self.global && (g.pad_h > 0 || g.pad_w > 0) {
            return Err(Error::invalid(
                &self.name,
                "round_mode",
                "FLOOR with padding is not supported",
            ));
        }
        let [oh, ow] = self.out_hw(&g);
        let top = vec![n, c, oh, ow];
        Ok(vec![top.clone(), top])
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let x = bottoms[0];
        let [n, c, h, w] = nchw(&self.name, x.dims())?;
        let mut g = self.geometry(c, h, w);
        let [oh, ow] = self.out_hw(&g);
        if self.floor && [oh, ow] != [g.out_h(), g.out_w()] {
            // FLOOR drops the partial last window: pooling the cropped input gives the same windows.
            let (nh, nw) = ((oh - 1) * g.stride_h + g.kernel_h, (ow - 1) * g.stride_w + g.kernel_w);
            let cropped = x.narrow(2, 0, nh.min(h))?.narrow(3, 0, nw.min(w))?.contiguous()?;
            g.in_h = nh.min(h);
            g.in_w = nw.min(w);
            return self.run(ctx, &cropped, &g, n, c, [oh, ow]);
        }
        self.run(ctx, x, &g, n, c, [oh, ow])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        if !a.propagate_down[0] {
            return Ok(Grads::bottoms(vec![None]));
        }
        if self.method == Method::Kernel(PoolMethod::Max) && !self.argmax_ready {
            // A backward after a TEST forward (which skips the argmax): the same forward again,
            // with it. TRAIN runs MAX the same way in both phases, so the result is identical.
            let ctx = ForwardCtx { phase: Phase::Train, device: a.ctx.device.clone() };
            self.forward(&ctx, a.bottoms, &[])?;
        }
        let x = a.bottoms[0];
        let [n, c, h, w] = nchw(&self.name, x.dims())?;
        let mut g = self.geometry(c, h, w);
        let [oh, ow] = self.out_hw(&g);
        let cropped = self.floor && [oh, ow] != [g.out_h(), g.out_w()];
        if cropped {
            g.in_h = ((oh - 1) * g.stride_h + g.kernel_h).min(h);
            g.in_w = ((ow - 1) * g.stride_w + g.kernel_w).min(w);
        }
        let mut gx = vec![0f32; n * c * g.in_h * g.in_w];
        let (name, am) = (&self.name, &self.argmax[..]);
        with_host(&a.top_diffs[0], |dy| {
            match self.method {
                Method::Kernel(m) => {
                    let am = (m == PoolMethod::Max).then_some(am);
                    sparknet_kernels::pool2d_backward(&g, n, m, dy, am, &mut gx)
                }
                Method::Stochastic if self.sampled => {
                    stochastic_pool_backward_train(&g, n, dy, am, &mut gx)
                }
                Method::Stochastic => {
                    let x = if cropped {
                        x.narrow(2, 0, g.in_h)?.narrow(3, 0, g.in_w)?
                    } else {
                        x.clone()
                    };
                    return with_host(&x, |xs| {
                        stochastic_pool_backward_test(&g, n, xs, dy, &mut gx)
                            .map_err(|e| kernel_err(name, e))
                    });
                }
            }
            .map_err(|e| kernel_err(name, e))
        })?;
        let mut gx = from_host(gx, &[n, c, g.in_h, g.in_w], &a.ctx.device)?;
        if cropped {
            // The dropped rows/columns took part in no window: zero gradient.
            gx = gx.pad_with_zeros(2, 0, h - g.in_h)?.pad_with_zeros(3, 0, w - g.in_w)?;
        }
        Ok(Grads::bottoms(vec![Some(gx)]))
    }
}

impl Pooling {
    fn run(
        &mut self,
        ctx: &ForwardCtx,
        x: &Tensor,
        g: &PoolGeometry,
        n: usize,
        c: usize,
        out: [usize; 2],
    ) -> Result<Vec<Tensor>> {
        let len = n * c * out[0] * out[1];
        let mut y = vec![0f32; len];
        let name = &self.name;
        let want_argmax = ctx.phase == Phase::Train || self.n_tops == 2;
        self.argmax_ready = want_argmax;
        let argmax = &mut self.argmax;
        self.sampled = self.method == Method::Stochastic && ctx.phase == Phase::Train;
        if self.sampled {
            self.uniforms.resize(len, 0.0);
            self.uniforms.iter_mut().for_each(|u| *u = self.rng.unit_f32());
        }
        let uniforms = &self.uniforms[..];
        with_host(x, |xs| {
            match self.method {
                Method::Kernel(m) => {
                    let am = if m == PoolMethod::Max && want_argmax {
                        argmax.resize(len, 0);
                        Some(&mut argmax[..])
                    } else {
                        None
                    };
                    sparknet_kernels::pool2d_forward(g, n, m, xs, &mut y, am)
                }
                Method::Stochastic if self.sampled => {
                    argmax.resize(len, 0);
                    stochastic_pool_forward_train(g, n, xs, uniforms, &mut y, argmax)
                }
                Method::Stochastic => stochastic_pool_forward_test(g, n, xs, &mut y),
            }
            .map_err(|e| kernel_err(name, e))
        })?;
        let shape = [n, c, out[0], out[1]];
        let mut tops = vec![from_host(y, &shape, &ctx.device)?];
        if self.n_tops == 2 {
            let mask = self.argmax.iter().map(|&i| i as f32).collect();
            tops.push(from_host(mask, &shape, &ctx.device)?);
        }
        Ok(tops)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, run_phase, t, v};
    use crate::fillers::Rng;
    use crate::proto::Phase;

    fn x4() -> candle::Tensor {
        t(&(1..=16).map(|v| v as f32).collect::<Vec<_>>(), &[1, 1, 4, 4])
    }

    #[test]
    fn max_ceil_mode_overlapping_windows() {
        // 4x4, kernel 3, stride 2: ceil((4-3)/2)+1 = 2 (Caffe), candle/floor would give 1.
        let mut l = layer("layer { name: 'p' type: 'Pooling' bottom: 'x' top: 'y' pooling_param { pool: MAX kernel_size: 3 stride: 2 } }").unwrap();
        let y = run(l.as_mut(), &[x4()], &[]).unwrap();
        close(&v(&y[0]), &[11., 12., 15., 16.]);
    }

    #[test]
    fn ave_divides_by_padded_window() {
        // pad 1, kernel 2, stride 2 on 2x2: out 2x2; each window holds one real value, divisor 4.
        let mut l = layer("layer { name: 'p' type: 'Pooling' bottom: 'x' top: 'y' pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 } }").unwrap();
        let y = run(l.as_mut(), &[t(&[4., 8., 12., 16.], &[1, 1, 2, 2])], &[]).unwrap();
        close(&v(&y[0]), &[1., 2., 3., 4.]);
    }

    #[test]
    fn global_and_floor() {
        let mut l = layer("layer { name: 'p' type: 'Pooling' bottom: 'x' top: 'y' pooling_param { pool: AVE global_pooling: true } }").unwrap();
        let y = run(l.as_mut(), &[x4()], &[]).unwrap();
        assert_eq!(y[0].dims(), &[1, 1, 1, 1]);
        close(&v(&y[0]), &[8.5]);
        let mut l = layer("layer { name: 'p' type: 'Pooling' bottom: 'x' top: 'y' pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR } }").unwrap();
        let y = run(l.as_mut(), &[x4()], &[]).unwrap();
        close(&v(&y[0]), &[11.]);
    }

    const STO: &str = "layer { name: 'p' type: 'Pooling' bottom: 'x' top: 'y' pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 } }";

    #[test]
    fn stochastic_test_is_the_weighted_average() {
        // 4x4 ramp 1..16, kernel 2 stride 2: window [1, 2, 5, 6] -> (1+4+25+36)/(1+2+5+6).
        let mut l = layer(STO).unwrap();
        let y = run(l.as_mut(), &[x4()], &[]).unwrap();
        let avg = |w: [f32; 4]| w.iter().map(|v| v * v).sum::<f32>() / w.iter().sum::<f32>();
        let expected = [
            avg([1., 2., 5., 6.]),
            avg([3., 4., 7., 8.]),
            avg([9., 10., 13., 14.]),
            avg([11., 12., 15., 16.]),
        ];
        close(&v(&y[0]), &expected);
    }

    #[test]
    fn stochastic_train_samples_window_elements_by_seed() {
        let x = x4();
        let samples = |seed: u64| {
            let mut l = layer(STO).unwrap();
            l.set_rng(Rng::stream(seed, 1));
            (0..20)
                .map(|_| {
                    v(&run_phase(l.as_mut(), std::slice::from_ref(&x), &[], Phase::Train).unwrap()
                        [0])
                })
                .collect::<Vec<_>>()
        };
        let a = samples(3);
        assert_eq!(a, samples(3), "same seed, same samples");
        assert_ne!(a, samples(4), "another seed, other samples");
        let windows =
            [[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]];
        for y in &a {
            for (o, w) in windows.iter().enumerate() {
                assert!(w.contains(&y[o]), "output {o} = {} is not in its window {w:?}", y[o]);
            }
        }
    }

    #[test]
    fn stochastic_rejects_padding() {
        let err = layer("layer { name: 'p' type: 'Pooling' bottom: 'x' top: 'y' pooling_param { pool: STOCHASTIC kernel_size: 3 pad: 1 } }")
            .err()
            .unwrap();
        assert!(err.to_string().contains("STOCHASTIC"), "{err}");
    }
}
