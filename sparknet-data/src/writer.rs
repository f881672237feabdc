//! Writing shards and datasets atomically.
//!
//! A shard is written to a temporary file in its final directory, fsynced, then renamed into place.
//! A dataset writer gives its shards names that carry a fresh generation tag, so they never
//! overwrite the shards of the dataset already in the directory; the new `manifest.json` is then
//! written the same way (temporary file, fsync, rename over the old one), with the directory
//! fsynced before (so the shard renames are durable first) and after. The manifest rename is the commit point: a crash before it leaves the old dataset
//! (and maybe some unreferenced new shards), a crash after it leaves the new one. Shards of the
//! previous generation are deleted only after the commit.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::{
    Encoding, Footer, HEADER_LEN, Header, INDEX_ENTRY_LEN, IndexEntry, PAYLOAD_ALIGN, VERSION,
    align_up,
};
use crate::manifest::{ChannelOrder, FORMAT_NAME, MANIFEST_FILE, Manifest, ShardInfo};

const ZEROS: [u8; PAYLOAD_ALIGN as usize] = [0; PAYLOAD_ALIGN as usize];

/// Writes one shard file: records are appended, [`finish`](Self::finish) writes the index and
/// footer, fsyncs and renames the file into place.
pub struct ShardWriter {
    path: PathBuf,
    file: BufWriter<tempfile::NamedTempFile>,
    pos: u64,
    encoding: Encoding,
    entries: Vec<IndexEntry>,
}

impl ShardWriter {
    /// Starts a shard that will appear at `path` once finished.
    ///
    /// # Errors
    /// [`Error::Io`] if the temporary file cannot be created next to `path`.
    pub fn create(path: &Path, encoding: Encoding) -> Result<Self> {
        let dir = parent_dir(path);
        let tmp =
            tempfile::Builder::new().prefix(".shard-").suffix(".tmp").tempfile_in(dir).at(dir)?;
        let mut file = BufWriter::with_capacity(1 << 20, tmp);
        file.write_all(&[0u8; HEADER_LEN]).at(path)?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            file,
            pos: HEADER_LEN as u64,
            encoding,
            entries: Vec::new(),
        })
    }

    /// Number of records appended so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no record has been appended.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends one record.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if a raw or f32 payload's length disagrees with `shape`;
    /// [`Error::Io`] on a write failure.
    pub fn append(&mut self, label: u32, shape: [u32; 3], payload: &[u8]) -> Result<()> {
        if let Some(expected) = self.encoding.expected_len(shape)
            && expected != payload.len() as u64
        {
            return Err(Error::InvalidArgument(format!(
                "{}: record {}: {:?} payload of shape {shape:?} must be {expected} bytes, got {}",
                self.path.display(),
                self.entries.len(),
                self.encoding,
                payload.len()
            )));
        }
        let offset = self.pos;
        self.file.write_all(payload).at(&self.path)?;
        let end = offset + payload.len() as u64;
        let next = align_up(end, PAYLOAD_ALIGN).expect("shard offsets stay far below u64::MAX");
        self.file.write_all(&ZEROS[..(next - end) as usize]).at(&self.path)?;
        self.pos = next;
        self.entries.push(IndexEntry {
            offset,
            length: payload.len() as u64,
            label,
            crc: crc32c::crc32c(payload),
            shape,
        });
        Ok(())
    }

    /// Writes index, footer and header, fsyncs, and renames the shard into place.
    ///
    /// # Errors
    /// [`Error::Io`] on any write, sync or rename failure (the temporary file is then removed).
    pub fn finish(self) -> Result<ShardInfo> {
        let ShardWriter { path, mut file, pos, encoding, entries } = self;
        let index_offset = pos;
        let mut index = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
        for e in &entries {
            index.extend_from_slice(&e.encode());
        }
        file.write_all(&index).at(&path)?;
        let count = entries.len() as u64;
        let footer =
            Footer { index_offset, record_count: count, index_crc: crc32c::crc32c(&index) };
        file.write_all(&footer.encode()).at(&path)?;
        let header = Header {
            version: VERSION,
            flags: 0,
            record_count: count,
            encoding: encoding.code(),
            payload_align: PAYLOAD_ALIGN as u32,
            index_offset,
        };
        let mut tmp = file
            .into_inner()
            .map_err(|e| Error::Io { path: path.clone(), source: e.into_error() })?;
        tmp.seek(SeekFrom::Start(0)).at(&path)?;
        tmp.write_all(&header.encode()).at(&path)?;
        let bytes = tmp.as_file().metadata().at(&path)?.len();
        publishable(tmp.as_file()).at(&path)?;
        tmp.as_file().sync_all().at(&path)?;
        tmp.persist(&path).map_err(|e| Error::Io { path: path.clone(), source: e.error })?;
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(ShardInfo { file, records: count, bytes })
    }
}

/// What a dataset holds, fixed when its writer is created.
#[derive(Clone, Debug)]
pub struct DatasetConfig {
    /// Payload encoding.
    pub encoding: Encoding,
    /// Channel order of the decoded pixels.
    pub channel_order: ChannelOrder,
    /// Class names; when non-empty, every label must be below its length.
    pub classes: Vec<String>,
    /// Records per shard (at least 1).
    pub shard_size: usize,
}

