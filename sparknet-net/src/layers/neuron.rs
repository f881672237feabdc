//! Caffe's elementwise "neuron" layers, one bottom to one top of the same shape (in place allowed):
//! `ReLU` (negative_slope), `Sigmoid`, `TanH`, `ELU` (alpha), `AbsVal`, `Power`
//! (`(shift + scale*x)^power`), `Exp` (`base^(shift + scale*x)`, base -1 = e), `Log`
//! (`log_base(shift + scale*x)`), `BNLL` (`log(1 + e^x)`, computed stably) and `Threshold`
//! (`x > t ? 1 : 0`). They share one file as Caffe shares `NeuronLayer`; each is a candle
//! expression, so they run on every device.
//!
//! ReLU, the one on every convolution's output, has a CPU path of its own: one pass over the host
//! slice on the rayon pool, forward and backward (`sparknet_kernels::relu_forward` and
//! `relu_backward`; most ReLUs do not even run as layers, see `Layer::fuse_relu`). Candle's elementwise ops take three passes for
//! the backward and run on candle's own thread pool, which on a small machine competes with the
//! rayon pool the kernels use (ReLU measured 3x slower with two threads than with one).

use candle::{DType, Tensor};

use crate::cpu::{from_host, kernel_err, with_host};

use super::{BackwardArgs, Count, ForwardCtx, Grads, Layer, Shape, want};
use crate::proto::LayerParameter;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy)]
enum Op {
    Relu { slope: f32 },
    Sigmoid,
    TanH,
    Elu { alpha: f32 },
    AbsVal,
    Power { power: f32, scale: f32, shift: f32 },
    Exp { ln_base: f32, scale: f32, shift: f32 },
    Log { inv_ln_base: f32, scale: f32, shift: f32 },
    Bnll,
    Threshold { t: f32 },
}

/// An elementwise layer.
pub struct Neuron {
    kind: &'static str,
    op: Op,
}

impl Layer for Neuron {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn relu_slope(&self) -> Option<f32> {
        match self.op {
            Op::Relu { slope } => Some(slope),
            _ => None,
        }
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        Ok(vec![bottoms[0].clone()])
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        if let (Op::Relu { slope }, true) = (self.op, ctx.device.is_cpu()) {
            return Ok(vec![relu_host(bottoms[0], None, slope)?]);
        }
        Ok(vec![apply(self.op, bottoms[0])?])
    }
    fn backward(&mut self, a: &BackwardArgs<'_>) -> Result<Grads> {
        if let (Op::Relu { slope }, true) = (self.op, a.ctx.device.is_cpu()) {
            let g = want(a.propagate_down[0], || {
                relu_host(a.bottoms[0], Some(&a.top_diffs[0]), slope)
            })?;
            return Ok(Grads::bottoms(vec![g]));
        }
        if let Op::Threshold { .. } = self.op {
            return Err(Error::Unsupported {
                layer: String::new(),
                kind: "Threshold".into(),
                context: " (a step function has no gradient; Caffe has none either)".into(),
            });
        }
        let g = want(a.propagate_down[0], || {
            Ok((&a.top_diffs[0] * derivative(self.op, a.bottoms[0], a.tops[0])?)?)
        })?;
        Ok(Grads::bottoms(vec![g]))
    }
}

/// ReLU on the host (`sparknet_kernels::relu_forward`): `x > 0 ? x : slope * x` (for slope 0,
/// `max(x, 0)` as candle's `relu`), or, with `dy`, its gradient `dy * (x > 0 ? 1 : slope)`
/// (`sparknet_kernels::relu_backward`); the same formulas as the candle path.
fn relu_host(x: &Tensor, dy: Option<&Tensor>, slope: f32) -> Result<Tensor> {
    let n = x.elem_count();
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    let err = |e| kernel_err("ReLU", e);
    with_host(x, |xs| match dy {
        None => sparknet_kernels::relu_forward(xs, slope, spare).map_err(err),
        Some(dy) => {
            with_host(dy, |ds| sparknet_kernels::relu_backward(xs, ds, slope, spare).map_err(err))
        }
    })?;
    // SAFETY: the kernel returned Ok, so it wrote all `n` elements of `spare`, the first `n`
    // elements of `out`'s capacity.
    unsafe { out.set_len(n) };
    from_host(out, x.dims(), x.device())
}

