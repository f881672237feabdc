//! [`Net::backward`]: Caffe's backward pass over the layers in reverse, with Caffe's rules for
//! which gradients are computed:
//! - a blob needs a gradient when the layer that wrote it has a learnable blob with
//!   `lr_mult != 0` or a bottom that needs one (fed inputs need none);
//! - only layers some loss depends on run backward (`loss_weight != 0` on one of their tops, or
//!   a top read by such a layer);
//! - `propagate_down: false` on a bottom stops its gradient (and a layer none of whose tops
//!   gets a gradient back skips backward, parameters included, as in Caffe);
//! - a loss top's diff is its `loss_weight`; diffs of a blob read by several layers add up
//!   (the implicit Split sums them); parameter gradients **accumulate** into the flat gradient
//!   buffer ([`crate::params`]), which the solver zeroes once per iteration.

use std::collections::HashMap;

use candle::{DType, Tensor};

use crate::layers::{BackwardArgs, ForwardCtx};
use crate::net::Net;
use crate::{Error, Result};

/// Which gradients the backward pass computes.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Per layer: run backward at all.
    pub layer: Vec<bool>,
    /// Per layer and bottom: propagate the gradient.
    pub bottom: Vec<Vec<bool>>,
    /// Per layer and learnable blob: compute its gradient.
    pub param: Vec<Vec<bool>>,
}

impl Net {
    pub(crate) fn backward_plan(&self) -> Plan {
        let n = self.layers.len();
        let mut slot_need = vec![false; self.slot_names.len()];
        let mut layer_need = vec![false; n];
        let mut param = vec![Vec::new(); n];
        for i in 0..n {
            if self.layers[i].is_input() {
                continue;
            }
            let node = &self.graph.layers[i];
            param[i] = (0..self.params[i].len())
                .map(|k| node.param.param.get(k).map_or(1.0, |s| s.lr_mult()) != 0.0)
                .collect();
            if self.layers[i].blobs_are_statistics() {
                param[i].fill(false);
            }
            let need =
                param[i].iter().any(|&p| p) || self.bottom_slots[i].iter().any(|&s| slot_need[s]);
            layer_need[i] = need;
            for &t in &self.top_slots[i] {
                slot_need[t] = need;
            }
        }
        // Reverse: which layers feed a loss.
        let mut under_loss = vec![false; self.slot_names.len()];
        // Blobs whose every reader declined their gradient (propagate_down: false).
        let mut skip = vec![false; self.slot_names.len()];
        let mut bottom = vec![Vec::new(); n];
        for i in (0..n).rev() {
            let contributes = self.top_slots[i]
                .iter()
                .enumerate()
                .any(|(j, &t)| self.loss_weights[i][j] != 0.0 || under_loss[t]);
            let all_skipped =
                !self.top_slots[i].is_empty() && self.top_slots[i].iter().all(|&t| skip[t]);
            if !contributes || all_skipped {
                layer_need[i] = false;
            }
            let node = &self.graph.layers[i];
            bottom[i] = self.bottom_slots[i]
                .iter()
                .enumerate()
                .map(|(j, &s)| {
                    layer_need[i]
                        && slot_need[s]
                        && node.param.propagate_down.get(j) != Some(&false)
                })
                .collect();
            if !layer_need[i] {
                param[i].fill(false);
            }
            for (j, &s) in self.bottom_slots[i].iter().enumerate() {
                if contributes {
                    under_loss[s] = true;
                }
                if !bottom[i][j] {
                    skip[s] = true;
                }
            }
        }
        Plan { layer: layer_need, bottom, param }
    }

    /// Caffe's `Backward` after a [`Net::forward`]: fills the blob diffs (see [`Net::blob_diff`])
    /// and **adds** the parameter gradients into the gradient buffer ([`Net::grad_buffer`]).
    ///
    /// # Errors
    /// No forward yet, a layer without a backward on a path to a loss (naming it), candle or
    /// kernel errors.
    pub fn backward(&mut self) -> Result<()> {
        crate::net::on_pool(|| self.backward_here())
    }

    fn backward_here(&mut self) -> Result<()> {
        let plan = self.backward_plan();
        self.ensure_flat()?;
        let ctx = ForwardCtx { phase: self.config.phase, device: self.config.device.clone() };
        self.diffs = vec![None; self.slot_names.len()];
        for i in (0..self.layers.len()).rev() {
            if !plan.layer[i] {
                continue;
            }
            let name = self.graph.layers[i].name.clone();
            let missing = || Error::out_of_order(&name, "run forward before backward");
            let mut top_diffs = Vec::with_capacity(self.top_slots[i].len());
            for (j, &t) in self.top_slots[i].iter().enumerate() {
                let v = self.values[t].as_ref().ok_or_else(missing)?;
                let w = self.loss_weights[i][j];
                let mut d = match self.diffs[t].take() {
                    Some(d) => d,
                    None => v.zeros_like()?,
                };
                if w != 0.0 {
                    d = (d + v.ones_like()?.affine(f64::from(w), 0.0)?)?;
                }
                top_diffs.push(d.to_dtype(DType::F32)?);
            }
            let bottoms: Vec<&Tensor> = self.bottom_slots[i]
                .iter()
                .map(|&s| self.values[s].as_ref().ok_or_else(missing))
                .collect::<Result<_>>()?;
            let tops: Vec<&Tensor> = self.top_slots[i]
                .iter()
                .map(|&s| self.values[s].as_ref().ok_or_else(missing))
                .collect::<Result<_>>()?;
            let args = BackwardArgs {
                ctx: &ctx,
                bottoms: &bottoms,
                tops: &tops,
                top_diffs: &top_diffs,
                params: &self.params[i],
                propagate_down: &plan.bottom[i],
                param_down: &plan.param[i],
            };
            let grads = self.layers[i].backward(&args).map_err(|e| match e {
                Error::Unsupported { layer, kind, context } if layer.is_empty() => {
                    Error::Unsupported { layer: name.clone(), kind, context }
                }
                e => e,
            })?;
            let bottom_slots = self.bottom_slots[i].clone();
            for (j, g) in grads.bottoms.into_iter().enumerate() {
                let (Some(g), Some(&s)) = (g, bottom_slots.get(j)) else { continue };
                if !plan.bottom[i][j] {
                    continue;
                }
                self.diffs[s] = Some(match self.diffs[s].take() {
                    Some(old) => (old + g)?,
                    None => g,
                });
            }
            for (k, g) in grads.params.into_iter().enumerate() {
                if let Some(g) = g
                    && plan.param[i].get(k) == Some(&true)
                {
                    self.accumulate_param_grad(i, k, &g)?;
                }
            }
            for (&t, d) in self.top_slots[i].iter().zip(top_diffs) {
                self.diffs[t] = Some(d);
            }
        }
        Ok(())
    }

    /// [`Net::forward`] then [`Net::backward`]; returns the weighted loss.
    ///
    /// # Errors
    /// As both.
    pub fn forward_backward(&mut self, inputs: &HashMap<String, Tensor>) -> Result<f32> {
        crate::net::on_pool(|| {
            let loss = self.forward(inputs)?;
            self.backward()?;
            Ok(loss)
        })
    }

    /// A blob's diff after the last [`Net::backward`] (dLoss/dblob as its last writer's top;
    /// `None` where no gradient flowed).
    pub fn blob_diff(&self, name: &str) -> Option<&Tensor> {
        self.name_to_slot.get(name).and_then(|&s| self.diffs.get(s)).and_then(Option::as_ref)
    }
}
