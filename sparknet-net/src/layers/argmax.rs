//! `ArgMax`: the `top_k` largest entries' indices (and values with `out_max_val`), per sample over
//! all non-batch axes, or along `axis`. Computed on the host.

use candle::Tensor;

use super::{Count, ForwardCtx, Layer, Shape, canonical_axis, count, host_vec};
use crate::cpu::from_host;
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// The ArgMax layer.
pub struct ArgMax {
    name: String,
    top_k: usize,
    out_max_val: bool,
    axis: Option<i32>,
}

/// Builds an ArgMax layer.
///
/// # Errors
/// `top_k` of 0.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let q = p.argmax_param.unwrap_or_default();
    if q.top_k() == 0 {
        return Err(Error::invalid(p.name(), "top_k", "must be at least 1"));
    }
    Ok(Box::new(ArgMax {
        name: p.name().to_string(),
        top_k: q.top_k() as usize,
        out_max_val: q.out_max_val(),
        axis: q.axis,
    }))
}

impl Layer for ArgMax {
    fn kind(&self) -> &'static str {
        "ArgMax"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(1)
    }
    fn tops(&self) -> Count {
        Count::Exact(1)
    }
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let s = &bottoms[0];
        match self.axis {
            Some(a) => {
                let a = canonical_axis(&self.name, "axis", a, s.len())?;
                if self.top_k > s[a] {
                    return Err(Error::invalid(
                        &self.name,
                        "top_k",
                        format!("{} exceeds axis size {}", self.top_k, s[a]),
                    ));
                }
                let mut top = s.clone();
                top[a] = self.top_k;
                Ok(vec![top])
            }
            None => {
                if self.top_k > count(s, 1, s.len()) {
                    return Err(Error::invalid(
                        &self.name,
                        "top_k",
                        format!(
                            "{} exceeds the {} entries per sample",
                            self.top_k,
                            count(s, 1, s.len())
                        ),
                    ));
                }
                let mut top = vec![1; s.len().max(3)];
                top[0] = s[0];
                top[2] = self.top_k;
                if self.out_max_val {
                    top[1] = 2;
                }
                Ok(vec![top])
            }
        }
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let s = bottoms[0].dims().to_vec();
        let top = self.reshape(std::slice::from_ref(&s))?.remove(0);
        let x = host_vec(bottoms[0])?;
        let (outer, dim, inner) = match self.axis {
            Some(a) => {
                let a = canonical_axis(&self.name, "axis", a, s.len())?;
                (count(&s, 0, a), s[a], count(&s, a + 1, s.len()))
            }
            None => (s[0], count(&s, 1, s.len()), 1),
        };
        let k = self.top_k;
        let mut out = vec![0f32; top.iter().product()];
        for o in 0..outer {
            for j in 0..inner {
                let mut idx: Vec<usize> = (0..dim).collect();
                let val = |i: usize| x[(o * dim + i) * inner + j];
                // Stable sort by decreasing value: ties keep the lower index first.
                idx.sort_by(|&a, &b| {
                    val(b).partial_cmp(&val(a)).unwrap_or(std::cmp::Ordering::Equal)
                });
                for (r, &i) in idx.iter().take(k).enumerate() {
                    if self.axis.is_some() {
                        out[(o * k + r) * inner + j] =
                            if self.out_max_val { val(i) } else { i as f32 };
                    } else if self.out_max_val {
                        out[o * 2 * k + r] = i as f32;
                        out[o * 2 * k + k + r] = val(i);
                    } else {
                        out[o * k + r] = i as f32;
                    }
                }
            }
        }
        Ok(vec![from_host(out, &top, &ctx.device)?])
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, layer, run, t, v};

    #[test]
    fn top2_with_values() {
        let mut l = layer("layer { name: 'a' type: 'ArgMax' bottom: 'x' top: 'y' argmax_param { top_k: 2 out_max_val: true } }").unwrap();
        let y = run(l.as_mut(), &[t(&[0.1, 0.7, 0.2, 5., 1., 3.], &[2, 3])], &[]).unwrap();
        assert_eq!(y[0].dims(), &[2, 2, 2]);
        close(&v(&y[0]), &[1., 2., 0.7, 0.2, 0., 2., 5., 3.]);
        let mut l = layer(
            "layer { name: 'a' type: 'ArgMax' bottom: 'x' top: 'y' argmax_param { axis: 1 } }",
        )
        .unwrap();
        let y = run(l.as_mut(), &[t(&[0.1, 0.7, 0.2, 5., 1., 3.], &[2, 3])], &[]).unwrap();
        close(&v(&y[0]), &[1., 0.]);
    }
}