/// dy/dx given x and y = f(x) (Caffe's formulas).
fn derivative(op: Op, x: &Tensor, y: &Tensor) -> candle::Result<Tensor> {
    let pos = || x.gt(0f64)?.to_dtype(DType::F32);
    match op {
        Op::Relu { slope } => {
            let p = pos()?;
            if slope == 0.0 { Ok(p) } else { p.affine(f64::from(1.0 - slope), f64::from(slope)) }
        }
        Op::Sigmoid => y * (1.0 - y)?,
        Op::TanH => 1.0 - y.sqr()?,
        Op::Elu { alpha } => {
            let p = pos()?;
            // x > 0: 1; else y + alpha.
            &p + ((1.0 - &p)? * y.affine(1.0, f64::from(alpha))?)?
        }
        Op::AbsVal => x.sign(),
        Op::Power { power, scale, shift } => {
            if power == 0.0 {
                x.zeros_like()
            } else if power == 1.0 {
                x.ones_like()?.affine(f64::from(scale), 0.0)
            } else {
                affine(x, scale, shift)?
                    .powf(f64::from(power - 1.0))?
                    .affine(f64::from(power * scale), 0.0)
            }
        }
        Op::Exp { ln_base, scale, .. } => y.affine(f64::from(ln_base * scale), 0.0),
        Op::Log { inv_ln_base, scale, shift } => {
            affine(x, scale, shift)?.recip()?.affine(f64::from(inv_ln_base * scale), 0.0)
        }
        Op::Bnll => (x.neg()?.exp()? + 1.0)?.recip(),
        Op::Threshold { .. } => x.zeros_like(),
    }
}

fn affine(x: &Tensor, scale: f32, shift: f32) -> candle::Result<Tensor> {
    if scale == 1.0 && shift == 0.0 {
        Ok(x.clone())
    } else {
        x.affine(f64::from(scale), f64::from(shift))
    }
}

fn apply(op: Op, x: &Tensor) -> candle::Result<Tensor> {
    match op {
        Op::Relu { slope: 0.0 } => x.relu(),
        Op::Relu { slope } => {
            let pos = x.relu()?;
            let neg = (x - &pos)?;
            pos + neg.affine(f64::from(slope), 0.0)?
        }
        Op::Sigmoid => (x.neg()?.exp()? + 1.0)?.recip(),
        Op::TanH => x.tanh(),
        Op::Elu { alpha } => {
            let pos = x.relu()?;
            let neg = (x - &pos)?;
            pos + (neg.exp()? - 1.0)?.affine(f64::from(alpha), 0.0)?
        }
        Op::AbsVal => x.abs(),
        Op::Power { power, scale, shift } => {
            let base = affine(x, scale, shift)?;
            if power == 1.0 {
                Ok(base)
            } else if power == 2.0 {
                base.sqr()
            } else if power == 0.0 {
                x.ones_like()
            } else {
                base.powf(f64::from(power))
            }
        }
        Op::Exp { ln_base, scale, shift } => affine(x, scale * ln_base, shift * ln_base)?.exp(),
        Op::Log { inv_ln_base, scale, shift } => {
            affine(x, scale, shift)?.log()?.affine(f64::from(inv_ln_base), 0.0)
        }
        Op::Bnll => x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?,
        Op::Threshold { t } => x.gt(f64::from(t))?.to_dtype(DType::F32),
    }
}

fn boxed(kind: &'static str, op: Op) -> Result<Box<dyn Layer>> {
    Ok(Box::new(Neuron { kind, op }))
}

/// `ReLU`.
///
/// # Errors
/// None in practice (uniform constructor signature).
pub fn new_relu(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    boxed("ReLU", Op::Relu { slope: p.relu_param.as_ref().map_or(0.0, |r| r.negative_slope()) })
}

/// `Sigmoid`.
///
/// # Errors
/// None in practice.
pub fn new_sigmoid(_p: &LayerParameter) -> Result<Box<dyn Layer>> {
    boxed("Sigmoid", Op::Sigmoid)
}

/// `TanH`.
///
/// # Errors
/// None in practice.
pub fn new_tanh(_p: &LayerParameter) -> Result<Box<dyn Layer>> {
    boxed("TanH", Op::TanH)
}

/// `ELU`.
///
/// # Errors
/// None in practice.
pub fn new_elu(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    boxed("ELU", Op::Elu { alpha: p.elu_param.as_ref().map_or(1.0, |e| e.alpha()) })
}

