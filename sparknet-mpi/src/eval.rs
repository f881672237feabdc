//! Testing a net on its TEST-phase data: every record of this rank's partition once, the scalar
//! outputs (accuracy, loss) averaged over records and summed over ranks, so that `K` ranks report
//! exactly the accuracy one process computes on the whole test set.

use std::time::{Duration, Instant};

use sparknet_net::Net;

use crate::bind::PhaseData;
use crate::{Collective, Error, Result};

/// The outcome of one test pass.
#[derive(Clone, Debug, PartialEq)]
pub struct TestScores {
    /// The net's scalar outputs (for LeNet: `accuracy`, `loss`), in the net's output order.
    pub outputs: Vec<(String, f64)>,
    /// Records tested, over all ranks.
    pub records: u64,
    /// Wall time of this rank's pass (including the reduction).
    pub seconds: f64,
}

impl TestScores {
    /// The output named `name`, if the net has it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.outputs.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }

    /// The accuracy: the output named `accuracy`, else the first output whose name contains
    /// `acc`.
    pub fn accuracy(&self) -> Option<f64> {
        self.get("accuracy")
            .or_else(|| self.outputs.iter().find(|(n, _)| n.contains("acc")).map(|&(_, v)| v))
    }

    /// The scores as a JSON object (`{"accuracy": .., "loss": .., "records": ..}`).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        for (n, v) in &self.outputs {
            m.insert(n.clone(), serde_json::json!(v));
        }
        m.insert("records".into(), serde_json::json!(self.records));
        m
    }
}

/// Runs `net` (a TEST-phase net) over every record of this rank's partition of `data` once (the
/// last batch cut to the records left), and averages each scalar output over records, summed over
/// the ranks of `comm`. Every rank must call it (it ends with one reduction).
///
/// # Errors
/// [`Error::NoTestData`] when the phase has no data, [`Error::Config`] when the net has no scalar
/// output; loader, net and
/// collective errors.
pub fn evaluate<C: Collective + ?Sized>(
    net: &mut Net,
    data: &mut PhaseData,
    comm: &C,
) -> Result<TestScores> {
    let start = Instant::now();
    if data.is_empty() {
        return Err(Error::NoTestData);
    }
    let outputs = net.output_names();
    let (bs, total) = (data.batch_size(), data.records());
    let mut sums = vec![0f64; outputs.len() + 1];
    let mut done = 0usize;
    while done < total {
        let n = bs.min(total - done);
        let inputs = data.next_inputs(Some(n))?;
        net.forward(&inputs)?;
        for (i, name) in outputs.iter().enumerate() {
            let blob = net.blob(name).ok_or_else(|| Error::Config(format!("no blob '{name}'")))?;
            if blob.elem_count() == 1 {
                let v = blob.flatten_all()?.to_vec1::<f32>()?[0];
                sums[i] += f64::from(v) * n as f64;
            } else {
                sums[i] = f64::NAN;
            }
        }
        done += n;
    }
    sums[outputs.len()] = done as f64;
    comm.all_reduce_sum_f64(&mut sums)?;
    let records = sums[outputs.len()];
    let scalar: Vec<(String, f64)> = outputs
        .into_iter()
        .zip(&sums)
        .filter(|(_, s)| !s.is_nan())
        .map(|(n, s)| (n, s / records.max(1.0)))
        .collect();
    if scalar.is_empty() {
        return Err(Error::Config("the TEST net has no scalar output (accuracy or loss)".into()));
    }
    Ok(TestScores {
        outputs: scalar,
        records: records as u64,
        seconds: Duration::as_secs_f64(&start.elapsed()),
    })
}
