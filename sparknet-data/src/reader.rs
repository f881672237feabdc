//! Reading shards and datasets through memory maps.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::{
    Encoding, FOOTER_LEN, FOOTER_MAGIC, Footer, HEADER_LEN, Header, INDEX_ENTRY_LEN, IndexEntry,
    MAGIC, PAYLOAD_ALIGN, VERSION, check_entry, file_len,
};
use crate::manifest::Manifest;

/// One record, borrowed from the shard's map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Class label.
    pub label: u32,
    /// `[c, h, w]` (for encoded records: the shape recorded when the dataset was written).
    pub shape: [u32; 3],
    /// How `payload` is stored.
    pub encoding: Encoding,
    /// The payload bytes, straight from the map.
    pub payload: &'a [u8],
}

/// The bytes of a shard: a read-only map, or a heap copy.
enum Bytes {
    Map(memmap2::Mmap),
    Heap(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Heap(v) => v,
        }
    }
}

/// How shards are opened.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    verify_crc: bool,
    in_memory: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { verify_crc: true, in_memory: false }
    }
}

impl OpenOptions {
    /// Defaults: memory-mapped, CRC checked on every [`Dataset::get`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether [`Dataset::get`] checks each payload's CRC-32C (default `true`).
    pub fn verify_crc(&mut self, yes: bool) -> &mut Self {
        self.verify_crc = yes;
        self
    }

    /// Read shards into memory instead of mapping them (default `false`). Use this when a shard
    /// might be modified in place by another program while it is open.
    pub fn in_memory(&mut self, yes: bool) -> &mut Self {
        self.in_memory = yes;
        self
    }

    /// Opens the dataset directory `dir`.
    ///
    /// # Errors
    /// See [`Dataset::open_mapped`].
    pub fn open(&self, dir: &Path) -> Result<Dataset> {
        Dataset::open_with(dir, *self)
    }
}

/// One opened, fully validated shard file.
pub struct Shard {
    path: PathBuf,
    bytes: Bytes,
    encoding: Encoding,
    count: usize,
    index: Range<usize>,
}

