//! MNIST IDX files (gzipped or raw) to a raw-u8 `1 x 28 x 28` dataset (Caffe's `convert_mnist_data`).
//!
//! IDX layout (big-endian): images `0x00000803`, count, rows, cols, then `count*rows*cols` bytes;
//! labels `0x00000801`, count, then `count` bytes.

use std::path::{Path, PathBuf};

use crate::convert::read_maybe_gz;
use crate::error::{Error, Result};
use crate::format::Encoding;
use crate::manifest::{ChannelOrder, Manifest};
use crate::writer::{DatasetConfig, DatasetWriter};

/// An IDX image file's contents.
#[derive(Clone, Debug)]
pub struct IdxImages {
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count * rows * cols` pixels, image after image.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / (self.rows * self.cols).max(1)
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image `i`'s pixels.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn bad(path: &Path, reason: String) -> Error {
    Error::BadSource { path: path.to_path_buf(), reason }
}

/// Reads an IDX3 image file.
///
/// # Errors
/// [`Error::BadSource`] naming the file for a wrong magic or a length that disagrees with the header.
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    let b = read_maybe_gz(path)?;
    if b.len() < 16 || be32(&b, 0) != 0x0803 {
        return Err(bad(path, "not an IDX image file (magic 0x00000803)".into()));
    }
    let (n, rows, cols) = (be32(&b, 4) as usize, be32(&b, 8) as usize, be32(&b, 12) as usize);
    let need =
        n.checked_mul(rows).and_then(|x| x.checked_mul(cols)).and_then(|x| x.checked_add(16));
    if need != Some(b.len()) {
        return Err(bad(
            path,
            format!("header says {n} images of {rows}x{cols} but the file has {} bytes", b.len()),
        ));
    }
    Ok(IdxImages { rows, cols, pixels: b[16..].to_vec() })
}

/// Reads an IDX1 label file.
///
/// # Errors
/// [`Error::BadSource`] naming the file for a wrong magic or length.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let b = read_maybe_gz(path)?;
    if b.len() < 8 || be32(&b, 0) != 0x0801 {
        return Err(bad(path, "not an IDX label file (magic 0x00000801)".into()));
    }
    let n = be32(&b, 4) as usize;
    if b.len() != 8 + n {
        return Err(bad(
            path,
            format!("header says {n} labels but the file has {} bytes", b.len()),
        ));
    }
    Ok(b[8..].to_vec())
}

/// Converts an MNIST image/label pair; `limit` keeps only the first records.
///
/// # Errors
/// Source errors as above, [`Error::BadSource`] when counts differ or a label is above 9,
/// writer errors.
pub fn convert_mnist(
    images: &Path,
    labels: &Path,
    out: &Path,
    shard_size: usize,
    limit: Option<usize>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Manifest> {
    let imgs = read_idx_images(images)?;
    let labs = read_idx_labels(labels)?;
    if imgs.len() != labs.len() {
        return Err(bad(
            labels,
            format!("{} labels for {} images in {}", labs.len(), imgs.len(), images.display()),
        ));
    }
    let classes = (0..10).map(|d| d.to_string()).collect();
    let config = DatasetConfig {
        encoding: Encoding::RawU8,
        channel_order: ChannelOrder::Gray,
        classes,
        shard_size,
    };
    let mut w = DatasetWriter::create(out, config)?;
    let n = limit.unwrap_or(usize::MAX).min(imgs.len());
    let shape = [1, imgs.rows as u32, imgs.cols as u32];
    for (i, &label) in labs.iter().enumerate().take(n) {
        if label > 9 {
            return Err(Error::BadRecord {
                path: PathBuf::from(labels),
                record: i,
                reason: format!("label {label} > 9"),
            });
        }
        w.append(label as u32, shape, imgs.image(i))?;
        if i % 1024 == 1023 {
            progress(1024);
        }
    }
    progress((n % 1024) as u64);
    w.finish()
}
