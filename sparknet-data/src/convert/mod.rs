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
/// [`crate::Error::Io`] naming `path`; [`crate::Error::BadSource`] for a corrupt gzip stream.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    gunzip_if_gz(std::fs::read(path).at(path)?, path)
}

/// Gunzips `raw` when it starts with the gzip magic (`1f 8b`), else returns it as it is; `path`
/// names the file in errors.
///
/// # Errors
/// [`crate::Error::BadSource`] naming `path` for a corrupt or truncated gzip stream.
pub fn gunzip_if_gz(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| {
            crate::Error::BadSource {
                path: path.to_path_buf(),
                reason: format!("corrupt or truncated gzip stream: {e}"),
            }
        })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}
