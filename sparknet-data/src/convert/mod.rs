//! Converters from public dataset formats into sparknet-data datasets.

pub mod cifar;
pub mod imagenet;
pub mod images;
pub mod mnist;
pub mod synthetic;
pub mod synthetic_imagenet;

use std::io::Read;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Reads a file, gunzipping it when it starts with the gzip magic (`1f 8b`).
///
/// # Errors
/// [`crate::Error::Io`] naming `path` (also for a corrupt gzip stream).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).at(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).at(path)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}
