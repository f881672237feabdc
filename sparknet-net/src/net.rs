//! [`Net`]: a built Caffe net over candle tensors: layers in order, blobs by name, learnable
//! parameters per layer, shape inference and reshape, forward (weight I/O is in [`crate::weights`]).
//!
//! Execution model (see the crate docs): Caffe's static list of layers over named blobs, run in
//! order; every top is a new "slot", and a blob name means the slot its last writer produced
//! (so an in-place layer's result is what later readers, and [`Net::blob`], see).

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Device, Tensor};

use crate::fillers::{Rng, fill, layer_fillers};
use crate::graph::{NetGraph, state_for};
use crate::layers::{ForwardCtx, Layer, LayerRegistry, Shape};
use crate::load::read_net_prototxt;
use crate::proto::{FillerParameter, NetParameter, NetState, Phase};
use crate::{Error, Result};

/// Runs `f` on a thread of the current rayon pool: in place when the caller is one already,
/// else handed to the global pool for its whole duration.
///
/// The CPU kernels split their work with rayon. Called from a thread outside the pool, every
/// kernel call would hand its work to the pool and sleep until it is done, two thread wake-ups
/// per layer; from inside, the calling thread takes part and the others join it. At batch 1
/// that handoff measured about 10% of a SqueezeNet pass (`sparknet-net/BENCH.md`).
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() { f() } else { rayon::scope(|_| f()) }
}

/// How to build a [`Net`].
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// TRAIN or TEST (selects layers by include/exclude and switches Dropout/BatchNorm).
    pub phase: Phase,
    /// Net stages for the include/exclude rules.
    pub stages: Vec<String>,
    /// Net level for the include/exclude rules.
    pub level: i32,
    /// The device blobs and parameters live on.
    pub device: Device,
    /// Shapes for fed blobs (overriding or completing what Input/Data layers declare).
    pub input_shapes: HashMap<String, Shape>,
    /// Seed of the fillers that initialise learnable blobs (layer `i` draws from its own
    /// stream, so the values do not depend on when the layer is set up); `None` leaves them
    /// zero, which is faster when only shapes matter (`inspect`) or weights are loaded anyway.
    /// It also seeds each layer's generator for the draws made while running (Dropout masks,
    /// STOCHASTIC pooling, DummyData's random fillers; see [`Layer::set_rng`]), so two nets
    /// built with the same seed draw the same masks step after step; `None` seeds those with 0.
    pub seed: Option<u64>,
    /// Weight and bias fillers for Convolution/Deconvolution/InnerProduct layers that name none
    /// (`None`: Caffe's constant 0).
    pub missing_fillers: Option<(FillerParameter, FillerParameter)>,
    /// Fuse each in-place ReLU into the Convolution that produces its bottom when it is that
    /// blob's only reader (see [`Layer::fuse_relu`]): the same values and gradients, bit for
    /// bit, with one pass over the blob fewer. On by default; off makes `time` show the ReLU's
    /// own cost.
    pub fuse_activations: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            phase: Phase::Test,
            stages: Vec::new(),
            level: 0,
            device: Device::Cpu,
            input_shapes: HashMap::new(),
            seed: Some(1),
            missing_fillers: None,
            fuse_activations: true,
        }
    }
}

/// Summary of one layer for display (`inspect`).
#[derive(Debug, Clone)]
pub struct LayerInfo {
    /// Layer name.
    pub name: String,
    /// Caffe type.
    pub kind: String,
    /// Bottom blob names.
    pub bottoms: Vec<String>,
    /// Top blob names with their shapes (`None`: unknown until the inputs are fed).
    pub tops: Vec<(String, Option<Shape>)>,
    /// Learnable blob shapes (`None` when the bottoms' shapes are unknown).
    pub params: Option<Vec<Shape>>,
    /// True for an implicit Split.
    pub auto_split: bool,
}

