//! `DummyData`: tops of declared shapes filled by `data_filler` (constant by default; uniform
//! and gaussian draw from candle's generator).

use candle::Tensor;

use super::{Count, ForwardCtx, Layer, Shape};
use crate::proto::{FillerParameter, LayerParameter};
use crate::{Error, Result};

/// The DummyData layer.
pub struct DummyData {
    name: String,
    shapes: Vec<Shape>,
    fillers: Vec<FillerParameter>,
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
    Ok(Box::new(DummyData { name, shapes, fillers }))
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
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        _bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let dev = &ctx.device;
        self.shapes
            .iter()
            .zip(&self.fillers)
            .map(|(s, f)| {
                let t = match f.r#type() {
                    "uniform" => Tensor::rand(f.min(), f.max(), s.as_slice(), dev)?,
                    "gaussian" => Tensor::randn(f.mean(), f.std(), s.as_slice(), dev)?,
                    _ => {
                        (Tensor::zeros(s.as_slice(), candle::DType::F32, dev)?
                            + f64::from(f.value()))?
                    }
                };
                Ok(t)
            })
            .collect::<Result<Vec<_>>>()
            .map_err(|e| match e {
                Error::Candle(c) => Error::invalid(&self.name, "data_filler", c.to_string()),
                e => e,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{layer, run, v};

    #[test]
    fn constant_and_legacy_shapes() {
        let mut l = layer("layer { name: 'd' type: 'DummyData' top: 'a' top: 'b' dummy_data_param { num: 2 channels: 1 height: 1 width: 3 data_filler { value: 7 } } }").unwrap();
        let y = run(l.as_mut(), &[], &[]).unwrap();
        assert_eq!(y[1].dims(), &[2, 1, 1, 3]);
        assert_eq!(v(&y[0]), vec![7.0; 6]);
    }
}
