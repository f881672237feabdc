//! Weight I/O of a [`Net`]: the per-layer collection (SparkNet's `getWeights`/`setWeights`),
//! copying trained blobs from a caffemodel (Caffe's `CopyTrainedLayersFrom`), and writing
//! `.caffemodel` (V2) and `.safetensors` files.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle::{DType, Tensor};

use crate::blob::{blob_fits, blob_shape, blob_to_tensor, tensor_to_blob};
use crate::load::write_caffemodel;
use crate::net::Net;
use crate::proto::{LayerParameter, NetParameter};
use crate::{Error, Result};

/// Learnable blobs by layer name (SparkNet's `getWeights`/`setWeights` collection).
pub type WeightCollection = BTreeMap<String, Vec<Tensor>>;

impl Net {
    /// The learnable blobs of every layer that has some, by layer name.
    pub fn params(&self) -> WeightCollection {
        self.graph
            .layers
            .iter()
            .zip(&self.params)
            .filter(|(_, p)| !p.is_empty())
            .map(|(n, p)| (n.name.clone(), p.clone()))
            .collect()
    }

    /// Replaces learnable blobs by layer name; layers not named keep theirs.
    ///
    /// # Errors
    /// An unknown layer, a wrong blob count or shape (naming layer and both shapes).
    pub fn set_params(&mut self, weights: &WeightCollection) -> Result<()> {
        for (name, blobs) in weights {
            let i = self.layer_index(name)?;
            if blobs.len() != self.params[i].len() {
                return Err(Error::BlobCount {
                    layer: name.clone(),
                    kind: self.graph.layers[i].kind.clone(),
                    what: "parameter",
                    expected: self.params[i].len().to_string(),
                    got: blobs.len(),
                });
            }
            for (k, b) in blobs.iter().enumerate() {
                if b.dims() != self.params[i][k].dims() {
                    return Err(Error::ShapeMismatch {
                        layer: name.clone(),
                        what: format!("parameter blob {k}"),
                        expected: self.params[i][k].dims().to_vec(),
                        got: b.dims().to_vec(),
                    });
                }
                self.params[i][k] = b.to_device(&self.config.device)?.to_dtype(DType::F32)?;
            }
        }
        self.sync_shared();
        Ok(())
    }

    fn sync_shared(&mut self) {
        // The tensors are new: the flat parameter buffer is rebuilt from them when next needed.
        self.flat = None;
        for i in 0..self.params.len() {
            for k in 0..self.shared[i].len() {
                if let Some((ol, ob)) = self.shared[i][k] {
                    self.params[i][k] = self.params[ol][ob].clone();
                }
            }
        }
    }

    fn layer_index(&self, name: &str) -> Result<usize> {
        self.graph.layers.iter().position(|l| l.name == name).ok_or_else(|| Error::NoSuchLayer {
            layer: name.to_string(),
            net: self.graph.name.clone(),
        })
    }

    /// Copies trained blobs from a (weights) net by layer name, as Caffe's
    /// `CopyTrainedLayersFrom`: source layers absent here are ignored; a layer present in both
    /// must match in blob count and shapes (legacy 4-D blob shapes are accepted as Caffe does).
    ///
    /// # Errors
    /// Count or shape mismatches naming the layer and both shapes; layers whose shapes are still
    /// unknown.
    pub fn copy_from(&mut self, weights: &NetParameter) -> Result<()> {
        let index: HashMap<&str, usize> =
            self.graph.layers.iter().enumerate().map(|(i, l)| (l.name.as_str(), i)).collect();
        // Every blob is checked before any is copied: a failure leaves the net as it was.
        let mut copies = Vec::new();
        for src in &weights.layer {
            let Some(&i) = index.get(src.name()) else { continue };
            if src.blobs.is_empty() && self.params[i].is_empty() {
                continue;
            }
            let Some(shapes) = self.param_shapes[i].clone() else {
                return Err(Error::UnknownShape {
                    layer: src.name().to_string(),
                    what: "parameter shapes".into(),
                });
            };
            if src.blobs.len() != shapes.len() {
                return Err(Error::BlobCount {
                    layer: src.name().to_string(),
                    kind: self.graph.layers[i].kind.clone(),
                    what: "parameter",
                    expected: shapes.len().to_string(),
                    got: src.blobs.len(),
                });
            }
            for (k, (b, s)) in src.blobs.iter().zip(&shapes).enumerate() {
                if !blob_fits(b, s) {
                    return Err(Error::ShapeMismatch {
                        layer: src.name().to_string(),
                        what: format!("caffemodel blob {k} against the prototxt"),
                        expected: s.clone(),
                        got: blob_shape(b),
                    });
                }
                let t =
                    blob_to_tensor(b, s, &self.config.device, src.name(), &format!("blob {k}"))?;
                copies.push((i, k, t));
            }
        }
        for (i, k, t) in copies {
            self.params[i][k] = t;
        }
        self.sync_shared();
        Ok(())
    }

