//! The per-pixel mean image of a dataset (Caffe's `compute_image_mean`).

use rayon::prelude::*;

use crate::decode::{ColorMode, Decoder};
use crate::error::{Error, Result};
use crate::proto::BlobProto;
use crate::reader::Dataset;

/// The result of [`compute_mean`].
#[derive(Debug)]
pub struct MeanReport {
    /// The mean as a `[1, c, h, w]` blob, ready for [`BlobProto::write`].
    pub blob: BlobProto,
    /// Records averaged.
    pub records: usize,
    /// The errors of records skipped (only with `skip_corrupt`).
    pub skipped: Vec<Error>,
}

/// Averages every record's decoded pixels (CHW, in the dataset's channel order; encoded records
/// decode to BGR as in Caffe). Sums are kept in `f64` per pixel, so byte-valued datasets give the
/// same mean for any thread count. `progress` is called with the number of records just done.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty dataset; [`Error::BadRecord`] naming the shard and
/// record for an undecodable record or one whose shape differs from the first; CRC errors. With
/// `skip_corrupt`, undecodable and CRC-failing records are skipped and listed instead.
pub fn compute_mean(
    ds: &Dataset,
    skip_corrupt: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<MeanReport> {
    if ds.is_empty() {
        return Err(Error::InvalidArgument(format!("{}: dataset is empty", ds.dir().display())));
    }
    let bad = |i: usize, reason: String| {
        let (k, j) = ds.locate(i).unwrap_or((0, i));
        Error::BadRecord { path: ds.shards()[k].path().to_path_buf(), record: j, reason }
    };
    let mut d = Decoder::new();
    let first = (0..ds.len())
        .find_map(|i| {
            let rec = ds.get(i).ok()?;
            d.pixels(&rec, ColorMode::Native).ok().map(|p| (p.c, p.h, p.w))
        })
        .ok_or_else(|| bad(0, "no record could be decoded".into()))?;
    let (c, h, w) = first;
    let n = c * h * w;
    const CHUNK: usize = 256;
    let chunks = ds.len().div_ceil(CHUNK);
    let (sum, count, skipped) = (0..chunks)
        .into_par_iter()
        .map(|k| {
            let mut sum = vec![0f64; n];
            let mut count = 0usize;
            let mut skipped = Vec::new();
            let mut d = Decoder::new();
            for i in k * CHUNK..((k + 1) * CHUNK).min(ds.len()) {
                let one = ds.get(i).and_then(|rec| {
                    let px = d.pixels(&rec, ColorMode::Native).map_err(|r| bad(i, r))?;
                    if (px.c, px.h, px.w) != (c, h, w) {
                        return Err(bad(i, format!("shape {}x{}x{} differs from {c}x{h}x{w}", px.c, px.h, px.w)));
                    }
                    let mut at = 0;
                    for ch in 0..c {
                        for y in 0..h {
                            for x in 0..w {
                                sum[at] += px.at(ch, y, x) as f64;
                                at += 1;
                            }
                        }
                    }
                    Ok(())
                });
                match one {
                    Ok(()) => count += 1,
                    Err(e) if skip_corrupt && !matches!(e, Error::BadRecord { ref reason, .. } if reason.starts_with("shape")) => {
                        skipped.push(e)
                    }
                    Err(e) => return Err(e),
                }
            }
            progress(((k + 1) * CHUNK).min(ds.len()) as u64 - (k * CHUNK) as u64);
            Ok((sum, count, skipped))
        })
        .try_reduce(
            || (vec![0f64; n], 0, Vec::new()),
            |mut a, b| {
                for (x, y) in a.0.iter_mut().zip(&b.0) {
                    *x += y;
                }
                a.2.extend(b.2);
                Ok((a.0, a.1 + b.1, a.2))
            },
        )?;
    let data = sum.iter().map(|s| (s / count as f64) as f32).collect();
    Ok(MeanReport { blob: BlobProto::mean(c, h, w, data), records: count, skipped })
}