/// Writes a dataset directory: shards of at most `shard_size` records plus the manifest,
/// committed atomically by [`finish`](Self::finish).
pub struct DatasetWriter {
    dir: PathBuf,
    config: DatasetConfig,
    generation: String,
    current: Option<ShardWriter>,
    shards: Vec<ShardInfo>,
    records: u64,
    shape: Option<Option<[u32; 3]>>,
    finished: bool,
    /// True when [`DatasetWriter::create`] made `dir`: an abandoned writer then removes it
    /// again if it is empty, so a failed conversion leaves no trace.
    created_dir: bool,
}

impl DatasetWriter {
    /// Creates `dir` if needed and prepares to write a new generation of the dataset in it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero shard size, [`Error::Io`] if `dir` cannot be created.
    pub fn create(dir: &Path, config: DatasetConfig) -> Result<Self> {
        if config.shard_size == 0 {
            return Err(Error::InvalidArgument("shard size must be at least 1 record".into()));
        }
        let created_dir = !dir.exists();
        std::fs::create_dir_all(dir).at(dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let generation = format!(
            "{:012x}",
            (nanos as u64 ^ (std::process::id() as u64).rotate_left(40)) & 0xffff_ffff_ffff
        );
        Ok(DatasetWriter {
            dir: dir.to_path_buf(),
            config,
            generation,
            current: None,
            shards: Vec::new(),
            records: 0,
            shape: None,
            finished: false,
            created_dir,
        })
    }

    /// Number of records appended so far.
    pub fn len(&self) -> u64 {
        self.records
    }

    /// True when no record has been appended.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Appends one record, starting a new shard when the current one is full.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a label outside the class list or a payload that does not
    /// match its shape; [`Error::Io`] on write failures.
    pub fn append(&mut self, label: u32, shape: [u32; 3], payload: &[u8]) -> Result<()> {
        let n = self.config.classes.len();
        if n > 0 && label as usize >= n {
            return Err(Error::InvalidArgument(format!(
                "{}: record {}: label {label} is out of range for {n} classes",
                self.dir.display(),
                self.records
            )));
        }
        if self.current.as_ref().is_some_and(|w| w.len() >= self.config.shard_size) {
            self.close_shard()?;
        }
        if self.current.is_none() {
            let name = format!("shard-{}-{:05}.spk", self.generation, self.shards.len());
            self.current = Some(ShardWriter::create(&self.dir.join(name), self.config.encoding)?);
        }
        if let Some(w) = self.current.as_mut() {
            w.append(label, shape, payload)?;
        }
        self.shape = Some(match self.shape {
            None => Some(shape),
            Some(s) if s == Some(shape) => s,
            Some(_) => None,
        });
        self.records += 1;
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            self.shards.push(w.finish()?);
        }
        Ok(())
    }

    /// Finishes the last shard, commits the manifest atomically and removes the shards of the
    /// generation it replaced.
    ///
    /// # Errors
    /// [`Error::Io`] on write, sync or rename failures; the previous dataset then stays intact.
    pub fn finish(mut self) -> Result<Manifest> {
        self.close_shard()?;
        let manifest = Manifest {
            format: FORMAT_NAME.to_string(),
            version: VERSION,
            encoding: self.config.encoding,
            channel_order: self.config.channel_order,
            shape: self.shape.flatten(),
            classes: self.config.classes.clone(),
            records: self.records,
            shards: std::mem::take(&mut self.shards),
        };
        let old = Manifest::read(&self.dir).ok();
        let path = self.dir.join(MANIFEST_FILE);
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        // Make the new shards' directory entries durable before the manifest can name them.
        sync_dir(&self.dir)?;
        write_atomic(&path, &json)?;
        sync_dir(&self.dir)?;
        self.finished = true;
        if let Some(old) = old {
            for s in &old.shards {
                if !manifest.shards.iter().any(|n| n.file == s.file) {
                    // Best effort: an unreferenced old shard is harmless if it cannot be removed.
                    let _ = std::fs::remove_file(self.dir.join(&s.file));
                }
            }
        }
        Ok(manifest)
    }
}

impl Drop for DatasetWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Abandoned: remove this generation's finished shards; they were never referenced.
            for s in &self.shards {
                let _ = std::fs::remove_file(self.dir.join(&s.file));
            }
            // The open shard's temporary file is removed by its own drop, which runs after this
            // one: drop it first so that the directory can be empty.
            drop(self.current.take());
            if self.created_dir {
                // Fails (harmlessly) unless the directory is empty.
                let _ = std::fs::remove_dir(&self.dir);
            }
        }
    }
}

/// Writes `bytes` to `path` atomically: temporary file in the same directory, fsync, rename.
///
/// # Errors
/// [`Error::Io`] naming `path` on any failure; `path` is then unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).at(dir)?;
    tmp.write_all(bytes).at(path)?;
    publishable(tmp.as_file()).at(path)?;
    tmp.as_file().sync_all().at(path)?;
    tmp.persist(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e.error })?;
    Ok(())
}

/// Temporary files are created owner-only; published dataset files are world-readable (0644).
fn publishable(file: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
