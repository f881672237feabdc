//! What the loop reports: an [`Event`] at display, test and snapshot points (and progress
//! ticks), and the run's [`Summary`].

use std::path::PathBuf;

use crate::eval::TestScores;

/// A record from rank 0: a report (one JSON line) at display, test and snapshot points, or a
/// progress tick after every other round.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// True for a progress tick: only `round`, `iter`, `loss` (rank 0's last step, not reduced)
    /// and `lr` are set, and nothing should be logged.
    pub tick: bool,
    /// Averaging rounds (or gradient-sync steps) completed.
    pub round: u64,
    /// Iterations per worker completed.
    pub iter: u64,
    /// Mean training loss over ranks and steps since the previous event (`None` before training).
    pub loss: Option<f64>,
    /// The learning rate of the last step.
    pub lr: Option<f32>,
    /// Seconds since the previous event in solver steps (minus data wait).
    pub compute: f64,
    /// Seconds in communication rounds (allreduce, including any configured delay).
    pub allreduce: f64,
    /// Seconds waiting for training data.
    pub data_wait: f64,
    /// Seconds testing.
    pub eval: f64,
    /// Wall seconds since the loop started.
    pub seconds: f64,
    /// Test scores, at test points.
    pub test: Option<TestScores>,
    /// Snapshot files written at this point.
    pub snapshot: Vec<PathBuf>,
    /// Problems that did not stop the run (a snapshot that failed and was retried, or written
    /// to a fallback path), in words naming the files.
    pub warnings: Vec<String>,
}

impl Event {
    /// The event as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("round".into(), self.round.into());
        m.insert("iter".into(), self.iter.into());
        if let Some(l) = self.loss {
            m.insert("loss".into(), l.into());
        }
        if let Some(lr) = self.lr {
            m.insert("lr".into(), f64::from(lr).into());
        }
        for (k, v) in [
            ("compute", self.compute),
            ("allreduce", self.allreduce),
            ("data_wait", self.data_wait),
            ("eval", self.eval),
            ("seconds", self.seconds),
        ] {
            m.insert(k.into(), serde_json::json!(v));
        }
        if let Some(t) = &self.test {
            if let Some(a) = t.accuracy() {
                m.insert("accuracy".into(), a.into());
            }
            m.insert("test".into(), serde_json::Value::Object(t.to_json()));
        }
        if !self.snapshot.is_empty() {
            let files: Vec<String> =
                self.snapshot.iter().map(|p| p.display().to_string()).collect();
            m.insert("snapshot".into(), files.into());
        }
        if !self.warnings.is_empty() {
            m.insert("warning".into(), self.warnings.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

/// The end of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Workers (ranks) in the group.
    pub workers: usize,
    /// Iterations per worker done.
    pub iter: u64,
    /// Rounds done.
    pub rounds: u64,
    /// The final test (`None` when the net has no test data).
    pub test: Option<TestScores>,
    /// Wall seconds of the whole loop.
    pub seconds: f64,
    /// Total seconds in communication.
    pub allreduce: f64,
    /// True when the time budget ended the run before `max_iter`.
    pub stopped_by_time: bool,
    /// True when a periodic test reached
    /// [`LoopConfig::target_accuracy`](super::LoopConfig::target_accuracy) before `max_iter`.
    pub reached_target: bool,
    /// True when [`LoopConfig::stop`](super::LoopConfig::stop) ended the run (after a snapshot, without a final test).
    pub interrupted: bool,
}
