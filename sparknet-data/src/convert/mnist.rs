//! MNIST IDX files (gzipped or raw) to a raw-u8 `1 x 28 x 28` dataset (Caffe's `convert_mnist_data`).
//!
//! IDX layout (big-endian): images `0x00000803`, count, rows, cols, then `count*rows*cols` bytes;
//! labels `0x00000801`, count, then `count` bytes.

use std::path::Path;

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
    parse_idx_images(read_maybe_gz(path)?, path)
}

/// The magic number found at the start of `b`, for error messages.
fn magic_text(b: &[u8]) -> String {
    match b.get(..4) {
        Some(m) => format!("{:#010x}", be32(m, 0)),
        None => format!("only {} bytes", b.len()),
    }
}

/// Parses the (already gunzipped) bytes of an IDX3 image file; `path` names it in errors.
///
/// # Errors
/// As [`read_idx_images`].
pub fn parse_idx_images(mut b: Vec<u8>, path: &Path) -> Result<IdxImages> {
    if b.len() < 16 || be32(&b, 0) != 0x0803 {
        return Err(bad(
            path,
            format!("not an IDX image file: magic {}, expected 0x00000803", magic_text(&b)),
        ));
    }
    let (n, rows, cols) = (be32(&b, 4) as usize, be32(&b, 8) as usize, be32(&b, 12) as usize);
    if rows == 0 || cols == 0 {
        return Err(bad(path, format!("header says images of {rows}x{cols} pixels")));
    }
    let need =
        n.checked_mul(rows).and_then(|x| x.checked_mul(cols)).and_then(|x| x.checked_add(16));
    if need != Some(b.len()) {
        return Err(bad(
            path,
            format!("header says {n} images of {rows}x{cols} but the file has {} bytes", b.len()),
        ));
    }
    b.drain(..16);
    Ok(IdxImages { rows, cols, pixels: b })
}

/// Reads an IDX1 label file.
///
/// # Errors
/// [`Error::BadSource`] naming the file for a wrong magic or length.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    parse_idx_labels(read_maybe_gz(path)?, path)
}

/// Parses the (already gunzipped) bytes of an IDX1 label file; `path` names it in errors.
///
/// # Errors
/// As [`read_idx_labels`]; also [`Error::BadRecord`] naming the file and record for a label
/// above 9.
pub fn parse_idx_labels(mut b: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if b.len() < 8 || be32(&b, 0) != 0x0801 {
        return Err(bad(
            path,
            format!("not an IDX label file: magic {}, expected 0x00000801", magic_text(&b)),
        ));
    }
    let n = be32(&b, 4) as usize;
    if Some(b.len()) != n.checked_add(8) {
        return Err(bad(
            path,
            format!("header says {n} labels but the file has {} bytes", b.len()),
        ));
    }
    b.drain(..8);
    if let Some(i) = b.iter().position(|&l| l > 9) {
        return Err(Error::BadRecord {
            path: path.to_path_buf(),
            record: i,
            reason: format!("label {} > 9", b[i]),
        });
    }
    Ok(b)
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
    let n = limit.unwrap_or(usize::MAX).min(imgs.len());
    let classes = (0..10).map(|d| d.to_string()).collect();
    let config = DatasetConfig {
        encoding: Encoding::RawU8,
        channel_order: ChannelOrder::Gray,
        classes,
        shard_size,
    };
    let mut w = DatasetWriter::create(out, config)?;
    let shape = [1, imgs.rows as u32, imgs.cols as u32];
    for (i, &label) in labs.iter().enumerate().take(n) {
        w.append(label as u32, shape, imgs.image(i))?;
        if i % 1024 == 1023 {
            progress(1024);
        }
    }
    progress((n % 1024) as u64);
    w.finish()
}
