//! All learnable blobs of a net in one contiguous `f32` buffer, and their gradients in another
//! (the project's design notes, §2): the solver updates the buffer in one pass with a small table
//! of ranges, model averaging is one in-place allreduce over [`Net::param_buffer`], a snapshot is
//! one read.
//!
//! The layout is Caffe's `learnable_params` order: layers in order, each layer's blobs in order,
//! a blob shared by `param { name }` once (at its owner). [`Net::param_table`] lists the entries
//! with their `lr_mult`/`decay_mult` (BatchNorm's statistics always get 0 and 0, as Caffe masks
//! them). The layers compute with candle tensors; after writing the buffer through
//! [`Net::param_buffer`] or [`Net::buffers`], the tensors are refreshed from it at the next
//! forward or by [`Net::sync_params`] (the solver syncs after every update, so [`Net::params`]
//! and [`Net::save_caffemodel`] see the new values).

use candle::{DType, Tensor};

use crate::cpu::with_host;
use crate::net::Net;
use crate::{Error, Result};

/// One learnable blob inside the flat buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamEntry {
    /// The owning layer's name.
    pub layer: String,
    /// Index of the blob within the layer's learnable blobs.
    pub blob: usize,
    /// The blob's shape.
    pub shape: Vec<usize>,
    /// Offset of its first value in the buffers.
    pub offset: usize,
    /// Number of values.
    pub len: usize,
    /// `param { lr_mult }` (default 1).
    pub lr_mult: f32,
    /// `param { decay_mult }` (default 1).
    pub decay_mult: f32,
}

/// The buffers and the map from (layer, blob) to an entry.
#[derive(Debug, Clone)]
pub(crate) struct Flat {
    pub(crate) data: Vec<f32>,
    pub(crate) diff: Vec<f32>,
    pub(crate) entries: Vec<ParamEntry>,
    /// (layer, blob) -> entry index (sharers point at the owner's entry).
    pub(crate) slot: Vec<Vec<usize>>,
    /// The data was handed out mutably: the tensors must be refreshed.
    pub(crate) dirty: bool,
}

impl Net {
    /// Builds the buffers from the current tensors when they are missing.
    pub(crate) fn ensure_flat(&mut self) -> Result<&mut Flat> {
        if self.flat.is_none() {
            let mut entries = Vec::new();
            let mut slot = vec![Vec::new(); self.layers.len()];
            let mut data = Vec::new();
            for i in 0..self.layers.len() {
                if self.param_shapes[i].is_none() {
                    return Err(Error::NotFound(format!(
                        "layer '{}': parameter shapes unknown (feed or declare the input shapes \
                         first)",
                        self.graph.layers[i].name
                    )));
                }
                let node = &self.graph.layers[i];
                for (k, t) in self.params[i].iter().enumerate() {
                    if let Some(Some((ol, ob))) = self.shared[i].get(k) {
                        let e = slot[*ol][*ob];
                        slot[i].push(e);
                        continue;
                    }
                    let spec = node.param.param.get(k);
                    let (lr_mult, decay_mult) = if node.kind == "BatchNorm" {
                        (0.0, 0.0)
                    } else {
                        (spec.map_or(1.0, |s| s.lr_mult()), spec.map_or(1.0, |s| s.decay_mult()))
                    };
                    let offset = data.len();
                    with_host(t, |v| {
                        data.extend_from_slice(v);
                        Ok(())
                    })?;
                    slot[i].push(entries.len());
                    entries.push(ParamEntry {
                        layer: node.name.clone(),
                        blob: k,
                        shape: t.dims().to_vec(),
                        offset,
                        len: t.elem_count(),
                        lr_mult,
                        decay_mult,
                    });
                }
            }
            let diff = vec![0.0; data.len()];
            self.flat = Some(Flat { data, diff, entries, slot, dirty: false });
        }
        Ok(self.flat.as_mut().expect("built above"))
    }

    /// The learnable blobs' layout in the flat buffers, in Caffe's `learnable_params` order.
    ///
    /// # Errors
    /// When some layer's parameter shapes are still unknown (inputs never fed or declared).
    pub fn param_table(&mut self) -> Result<&[ParamEntry]> {
        Ok(&self.ensure_flat()?.entries)
    }