/// A built net.
pub struct Net {
    pub(crate) graph: NetGraph,
    pub(crate) config: NetConfig,
    pub(crate) layers: Vec<Box<dyn Layer>>,
    pub(crate) params: Vec<Vec<Tensor>>,
    pub(crate) param_shapes: Vec<Option<Vec<Shape>>>,
    /// (layer, blob) -> owner (layer, blob) for `param { name }` sharing.
    pub(crate) shared: Vec<Vec<Option<(usize, usize)>>>,
    pub(crate) bottom_slots: Vec<Vec<usize>>,
    pub(crate) top_slots: Vec<Vec<usize>>,
    pub(crate) slot_names: Vec<String>,
    pub(crate) name_to_slot: HashMap<String, usize>,
    pub(crate) shapes: Vec<Option<Shape>>,
    pub(crate) values: Vec<Option<Tensor>>,
    pub(crate) loss_weights: Vec<Vec<f32>>,
    /// The flat parameter and gradient buffers (built on first use, see [`crate::params`]).
    pub(crate) flat: Option<crate::flat::FlatParams>,
    /// Blob diffs of the last backward, per slot.
    pub(crate) diffs: Vec<Option<Tensor>>,
    /// Per layer: a ReLU fused into the layer below it, whose forward passes its bottom through.
    pub(crate) fused: Vec<bool>,
}

impl Net {
    /// Builds the net `param` describes (already upgraded) for `config`.
    ///
    /// # Errors
    /// Unsupported layers (naming layer and type), bad parameters, missing bottoms, bad blob
    /// counts and shape errors, each naming the layer.
    pub fn new(param: &NetParameter, config: NetConfig) -> Result<Net> {
        Self::with_registry(param, config, &LayerRegistry::default())
    }

