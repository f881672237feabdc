//! The crate's error type: every message names the file, layer or blob it is about.

use std::path::PathBuf;

/// Everything that can go wrong while loading, building or running a Caffe net.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A text or binary protobuf file does not parse (text errors carry `line:col`).
    #[error("{}: {msg}", location(path, *line_col))]
    Parse {
        /// The file (or `<string>` for in-memory text).
        path: PathBuf,
        /// 1-based line and column of a text-format error.
        line_col: Option<(usize, usize)>,
        /// What is wrong, with the position where known.
        msg: String,
    },
    /// A layer type (or a layer feature) this crate does not run.
    #[error("layer '{layer}': unsupported layer type '{kind}'{context}")]
    Unsupported {
        /// The layer's name.
        layer: String,
        /// The layer's Caffe type string.
        kind: String,
        /// Extra context such as " in net.prototxt" (may be empty).
        context: String,
    },
    /// A layer parameter has a value Caffe would reject.
    #[error("layer '{layer}': invalid {field}: {reason}")]
    InvalidParam {
        /// The layer's name.
        layer: String,
        /// The offending field.
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A bottom blob is not produced by any earlier layer or input.
    #[error("layer '{layer}': bottom blob '{blob}' is not produced by any earlier layer or input")]
    MissingBlob {
        /// The layer's name.
        layer: String,
        /// The missing blob.
        blob: String,
    },
    /// A layer received the wrong number of bottoms or tops.
    #[error("layer '{layer}' ({kind}): expected {expected} {what} blobs, got {got}")]
    BlobCount {
        /// The layer's name.
        layer: String,
        /// The layer's type.
        kind: String,
        /// `bottom` or `top`.
        what: &'static str,
        /// The accepted count(s), in words.
        expected: String,
        /// The actual count.
        got: usize,
    },
    /// Two shapes that must agree do not.
    #[error("layer '{layer}': {what}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// The layer's name.
        layer: String,
        /// What was compared (e.g. "weights blob 0").
        what: String,
        /// The shape the net requires.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// A request names something the net does not have (a blob, a layer, an input).
    #[error("{0}")]
    NotFound(String),
    /// An error from candle.
    #[error("candle: {0}")]
    Candle(#[from] candle::Error),
    /// An error from a CPU kernel.
    #[error("kernel: {0}")]
    Kernel(String),
    /// A solver update or solver state that does not fit the net.
    #[error(transparent)]
    Solver(#[from] crate::solver::UpdateError),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::InvalidParam`].
    pub fn invalid(layer: &str, field: &str, reason: impl Into<String>) -> Self {
        Error::InvalidParam {
            layer: layer.to_string(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// Adds the net file's name to an [`Error::Unsupported`] (other errors pass through).
    pub fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            Error::Unsupported { layer, kind, context } => Error::Unsupported {
                layer,
                kind,
                context: format!("{context} in {}", path.display()),
            },
            e => e,
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// An [`Error::Parse`] for `path`.
    pub fn parse(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Parse { path: path.into(), line_col: None, msg: msg.into() }
    }
}

fn location(path: &std::path::Path, line_col: Option<(usize, usize)>) -> String {
    match line_col {
        Some((line, col)) => format!("{}:{line}:{col}", path.display()),
        None => path.display().to_string(),
    }
}
