//! The outer optimizer: what an averaging round does with the mean of the replicas.
//!
//! SparkNet replaces every replica's weights by their mean ([`OuterRule::Average`], the
//! default, bit for bit the plain average). Later work on the same scheme treats the round's
//! change as a pseudo-gradient and applies an optimizer to it (SlowMo, Wang et al. 2019;
//! DiLoCo, Douillard et al. 2023): with `w0` the weights every replica started the round from
//! and `mean` the average of the replicas after their `tau` local steps,
//!
//! ```text
//! delta = w0 - mean
//! m     = momentum * m + delta
//! w     = w0 - lr * m                      (sgd-momentum)
//! w     = w0 - lr * (delta + momentum * m)  (nesterov, as PyTorch's SGD with nesterov=True)
//! ```
//!
//! so that lr 1 and momentum 0 is the plain average. Values that are not learned by gradient
//! (BatchNorm's statistics, blobs with `lr_mult: 0`) are plainly averaged under every rule.
//!
//! ```
//! use sparknet_mpi::outer::{OuterConfig, OuterOptimizer, OuterRule};
//!
//! let config = OuterConfig { rule: OuterRule::Nesterov, lr: 0.5, momentum: 0.9 };
//! let mut outer = OuterOptimizer::new(config, 2, Vec::new());
//! let mut w = vec![1.0f32, 2.0];
//! outer.begin_round(&w);
//! w.copy_from_slice(&[0.8, 2.2]); // the mean of the replicas after the round
//! outer.apply(&mut w);
//! // delta = [0.2, -0.2], m = delta, w = w0 - 0.5 * (delta + 0.9 * m)
//! assert!((w[0] - (1.0 - 0.5 * 0.38)).abs() < 1e-6 && (w[1] - (2.0 + 0.5 * 0.38)).abs() < 1e-6);
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

use sparknet_net::load::{read_binaryproto, write_binaryproto};
use sparknet_net::proto::{BlobProto, BlobShape};

use crate::{Error, Result};

/// The rule applied at each averaging round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OuterRule {
    /// SparkNet: the replicas' mean.
    #[default]
    Average,
    /// SGD with (heavy-ball) momentum on the pseudo-gradient (SlowMo).
    SgdMomentum,
    /// SGD with Nesterov momentum on the pseudo-gradient (DiLoCo).
    Nesterov,
}

impl std::str::FromStr for OuterRule {
    type Err = Error;
    fn from_str(s: &str) -> Result<OuterRule> {
        match s {
            "average" => Ok(OuterRule::Average),
            "sgd-momentum" => Ok(OuterRule::SgdMomentum),
            "nesterov" => Ok(OuterRule::Nesterov),
            _ => Err(Error::Config(format!(
                "--outer {s}: expected 'average', 'sgd-momentum' or 'nesterov'"
            ))),
        }
    }
}

/// The outer rule with its rate and momentum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OuterConfig {
    /// The rule.
    pub rule: OuterRule,
    /// The outer learning rate (DiLoCo: 0.7).
    pub lr: f32,
    /// The outer momentum (DiLoCo: 0.9).
    pub momentum: f32,
}

impl Default for OuterConfig {
    /// SparkNet's plain average.
    fn default() -> Self {
        OuterConfig { rule: OuterRule::Average, lr: 1.0, momentum: 0.0 }
    }
}

impl OuterConfig {
    /// DiLoCo's outer optimizer: Nesterov momentum 0.9, rate 0.7.
    pub fn diloco() -> OuterConfig {
        OuterConfig { rule: OuterRule::Nesterov, lr: 0.7, momentum: 0.9 }
    }

    /// True for SparkNet's plain average (no state, nothing to apply).
    pub fn is_average(&self) -> bool {
        self.rule == OuterRule::Average
    }
}

/// The outer optimizer's state: the round's start weights and the momentum, one buffer each,
/// allocated once.
#[derive(Debug)]
pub struct OuterOptimizer {
    config: OuterConfig,
    start: Vec<f32>,
    momentum: Vec<f32>,
    /// Ranges of the buffer that are always plainly averaged (statistics, frozen blobs).
    plain: Vec<Range<usize>>,
}

impl OuterOptimizer {
    /// An optimizer for a buffer of `len` values; `plain` lists the ranges that are only averaged.
    pub fn new(config: OuterConfig, len: usize, plain: Vec<Range<usize>>) -> OuterOptimizer {
        OuterOptimizer { config, start: vec![0.0; len], momentum: vec![0.0; len], plain }
    }

    /// The settings.
    pub fn config(&self) -> &OuterConfig {
        &self.config
    }

