//! CIFAR-10 binary batches (gzipped or raw) to a raw-u8 `3 x 32 x 32` RGB dataset (Caffe's
//! `convert_cifar_data`, which keeps the file's R, G, B planes).
//!
//! Each batch file is a sequence of 3073-byte records: one label byte (0..=9), then 1024 red,
//! 1024 green and 1024 blue bytes, row-major.

use std::path::{Path, PathBuf};

use crate::convert::read_maybe_gz;
use crate::error::{Error, IoContext, Result};
use crate::format::Encoding;
use crate::manifest::{ChannelOrder, Manifest};
use crate::writer::{DatasetConfig, DatasetWriter};

/// Bytes per CIFAR-10 record.
pub const RECORD_LEN: usize = 1 + 3 * 32 * 32;

/// The standard class names, used when `batches.meta.txt` is absent.
pub const CLASS_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Which part of CIFAR-10 to convert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `data_batch_1` .. `data_batch_5` (50,000 images).
    Train,
    /// `test_batch` (10,000 images).
    Test,
}

/// The batch files of `split` under `dir`, each `NAME.bin` or `NAME.bin.gz`.
///
/// # Errors
/// [`Error::BadSource`] naming the missing file.
pub fn batch_files(dir: &Path, split: Split) -> Result<Vec<PathBuf>> {
    let names: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}")).collect(),
        Split::Test => vec!["test_batch".to_string()],
    };
    names
        .iter()
        .map(|n| {
            let plain = dir.join(format!("{n}.bin"));
            let gz = dir.join(format!("{n}.bin.gz"));
            if plain.is_file() {
                Ok(plain)
            } else if gz.is_file() {
                Ok(gz)
            } else {
                Err(Error::BadSource {
                    path: plain,
                    reason: "CIFAR-10 batch not found (nor .bin.gz)".into(),
                })
            }
        })
        .collect()
}

/// Reads one batch file and checks its length and labels.
///
/// # Errors
/// [`Error::BadSource`] for a length that is not a multiple of 3073, [`Error::BadRecord`] for a
/// label above 9.
pub fn read_batch(path: &Path) -> Result<Vec<u8>> {
    parse_batch(read_maybe_gz(path)?, path)
}

/// Checks the (already gunzipped) bytes of a batch file; `path` names it in errors.
///
/// # Errors
/// As [`read_batch`].
pub fn parse_batch(b: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if b.is_empty() || !b.len().is_multiple_of(RECORD_LEN) {
        let whole = b.len() / RECORD_LEN;
        return Err(Error::BadSource {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes is not a whole number of {RECORD_LEN}-byte records \
                 ({whole} whole records and {} bytes over: truncated or not a CIFAR-10 batch?)",
                b.len(),
                b.len() % RECORD_LEN
            ),
        });
    }
    if let Some(i) = b.chunks_exact(RECORD_LEN).position(|r| r[0] > 9) {
        return Err(Error::BadRecord {
            path: path.to_path_buf(),
            record: i,
            reason: format!("label {} > 9", b[i * RECORD_LEN]),
        });
    }
    Ok(b)
}

/// Converts a CIFAR-10 split; `limit` keeps only the first records.
///
/// # Errors
/// Source and writer errors.
pub fn convert_cifar10(
    dir: &Path,
    split: Split,
    out: &Path,
    shard_size: usize,
    limit: Option<usize>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Manifest> {
    let files = batch_files(dir, split)?;
    let meta = dir.join("batches.meta.txt");
    let classes: Vec<String> = if meta.is_file() {
        let text = std::fs::read_to_string(&meta).at(&meta)?;
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
    } else {
        CLASS_NAMES.iter().map(|s| s.to_string()).collect()
    };
    if classes.len() != 10 {
        return Err(Error::BadSource {
            path: meta,
            reason: format!("{} class names, expected 10", classes.len()),
        });
    }
    let config = DatasetConfig {
        encoding: Encoding::RawU8,
        channel_order: ChannelOrder::Rgb,
        classes,
        shard_size,
    };
    // A batch of the wrong length is found before anything is written (the length of a plain
    // file is known without reading it; gzipped ones are checked as they are read, and the
    // abandoned writer then leaves nothing behind).
    for f in &files {
        let len = std::fs::metadata(f).at(f)?.len();
        let gz = f.extension().is_some_and(|e| e == "gz");
        if !gz && (len == 0 || !len.is_multiple_of(RECORD_LEN as u64)) {
            read_batch(f)?;
        }
    }
    let mut w = DatasetWriter::create(out, config)?;
    let mut left = limit.unwrap_or(usize::MAX);
    for f in &files {
        if left == 0 {
            break;
        }
        let b = read_batch(f)?;
        for r in b.chunks_exact(RECORD_LEN).take(left) {
            w.append(r[0] as u32, [3, 32, 32], &r[1..])?;
            left -= 1;
        }
        progress((b.len() / RECORD_LEN) as u64);
    }
    w.finish()
}