    /// Reads the `.caffemodel` at `path` and copies its blobs as [`Net::copy_from`] does.
    /// Returns the learnable layers the file has no blobs for (see
    /// [`Net::layers_without_weights`]), which keep their values.
    ///
    /// # Errors
    /// As [`crate::load::read_caffemodel`] and [`Net::copy_from`]; every error names `path`
    /// (and the layer). On error the net's weights are unchanged.
    pub fn copy_from_file(&mut self, path: impl AsRef<Path>) -> Result<Vec<String>> {
        let path = path.as_ref();
        let weights = crate::load::read_caffemodel(path)?;
        self.copy_from(&weights).map_err(|e| e.in_file(path))?;
        Ok(self.layers_without_weights(&weights))
    }

    /// The layers of this net with learnable blobs that `weights` has no layer of the same name
    /// for, in net order: [`Net::copy_from`] leaves them as they are (Caffe's rule, which
    /// fine-tuning relies on). A caffemodel truncated exactly between two layers still decodes,
    /// as a shorter model; this is how its missing layers can be named.
    pub fn layers_without_weights(&self, weights: &NetParameter) -> Vec<String> {
        let present: std::collections::HashSet<&str> =
            weights.layer.iter().map(|l| l.name()).collect();
        self.graph
            .layers
            .iter()
            .zip(&self.params)
            .filter(|(n, p)| !n.auto_split && !p.is_empty() && !present.contains(n.name.as_str()))
            .map(|(n, _)| n.name.clone())
            .collect()
    }

    /// The net as a V2 `NetParameter` with its blobs (what Caffe's `Net::ToProto` writes; the
    /// implicit splits are left out, Caffe re-inserts them on load).
    ///
    /// # Errors
    /// candle errors while copying blobs to the host.
    pub fn to_proto(&self) -> Result<NetParameter> {
        let mut layers = Vec::new();
        for (node, params) in self.graph.layers.iter().zip(&self.params) {
            if node.auto_split {
                continue;
            }
            let mut p: LayerParameter = node.param.clone();
            p.blobs = params.iter().map(tensor_to_blob).collect::<Result<_>>()?;
            layers.push(p);
        }
        Ok(NetParameter {
            name: Some(self.graph.name.clone()),
            layer: layers,
            ..Default::default()
        })
    }

    /// Writes the weights as a binary V2 `.caffemodel`.
    ///
    /// # Errors
    /// I/O and candle errors.
    pub fn save_caffemodel(&self, path: impl AsRef<Path>) -> Result<()> {
        write_caffemodel(path, &self.to_proto()?)
    }

    /// Writes the weights as safetensors, keyed `<layer>.<blob index>`.
    ///
    /// # Errors
    /// I/O and candle errors.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut map = HashMap::new();
        for (name, blobs) in self.params() {
            for (k, t) in blobs.into_iter().enumerate() {
                map.insert(format!("{name}.{k}"), t);
            }
        }
        let path = path.as_ref();
        candle::safetensors::save(&map, path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Sets every BatchNorm's statistics to mean 0, variance 1 and scale factor 1 (Caffe fills
    /// them with zeros, which makes a deep net built with random weights overflow).
    ///
    /// # Errors
    /// candle errors.
    pub fn unit_batch_norm(&mut self) -> Result<()> {
        for (layer, blobs) in self.layers.iter().zip(self.params.iter_mut()) {
            if layer.blobs_are_statistics() {
                layer.neutral_statistics(blobs)?;
            }
        }
        self.sync_shared();
        Ok(())
    }
}
