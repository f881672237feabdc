//! SparkNet's lightweight N-dimensional array, in Rust.
//!
//! ```
//! use sparknet_tensor::Tensor;
//!
//! // A 3x4x5 tensor holding 0..60 in C order.
//! let t = Tensor::<f32>::arange(60)?.reshape(&[3, 4, 5])?;
//! assert_eq!(t.get(&[1, 2, 3])?, 33.0);
//!
//! // Views share the buffer: no element is copied until one is written.
//! let row = t.slice(0, 1)?.slice(1, 2)?;
//! assert_eq!(row.to_vec(), [22.0, 27.0, 32.0, 37.0]);
//! let boxed = t.subarray(&[0, 1, 2], &[1, 3, 5])?;
//! assert_eq!(boxed.shape(), &[1, 2, 3]);
//!
//! // Copy a strided view into a flat buffer, a whole inner run at a time.
//! let mut flat = vec![0.0; boxed.elem_count()];
//! boxed.flat_copy_into(&mut flat)?;
//! assert_eq!(flat, [7.0, 8.0, 9.0, 12.0, 13.0, 14.0]);
//!
//! // In-place arithmetic (the right side broadcasts) and reductions.
//! let mut acc = Tensor::<f32>::zeros(&[4, 5])?;
//! acc.axpy(0.5, &t.slice(0, 2)?)?;
//! assert_eq!(acc.sum(1)?.to_vec(), [105.0, 117.5, 130.0, 142.5]);
//!
//! // Errors, never panics, on bad input; shape mismatches name both shapes.
//! let err = acc.add(&t).unwrap_err();
//! assert_eq!(err.to_string(), "add: shape mismatch between [4, 5] and [3, 4, 5]");
//! # Ok::<(), sparknet_tensor::Error>(())
//! ```
//!
//! # Overview
//! - [`Tensor<T>`]: an `Arc`-shared buffer seen through a [`Layout`] (shape, strides, offset).
//!   Element types implement the sealed [`Element`] trait: `f32`, `f64`, `u8`, `i32` ([`DType`]).
//! - [`TensorViewMut`]: an exclusive window for writing into a region of one tensor.
//! - [`npy`]: `.npy` read and write, the golden-file format of the workspace ([`DynTensor`] when
//!   the element type is known only at run time).
//! - [`Error`] / [`Result`]: the one error type.
//!
//! # Views and ownership
//! - A view (`subarray`, `slice`, `narrow`, `permute`, `transpose`, `broadcast_to`, and `reshape`
//!   of a contiguous tensor) is a new [`Tensor`] holding another reference to the same buffer and
//!   its own layout. Making one costs O(rank); a non-contiguous `reshape` copies instead.
//! - Every write through a `Tensor` (`set`, `add`, `fill`, `as_mut_slice`, `view_mut`, ...) is
//!   **copy-on-write**: when the buffer is shared with another tensor, or the layout reaches one
//!   element from several indices (a broadcast), the viewed elements are first copied into a new
//!   contiguous buffer owned by this tensor alone. So tensors behave as values: a write never shows
//!   through another tensor, and no unsafe aliasing exists. When the buffer is not shared the write
//!   happens in place, with no copy.
//! - To write a region of a tensor in place (one image of a batch, a channel), borrow it with
//!   [`Tensor::view_mut`] and narrow the [`TensorViewMut`]; the borrow checker keeps every other
//!   access out while it lives.
//! - Layout invariant: every position a layout can reach lies inside its buffer, and strides are
//!   never negative. Indexing is checked: [`Tensor::get`] returns an error, never panics.
//! - Integer arithmetic wraps; float arithmetic is IEEE. Contiguous operands take plain slice loops
//!   (vectorised by the compiler); strided ones walk coalesced inner runs.
//!
//! # Feature flags
//! - `candle` (off by default): `Tensor::to_candle` / `Tensor::from_candle` and `TryFrom`
//!   conversions to and from `candle::Tensor` (candle-core), moving whole buffers with no
//!   per-element loop.

mod display;
mod dtype;
mod error;
mod layout;
pub mod npy;
mod ops;
mod reduce;
mod tensor;
mod view_mut;

#[cfg(feature = "candle")]
mod candle;

pub use dtype::{DType, Element, Float};
pub use error::{Error, Result};
pub use layout::Layout;
pub use npy::{DynTensor, read_npy, write_npy};
pub use tensor::Tensor;
pub use view_mut::TensorViewMut;