    /// Number of learnable values (the buffers' length).
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn param_count(&mut self) -> Result<usize> {
        Ok(self.ensure_flat()?.data.len())
    }

    /// All learnable values, read-only.
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn param_data(&mut self) -> Result<&[f32]> {
        Ok(&self.ensure_flat()?.data)
    }

    /// All learnable values, to change in place (for example an allreduce); the layers see the
    /// new values from the next forward (or [`Net::sync_params`]). Allocates nothing once built.
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn param_buffer(&mut self) -> Result<&mut [f32]> {
        let f = self.ensure_flat()?;
        f.dirty = true;
        Ok(&mut f.data)
    }

    /// The gradients accumulated by [`Net::backward`] (same layout as the parameters).
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn grad_buffer(&mut self) -> Result<&mut [f32]> {
        Ok(&mut self.ensure_flat()?.diff)
    }

    /// Parameters and gradients together (what a solver update needs); marks the parameters
    /// changed like [`Net::param_buffer`].
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn buffers(&mut self) -> Result<(&mut [f32], &mut [f32])> {
        let f = self.ensure_flat()?;
        f.dirty = true;
        Ok((&mut f.data, &mut f.diff))
    }

    /// Zeroes the gradient buffer (Caffe's `ClearParamDiffs`, at the start of each iteration).
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn zero_grads(&mut self) -> Result<()> {
        self.ensure_flat()?.diff.fill(0.0);
        Ok(())
    }

    /// Copies the flat parameter buffer back into the layers' tensors when it was handed out
    /// mutably since the last sync (shared blobs get the one value).
    ///
    /// # Errors
    /// candle errors.
    pub fn sync_params(&mut self) -> Result<()> {
        let Some(flat) = self.flat.as_mut() else { return Ok(()) };
        if !flat.dirty {
            return Ok(());
        }
        let dev = self.config.device.clone();
        let mut fresh: Vec<Option<Tensor>> = vec![None; flat.entries.len()];
        for (i, slots) in flat.slot.iter().enumerate() {
            for (k, &e) in slots.iter().enumerate() {
                if fresh[e].is_none() {
                    let en = &flat.entries[e];
                    let t = Tensor::from_slice(
                        &flat.data[en.offset..en.offset + en.len],
                        en.shape.as_slice(),
                        &dev,
                    )?
                    .to_dtype(DType::F32)?;
                    fresh[e] = Some(t);
                }
                self.params[i][k] = fresh[e].clone().expect("set above");
            }
        }
        flat.dirty = false;
        Ok(())
    }

    /// Stores blobs a layer's forward replaced (BatchNorm's statistics) in the tensors and, when
    /// built, the flat buffer.
    pub(crate) fn store_param_updates(&mut self, i: usize, updates: Vec<Tensor>) -> Result<()> {
        for (k, t) in updates.into_iter().enumerate() {
            if k >= self.params[i].len() || t.dims() != self.params[i][k].dims() {
                continue;
            }
            if let Some(flat) = self.flat.as_mut() {
                let en = &flat.entries[flat.slot[i][k]];
                let dst = &mut flat.data[en.offset..en.offset + en.len];
                with_host(&t, |v| {
                    dst.copy_from_slice(v);
                    Ok(())
                })?;
            }
            self.params[i][k] = t;
        }
        Ok(())
    }

    /// Adds a layer's blob gradient into the gradient buffer.
    pub(crate) fn accumulate_param_grad(&mut self, i: usize, k: usize, g: &Tensor) -> Result<()> {
        let flat = self.ensure_flat()?;
        let en = &flat.entries[flat.slot[i][k]];
        let dst = &mut flat.diff[en.offset..en.offset + en.len];
        with_host(g, |v| {
            if v.len() != dst.len() {
                return Err(Error::ShapeMismatch {
                    layer: en.layer.clone(),
                    what: format!("gradient of blob {k}"),
                    expected: en.shape.clone(),
                    got: g.dims().to_vec(),
                });
            }
            dst.iter_mut().zip(v).for_each(|(d, s)| *d += s);
            Ok(())
        })
    }
}