    /// As [`Net::new`] with a custom layer registry.
    ///
    /// # Errors
    /// As [`Net::new`].
    pub fn with_registry(
        param: &NetParameter,
        config: NetConfig,
        registry: &LayerRegistry,
    ) -> Result<Net> {
        let state = NetState {
            stage: config.stages.clone(),
            level: Some(config.level),
            ..state_for(config.phase)
        };
        let graph = NetGraph::build(param, Some(&state))?;
        let mut layers = Vec::with_capacity(graph.layers.len());
        let (mut bottom_slots, mut top_slots) = (Vec::new(), Vec::new());
        let (mut slot_names, mut name_to_slot) = (Vec::new(), HashMap::new());
        let mut loss_weights = Vec::new();
        let layer_seed = config.seed.unwrap_or(0);
        for (i, node) in graph.layers.iter().enumerate() {
            let mut layer = registry.create(&node.param)?;
            layer.set_rng(Rng::stream(layer_seed, i as u64));
            let bs = node
                .bottoms
                .iter()
                .map(|b| {
                    name_to_slot.get(b).copied().ok_or_else(|| Error::MissingBlob {
                        layer: node.name.clone(),
                        blob: b.clone(),
                        state: String::new(),
                        producers: Vec::new(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let ts: Vec<usize> = node
                .tops
                .iter()
                .map(|t| {
                    slot_names.push(t.clone());
                    name_to_slot.insert(t.clone(), slot_names.len() - 1);
                    slot_names.len() - 1
                })
                .collect();
            let lw: Vec<f32> = (0..node.tops.len())
                .map(|j| match node.param.loss_weight.get(j) {
                    Some(&w) => w,
                    None if j == 0 && node.param.loss_weight.is_empty() => {
                        layer.loss_weight_default()
                    }
                    None => 0.0,
                })
                .collect();
            bottom_slots.push(bs);
            top_slots.push(ts);
            loss_weights.push(lw);
            layers.push(layer);
        }
        let n = layers.len();
        let n_slots = slot_names.len();
        let mut net = Net {
            graph,
            config,
            layers,
            params: vec![Vec::new(); n],
            param_shapes: vec![None; n],
            shared: vec![Vec::new(); n],
            bottom_slots,
            top_slots,
            slot_names,
            name_to_slot,
            shapes: vec![None; n_slots],
            values: vec![None; n_slots],
            loss_weights,
            flat: None,
            diffs: Vec::new(),
            fused: vec![false; n],
        };
        if net.config.fuse_activations {
            net.fuse_relus();
        }
        let fed = net.config.input_shapes.clone();
        net.infer_shapes(&fed)?;
        Ok(net)
    }

    /// Marks each in-place ReLU (`negative_slope >= 0`) whose bottom is the only top of the layer
    /// that wrote it, read by nothing else and carrying no loss, and that the writing layer
    /// accepts through [`Layer::fuse_relu`].
    fn fuse_relus(&mut self) {
        let mut readers = vec![0usize; self.slot_names.len()];
        for &s in self.bottom_slots.iter().flatten() {
            readers[s] += 1;
        }
        let mut writer = vec![None; self.slot_names.len()];
        for (i, tops) in self.top_slots.iter().enumerate() {
            for &s in tops {
                writer[s] = Some(i);
            }
        }
        for j in 0..self.layers.len() {
            let node = &self.graph.layers[j];
            let in_place = node.bottoms.len() == 1 && node.tops == node.bottoms;
            let Some(slope) = self.layers[j].relu_slope() else { continue };
            if !in_place || self.loss_weights[j][0] != 0.0 {
                continue;
            }
            let s = self.bottom_slots[j][0];
            let Some(i) = writer[s] else { continue };
            let single_top = self.top_slots[i].len() == 1 && self.loss_weights[i][0] == 0.0;
            if slope >= 0.0 && readers[s] == 1 && single_top && self.layers[i].fuse_relu(slope) {
                self.fused[j] = true;
            }
        }
    }

    /// Reads a net definition and, optionally, its weights.
    ///
    /// # Errors
    /// As [`read_net_prototxt`], [`Net::new`] and [`Net::copy_from`].
    pub fn from_files(
        model: impl AsRef<Path>,
        weights: Option<&Path>,
        config: NetConfig,
    ) -> Result<Net> {
        let model = model.as_ref();
        let mut net = Net::new(&read_net_prototxt(model)?, config).map_err(|e| e.in_file(model))?;
        if let Some(w) = weights {
            net.copy_from_file(w)?;
        }
        Ok(net)
    }

    /// Shape inference over all layers given the fed shapes; sets up layers (and allocates zero
    /// parameters) the first time their bottom shapes are known.
    fn infer_shapes(&mut self, fed: &HashMap<String, Shape>) -> Result<()> {
        let dev = self.config.device.clone();
        let mut owners: HashMap<String, (usize, usize)> = HashMap::new();
        for i in 0..self.layers.len() {
            let node = &self.graph.layers[i];
            let tops: Vec<Option<Shape>> = if self.layers[i].is_input() {
                self.param_shapes[i] = Some(Vec::new());
                let mut declared = self.layers[i].declared_shapes();
                // A data layer's label top follows the batch of its fed data top, as both come
                // from one `batch_size` in Caffe.
                if self.layers[i].kind() != "Input"
                    && let Some(batch) =
                        node.tops.first().and_then(|t| fed.get(t)).and_then(|s| s.first().copied())
                {
                    for d in declared.iter_mut().skip(1).flatten() {
                        if let Some(first) = d.first_mut() {
                            *first = batch;
                        }
                    }
                }
                node.tops
                    .iter()
                    .enumerate()
                    .map(|(j, t)| {
                        fed.get(t).cloned().or_else(|| declared.get(j).cloned().flatten())
                    })
                    .collect()
            } else {
                let bottoms: Option<Vec<Shape>> =
                    self.bottom_slots[i].iter().map(|&s| self.shapes[s].clone()).collect();
                match bottoms {
                    None => vec![None; node.tops.len()],
                    Some(bottoms) => {
                        let pshapes = self.layers[i].setup(&bottoms)?;
                        match &self.param_shapes[i] {
                            None => {
                                self.params[i] = match self.config.seed {
                                    None => pshapes
                                        .iter()
                                        .map(|s| Tensor::zeros(s.as_slice(), DType::F32, &dev))
                                        .collect::<candle::Result<_>>()?,
                                    Some(seed) => {
                                        let fillers = layer_fillers(
                                            &node.param,
                                            pshapes.len(),
                                            self.config.missing_fillers.as_ref(),
                                        );
                                        let mut rng = Rng::new(
                                            seed.wrapping_mul(0x9E37_79B9).wrapping_add(i as u64),
                                        );
                                        pshapes
                                            .iter()
                                            .zip(&fillers)
                                            .map(|(s, f)| {
                                                let v = fill(&node.name, f, s, &mut rng)?;
                                                Ok(Tensor::from_vec(v, s.as_slice(), &Device::Cpu)?
                                                    .to_device(&dev)?)
                                            })
                                            .collect::<Result<_>>()?
                                    }
                                };
                                self.shared[i] = vec![None; pshapes.len()];
                                self.param_shapes[i] = Some(pshapes);
                                self.flat = None;
                            }
                            Some(old) => {
                                for (k, (o, p)) in old.iter().zip(&pshapes).enumerate() {
                                    if o != p {
                                        return Err(Error::ShapeMismatch {
                                            layer: node.name.clone(),
                                            what: format!(
                                                "parameter blob {k} for the new bottom shapes {bottoms:?}"
                                            ),
                                            expected: o.clone(),
                                            got: p.clone(),
                                        });
                                    }
                                }
                            }
                        }
                        let mut tops = self.layers[i].reshape(&bottoms)?;
                        tops.truncate(node.tops.len());
                        tops.into_iter().map(Some).collect()
                    }
                }
            };
            for (k, spec) in node.param.param.iter().enumerate() {
                if let Some(name) = spec.name.as_deref().filter(|n| !n.is_empty()) {
                    match owners.get(name) {
                        Some(&(ol, ob)) if k < self.params[i].len() => {
                            if self.params[ol].get(ob).map(Tensor::dims)
                                != Some(self.params[i][k].dims())
                            {
                                return Err(Error::ShapeMismatch {
                                    layer: node.name.clone(),
                                    what: format!("shared parameter '{name}'"),
                                    expected: self.params[ol][ob].dims().to_vec(),
                                    got: self.params[i][k].dims().to_vec(),
                                });
                            }
                            self.shared[i][k] = Some((ol, ob));
                            self.params[i][k] = self.params[ol][ob].clone();
                        }
                        Some(_) => {}
                        None => {
                            owners.insert(name.to_string(), (i, k));
                        }
                    }
                }
            }
            for (j, t) in tops.into_iter().enumerate() {
                self.shapes[self.top_slots[i][j]] = t;
            }
        }
        Ok(())
    }

    /// Re-infers every shape for new fed input shapes (Caffe's `Net::Reshape` after reshaping the
    /// input blobs).
    ///
    /// # Errors
    /// Shapes a layer rejects, or that change a layer's parameter shapes.
    pub fn reshape(&mut self, inputs: &HashMap<String, Shape>) -> Result<()> {
        for name in inputs.keys() {
            if !self.input_names().iter().any(|n| n == name) {
                return Err(Error::NotAnInput { name: name.clone(), inputs: self.input_names() });
            }
        }
        let mut fed = self.config.input_shapes.clone();
        fed.extend(inputs.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.infer_shapes(&fed)?;
        self.config.input_shapes = fed;
        Ok(())
    }

    /// Names of the blobs the caller feeds (tops of Input/Data/ImageData/MemoryData layers).
    pub fn input_names(&self) -> Vec<String> {
        (0..self.layers.len())
            .filter(|&i| self.layers[i].is_input())
            .flat_map(|i| self.graph.layers[i].tops.clone())
            .collect()
    }

    /// Blobs no layer reads (the net's outputs), in order.
    pub fn output_names(&self) -> Vec<String> {
        let read: std::collections::HashSet<usize> =
            self.bottom_slots.iter().flatten().copied().collect();
        (0..self.slot_names.len())
            .filter(|s| !read.contains(s) && self.name_to_slot.get(&self.slot_names[*s]) == Some(s))
            .map(|s| self.slot_names[s].clone())
            .collect()
    }

    /// Runs the net on the fed inputs (reshaping first when their shapes changed) and returns the
    /// weighted loss (0 for nets without loss layers). Every blob stays readable via [`Net::blob`].
    ///
    /// The pass runs on a thread of the rayon pool (the caller's own when it is one), so the
    /// kernels' parallel loops start without a thread handoff each.
    ///
    /// # Errors
    /// Unknown or missing inputs, shape errors, candle/kernel errors, naming the layer.
    pub fn forward(&mut self, inputs: &HashMap<String, Tensor>) -> Result<f32> {
        on_pool(|| self.forward_here(inputs))
    }

    fn forward_here(&mut self, inputs: &HashMap<String, Tensor>) -> Result<f32> {
        let inputs_needed = self.input_names();
        for name in inputs.keys() {
            if !inputs_needed.contains(name) {
                return Err(Error::NotAnInput {
                    name: name.clone(),
                    inputs: inputs_needed.clone(),
                });
            }
        }
        self.sync_params()?;
        let shapes: HashMap<String, Shape> =
            inputs.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
        let changed =
            shapes.iter().any(|(k, s)| self.shapes[self.name_to_slot[k]].as_ref() != Some(s));
        if changed {
            self.reshape(&shapes)?;
        }
        let ctx = ForwardCtx { phase: self.config.phase, device: self.config.device.clone() };
        let mut loss = 0f32;
        for i in 0..self.layers.len() {
            let node = &self.graph.layers[i];
            let tops: Vec<Tensor> = if self.layers[i].is_input() {
                node.tops
                    .iter()
                    .map(|t| {
                        let v = inputs.get(t).ok_or_else(|| Error::NotFed {
                            layer: node.name.clone(),
                            blob: t.clone(),
                        })?;
                        Ok(v.to_device(&self.config.device)?.to_dtype(DType::F32)?)
                    })
                    .collect::<Result<_>>()?
            } else {
                let bottoms: Vec<&Tensor> = self.bottom_slots[i]
                    .iter()
                    .map(|&s| {
                        self.values[s].as_ref().ok_or_else(|| {
                            Error::out_of_order(
                                &node.name,
                                format!("bottom '{}' has no value", self.slot_names[s]),
                            )
                        })
                    })
                    .collect::<Result<_>>()?;
                if self.fused[i] {
                    let top = bottoms[0].clone();
                    self.values[self.top_slots[i][0]] = Some(top);
                    continue;
                }
                let tops = self.layers[i].forward(&ctx, &bottoms, &self.params[i])?;
                if let Some(updates) = self.layers[i].take_param_updates() {
                    self.store_param_updates(i, updates)?;
                }
                let node = &self.graph.layers[i];
                if tops.len() != node.tops.len() {
                    return Err(Error::BlobCount {
                        layer: node.name.clone(),
                        kind: node.kind.clone(),
                        what: "top",
                        expected: node.tops.len().to_string(),
                        got: tops.len(),
                    });
                }
                tops
            };
            for (j, t) in tops.into_iter().enumerate() {
                let w = self.loss_weights[i][j];
                if w != 0.0 {
                    loss += w * t.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                }
                self.values[self.top_slots[i][j]] = Some(t);
            }
        }
        Ok(loss)
    }

    /// A blob's value after the last forward: the output of the last layer that wrote `name`.
    pub fn blob(&self, name: &str) -> Option<&Tensor> {
        self.name_to_slot.get(name).and_then(|&s| self.values[s].as_ref())
    }

    /// A blob's inferred shape (`None`: unknown, or no such blob).
    pub fn blob_shape(&self, name: &str) -> Option<&Shape> {
        self.name_to_slot.get(name).and_then(|&s| self.shapes[s].as_ref())
    }

    /// All blob names, in creation order (an in-place name once).
    pub fn blob_names(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.slot_names.iter().filter(|n| seen.insert(n.as_str())).cloned().collect()
    }

    /// The IR the net was built from.
    pub fn graph(&self) -> &NetGraph {
        &self.graph
    }

    /// The device of blobs and parameters.
    pub fn device(&self) -> &Device {
        &self.config.device
    }

    /// The phase the net was built for.
    pub fn phase(&self) -> Phase {
        self.config.phase
    }

    /// Per-layer summaries (shapes and parameter shapes).
    pub fn layer_infos(&self) -> Vec<LayerInfo> {
        self.graph
            .layers
            .iter()
            .enumerate()
            .map(|(i, n)| LayerInfo {
                name: n.name.clone(),
                kind: n.kind.clone(),
                bottoms: n.bottoms.clone(),
                tops: n
                    .tops
                    .iter()
                    .zip(&self.top_slots[i])
                    .map(|(t, &s)| (t.clone(), self.shapes[s].clone()))
                    .collect(),
                params: self.param_shapes[i].clone(),
                auto_split: n.auto_split,
            })
            .collect()
    }

    /// Names of the in-place ReLUs fused into the layer below them
    /// ([`NetConfig::fuse_activations`]), in net order.
    pub fn fused_layers(&self) -> Vec<String> {
        let names = self.graph.layers.iter().map(|l| l.name.clone());
        names.zip(&self.fused).filter(|(_, f)| **f).map(|(n, _)| n).collect()
    }

    /// Number of layers (implicit splits included).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Runs layer `i` alone on its current bottoms (for per-layer timing); needs a prior forward.
    ///
    /// # Errors
    /// As [`Net::forward`].
    pub fn forward_layer(&mut self, i: usize) -> Result<()> {
        if self.layers[i].is_input() {
            return Ok(());
        }
        let ctx = ForwardCtx { phase: self.config.phase, device: self.config.device.clone() };
        let bottoms: Vec<&Tensor> = self.bottom_slots[i]
            .iter()
            .map(|&s| {
                self.values[s].as_ref().ok_or_else(|| {
                    Error::out_of_order(&self.graph.layers[i].name, "run forward first")
                })
            })
            .collect::<Result<_>>()?;
        let tops = if self.fused[i] {
            vec![bottoms[0].clone()]
        } else {
            self.layers[i].forward(&ctx, &bottoms, &self.params[i])?
        };
        if let Some(updates) = self.layers[i].take_param_updates() {
            self.store_param_updates(i, updates)?;
        }
        for (j, t) in tops.into_iter().enumerate() {
            self.values[self.top_slots[i][j]] = Some(t);
        }
        Ok(())
    }
}
