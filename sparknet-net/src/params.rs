//! [`Net`]'s parameter API over its `FlatParams`: all learnable blobs in one contiguous `f32`
//! buffer, and their gradients in another (the project's design notes, §2): the solver updates
//! the buffer in one pass with a small table of ranges, model averaging is one in-place allreduce
//! over [`Net::param_buffer`], a snapshot is one read.
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
use crate::flat::{FlatParams, ParamEntry};
use crate::net::Net;
use crate::{Error, Result};

impl Net {
    /// Builds the buffers from the current tensors when they are missing.
    pub(crate) fn ensure_flat(&mut self) -> Result<&mut FlatParams> {
        if self.flat.is_none() {
            let mut flat = FlatParams::with_layers(self.layers.len());
            for i in 0..self.layers.len() {
                if self.param_shapes[i].is_none() {
                    return Err(Error::UnknownShape {
                        layer: self.graph.layers[i].name.clone(),
                        what: "parameter shapes".into(),
                    });
                }
                let node = &self.graph.layers[i];
                let statistics = self.layers[i].blobs_are_statistics();
                for (k, t) in self.params[i].iter().enumerate() {
                    if let Some(Some((ol, ob))) = self.shared[i].get(k) {
                        flat.share(i, *ol, *ob);
                        continue;
                    }
                    let spec = node.param.param.get(k);
                    let (lr_mult, decay_mult) = if statistics {
                        (0.0, 0.0)
                    } else {
                        (spec.map_or(1.0, |s| s.lr_mult()), spec.map_or(1.0, |s| s.decay_mult()))
                    };
                    let entry = ParamEntry {
                        layer: node.name.clone(),
                        blob: k,
                        shape: t.dims().to_vec(),
                        offset: 0,
                        len: 0,
                        lr_mult,
                        decay_mult,
                    };
                    with_host(t, |v| {
                        flat.push(i, entry, v);
                        Ok(())
                    })?;
                }
            }
            self.flat = Some(flat);
        }
        Ok(self.flat.as_mut().expect("built above"))
    }

    /// The learnable blobs' layout in the flat buffers, in Caffe's `learnable_params` order.
    ///
    /// # Errors
    /// When some layer's parameter shapes are still unknown (inputs never fed or declared).
    pub fn param_table(&mut self) -> Result<&[ParamEntry]> {
        Ok(self.ensure_flat()?.entries())
    }

    /// Number of learnable values (the buffers' length).
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn param_count(&mut self) -> Result<usize> {
        Ok(self.ensure_flat()?.len())
    }

    /// All learnable values, read-only.
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn param_data(&mut self) -> Result<&[f32]> {
        Ok(self.ensure_flat()?.data())
    }

    /// All learnable values, to change in place (for example an allreduce); the layers see the
    /// new values from the next forward (or [`Net::sync_params`]). Allocates nothing once built.
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn param_buffer(&mut self) -> Result<&mut [f32]> {
        Ok(self.ensure_flat()?.data_mut())
    }

    /// The gradients accumulated by [`Net::backward`] (same layout as the parameters).
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn grad_buffer(&mut self) -> Result<&mut [f32]> {
        Ok(self.ensure_flat()?.diff_mut())
    }

    /// Parameters and gradients together (what a solver update needs); marks the parameters
    /// changed like [`Net::param_buffer`].
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn buffers(&mut self) -> Result<(&mut [f32], &mut [f32])> {
        Ok(self.ensure_flat()?.both_mut())
    }

    /// Zeroes the gradient buffer (Caffe's `ClearParamDiffs`, at the start of each iteration).
    ///
    /// # Errors
    /// As [`Net::param_table`].
    pub fn zero_grads(&mut self) -> Result<()> {
        self.ensure_flat()?.diff_mut().fill(0.0);
        Ok(())
    }

    /// Copies the flat parameter buffer back into the layers' tensors when it was handed out
    /// mutably since the last sync (shared blobs get the one value).
    ///
    /// # Errors
    /// candle errors.
    pub fn sync_params(&mut self) -> Result<()> {
        let Some(flat) = self.flat.as_mut() else { return Ok(()) };
        if !flat.take_dirty() {
            return Ok(());
        }
        let dev = self.config.device.clone();
        let mut fresh: Vec<Option<Tensor>> = vec![None; flat.entries().len()];
        for (i, slots) in flat.slots().iter().enumerate() {
            for (k, &e) in slots.iter().enumerate() {
                if fresh[e].is_none() {
                    let en = &flat.entries()[e];
                    let t = Tensor::from_slice(
                        &flat.data()[en.offset..en.offset + en.len],
                        en.shape.as_slice(),
                        &dev,
                    )?
                    .to_dtype(DType::F32)?;
                    fresh[e] = Some(t);
                }
                self.params[i][k] = fresh[e].clone().expect("set above");
            }
        }
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
                let dst = flat.blob_values_mut(i, k);
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
        let (en, dst) = self.ensure_flat()?.blob_grad_mut(i, k);
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
