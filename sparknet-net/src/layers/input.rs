//! `Input`, `Data`, `ImageData` and `MemoryData`: layers whose tops the caller feeds.
//!
//! `Input` declares its shapes (`input_param.shape`, one per top or one for all). The data layers
//! read datasets in Caffe; here the trainer or the caller binds their tops, so their declared
//! shape is known only in part: `batch_size` (and `crop_size` for H and W), or what the caller
//! supplies. A shape of `None` means "unknown until fed".

use candle::Tensor;

use super::{Count, ForwardCtx, Layer, Shape};
use crate::proto::LayerParameter;
use crate::{Error, Result};

/// A fed layer.
pub struct InputLayer {
    name: String,
    kind: &'static str,
    declared: Vec<Option<Shape>>,
}

/// Builds an input-like layer.
///
/// # Errors
/// Shape lists whose length is neither 1 nor the top count.
pub fn new(p: &LayerParameter) -> Result<Box<dyn Layer>> {
    let name = p.name().to_string();
    let n_tops = p.top.len();
    let (kind, declared): (&'static str, Vec<Option<Shape>>) = match p.r#type() {
        "Input" => {
            let shapes: Vec<Shape> = p
                .input_param
                .as_ref()
                .map(|ip| {
                    ip.shape
                        .iter()
                        .map(|s| s.dim.iter().map(|&d| d.max(0) as usize).collect())
                        .collect()
                })
                .unwrap_or_default();
            let declared = match shapes.len() {
                0 => vec![None; n_tops],
                1 => vec![Some(shapes[0].clone()); n_tops],
                n if n == n_tops => shapes.into_iter().map(Some).collect(),
                n => {
                    return Err(Error::invalid(
                        &name,
                        "input_param.shape",
                        format!("{n} shapes for {n_tops} tops"),
                    ));
                }
            };
            ("Input", declared)
        }
        "MemoryData" => {
            let m = p.memory_data_param.unwrap_or_default();
            let data = vec![
                m.batch_size() as usize,
                m.channels() as usize,
                m.height() as usize,
                m.width() as usize,
            ];
            let label = vec![m.batch_size() as usize];
            ("MemoryData", label_shapes(n_tops, Some(data), label))
        }
        "ImageData" => {
            let d = p.image_data_param.clone().unwrap_or_default();
            let batch = d.batch_size() as usize;
            let (h, w) = (d.new_height() as usize, d.new_width() as usize);
            let crop = p.transform_param.as_ref().map_or(0, |t| t.crop_size()) as usize;
            let c = if d.is_color() { 3 } else { 1 };
            let data = if crop > 0 {
                Some(vec![batch, c, crop, crop])
            } else if h > 0 && w > 0 {
                Some(vec![batch, c, h, w])
            } else {
                None
            };
            ("ImageData", label_shapes(n_tops, data, vec![batch]))
        }
        _ => {
            // Data: channels and size live in the database; only the batch is declared.
            let batch = p.data_param.as_ref().map_or(0, |d| d.batch_size()) as usize;
            ("Data", label_shapes(n_tops, None, vec![batch]))
        }
    };
    Ok(Box::new(InputLayer { name, kind, declared }))
}

fn label_shapes(n_tops: usize, data: Option<Shape>, label: Shape) -> Vec<Option<Shape>> {
    let mut v = vec![data];
    if n_tops > 1 {
        v.push(Some(label));
    }
    v
}

impl Layer for InputLayer {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn bottoms(&self) -> Count {
        Count::Exact(0)
    }
    fn tops(&self) -> Count {
        match self.kind {
            "Input" => Count::AtLeast(1),
            _ => Count::Between(1, 2),
        }
    }
    fn reshape(&mut self, _bottoms: &[Shape]) -> Result<Vec<Shape>> {
        self.declared
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.clone().ok_or_else(|| Error::UnknownShape {
                    layer: self.name.clone(),
                    what: format!("the shape of top {i} ({})", self.kind),
                })
            })
            .collect()
    }
    fn forward(
        &mut self,
        _ctx: &ForwardCtx,
        _bottoms: &[&Tensor],
        _params: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        Err(Error::FedOnly { layer: self.name.clone(), kind: self.kind.to_string() })
    }
    fn is_input(&self) -> bool {
        true
    }
    fn declared_shapes(&self) -> Vec<Option<Shape>> {
        self.declared.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::layer;

    #[test]
    fn declared_shapes_per_kind() {
        let l = layer("layer { name: 'i' type: 'Input' top: 'a' top: 'b' input_param { shape { dim: 2 dim: 3 } } }").unwrap();
        assert_eq!(l.declared_shapes(), vec![Some(vec![2, 3]), Some(vec![2, 3])]);
        let l = layer(
            "layer { name: 'd' type: 'Data' top: 'x' top: 'y' data_param { batch_size: 64 } }",
        )
        .unwrap();
        assert_eq!(l.declared_shapes(), vec![None, Some(vec![64])]);
        let l = layer("layer { name: 'm' type: 'MemoryData' top: 'x' top: 'y' memory_data_param { batch_size: 2 channels: 1 height: 3 width: 4 } }").unwrap();
        assert_eq!(l.declared_shapes(), vec![Some(vec![2, 1, 3, 4]), Some(vec![2])]);
        let e = layer(
            "layer { name: 'i' type: 'Input' top: 'a' top: 'b' top: 'c' input_param { shape { dim: 1 } shape { dim: 2 } } }",
        );
        assert!(e.err().unwrap().to_string().contains("2 shapes for 3 tops"));
    }
}
