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
    /// A fed blob that is not an input of the net.
    #[error("'{name}' is not an input of the net (inputs: {inputs:?})")]
    NotAnInput {
        /// The name that was fed.
        name: String,
        /// The net's inputs.
        inputs: Vec<String>,
    },
    /// An input blob the forward pass needs was not fed.
    #[error("input blob '{blob}' (layer '{layer}') was not fed")]
    NotFed {
        /// The input layer.
        layer: String,
        /// Its top.
        blob: String,
    },
    /// An input layer was asked to compute its tops, which only the caller can feed.
    #[error("layer '{layer}' ({kind}): its tops must be fed by the caller")]
    FedOnly {
        /// The layer's name.
        layer: String,
        /// Its Caffe type.
        kind: String,
    },
    /// A shape that is only known once inputs are fed or declared.
    #[error("layer '{layer}': {what} unknown (feed or declare the input shapes first)")]
    UnknownShape {
        /// The layer's name.
        layer: String,
        /// Which shape (a top, the parameter shapes).
        what: String,
    },
    /// A pass that needs an earlier one (backward before forward).
    #[error("layer '{layer}': {what}")]
    OutOfOrder {
        /// The layer's name.
        layer: String,
        /// What is missing, and what to run first.
        what: String,
    },
    /// A layer name the net does not have.
    #[error("no layer named '{layer}' in net '{net}'")]
    NoSuchLayer {
        /// The name asked for.
        layer: String,
        /// The net's name.
        net: String,
    },
    /// A blob name the net does not have.
    #[error("no blob '{blob}' (blobs: {known:?})")]
    NoSuchBlob {
        /// The name asked for.
        blob: String,
        /// The net's blobs.
        known: Vec<String>,
    },
    /// A stored blob whose data does not fill its shape.
    #[error("blob of shape {shape:?} holds {values} values, expected {}", shape.iter().product::<usize>())]
    BlobData {
        /// The declared shape.
        shape: Vec<usize>,
        /// The number of values stored.
        values: usize,
    },
    /// A command-line or preprocessing option that cannot be used as given.
    #[error("{option}: {reason}")]
    InvalidOption {
        /// The option (a flag, a file, or a preprocessing setting).
        option: String,
        /// What is wrong.
        reason: String,
    },
    /// A solver iteration was given the wrong number of batches.
    #[error("a solver iteration takes iter_size = {expected} batches, got {got}")]
    BatchCount {
        /// The solver's `iter_size`.
        expected: usize,
        /// The batches passed.
        got: usize,
    },
    /// A test net index the solver does not have.
    #[error("no test net {index} (the solver has {count})")]
    NoSuchTestNet {
        /// The index asked for.
        index: usize,
        /// The number of test nets.
        count: usize,
    },
    /// A solverstate whose `learned_net` is neither where it says nor beside it.
    #[error(
        "{}: learned_net '{}' not found (nor beside the solverstate)",
        solverstate.display(),
        learned_net.display()
    )]
    LearnedNetMissing {
        /// The solverstate.
        solverstate: PathBuf,
        /// The caffemodel it names.
        learned_net: PathBuf,
    },
    /// An error from candle.
    #[error("candle: {0}")]
    Candle(#[from] candle::Error),
    /// A CPU kernel rejected a layer's geometry or buffers.
    #[error("layer '{layer}': kernel: {source}")]
    Kernel {
        /// The layer's name.
        layer: String,
        /// The kernel's error.
        #[source]
        source: sparknet_kernels::KernelError,
    },
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

    /// An [`Error::InvalidOption`].
    pub fn option(option: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidOption { option: option.into(), reason: reason.into() }
    }

    /// An [`Error::OutOfOrder`].
    pub fn out_of_order(layer: &str, what: impl Into<String>) -> Self {
        Error::OutOfOrder { layer: layer.to_string(), what: what.into() }
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
