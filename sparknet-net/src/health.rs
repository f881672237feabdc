//! Finding where a net went non-finite: the first layer (in net order) whose output after the
//! last forward holds a NaN or an infinity, and the first learnable blob that does. A trainer
//! that sees a non-finite loss calls these to name the layer at fault.

use candle::{DType, Tensor};

use crate::Result;
use crate::net::Net;

/// Where the first non-finite value was found.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFinite {
    /// The layer's name.
    pub layer: String,
    /// The layer's Caffe type.
    pub kind: String,
    /// What holds the value: `top 'ip1'`, or `parameter blob 0`.
    pub blob: String,
    /// Index of the first non-finite value in the blob (row-major).
    pub index: usize,
    /// That value (NaN, +inf or -inf).
    pub value: f32,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "layer '{}' ({}): {} holds {} at index {}",
            self.layer, self.kind, self.blob, self.value, self.index
        )
    }
}

/// Index and value of the first non-finite value of `t`.
fn first_bad(t: &Tensor) -> Result<Option<(usize, f32)>> {
    let v: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    Ok(v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])))
}

impl Net {
    /// The first layer, in net order, whose output from the last forward holds a non-finite
    /// value (an input layer when the fed data does). `None` when every output is finite or
    /// nothing has run yet. Copies each output to the host: meant for after a non-finite loss,
    /// not for every step.
    ///
    /// # Errors
    /// candle errors while reading a blob.
    pub fn first_non_finite_top(&self) -> Result<Option<NonFinite>> {
        for (i, node) in self.graph.layers.iter().enumerate() {
            for (j, &slot) in self.top_slots[i].iter().enumerate() {
                let Some(t) = &self.values[slot] else { continue };
                if let Some((index, value)) = first_bad(t)? {
                    return Ok(Some(NonFinite {
                        layer: node.name.clone(),
                        kind: node.kind.clone(),
                        blob: format!("top '{}'", node.tops[j]),
                        index,
                        value,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// The first learnable blob, in net order, that holds a non-finite value.
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn first_non_finite_param(&mut self) -> Result<Option<NonFinite>> {
        let flat = self.ensure_flat()?;
        let Some(at) = flat.data().iter().position(|x| !x.is_finite()) else { return Ok(None) };
        let value = flat.data()[at];
        let e = flat.entries().iter().find(|e| e.offset <= at && at < e.offset + e.len).cloned();
        let Some(e) = e else { return Ok(None) };
        let kind = self
            .graph
            .layers
            .iter()
            .find(|l| l.name == e.layer)
            .map_or_else(String::new, |l| l.kind.clone());
        Ok(Some(NonFinite {
            layer: e.layer.clone(),
            kind,
            blob: format!("parameter blob {}", e.blob),
            index: at - e.offset,
            value,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use candle::{Device, Tensor};

    use crate::load::parse_net_text;
    use crate::{Net, NetConfig};

    fn net() -> Net {
        let p = parse_net_text(
            "layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 1 dim: 3 } } }
             layer { name: 'ip' type: 'InnerProduct' bottom: 'x' top: 'y'
                     inner_product_param { num_output: 2 weight_filler { type: 'xavier' } } }
             layer { name: 'log' type: 'Log' bottom: 'y' top: 'z' }
             layer { name: 'sig' type: 'Sigmoid' bottom: 'z' top: 'w' }",
            Path::new("t"),
        )
        .unwrap();
        Net::new(&p, NetConfig::default()).unwrap()
    }

    fn feed(net: &mut Net, x: [f32; 3]) {
        let t = Tensor::from_slice(&x, (1, 3), &Device::Cpu).unwrap();
        net.forward(&HashMap::from([("x".to_string(), t)])).unwrap();
    }

    #[test]
    fn names_the_first_layer_whose_output_is_not_finite() {
        let mut n = net();
        assert_eq!(n.first_non_finite_top().unwrap(), None, "nothing has run");
        // Weights 0 make y = 0: log gives -inf, which the sigmoid after it turns finite again.
        let len = n.param_count().unwrap();
        n.param_buffer().unwrap().copy_from_slice(&vec![0.0; len]);
        feed(&mut n, [1.0, 2.0, 3.0]);
        let bad = n.first_non_finite_top().unwrap().expect("log(0)");
        assert_eq!((bad.layer.as_str(), bad.kind.as_str(), bad.index), ("log", "Log", 0));
        assert_eq!(bad.value, f32::NEG_INFINITY);
        assert_eq!(bad.to_string(), "layer 'log' (Log): top 'z' holds -inf at index 0");
        // A NaN in the fed data names the input layer.
        feed(&mut n, [1.0, f32::NAN, 3.0]);
        let bad = n.first_non_finite_top().unwrap().unwrap();
        assert_eq!((bad.layer.as_str(), bad.blob.as_str(), bad.index), ("in", "top 'x'", 1));
        assert_eq!(n.first_non_finite_param().unwrap(), None);
    }

    #[test]
    fn names_the_first_non_finite_parameter() {
        let mut n = net();
        assert_eq!(n.first_non_finite_param().unwrap(), None);
        n.param_buffer().unwrap()[7] = f32::INFINITY; // 6 weights, then the 2 biases
        let bad = n.first_non_finite_param().unwrap().unwrap();
        assert_eq!(
            (bad.layer.as_str(), bad.blob.as_str(), bad.index, bad.value),
            ("ip", "parameter blob 1", 1, f32::INFINITY)
        );
    }
}
