//! Snapshots and resume: Caffe's `<prefix>_iter_<n>.caffemodel` plus `.solverstate`, written
//! atomically, and read back from ours or Caffe's.

use std::path::{Path, PathBuf};

use prost::Message;

use super::{Solver, UpdaterState};
use crate::blob::blob_data;
use crate::load::{atomic_write, read_caffemodel, read_solverstate};
use crate::proto::{BlobProto, BlobShape, SolverState};
use crate::{Error, Result};

impl Solver {
    /// Writes `<snapshot_prefix>_iter_<iter>.caffemodel` and `.solverstate` (Caffe's
    /// `SolverState`: iter, learned_net, one history blob per learnable blob and set,
    /// current_step), each atomically (temporary file, then rename).
    ///
    /// # Errors
    /// I/O errors.
    pub fn snapshot(&mut self) -> Result<(PathBuf, PathBuf)> {
        let prefix = self.param.snapshot_prefix().to_string();
        self.snapshot_to(&prefix)
    }

    /// As [`Solver::snapshot`], under `prefix` instead of the solver's `snapshot_prefix` (a
    /// trainer's fallback location when that one cannot be written).
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn snapshot_to(&mut self, prefix: &str) -> Result<(PathBuf, PathBuf)> {
        let base = format!("{prefix}_iter_{}", self.iter());
        let model = PathBuf::from(format!("{base}.caffemodel"));
        let state_path = PathBuf::from(format!("{base}.solverstate"));
        self.net.sync_params()?;
        atomic_write(&model, &self.net.to_proto()?.encode_to_vec())?;
        let entries = self.net.param_table()?.to_vec();
        let st = self.updater.state();
        let mut history = Vec::new();
        for set in &st.history {
            for e in &entries {
                history.push(BlobProto {
                    shape: Some(BlobShape { dim: e.shape.iter().map(|&d| d as i64).collect() }),
                    data: set[e.offset..e.offset + e.len].to_vec(),
                    ..Default::default()
                });
            }
        }
        let state = SolverState {
            iter: Some(st.iter as i32),
            learned_net: Some(model.to_string_lossy().into_owned()),
            history,
            current_step: Some(st.current_step as i32),
        };
        atomic_write(&state_path, &state.encode_to_vec())?;
        Ok((model, state_path))
    }

    /// Resumes from a `.solverstate` (ours or Caffe's): loads its `learned_net` (as written, or
    /// beside the solverstate when that path does not exist), the history and the iteration.
    ///
    /// # Errors
    /// Unreadable files, a history that does not fit the net and solver type.
    pub fn restore(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let state = read_solverstate(path)?;
        let learned = PathBuf::from(state.learned_net());
        let not_found = || Error::LearnedNetMissing {
            solverstate: path.to_path_buf(),
            learned_net: learned.clone(),
        };
        let learned = if learned.is_file() {
            learned.clone()
        } else {
            let name = learned.file_name().ok_or_else(not_found)?;
            let beside = path.with_file_name(name);
            if !beside.is_file() {
                return Err(not_found());
            }
            beside
        };
        let weights = read_caffemodel(&learned).map_err(|e| Error::InFile {
            path: path.to_path_buf(),
            source: Box::new(e.in_file(&learned)),
        })?;
        // Everything is checked before anything changes: the history first, then the weights
        // (`copy_from` checks every blob before copying), so a bad file leaves the solver as it
        // was.
        let entries = self.net.param_table()?.to_vec();
        let total = self.net.param_count()?;
        let sets = self.updater.config().kind.history_sets();
        if state.history.len() != sets * entries.len() {
            return Err(Error::parse(
                path,
                format!(
                    "{} history blobs, the net and {} solver need {}",
                    state.history.len(),
                    self.updater.config().kind.caffe_name(),
                    sets * entries.len()
                ),
            ));
        }
        let mut history = vec![vec![0f32; total]; sets];
        for (j, b) in state.history.iter().enumerate() {
            let (set, e) = (j / entries.len(), &entries[j % entries.len()]);
            let v = blob_data(b);
            if v.len() != e.len {
                let mismatch = Error::ShapeMismatch {
                    layer: e.layer.clone(),
                    what: format!("history blob {j}"),
                    expected: e.shape.clone(),
                    got: vec![v.len()],
                };
                return Err(mismatch.in_file(path));
            }
            history[set][e.offset..e.offset + e.len].copy_from_slice(&v);
        }
        self.net.copy_from(&weights).map_err(|e| Error::InFile {
            path: path.to_path_buf(),
            source: Box::new(e.in_file(&learned)),
        })?;
        self.updater.restore(UpdaterState {
            iter: state.iter().max(0) as u64,
            current_step: state.current_step().max(0) as usize,
            history,
        })?;
        self.losses.clear();
        Ok(())
    }
}
