//! The crate's error type.

/// Everything a kernel can reject. Each message names the kernel and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A slice does not have the length the geometry implies.
    #[error("{kernel}: `{what}` has {actual} elements, expected {expected}")]
    Length {
        /// The kernel that was called (for example `conv2d_forward`).
        kernel: &'static str,
        /// The argument whose length is wrong.
        what: &'static str,
        /// The length the geometry implies.
        expected: usize,
        /// The length that was passed.
        actual: usize,
    },
    /// The geometry (or parameters) cannot describe a valid Caffe layer.
    #[error("{kernel}: invalid geometry: {reason}")]
    Geometry {
        /// The geometry or kernel that rejected it.
        kernel: &'static str,
        /// What is wrong, with the offending values.
        reason: String,
    },
    /// A required optional argument was not given.
    #[error("{kernel}: {reason}")]
    MissingArgument {
        /// The kernel that was called.
        kernel: &'static str,
        /// Which argument is missing and why it is needed.
        reason: &'static str,
    },
}

/// The crate's result alias.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// Checks that `actual == expected`, naming the kernel and argument otherwise.
pub(crate) fn check_len(
    kernel: &'static str,
    what: &'static str,
    expected: usize,
    actual: usize,
) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(KernelError::Length { kernel, what, expected, actual })
    }
}

/// Builds a [`KernelError::Geometry`].
pub(crate) fn geometry(kernel: &'static str, reason: String) -> KernelError {
    KernelError::Geometry { kernel, reason }
}
