//! The crate's error type: every variant names the file (and, for record errors, the record index
//! inside that file) so a failure on a 100-shard dataset points at the exact bytes at fault.

use std::path::PathBuf;

/// Everything that can go wrong while writing, reading, converting or transforming a dataset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The shard does not start with the sparknet-data magic bytes.
    #[error("{}: bad magic {found:02x?}: not a sparknet-data shard", path.display())]
    BadMagic {
        /// The shard file.
        path: PathBuf,
        /// The eight bytes found where the magic belongs.
        found: [u8; 8],
    },
    /// The shard was written by an incompatible format version.
    #[error("{}: unsupported format version {found} (this reader reads version {supported})", path.display())]
    BadVersion {
        /// The shard file.
        path: PathBuf,
        /// The version stored in the header.
        found: u32,
        /// The version this crate reads and writes.
        supported: u32,
    },
    /// The shard is shorter than its header, footer or index say it must be.
    #[error("{}: truncated shard: {what}", path.display())]
    Truncated {
        /// The shard file.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// The header or footer is internally inconsistent (bad CRC, flags, counts).
    #[error("{}: corrupt header: {reason}", path.display())]
    CorruptHeader {
        /// The shard file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The record index fails its CRC or describes records outside the payload area.
    #[error("{}: corrupt index: {reason}", path.display())]
    CorruptIndex {
        /// The shard file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record's payload does not match the CRC-32C stored in the index.
    #[error("{}: record {record}: CRC-32C mismatch (index says {stored:#010x}, payload gives {computed:#010x})", path.display())]
    CrcMismatch {
        /// The shard file.
        path: PathBuf,
        /// The record's index inside that shard.
        record: usize,
        /// The checksum in the index.
        stored: u32,
        /// The checksum of the bytes found.
        computed: u32,
    },
    /// A record is well-formed on disk but unusable: an undecodable image, a label outside the
    /// class list, a shape that does not fit the transform.
    #[error("{}: record {record}: {reason}", path.display())]
    BadRecord {
        /// The shard file (or, for converters, the source file).
        path: PathBuf,
        /// The record's index inside that file.
        record: usize,
        /// What is wrong.
        reason: String,
    },
    /// A source image of a converter cannot be read or decoded (unreadable, truncated, not an
    /// image, no label): names the file and the class it was to be stored under.
    #[error("{}: class {class}: {reason}", path.display())]
    BadImage {
        /// The image file.
        path: PathBuf,
        /// The class (folder name, synset id or label) the image belongs to.
        class: String,
        /// What is wrong.
        reason: String,
    },
    /// The dataset manifest is missing, unparsable or disagrees with the shards.
    #[error("{}: bad manifest: {reason}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A converter input (IDX file, CIFAR batch, list file, mean file) is malformed.
    #[error("{}: {reason}", path.display())]
    BadSource {
        /// The input file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record index past the end of the dataset.
    #[error("record {index} is out of range for a dataset of {len} records")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The number of records.
        len: usize,
    },
    /// Building a `sparknet_tensor::Tensor` failed.
    #[error("tensor: {0}")]
    Tensor(#[from] sparknet_tensor::Error),
    /// An argument or configuration that cannot work (zero world size, crop larger than image...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub(crate) trait IoContext<T> {
    /// Converts the error into [`Error::Io`] naming `path`.
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io { path: path.to_path_buf(), source })
    }
}
