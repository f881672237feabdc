//! Caffe models on candle: SparkNet's "compatible with existing Caffe models".
//!
//! ```
//! use std::collections::HashMap;
//! use candle::{Device, Tensor};
//! use sparknet_net::{Net, NetConfig, load::parse_net_text};
//!
//! # fn main() -> sparknet_net::Result<()> {
//! let text = r#"
//!   name: "tiny"
//!   input: "data" input_shape { dim: 1 dim: 1 dim: 4 dim: 4 }
//!   layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
//!           pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
//!   layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
//!           inner_product_param { num_output: 2 } }
//!   layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }"#;
//! let param = parse_net_text(text, "tiny.prototxt".as_ref())?;
//! let mut net = Net::new(&param, NetConfig::default())?;
//! // Caffe's ceil-mode pooling: 4x4 with a 3x3 window, stride 2 -> 2x2.
//! assert_eq!(net.blob_shape("pool"), Some(&vec![1, 1, 2, 2]));
//! let x = Tensor::arange(0f32, 16.0, &Device::Cpu)?.reshape((1, 1, 4, 4))?;
//! net.forward(&HashMap::from([("data".to_string(), x)]))?;
//! let prob = net.blob("prob").unwrap().to_vec2::<f32>()?;
//! assert_eq!(prob, vec![vec![0.5, 0.5]]); // no weight_filler: Caffe's constant 0
//! # Ok(()) }
//! ```
//!
//! # Brief overview
//! - [`proto`]: prost types of the project's own `proto/caffe.proto` (Caffe's field names,
//!   numbers and defaults), compiled by protox in `build.rs` (no system `protoc`).
//! - [`load`]: `.prototxt` (prost-reflect's text format, errors with `file:line:col`), binary
//!   `.caffemodel` (V1 and V2), `.binaryproto`, solver and solverstate files; [`upgrade`] turns
//!   V0/V1 nets and `input`/`input_dim` into the current form, as Caffe does on load.
//! - [`graph::NetGraph`]: the IR: phase/level/stage filtering, in-place layers, Caffe's implicit
//!   `Split` on fan-out.
//! - [`layers`]: the [`layers::Layer`] trait and the [`layers::LayerRegistry`], one module per
//!   Caffe type.
//! - [`Net`]: shape inference, reshape to the fed shapes, forward, every blob by name,
//!   [`Net::params`]/[`Net::set_params`], [`Net::save_caffemodel`], [`Net::save_safetensors`].
//! - Training: [`Net::backward`]/[`Net::forward_backward`] (per-layer backward, Caffe's rules
//!   for `loss_weight`, `propagate_down`, `lr_mult: 0`, shared blobs, in-place layers and the
//!   implicit Split); [`params`]: all learnable blobs in one flat `f32` buffer and their
//!   gradients in another ([`Net::param_buffer`], [`Net::grad_buffer`], [`Net::param_table`]);
//!   [`solver`]: Caffe's six update rules and lr policies over the flat buffer and the
//!   [`solver::Solver`] loop (test/display/snapshot/restore). Batches always come from the
//!   caller: this crate never reads datasets.
//!
//! # Execution model (and why)
//! Following the project's design notes, a net is Caffe's static list of layers over named
//! blobs, run in order by explicit per-layer code (`reshape`, `forward`, `backward`), with
//! candle tensors as storage and device, rather than candle's autograd graph:
//! Caffe's semantics (in-place layers, `param { name }` sharing, BatchNorm's statistics,
//! `loss_weight`, `propagate_down` and `lr_mult: 0`) are direct to express per layer, and
//! each layer is testable alone. On the CPU, Convolution, Deconvolution, Pooling, LRN and
//! InnerProduct run the `sparknet-kernels` crate (im2col + GEMM, Caffe pooling with ceil mode
//! and padding, LRN; forward and backward) on the tensors' host slices; on other devices the
//! forward uses candle's ops (Pooling and LRN round-trip through the host: candle has no Caffe
//! pooling) and the backward of these five round-trips through the host kernels. The other
//! layers are candle expressions and run anywhere.
//!
//! # Feature flags
//! - `cuda`: candle's CUDA backend (forwarded to candle-core and candle-nn).

mod backward;
pub mod blob;
pub mod cpu;
pub mod error;
pub mod fillers;
mod flat;
pub mod graph;
pub mod health;
pub mod layers;
pub mod load;
pub mod malloc;
pub mod net;
pub mod params;
pub mod preprocess;
pub mod proto;
pub mod solver;
pub mod upgrade;
pub mod weights;

pub use error::{Error, Producer, Result};
pub use flat::ParamEntry;
pub use health::NonFinite;
pub use net::{LayerInfo, Net, NetConfig};
pub use proto::Phase;
pub use weights::WeightCollection;