    /// Records the weights every replica starts the round from.
    ///
    /// # Panics
    /// Never for a buffer of the length given to [`new`](OuterOptimizer::new); a different
    /// length is a programming error of the caller and is caught by a debug assertion.
    pub fn begin_round(&mut self, params: &[f32]) {
        debug_assert_eq!(params.len(), self.start.len());
        self.start.copy_from_slice(params);
    }

    /// Replaces `params`, which holds the replicas' mean, by the outer rule's weights (see the
    /// module docs); the plain ranges keep the mean.
    pub fn apply(&mut self, params: &mut [f32]) {
        let OuterConfig { rule, lr, momentum: mu } = self.config;
        if rule == OuterRule::Average {
            return;
        }
        let nesterov = rule == OuterRule::Nesterov;
        let mut plain = self.plain.iter().peekable();
        let mut i = 0;
        while i < params.len() {
            // The next stretch up to a plain range, then the plain range itself.
            let end = plain.peek().map_or(params.len(), |r| r.start.min(params.len()));
            for ((w, &w0), m) in
                params[i..end].iter_mut().zip(&self.start[i..end]).zip(&mut self.momentum[i..end])
            {
                let delta = w0 - *w;
                *m = mu * *m + delta;
                let step = if nesterov { delta + mu * *m } else { *m };
                *w = w0 - lr * step;
            }
            i = end;
            if let Some(r) = plain.next() {
                i = r.end.max(i);
            }
        }
    }

    /// The momentum buffer (saved with snapshots).
    pub fn momentum(&self) -> &[f32] {
        &self.momentum
    }

    /// The file that holds the outer state of a snapshot whose model file is `model`
    /// (`<prefix>_iter_N.caffemodel` -> `<prefix>_iter_N.outerstate`).
    pub fn state_path(model: &Path) -> PathBuf {
        model.with_extension("outerstate")
    }

    /// Writes the momentum to `path` as a binary `BlobProto` (one axis), atomically.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let blob = BlobProto {
            shape: Some(BlobShape { dim: vec![self.momentum.len() as i64] }),
            data: self.momentum.clone(),
            ..BlobProto::default()
        };
        Ok(write_binaryproto(path, &blob)?)
    }

    /// Restores the momentum saved by [`save`](OuterOptimizer::save).
    ///
    /// # Errors
    /// Unreadable or corrupt files, or a momentum of another length than the parameters.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let blob = read_binaryproto(path)?;
        if blob.data.len() != self.momentum.len() {
            return Err(Error::Config(format!(
                "{}: outer momentum of {} values, the net has {}",
                path.display(),
                blob.data.len(),
                self.momentum.len()
            )));
        }
        self.momentum.copy_from_slice(&blob.data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ranges_keep_the_mean_and_momentum_accumulates() {
        let config = OuterConfig { rule: OuterRule::SgdMomentum, lr: 0.5, momentum: 0.5 };
        let mut outer = OuterOptimizer::new(config, 4, std::iter::once(1..3).collect());
        let start = [1.0f32, 1.0, 1.0, 1.0];
        for round in 0..2 {
            outer.begin_round(&start);
            let mut w = [0.0f32; 4]; // every replica moved by -1
            outer.apply(&mut w);
            // delta = 1; m = 1 then 1.5; w = 1 - 0.5 m; the plain range keeps the mean (0).
            let m = if round == 0 { 1.0 } else { 1.5 };
            assert_eq!(w, [1.0 - 0.5 * m, 0.0, 0.0, 1.0 - 0.5 * m], "round {round}");
        }
        assert_eq!(outer.momentum(), [1.5, 0.0, 0.0, 1.5]);
    }

    #[test]
    fn state_saves_and_loads_and_a_wrong_length_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = OuterOptimizer::state_path(&dir.path().join("run_iter_4.caffemodel"));
        assert!(path.ends_with("run_iter_4.outerstate"));
        let mut a = OuterOptimizer::new(OuterConfig::diloco(), 3, Vec::new());
        a.begin_round(&[1.0, 2.0, 3.0]);
        let mut w = [0.5f32, 2.5, 3.0];
        a.apply(&mut w);
        a.save(&path).unwrap();
        let mut b = OuterOptimizer::new(OuterConfig::diloco(), 3, Vec::new());
        b.load(&path).unwrap();
        assert_eq!(a.momentum(), b.momentum());
        let mut c = OuterOptimizer::new(OuterConfig::diloco(), 2, Vec::new());
        let e = c.load(&path).unwrap_err().to_string();
        assert!(e.contains("outerstate") && e.contains("3 values"), "{e}");
        assert!("bogus".parse::<OuterRule>().is_err());
        assert_eq!("nesterov".parse::<OuterRule>().unwrap(), OuterRule::Nesterov);
    }
}