impl Shard {
    /// Opens and validates a shard: magic, version, header CRC, lengths, footer, index CRC and the
    /// bounds, alignment and order of every index entry.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::BadVersion`], [`Error::CorruptHeader`], [`Error::Truncated`],
    /// [`Error::CorruptIndex`] naming `path`, or [`Error::Io`].
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Shard> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        if len < HEADER_LEN as u64 {
            return Err(Error::Truncated {
                path: path.to_path_buf(),
                what: format!("file is {len} bytes, shorter than the {HEADER_LEN}-byte header"),
            });
        }
        let bytes = if options.in_memory {
            Bytes::Heap(std::fs::read(path).at(path)?)
        } else {
            // SAFETY: `Mmap::map` is unsafe because the mapped file could be changed or truncated
            // by another process while we hold `&[u8]` views of it. Shards are immutable once
            // published: this crate's writers always write a new file and rename it into place,
            // never modify a shard in place, so the inode we map does not change under us. Callers
            // who cannot rule out in-place modification use `OpenOptions::in_memory`. The map is
            // read-only (`PROT_READ`), so we never write through it.
            let map = unsafe { memmap2::Mmap::map(&file) }.at(path)?;
            Bytes::Map(map)
        };
        Self::validate(path.to_path_buf(), bytes)
    }

    /// Validates a shard held in memory, as [`Shard::open`] validates a file; `path` names the
    /// shard in errors (it is not read).
    ///
    /// # Errors
    /// As [`Shard::open`], except [`Error::Io`].
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Shard> {
        Self::validate(path.to_path_buf(), Bytes::Heap(bytes))
    }

    fn validate(path: PathBuf, bytes: Bytes) -> Result<Shard> {
        let b = bytes.as_slice();
        let len = b.len() as u64;
        if b.len() < HEADER_LEN {
            // Checked again here: the file may have shrunk between `metadata` and the map/read.
            return Err(Error::Truncated {
                path,
                what: format!("file is {len} bytes, shorter than the {HEADER_LEN}-byte header"),
            });
        }
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&b[..HEADER_LEN]);
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&head[..8]);
        if magic != MAGIC {
            return Err(Error::BadMagic { path, found: magic });
        }
        let h = Header::decode(&head);
        if h.version != VERSION {
            return Err(Error::BadVersion { path, found: h.version, supported: VERSION });
        }
        let (stored, computed) = Header::crcs(&head);
        if stored != computed {
            let reason = format!(
                "header CRC-32C is {stored:#010x} but the header bytes give {computed:#010x}"
            );
            return Err(Error::CorruptHeader { path, reason });
        }
        let header_err = |reason: String| Error::CorruptHeader { path: path.clone(), reason };
        if h.flags != 0 {
            return Err(header_err(format!("unknown flag bits {:#x}", h.flags)));
        }
        let Some(encoding) = Encoding::from_code(h.encoding) else {
            return Err(header_err(format!("unknown encoding code {}", h.encoding)));
        };
        if h.payload_align as u64 != PAYLOAD_ALIGN {
            return Err(header_err(format!(
                "payload alignment {} (expected {PAYLOAD_ALIGN})",
                h.payload_align
            )));
        }
        if h.index_offset < HEADER_LEN as u64 || !h.index_offset.is_multiple_of(PAYLOAD_ALIGN) {
            return Err(header_err(format!(
                "index offset {} is not an aligned offset past the header",
                h.index_offset
            )));
        }
        let Some(expected) = file_len(h.index_offset, h.record_count) else {
            return Err(header_err(format!(
                "record count {} overflows the file size",
                h.record_count
            )));
        };
        if len < expected {
            return Err(Error::Truncated {
                path,
                what: format!("file is {len} bytes but its header describes {expected} bytes"),
            });
        }
        if len > expected {
            return Err(header_err(format!(
                "file is {len} bytes but its header describes {expected} bytes"
            )));
        }
        let mut foot = [0u8; FOOTER_LEN];
        foot.copy_from_slice(&b[b.len() - FOOTER_LEN..]);
        let (f, fmagic) = Footer::decode(&foot);
        let index_err = |reason: String| Error::CorruptIndex { path: path.clone(), reason };
        if fmagic != FOOTER_MAGIC {
            return Err(index_err(format!(
                "footer magic is {fmagic:02x?}, expected {FOOTER_MAGIC:02x?}"
            )));
        }
        if f.index_offset != h.index_offset || f.record_count != h.record_count {
            return Err(index_err(format!(
                "footer (index at {}, {} records) disagrees with header (index at {}, {} records)",
                f.index_offset, f.record_count, h.index_offset, h.record_count
            )));
        }
        // Both fit in usize: they are bounded by the length of a slice we hold.
        let start = h.index_offset as usize;
        let count = h.record_count as usize;
        let index = start..start + count * INDEX_ENTRY_LEN;
        let computed = crc32c::crc32c(&b[index.clone()]);
        if computed != f.index_crc {
            return Err(index_err(format!(
                "index CRC-32C is {:#010x} in the footer but the index bytes give {computed:#010x}",
                f.index_crc
            )));
        }
        let mut prev_end = HEADER_LEN as u64;
        for (i, raw) in b[index.clone()].chunks_exact(INDEX_ENTRY_LEN).enumerate() {
            let e = IndexEntry::decode(raw);
            prev_end = check_entry(&e, prev_end, h.index_offset)
                .map_err(|r| index_err(format!("record {i}: {r}")))?;
            if let Some(n) = encoding.expected_len(e.shape)
                && n != e.length
            {
                return Err(index_err(format!(
                    "record {i}: {encoding:?} shape {:?} needs {n} bytes but the entry says {}",
                    e.shape, e.length
                )));
            }
        }
        Ok(Shard { path, bytes, encoding, count, index })
    }

    /// The shard's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the shard holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Payload encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Index entry `i`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] when `i >= len()`.
    pub fn entry(&self, i: usize) -> Result<IndexEntry> {
        if i >= self.count {
            return Err(Error::IndexOutOfRange { index: i, len: self.count });
        }
        Ok(self.entry_at(i))
    }

    /// Index entry `i`, which the caller has checked is below `len()`.
    fn entry_at(&self, i: usize) -> IndexEntry {
        let at = self.index.start + i * INDEX_ENTRY_LEN;
        IndexEntry::decode(&self.bytes.as_slice()[at..at + INDEX_ENTRY_LEN])
    }

    /// Record `i` without checking its CRC. Panics never: `i` out of range is an error.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] when `i >= len()`.
    pub fn get_unverified(&self, i: usize) -> Result<Record<'_>> {
        if i >= self.count {
            return Err(Error::IndexOutOfRange { index: i, len: self.count });
        }
        let e = self.entry_at(i);
        // In bounds: `validate` checked offset + length <= index_offset <= file length.
        let payload = &self.bytes.as_slice()[e.offset as usize..(e.offset + e.length) as usize];
        Ok(Record { label: e.label, shape: e.shape, encoding: self.encoding, payload })
    }

    /// Record `i`, its payload checked against the CRC-32C in the index.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`], or [`Error::CrcMismatch`] naming this file and record `i`.
    pub fn get(&self, i: usize) -> Result<Record<'_>> {
        let r = self.get_unverified(i)?;
        let stored = self.entry_at(i).crc;
        let computed = crc32c::crc32c(r.payload);
        if stored != computed {
            return Err(Error::CrcMismatch {
                path: self.path.clone(),
                record: i,
                stored,
                computed,
            });
        }
        Ok(r)
    }

    /// The whole shard file's bytes (header, payloads, index, footer).
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

