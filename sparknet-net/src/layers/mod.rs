//! Caffe's layers: the [`Layer`] trait, the [`LayerRegistry`] keyed by Caffe's type string, and
//! one module per layer type (the elementwise "neuron" family, which Caffe also groups, shares
//! [`neuron`]).
//!
//! A layer follows Caffe's life cycle: [`Layer::setup`] once with the first bottom shapes (it
//! returns the shapes of its learnable blobs, Caffe's `blobs_`), [`Layer::reshape`] whenever the
//! input shapes change (it returns the top shapes: this is the shape inference), and
//! [`Layer::forward`] per pass, [`Layer::backward`] from the tops' diffs to the bottoms' and
//! learnable blobs' gradients ([`BackwardArgs`] -> [`Grads`]). A layer keeps what backward needs
//! from forward (pooling's argmax, LRN's scale, dropout's mask) in `&mut self`, which is why
//! `forward` takes `&mut self`. Layers without a gradient (Accuracy, ArgMax, Threshold, the
//! inputs) keep the default `backward`, an error; the net never calls it for layers no loss
//! depends on.

use std::collections::HashMap;

use candle::{Device, Tensor};

use crate::fillers::Rng;
use crate::proto::{LayerParameter, Phase};
use crate::{Error, Result};

pub mod accuracy;
pub mod argmax;
pub mod batch_norm;
pub mod bias;
pub mod concat;
pub mod contrastive_loss;
pub mod convolution;
pub mod crop;
pub mod deconvolution;
pub mod dropout;
pub mod dummy_data;
pub mod eltwise;
pub mod euclidean_loss;
pub mod flatten;
pub mod inner_product;
pub mod input;
pub mod lrn;
pub mod neuron;
pub mod pooling;
pub mod prelu;
pub mod reshape;
pub mod scale;
pub mod sigmoid_cross_entropy_loss;
pub mod silence;
pub mod slice;
pub mod softmax;
pub mod softmax_loss;
pub mod split;

/// A blob shape (Caffe's `vector<int>`).
pub type Shape = Vec<usize>;

/// How many bottom or top blobs a layer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Exactly this many.
    Exact(usize),
    /// At least this many.
    AtLeast(usize),
    /// Between the two, inclusive.
    Between(usize, usize),
}

impl Count {
    fn accepts(self, n: usize) -> bool {
        match self {
            Count::Exact(e) => n == e,
            Count::AtLeast(m) => n >= m,
            Count::Between(a, b) => (a..=b).contains(&n),
        }
    }

    fn describe(self) -> String {
        match self {
            Count::Exact(e) => format!("exactly {e}"),
            Count::AtLeast(m) => format!("at least {m}"),
            Count::Between(a, b) => format!("{a} to {b}"),
        }
    }
}

/// What a forward pass knows besides the blobs.
#[derive(Debug, Clone)]
pub struct ForwardCtx {
    /// TRAIN or TEST (Dropout and BatchNorm depend on it).
    pub phase: Phase,
    /// The device the net's blobs live on.
    pub device: Device,
}

/// What a backward pass gets: the forward's blobs, the diffs of the tops, and which gradients
/// are wanted (Caffe's `propagate_down` per bottom; a parameter with `lr_mult: 0` or one that
/// no loss depends on gets none).
pub struct BackwardArgs<'a> {
    /// TRAIN or TEST, and the device.
    pub ctx: &'a ForwardCtx,
    /// The bottoms of the last forward.
    pub bottoms: &'a [&'a Tensor],
    /// The tops of the last forward.
    pub tops: &'a [&'a Tensor],
    /// dLoss/dtop per top (zeros where no loss depends on a top; a loss top holds its weight).
    pub top_diffs: &'a [Tensor],
    /// The learnable blobs.
    pub params: &'a [Tensor],
    /// Whether each bottom's gradient is wanted.
    pub propagate_down: &'a [bool],
    /// Whether each learnable blob's gradient is wanted.
    pub param_down: &'a [bool],
}

/// Gradients from one backward pass (`None` where not wanted or not defined).
#[derive(Debug, Default)]
pub struct Grads {
    /// dLoss/dbottom per bottom.
    pub bottoms: Vec<Option<Tensor>>,
    /// dLoss/dparam per learnable blob (the net accumulates them into its gradient buffer).
    pub params: Vec<Option<Tensor>>,
}

