//! Per-rank partitions and seeded per-epoch shuffles.
//!
//! Both are pure functions of `(len, rank, world, seed, epoch)`, computed on one thread, so every
//! rank and every thread count sees the same order. The random generator is SplitMix64, written
//! out here so the order never changes with a dependency's version.

use std::ops::Range;

use crate::error::{Error, Result};

/// SplitMix64: a tiny, fast, fully specified 64-bit generator (Steele, Lea & Flood, 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`) by the multiply-high method (bias below `n / 2^64`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Derives one seed from several values (each step is a SplitMix64 finalisation).
pub fn mix(parts: &[u64]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for &p in parts {
        h = SplitMix64::new(h ^ p).next_u64();
    }
    h
}

/// The contiguous block of `0..len` that `rank` of `world` owns: rank `r` gets
/// `[len*r/world, len*(r+1)/world)`, so the blocks cover every index exactly once and their sizes
/// differ by at most one.
///
/// # Errors
/// [`Error::InvalidArgument`] when `world == 0` or `rank >= world`.
pub fn partition(len: usize, rank: usize, world: usize) -> Result<Range<usize>> {
    if world == 0 || rank >= world {
        return Err(Error::InvalidArgument(format!(
            "rank {rank} is not in a world of size {world}"
        )));
    }
    let at = |r: usize| ((len as u128 * r as u128) / world as u128) as usize;
    Ok(at(rank)..at(rank + 1))
}

/// Fills `out` with a permutation of `0..len` that depends only on `(seed, epoch)`
/// (Fisher–Yates driven by SplitMix64).
pub fn permutation_into(len: usize, seed: u64, epoch: u64, out: &mut Vec<usize>) {
    out.clear();
    out.extend(0..len);
    let mut rng = SplitMix64::new(mix(&[seed, epoch]));
    for i in (1..len).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        out.swap(i, j);
    }
}

/// Which records one rank reads in each epoch.
///
/// Without shuffling a rank reads its [`partition`] in order. With a seed, every rank computes
/// the same global permutation of the whole dataset for the epoch and takes its block of it, so
/// the ranks still split the dataset exactly, but see different records each epoch.
#[derive(Clone, Debug)]
pub struct Sampler {
    len: usize,
    range: Range<usize>,
    shuffle: Option<u64>,
}

impl Sampler {
    /// A sampler over `len` records for `rank` of `world`, shuffled from `seed` when given.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `world == 0` or `rank >= world`.
    pub fn new(len: usize, rank: usize, world: usize, shuffle: Option<u64>) -> Result<Self> {
        Ok(Sampler { len, range: partition(len, rank, world)?, shuffle })
    }

    /// Records this rank reads per epoch.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// True when this rank reads nothing.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// This rank's global record indices for `epoch`, written into `out` (reused across epochs).
    pub fn epoch_into(&self, epoch: u64, out: &mut Vec<usize>) {
        match self.shuffle {
            None => {
                out.clear();
                out.extend(self.range.clone());
            }
            Some(seed) => {
                permutation_into(self.len, seed, epoch, out);
                out.truncate(self.range.end);
                out.drain(..self.range.start);
            }
        }
    }

    /// This rank's global record indices for `epoch`.
    pub fn epoch(&self, epoch: u64) -> Vec<usize> {
        let mut v = Vec::new();
        self.epoch_into(epoch, &mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 0 (from the published reference implementation).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn bad_rank_is_an_error() {
        assert!(matches!(partition(10, 2, 2), Err(Error::InvalidArgument(_))));
        assert!(matches!(partition(10, 0, 0), Err(Error::InvalidArgument(_))));
    }
}
