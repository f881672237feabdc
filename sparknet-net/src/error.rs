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
    /// A bottom blob is not produced by any earlier layer or input. When layers left out by
    /// the net state's phase/level/stage rules (or layers further down the file) would produce
    /// it, they are listed with what they need.
    #[error(
        "layer '{layer}': bottom blob '{blob}' is not produced by any earlier layer or input{}",
        producers_text(state, producers)
    )]
    MissingBlob {
        /// The layer's name.
        layer: String,
        /// The missing blob.
        blob: String,
        /// The net state the net was filtered with, in words (`phase TEST, level 0, no stages`;
        /// empty when unknown).
        state: String,
        /// Layers that write the blob but are not before `layer` in this state.
        producers: Vec<Producer>,
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
    #[error("blob of shape {shape:?} holds {values} values, expected {}", count_text(shape))]
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
    /// An error about the contents of a file that the inner error does not name: a layer of a
    /// net file, a blob of a caffemodel.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong inside it.
        source: Box<Error>,
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

/// A layer that writes a missing blob, with what it would take for it to run before the reader
/// (see [`Error::MissingBlob`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    /// The producing layer's name.
    pub layer: String,
    /// What the layer needs, in words: `phase TEST and stage 'test-on-test'`, or `to come before
    /// layer 'x' (it is further down the file)`.
    pub needs: String,
    /// The stages one of its include rules requires, for a `--stage` hint (may be empty).
    pub stages: Vec<String>,
}

fn producers_text(state: &str, producers: &[Producer]) -> String {
    let mut out = String::new();
    if !state.is_empty() {
        out.push_str(&format!(" in this net state ({state})"));
    }
    if producers.is_empty() {
        return out;
    }
    let list: Vec<String> =
        producers.iter().map(|p| format!("layer '{}' (needs {})", p.layer, p.needs)).collect();
    out.push_str(&format!("; it would be produced by {}", list.join(", or ")));
    let mut stages: Vec<&str> = Vec::new();
    for s in producers.iter().flat_map(|p| &p.stages) {
        if !stages.contains(&s.as_str()) {
            stages.push(s);
        }
    }
    if !stages.is_empty() {
        let flags: Vec<String> = stages.iter().map(|s| format!("--stage {s}")).collect();
        out.push_str(&format!(" (select a stage with {})", flags.join(" or ")));
    }
    out
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

    /// Names the file an error is about: an [`Error::Unsupported`] gets " in FILE" added, an
    /// error that names no file yet is wrapped in [`Error::InFile`]; errors that already name
    /// one ([`Error::Io`], [`Error::Parse`], [`Error::InFile`]) pass through.
    pub fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            Error::Unsupported { layer, kind, context } => Error::Unsupported {
                layer,
                kind,
                context: format!("{context} in {}", path.display()),
            },
            e @ (Error::Io { .. } | Error::Parse { .. } | Error::InFile { .. }) => e,
            e => Error::InFile { path: path.to_path_buf(), source: Box::new(e) },
        }
    }

    /// The error inside any [`Error::InFile`] wrappers.
    pub fn innermost(&self) -> &Error {
        match self {
            Error::InFile { source, .. } => source.innermost(),
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

/// The number of values of `shape`, in words when it overflows.
fn count_text(shape: &[usize]) -> String {
    crate::blob::element_count(shape)
        .map_or_else(|| "more than usize::MAX".into(), |n| n.to_string())
}

fn location(path: &std::path::Path, line_col: Option<(usize, usize)>) -> String {
    match line_col {
        Some((line, col)) => format!("{}:{line}:{col}", path.display()),
        None => path.display().to_string(),
    }
}