impl Grads {
    /// Gradients for the bottoms only.
    pub fn bottoms(bottoms: Vec<Option<Tensor>>) -> Grads {
        Grads { bottoms, params: Vec::new() }
    }
}

/// `Some(f())` when `want`, else `None`.
///
/// # Errors
/// `f`'s errors.
pub fn want<T>(want: bool, f: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
    if want { f().map(Some) } else { Ok(None) }
}

/// One Caffe layer over candle tensors.
pub trait Layer: Send {
    /// Caffe's type string.
    fn kind(&self) -> &'static str;
    /// Accepted bottom count.
    fn bottoms(&self) -> Count;
    /// Accepted top count.
    fn tops(&self) -> Count;
    /// Caffe's `LayerSetUp`: validates parameters against the first bottom shapes and returns the
    /// shapes of the layer's learnable blobs (empty for parameter-free layers).
    ///
    /// # Errors
    /// Invalid parameters or bottom shapes, naming the layer.
    fn setup(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>> {
        let _ = bottoms;
        Ok(Vec::new())
    }
    /// Caffe's `Reshape`: the top shapes for these bottom shapes.
    ///
    /// # Errors
    /// Incompatible bottom shapes, naming the layer and the shapes.
    fn reshape(&mut self, bottoms: &[Shape]) -> Result<Vec<Shape>>;
    /// Computes the tops.
    ///
    /// # Errors
    /// candle or kernel errors.
    fn forward(
        &mut self,
        ctx: &ForwardCtx,
        bottoms: &[&Tensor],
        params: &[Tensor],
    ) -> Result<Vec<Tensor>>;
    /// Caffe's `Backward`: the gradients of the bottoms and learnable blobs from the tops'
    /// diffs (see [`BackwardArgs`]). Layers without a gradient (Accuracy, ArgMax, Threshold,
    /// ...) keep this default, an error naming the type; the net only calls it for layers some
    /// loss depends on.
    ///
    /// # Errors
    /// No gradient defined, candle or kernel errors.
    fn backward(&mut self, args: &BackwardArgs<'_>) -> Result<Grads> {
        let _ = args;
        Err(Error::Unsupported {
            layer: String::new(),
            kind: self.kind().to_string(),
            context: " (this layer type has no backward; set propagate_down: false on the layers \
                      below it or give its tops loss_weight 0)"
                .to_string(),
        })
    }
    /// Gives the layer its own seeded generator for its random draws (Dropout's masks,
    /// STOCHASTIC pooling's samples, DummyData's random fillers). [`crate::Net`] calls it once
    /// when it builds the layer, with [`Rng::stream`] of `NetConfig::seed` and the layer's
    /// index, so nets built alike draw alike, pass after pass, whatever the other layers draw
    /// (Caffe seeds all draws from the solver's `random_seed`). Layers without randomness keep
    /// this default, which drops it; a layer built outside a net keeps the generator its
    /// constructor seeded.
    fn set_rng(&mut self, rng: Rng) {
        let _ = rng;
    }
    /// Learnable blobs the last forward replaced (BatchNorm's running statistics in TRAIN); the
    /// net stores them in place of the old ones.
    fn take_param_updates(&mut self) -> Option<Vec<Tensor>> {
        None
    }
    /// Offers the layer an in-place ReLU (`negative_slope >= 0`) that is the only reader of its
    /// single top: a layer that accepts applies it inside its own forward (while the output is
    /// still in cache) and returns true; the net then passes that ReLU's bottom through as its
    /// top. The ReLU's backward still runs, on the rectified values, which select the same
    /// gradient as Caffe's in-place ReLU does. The default declines.
    fn fuse_relu(&mut self, negative_slope: f32) -> bool {
        let _ = negative_slope;
        false
    }
    /// A ReLU's `negative_slope`; `None` for every other type. The net offers an in-place ReLU
    /// to the layer that wrote its bottom ([`Layer::fuse_relu`]).
    fn relu_slope(&self) -> Option<f32> {
        None
    }
    /// True when the layer's blobs are statistics its forward keeps (BatchNorm's mean, variance
    /// and moving-average factor) rather than learned values: as in Caffe they get no gradient
    /// and no update (`lr_mult` and `decay_mult` 0, whatever the prototxt says), but they live
    /// in the flat buffer, so averaging and snapshots include them.
    fn blobs_are_statistics(&self) -> bool {
        false
    }
    /// Sets statistics blobs ([`Layer::blobs_are_statistics`]) to neutral values, for nets
    /// built with random weights (`Net::unit_batch_norm`). The default leaves them.
    ///
    /// # Errors
    /// candle errors.
    fn neutral_statistics(&self, blobs: &mut [Tensor]) -> Result<()> {
        let _ = blobs;
        Ok(())
    }
    /// True for layers whose tops the caller feeds (Input, Data, ImageData, MemoryData).
    fn is_input(&self) -> bool {
        false
    }
    /// For fed layers: the shape each top declares (`None` when only the caller knows it).
    fn declared_shapes(&self) -> Vec<Option<Shape>> {
        Vec::new()
    }
    /// Caffe's default `loss_weight` of the first top: 1 for loss layers, 0 otherwise.
    fn loss_weight_default(&self) -> f32 {
        0.0
    }
}

/// Builds a layer from its definition.
pub type Constructor = fn(&LayerParameter) -> Result<Box<dyn Layer>>;

/// Layer constructors keyed by Caffe's type string.
pub struct LayerRegistry {
    table: HashMap<String, Constructor>,
}

/// Types that fail with a clear "unsupported" error instead of "unknown".
const KNOWN_UNSUPPORTED: &[&str] = &["Python", "HDF5Data", "HDF5Output", "WindowData"];

impl Default for LayerRegistry {
    fn default() -> Self {
        let mut r = LayerRegistry { table: HashMap::new() };
        r.register("Input", input::new);
        r.register("Data", input::new);
        r.register("ImageData", input::new);
        r.register("MemoryData", input::new);
        r.register("DummyData", dummy_data::new);
        r.register("Convolution", convolution::new);
        r.register("Deconvolution", deconvolution::new);
        r.register("Pooling", pooling::new);
        r.register("ReLU", neuron::new_relu);
        r.register("Sigmoid", neuron::new_sigmoid);
        r.register("TanH", neuron::new_tanh);
        r.register("ELU", neuron::new_elu);
        r.register("AbsVal", neuron::new_absval);
        r.register("Power", neuron::new_power);
        r.register("Exp", neuron::new_exp);
        r.register("Log", neuron::new_log);
        r.register("BNLL", neuron::new_bnll);
        r.register("Threshold", neuron::new_threshold);
        r.register("PReLU", prelu::new);
        r.register("LRN", lrn::new);
        r.register("InnerProduct", inner_product::new);
        r.register("Dropout", dropout::new);
        r.register("Softmax", softmax::new);
        r.register("SoftmaxWithLoss", softmax_loss::new);
        r.register("Accuracy", accuracy::new);
        r.register("Concat", concat::new);
        r.register("Slice", slice::new);
        r.register("Split", split::new);
        r.register("Eltwise", eltwise::new);
        r.register("Flatten", flatten::new);
        r.register("Reshape", reshape::new);
        r.register("BatchNorm", batch_norm::new);
        r.register("Scale", scale::new);
        r.register("Bias", bias::new);
        r.register("Crop", crop::new);
        r.register("Silence", silence::new);
        r.register("ArgMax", argmax::new);
        r.register("EuclideanLoss", euclidean_loss::new);
        r.register("SigmoidCrossEntropyLoss", sigmoid_cross_entropy_loss::new);
        r.register("ContrastiveLoss", contrastive_loss::new);
        r
    }
}

impl LayerRegistry {
    /// Adds (or replaces) the constructor for `kind`.
    pub fn register(&mut self, kind: &str, ctor: Constructor) {
        self.table.insert(kind.to_string(), ctor);
    }