/// `AbsVal`.
///
/// # Errors
/// None in practice.
pub fn new_absval(_p: &LayerParameter) -> Result<Box<dyn Layer>> {
    boxed("AbsVal", Op::AbsVal)
}

/// `Power`.
///
/// # Errors
/// None in practice.
pub fn new_power(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let pp = p.power_param.unwrap_or_default();
    boxed("Power", Op::Power { power: pp.power(), scale: pp.scale(), shift: pp.shift() })
}

fn ln_base(layer: &str, base: f32) -> Result<f32> {
    if base == -1.0 {
        return Ok(1.0);
    }
    if base <= 0.0 {
        return Err(Error::invalid(layer, "base", format!("{base}: must be -1 (e) or positive")));
    }
    Ok(base.ln())
}

/// `Exp`.
///
/// # Errors
/// A non-positive base other than -1.
pub fn new_exp(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let e = p.exp_param.unwrap_or_default();
    boxed(
        "Exp",
        Op::Exp { ln_base: ln_base(p.name(), e.base())?, scale: e.scale(), shift: e.shift() },
    )
}

/// `Log`.
///
/// # Errors
/// A non-positive base other than -1.
pub fn new_log(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let l = p.log_param.unwrap_or_default();
    let lb = ln_base(p.name(), l.base())?;
    boxed("Log", Op::Log { inv_ln_base: 1.0 / lb, scale: l.scale(), shift: l.shift() })
}

/// `BNLL`.
///
/// # Errors
/// None in practice.
pub fn new_bnll(_p: &LayerParameter) -> Result<Box<dyn Layer>> {
    boxed("BNLL", Op::Bnll)
}

/// `Threshold`.
///
/// # Errors
/// None in practice.
pub fn new_threshold(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    boxed(
        "Threshold",
        Op::Threshold { t: p.threshold_param.as_ref().map_or(0.0, |t| t.threshold()) },
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    fn check(def: &str, input: &[f32], want: &[f32]) {
        let mut l = layer(&format!("layer {{ name: 'n' bottom: 'x' top: 'x' {def} }}")).unwrap();
        let y = run(l.as_mut(), &[t(input, &[input.len()])], &[]).unwrap();
        close(&v(&y[0]), want);
    }

    #[test]
    fn each_neuron_by_hand() {
        let x = [-2.0f32, -0.5, 0.0, 1.5];
        check("type: 'ReLU'", &x, &[0., 0., 0., 1.5]);
        check("type: 'ReLU' relu_param { negative_slope: 0.1 }", &x, &[-0.2, -0.05, 0., 1.5]);
        check("type: 'Sigmoid'", &[0.0, 2.0], &[0.5, 1.0 / (1.0 + (-2.0f32).exp())]);
        check("type: 'TanH'", &[0.0, 1.0], &[0.0, 1.0f32.tanh()]);
        check(
            "type: 'ELU' elu_param { alpha: 2 }",
            &[-1.0, 3.0],
            &[2.0 * ((-1.0f32).exp() - 1.0), 3.0],
        );
        check("type: 'AbsVal'", &x, &[2., 0.5, 0., 1.5]);
        check("type: 'Power' power_param { power: 2 scale: 2 shift: 1 }", &x, &[9., 0., 1., 16.]);
        check("type: 'Power' power_param { power: 0.5 }", &[4.0, 9.0], &[2., 3.]);
        check("type: 'Exp'", &[0.0, 1.0], &[1.0, 1.0f32.exp()]);
        check("type: 'Exp' exp_param { base: 2 scale: 2 shift: 1 }", &[1.0, -0.5], &[8.0, 1.0]);
        check("type: 'Log' log_param { base: 10 shift: 1 }", &[9.0, 99.0], &[1.0, 2.0]);
        check("type: 'Log'", &[1.0, 1.0f32.exp()], &[0.0, 1.0]);
        check("type: 'BNLL'", &[0.0, 30.0, -30.0], &[2.0f32.ln(), 30.0, (-30.0f32).exp()]);
        check("type: 'Threshold' threshold_param { threshold: 0.25 }", &x, &[0., 0., 0., 1.]);
    }

    #[test]
    fn bad_base_is_an_error() {
        let e =
            layer("layer { name: 'e' type: 'Exp' bottom: 'x' top: 'y' exp_param { base: -2 } }");
        assert!(e.err().unwrap().to_string().contains("layer 'e': invalid base"));
    }
}
