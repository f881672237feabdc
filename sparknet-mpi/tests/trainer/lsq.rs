//! A least-squares learner (plain SGD on `0.5 * mean (x.w - y)^2` over generated rows) as a
//! [`Worker`]: its expected trajectories are easy to compute by hand, so the loop's tests and the
//! `mpi_train` example check the trainer against them. Shared by both (the example includes this
//! file with `#[path]`), so each may leave parts unused.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use sparknet_mpi::eval::TestScores;
use sparknet_mpi::trainer::Worker;
use sparknet_mpi::{Collective, Error, Result};

pub const DIM: usize = 5;
pub const ROWS: usize = 64;
/// A test row counts as right (for the `accuracy` output) when predicted within this.
pub const HIT: f32 = 0.25;

pub fn row(i: usize) -> ([f32; DIM], f32) {
    let mut x = [0f32; DIM];
    let mut s = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for v in &mut x {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        *v = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
    }
    let y = x.iter().enumerate().map(|(j, v)| v * (j as f32 + 1.0)).sum::<f32>() + 0.25;
    (x, y)
}

/// SGD on least squares; the batch of step `t` is `batches(t)` (row indices).
pub struct Lsq {
    pub w: Vec<f32>,
    pub g: Vec<f32>,
    pub iter: u64,
    pub lr: f32,
    pub batches: Box<dyn Fn(u64) -> Vec<usize> + Send>,
    pub fail_at: Option<u64>,
    pub test_rows: std::ops::Range<usize>,
    pub snapshots: u64,
}

impl Lsq {
    pub fn new(batches: impl Fn(u64) -> Vec<usize> + Send + 'static) -> Lsq {
        Lsq {
            w: (0..DIM).map(|j| j as f32 * 0.1).collect(),
            g: vec![0.0; DIM],
            iter: 0,
            lr: 0.5,
            batches: Box::new(batches),
            fail_at: None,
            test_rows: 0..ROWS,
            snapshots: 0,
        }
    }

    /// Rank `r` of `k`: batches of `b` rows cycling through its contiguous partition.
    pub fn partitioned(r: usize, k: usize, b: usize) -> Lsq {
        let part = ROWS / k;
        let mut w =
            Lsq::new(move |t| (0..b).map(|i| r * part + (t as usize * b + i) % part).collect());
        w.test_rows = r * part..(r + 1) * part;
        w
    }
}

impl Worker for Lsq {
    fn iter(&self) -> u64 {
        self.iter
    }
    fn set_iter(&mut self, iter: u64) {
        self.iter = iter;
    }
    fn params(&mut self) -> Result<&mut [f32]> {
        Ok(&mut self.w)
    }
    fn params_changed(&mut self) -> Result<()> {
        Ok(())
    }
    fn compute_gradients(&mut self) -> Result<f32> {
        if self.fail_at == Some(self.iter) {
            return Err(Error::Config(format!("batch {} is corrupt", self.iter)));
        }
        let rows = (self.batches)(self.iter);
        self.g.fill(0.0);
        let mut loss = 0.0;
        for &i in &rows {
            let (x, y) = row(i);
            let r = x.iter().zip(&self.w).map(|(a, b)| a * b).sum::<f32>() - y;
            loss += 0.5 * r * r;
            for (g, xv) in self.g.iter_mut().zip(x) {
                *g += r * xv / rows.len() as f32;
            }
        }
        Ok(loss / rows.len() as f32)
    }
    fn grads(&mut self) -> Result<&mut [f32]> {
        Ok(&mut self.g)
    }
    fn apply_gradients(&mut self) -> Result<f32> {
        for (w, g) in self.w.iter_mut().zip(&self.g) {
            *w -= self.lr * g;
        }
        self.iter += 1;
        Ok(self.lr)
    }
    fn data_wait(&self) -> Duration {
        Duration::ZERO
    }
    fn test(&mut self, comm: &dyn Collective) -> Result<TestScores> {
        // Loss, rows, and rows predicted within `HIT` (the "accuracy").
        let mut sums = [0f64; 3];
        for i in self.test_rows.clone() {
            let (x, y) = row(i);
            let r = x.iter().zip(&self.w).map(|(a, b)| a * b).sum::<f32>() - y;
            sums[0] += f64::from(0.5 * r * r);
            sums[1] += 1.0;
            sums[2] += f64::from(u8::from(r.abs() < HIT));
        }
        comm.all_reduce_sum_f64(&mut sums)?;
        Ok(TestScores {
            outputs: vec![
                ("loss".into(), sums[0] / sums[1]),
                ("accuracy".into(), sums[2] / sums[1]),
            ],
            records: sums[1] as u64,
            seconds: 0.0,
        })
    }
    fn snapshot(&mut self) -> Result<Vec<PathBuf>> {
        self.snapshots += 1;
        Ok(vec![PathBuf::from(format!("lsq_iter_{}.caffemodel", self.iter))])
    }
}
