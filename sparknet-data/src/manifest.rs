//! The dataset manifest (`manifest.json`): which shards make up the dataset and what they hold.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::format::{Encoding, VERSION};

/// File name of the manifest inside a dataset directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Value of [`Manifest::format`].
pub const FORMAT_NAME: &str = "sparknet-data";

/// Channel order of the pixels a dataset decodes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    /// One channel.
    Gray,
    /// Red, green, blue planes (CIFAR-10's binary order, kept by Caffe's `convert_cifar_data`).
    Rgb,
    /// Blue, green, red planes (what Caffe's OpenCV-based `convert_imageset` stores, and what
    /// encoded records decode to).
    Bgr,
}

/// One shard as listed in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name relative to the dataset directory.
    pub file: String,
    /// Number of records in the shard.
    pub records: u64,
    /// Size of the shard file in bytes.
    pub bytes: u64,
}

/// The small JSON document that names a dataset's shards, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Shard format version ([`VERSION`]).
    pub version: u32,
    /// Payload encoding of every record.
    pub encoding: Encoding,
    /// Channel order of the decoded pixels.
    pub channel_order: ChannelOrder,
    /// `[c, h, w]` when every record has this shape, else `None`.
    pub shape: Option<[u32; 3]>,
    /// Class names; labels index this list. Empty when the classes are unnamed and unbounded.
    pub classes: Vec<String>,
    /// Total number of records.
    pub records: u64,
    /// The shards, in record order.
    pub shards: Vec<ShardInfo>,
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read, [`Error::Manifest`] if it is not a valid manifest.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).at(&path)?;
        Self::parse(&bytes, &path)
    }

    /// Parses and checks manifest bytes; `path` names the manifest in errors.
    ///
    /// # Errors
    /// [`Error::Manifest`] naming `path` if the bytes are not UTF-8 JSON of a valid manifest.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::Manifest { path: path.to_path_buf(), reason: e.to_string() })?;
        m.check(path)?;
        Ok(m)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| Err(Error::Manifest { path: path.to_path_buf(), reason });
        if self.format != FORMAT_NAME {
            return bad(format!("format is {:?}, expected {FORMAT_NAME:?}", self.format));
        }
        if self.version != VERSION {
            return bad(format!(
                "version {} is not supported (this reader reads {VERSION})",
                self.version
            ));
        }
        let sum = self.shards.iter().try_fold(0u64, |acc, s| acc.checked_add(s.records));
        if sum != Some(self.records) {
            let sum = sum.map_or_else(|| "more than 2^64".to_string(), |s| s.to_string());
            return bad(format!(
                "shards hold {sum} records but the manifest says {}",
                self.records
            ));
        }
        for s in &self.shards {
            let p = Path::new(&s.file);
            if p.components().count() != 1 || p.is_absolute() || s.file.starts_with('.') {
                return bad(format!("shard name {:?} is not a plain file name", s.file));
            }
        }
        Ok(())
    }

    /// The path of every shard under `dir`.
    pub fn shard_paths(&self, dir: &Path) -> Vec<PathBuf> {
        self.shards.iter().map(|s| dir.join(&s.file)).collect()
    }
}
