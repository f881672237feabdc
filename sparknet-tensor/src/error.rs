//! The crate's single error type.
//!
//! Every fallible operation returns [`Result`]. Messages name the operation and the shapes (or the
//! file) involved, so a failure deep inside a net points at its cause without a debugger.

use std::path::PathBuf;

use crate::DType;

/// Everything that can go wrong in `sparknet-tensor`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two tensors (or a tensor and a target shape) do not fit together.
    #[error("{op}: shape mismatch between {left:?} and {right:?}")]
    ShapeMismatch {
        /// The operation that compared the shapes.
        op: &'static str,
        /// The shape of the tensor the operation acts on.
        left: Vec<usize>,
        /// The shape that was expected to match it.
        right: Vec<usize>,
    },
    /// A buffer's length does not match the number of elements of a shape.
    #[error("{op}: {len} elements do not fill shape {shape:?} ({expected} elements)")]
    LengthMismatch {
        /// The operation.
        op: &'static str,
        /// The requested shape.
        shape: Vec<usize>,
        /// Its element count.
        expected: usize,
        /// The length that was given.
        len: usize,
    },
    /// The number of elements of a shape does not fit in `usize`.
    #[error("shape {shape:?} has more elements than fit in memory")]
    SizeOverflow {
        /// The offending shape.
        shape: Vec<usize>,
    },
    /// An axis number is not below the tensor's rank.
    #[error("{op}: axis {axis} is out of range for a tensor of shape {shape:?}")]
    AxisOutOfRange {
        /// The operation.
        op: &'static str,
        /// The axis that was asked for.
        axis: usize,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// A multi-index has the wrong length or a coordinate past its dimension.
    #[error("index {index:?} is out of bounds for shape {shape:?}")]
    IndexOutOfBounds {
        /// The index that was asked for.
        index: Vec<usize>,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// A range `lo..hi` along an axis is empty-reversed or runs past the dimension.
    #[error(
        "{op}: range {lo}..{hi} on axis {axis} does not fit dimension {dim} of shape {shape:?}"
    )]
    BadRange {
        /// The operation.
        op: &'static str,
        /// The axis.
        axis: usize,
        /// Start of the range.
        lo: usize,
        /// End of the range (exclusive).
        hi: usize,
        /// The size of that axis.
        dim: usize,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// An argument lists a different number of axes than the tensor has.
    #[error("{op}: expected {expected} axes for shape {shape:?}, got {got}")]
    RankMismatch {
        /// The operation.
        op: &'static str,
        /// The tensor's shape.
        shape: Vec<usize>,
        /// The rank the argument should have had.
        expected: usize,
        /// The rank it had.
        got: usize,
    },
    /// `permute` was given something other than a permutation of `0..ndim`.
    #[error("permute: {axes:?} is not a permutation of the axes of shape {shape:?}")]
    NotAPermutation {
        /// The axes that were given.
        axes: Vec<usize>,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// A shape cannot be broadcast to another (numpy rules).
    #[error("broadcast_to: shape {from:?} cannot be broadcast to {to:?}")]
    Broadcast {
        /// The tensor's shape.
        from: Vec<usize>,
        /// The target shape.
        to: Vec<usize>,
    },
    /// A reduction that needs at least one element met an empty axis.
    #[error("{op}: axis {axis} of shape {shape:?} is empty")]
    EmptyAxis {
        /// The reduction.
        op: &'static str,
        /// The axis.
        axis: usize,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// A value cannot be represented in the element type.
    #[error("{op}: value {value} does not fit in {dtype}")]
    ValueOutOfRange {
        /// The operation.
        op: &'static str,
        /// The value (as text, whatever its type).
        value: String,
        /// The element type.
        dtype: DType,
    },
    /// The element type of stored data is not the one asked for.
    #[error("{what}: holds {found} elements, {expected} was asked for")]
    DTypeMismatch {
        /// What was read (a file name, a candle tensor).
        what: String,
        /// The requested element type.
        expected: DType,
        /// The stored element type.
        found: DType,
    },
    /// A `.npy` file or buffer is malformed or uses something this crate does not read.
    #[error("npy {source_name}: {reason}")]
    Npy {
        /// The file (or `<bytes>` for an in-memory buffer).
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error from candle (feature `candle`).
    #[cfg(feature = "candle")]
    #[error("candle: {0}")]
    Candle(#[from] candle::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