/// A dataset: the shards named by a manifest, read as one sequence of records.
pub struct Dataset {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    /// `starts[k]` is the global index of shard `k`'s first record; one extra entry holds the total.
    starts: Vec<usize>,
    verify_crc: bool,
}

impl Dataset {
    /// Opens `dir` **memory-mapped**, with CRCs checked on `get` (the default [`OpenOptions`]).
    /// The name says what it does: shards are mapped read-only and must not be modified in
    /// place while open (this crate never does so, its writers publish new files by rename);
    /// where that cannot be ruled out, read them into memory with
    /// `OpenOptions::new().in_memory(true).open(dir)`.
    ///
    /// # Errors
    /// [`Error::Manifest`] if the manifest is missing, invalid or disagrees with a shard; any
    /// shard error from [`Shard::open`]; [`Error::BadRecord`] naming the shard and record when a
    /// label is outside the manifest's class list.
    pub fn open_mapped(dir: &Path) -> Result<Dataset> {
        Self::open_with(dir, OpenOptions::default())
    }

    fn open_with(dir: &Path, options: OpenOptions) -> Result<Dataset> {
        let manifest = Manifest::read(dir)?;
        let mpath = dir.join(crate::manifest::MANIFEST_FILE);
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut starts = vec![0usize];
        for (info, path) in manifest.shards.iter().zip(manifest.shard_paths(dir)) {
            let shard = Shard::open(&path, &options)?;
            if shard.len() as u64 != info.records || shard.encoding() != manifest.encoding {
                return Err(Error::Manifest {
                    path: mpath,
                    reason: format!(
                        "shard {} holds {} {:?} records but the manifest lists {} {:?} records",
                        info.file,
                        shard.len(),
                        shard.encoding(),
                        info.records,
                        manifest.encoding
                    ),
                });
            }
            let n = manifest.classes.len();
            if n > 0 {
                for i in 0..shard.len() {
                    let label = shard.entry_at(i).label;
                    if label as usize >= n {
                        return Err(Error::BadRecord {
                            path,
                            record: i,
                            reason: format!("label {label} is out of range for {n} classes"),
                        });
                    }
                }
            }
            starts.push(starts[starts.len() - 1] + shard.len());
            shards.push(shard);
        }
        Ok(Dataset {
            dir: dir.to_path_buf(),
            manifest,
            shards,
            starts,
            verify_crc: options.verify_crc,
        })
    }

    /// The dataset directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The shards, in record order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Total number of records.
    pub fn len(&self) -> usize {
        self.starts[self.starts.len() - 1]
    }

    /// True when the dataset holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shard holding global record `i` and the record's index inside it.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] when `i >= len()`.
    pub fn locate(&self, i: usize) -> Result<(usize, usize)> {
        if i >= self.len() {
            return Err(Error::IndexOutOfRange { index: i, len: self.len() });
        }
        let k = self.starts.partition_point(|&s| s <= i) - 1;
        Ok((k, i - self.starts[k]))
    }

    /// Record `i`, borrowed from the map; its CRC is checked unless disabled in [`OpenOptions`].
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`], or [`Error::CrcMismatch`] naming the shard file and the
    /// record's index inside it.
    pub fn get(&self, i: usize) -> Result<Record<'_>> {
        let (k, j) = self.locate(i)?;
        if self.verify_crc { self.shards[k].get(j) } else { self.shards[k].get_unverified(j) }
    }

    /// Iterates over every record in order.
    pub fn iter(&self) -> impl Iterator<Item = Result<Record<'_>>> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// Checks every record's CRC (in parallel). With `skip_corrupt` the bad records are counted and
    /// listed; without it the first failure is returned.
    ///
    /// # Errors
    /// The first [`Error::CrcMismatch`] when `skip_corrupt` is false.
    pub fn verify(&self, skip_corrupt: bool) -> Result<VerifyReport> {
        use rayon::prelude::*;
        let bad: Vec<Error> = (0..self.len())
            .into_par_iter()
            .filter_map(|i| {
                let (k, j) = self.locate(i).ok()?;
                self.shards[k].get(j).err()
            })
            .collect();
        if !skip_corrupt && !bad.is_empty() {
            return Err(bad.into_iter().next().expect("non-empty"));
        }
        Ok(VerifyReport { records: self.len(), corrupt: bad })
    }
}

/// The outcome of [`Dataset::verify`].
#[derive(Debug)]
pub struct VerifyReport {
    /// Records checked.
    pub records: usize,
    /// The errors of the records that failed (only collected with `skip_corrupt`).
    pub corrupt: Vec<Error>,
}
