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
    compute_mean_window(ds, None, skip_corrupt, progress)
}

/// The smallest height and width over the records' stored shapes (read from the shard indexes,
/// no decoding): the largest centre window every record has.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty dataset; index errors.
pub fn smallest_size(ds: &Dataset) -> Result<(usize, usize)> {
    let mut min: Option<(usize, usize)> = None;
    for shard in ds.shards() {
        for i in 0..shard.len() {
            let [_, h, w] = shard.entry(i)?.shape;
            let (h, w) = (h as usize, w as usize);
            min = Some(min.map_or((h, w), |(a, b)| (a.min(h), b.min(w))));
        }
    }
    min.ok_or_else(|| Error::InvalidArgument(format!("{}: dataset is empty", ds.dir().display())))
}

/// As [`compute_mean`], but over each record's central `height x width` window when `window` is
/// given, so that datasets whose records differ in size (ImageNet resized to a shorter side of
/// 256) still get a mean: the window of a record of `h x w` starts at row `(h - height) / 2`,
/// column `(w - width) / 2`. Caffe's `compute_image_mean` has no such option (it requires equal
/// sizes); with `window: None` this is exactly [`compute_mean`].
///
/// ```
/// use sparknet_data::{ChannelOrder, Dataset, DatasetConfig, DatasetWriter, Encoding};
/// use sparknet_data::mean::{compute_mean_window, smallest_size};
/// # let dir = tempfile::tempdir()?;
/// let config = DatasetConfig {
///     encoding: Encoding::RawU8, channel_order: ChannelOrder::Gray, classes: vec![], shard_size: 8,
/// };
/// let mut w = DatasetWriter::create(dir.path(), config)?;
/// w.append(0, [1, 1, 3], &[9, 2, 9])?; // 1x3: centre pixel 2
/// w.append(0, [1, 3, 1], &[9, 4, 9])?; // 3x1: centre pixel 4
/// w.finish()?;
/// let ds = Dataset::open_mapped(dir.path())?;
/// assert_eq!(smallest_size(&ds)?, (1, 1));
/// let r = compute_mean_window(&ds, Some((1, 1)), false, &|_| {})?;
/// assert_eq!((r.blob.shape.clone(), r.blob.data.clone()), (vec![1, 1, 1, 1], vec![3.0]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`compute_mean`]; with a window, a record smaller than it is an [`Error::BadRecord`].
pub fn compute_mean_window(
    ds: &Dataset,
    window: Option<(usize, usize)>,
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
    let (c, h, w) = match window {
        Some((wh, ww)) if wh == 0 || ww == 0 => {
            return Err(Error::InvalidArgument(format!("mean window {wh}x{ww} is empty")));
        }
        Some((wh, ww)) => (first.0, wh, ww),
        None => first,
    };
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
                    let fits = match window {
                        None => (px.c, px.h, px.w) == (c, h, w),
                        Some(_) => px.c == c && px.h >= h && px.w >= w,
                    };
                    if !fits {
                        let want = if window.is_some() { "is smaller than the window" } else { "differs from" };
                        return Err(bad(i, format!("shape {}x{}x{} {want} {c}x{h}x{w}", px.c, px.h, px.w)));
                    }
                    let (y0, x0) = ((px.h - h) / 2, (px.w - w) / 2);
                    let mut at = 0;
                    for ch in 0..c {
                        for y in y0..y0 + h {
                            for x in x0..x0 + w {
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