    /// Whether `kind` has a constructor.
    pub fn supports(&self, kind: &str) -> bool {
        self.table.contains_key(kind)
    }

    /// The registered type strings, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.table.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Builds the layer `param` describes, checking its blob counts.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for unknown or unsupported types; constructor errors.
    pub fn create(&self, param: &LayerParameter) -> Result<Box<dyn Layer>> {
        let kind = param.r#type();
        let Some(ctor) = self.table.get(kind) else {
            let context = if KNOWN_UNSUPPORTED.contains(&kind) {
                " (its data comes from outside Caffe's blob model; feed the blobs instead)"
                    .to_string()
            } else {
                " (not a layer type this crate or BVLC Caffe knows)".to_string()
            };
            return Err(Error::Unsupported {
                layer: param.name().to_string(),
                kind: kind.to_string(),
                context,
            });
        };
        let layer = ctor(param)?;
        check_count(param, layer.kind(), "bottom", layer.bottoms(), param.bottom.len())?;
        check_count(param, layer.kind(), "top", layer.tops(), param.top.len())?;
        Ok(layer)
    }
}

fn check_count(
    param: &LayerParameter,
    kind: &str,
    what: &'static str,
    want: Count,
    got: usize,
) -> Result<()> {
    if want.accepts(got) {
        Ok(())
    } else {
        Err(Error::BlobCount {
            layer: param.name().to_string(),
            kind: kind.to_string(),
            what,
            expected: want.describe(),
            got,
        })
    }
}

/// Caffe's `Blob::CanonicalAxisIndex`: a negative axis counts from the end.
///
/// # Errors
/// An axis outside `[-ndim, ndim)`.
pub fn canonical_axis(layer: &str, field: &str, axis: i32, ndim: usize) -> Result<usize> {
    let n = ndim as i32;
    if axis < -n || axis >= n {
        return Err(Error::invalid(
            layer,
            field,
            format!("axis {axis} out of range for a {ndim}-D blob"),
        ));
    }
    Ok(if axis < 0 { (axis + n) as usize } else { axis as usize })
}

/// Product of `shape[from..to]`.
pub fn count(shape: &[usize], from: usize, to: usize) -> usize {
    shape[from.min(shape.len())..to.min(shape.len())].iter().product()
}

/// A tensor's values as a host `Vec<f32>` (row-major), whatever its device.
///
/// # Errors
/// candle errors.
pub fn host_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(candle::DType::F32)?.to_vec1::<f32>()?)
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers for the per-layer unit tests: build a layer from a prototxt snippet and run it.
    use super::*;
    use crate::load::parse_net_text;
    use std::path::Path;

    /// Parses `layer { ... }` text and builds the layer.
    pub fn layer(text: &str) -> Result<Box<dyn Layer>> {
        let net = parse_net_text(text, Path::new("test"))?;
        LayerRegistry::default().create(&net.layer[0])
    }

    /// A CPU tensor from values and shape.
    pub fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    /// Runs setup + reshape + forward in TEST phase; checks the reshape shapes against forward.
    pub fn run(l: &mut dyn Layer, bottoms: &[Tensor], params: &[Tensor]) -> Result<Vec<Tensor>> {
        run_phase(l, bottoms, params, Phase::Test)
    }

    /// As [`run`], in the given phase.
    pub fn run_phase(
        l: &mut dyn Layer,
        bottoms: &[Tensor],
        params: &[Tensor],
        phase: Phase,
    ) -> Result<Vec<Tensor>> {
        let shapes: Vec<Shape> = bottoms.iter().map(|b| b.dims().to_vec()).collect();
        let pshapes = l.setup(&shapes)?;
        for (p, s) in params.iter().zip(&pshapes) {
            assert_eq!(p.dims(), s.as_slice(), "param shape");
        }
        let tops = l.reshape(&shapes)?;
        let refs: Vec<&Tensor> = bottoms.iter().collect();
        let out = l.forward(&ForwardCtx { phase, device: Device::Cpu }, &refs, params)?;
        for (o, s) in out.iter().zip(&tops) {
            assert_eq!(o.dims(), s.as_slice(), "reshape agrees with forward");
        }
        Ok(out)
    }

    /// Flattened values.
    pub fn v(t: &Tensor) -> Vec<f32> {
        host_vec(t).unwrap()
    }

    /// Asserts two slices agree to 1e-5 (absolute + relative).
    #[track_caller]
    pub fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-5 + 1e-5 * y.abs(), "index {i}: {x} vs {y}\n{a:?}\n{b:?}");
        }
    }
}
