//! `DummyData`: tops of declared shapes filled by `data_filler` (constant by default; uniform
//! and gaussian draw afresh every pass from the layer's seeded generator, see
//! [`Layer::set_rng`], as Caffe refills non-constant tops on every forward).

use candle::Tensor;

use super::{Count, ForwardCtx, Layer, Shape};
use crate::cpu::from_host;
use crate::fillers::{Rng, fill};
use crate::proto::{FillerParameter, LayerParameter};
use crate::{Error, Result};

/// The DummyData layer.
pub struct DummyData {
    name: String,
    shapes: Vec<Shape>,
    fillers: Vec<FillerParameter>,
    /// The generator of the uniform and gaussian fillers (seeded by the net; 0 when alone).
    rng: Rng,
}

/// Builds a DummyData layer.
///
/// # Errors
/// Shape or filler counts that are neither 1 nor the top count; unsupported filler types.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let name = p.name().to_string();
    let q = p.dummy_data_param.clone().unwrap_or_default();
    let n = p.top.len();
    let pick = |len: usize, i: usize| if len == 1 { 0 } else { i };
    let shapes: Vec<Shape> = if !q.shape.is_empty() {
        if q.shape.len() != 1 && q.shape.len() != n {
            return Err(Error::invalid(
                &name,
                "shape",
                format!("{} shapes for {n} tops", q.shape.len()),
            ));
        }
        (0..n)
            .map(|i| {
                q.shape[pick(q.shape.len(), i)].dim.iter().map(|&d| d.max(0) as usize).collect()
            })
            .collect()
    } else {
        let lists = [&q.num, &q.channels, &q.height, &q.width];
        if lists.iter().any(|l| l.len() != 1 && l.len() != n) {
            return Err(Error::invalid(
                &name,
                "num/channels/height/width",
                format!("each needs 1 or {n} values"),
            ));
        }
        (0..n).map(|i| lists.iter().map(|l| l[pick(l.len(), i)] as usize).collect()).collect()
    };
    let fillers: Vec<FillerParameter> = match q.data_filler.len() {
        0 => vec![FillerParameter::default(); n],
        1 => vec![q.data_filler[0].clone(); n],
        m if m == n => q.data_filler.clone(),
        m => return Err(Error::invalid(&name, "data_filler", format!("{m} fillers for {n} tops"))),
    };
    for f in &fillers {
        if !matches!(f.r#type(), "constant" | "uniform" | "gaussian") {
            return Err(Error::invalid(
                &name,
                "data_filler",
                format!("filler type '{}' (constant, uniform, gaussian)", f.r#type()),
            ));
        }
    }
    Ok(Box::new(DummyData { name, shapes, fillers, rng: Rng::new(0) }))
}

impl Layer for DummyData {
    fn kind(&self) -> &'static str {
        "DummyData"
    }
    fn bottoms(&self) -> Count {
        Count::Exact(0)
    }
    fn tops(&self) -> Count {
        Count::AtLeast(1)
    }
    fn reshape(&mut self, _bottoms: &[Shape]) -> Result<Vec<Shape>> {
        Ok(self.shapes.clone())
    }
    fn set_rng(&mut self, rng: Rng) {
        self.rng = rng;
    }
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        _bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let dev = &ctx.device;
        let mut tops = Vec::with_capacity(self.shapes.len());
        for (s, f) in self.shapes.iter().zip(&self.fillers) {
            let t = if f.r#type() == "constant" {
                (Tensor::zeros(s.as_slice(), candle::DType::F32, dev)? + f64::from(f.value()))?
            } else {
                from_host(fill(&self.name, f, s, &mut self.rng)?, s, dev)?
            };
            tops.push(t);
        }
        Ok(tops)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{layer, run, v};
    use crate::fillers::Rng;

    #[test]
    fn constant_and_legacy_shapes() {
        let mut l = layer("layer { name: 'd' type: 'DummyData' top: 'a' top: 'b' dummy_data_param { num: 2 channels: 1 height: 1 width: 3 data_filler { value: 7 } } }").unwrap();
        let y = run(l.as_mut(), &[], &[]).unwrap();
        assert_eq!(y[1].dims(), &[2, 1, 1, 3]);
        assert_eq!(v(&y[0]), vec![7.0; 6]);
    }

    #[test]
    fn random_fillers_follow_the_seed() {
        let def = "layer { name: 'd' type: 'DummyData' top: 'a' top: 'b' dummy_data_param { shape { dim: 2 dim: 50 } data_filler { type: 'uniform' min: -1 max: 3 } data_filler { type: 'gaussian' std: 2 } } }";
        let draws = |seed: u64| {
            let mut l = layer(def).unwrap();
            l.set_rng(Rng::stream(seed, 0));
            (0..2)
                .map(|_| run(l.as_mut(), &[], &[]).unwrap().iter().map(v).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        let a = draws(1);
        assert_eq!(a, draws(1), "same seed, same values pass after pass");
        assert_ne!(a, draws(2), "another seed, other values");
        assert_ne!(a[0], a[1], "refilled every pass");
        assert!(a[0][0].iter().all(|u| (-1.0..3.0).contains(u)));
        assert_eq!(a[0][1].len(), 100);
    }
}
