//! [`TensorViewMut`]: an exclusive, borrowed window into one tensor's buffer.
//!
//! It is how a region of a tensor is written in place (for example one image of a batch): the
//! borrow checker guarantees nothing else reads or writes the buffer while the view lives, and
//! the view operations on it can only narrow or reorder the region, never make two indices share
//! an element (there is no `broadcast_to` here).

use crate::layout::{Layout, for_each_run};
use crate::{Element, Result, Tensor};

/// A mutable view into the buffer of one [`Tensor`], made by [`Tensor::view_mut`].
///
/// ```
/// use sparknet_tensor::Tensor;
/// let mut batch = Tensor::<f32>::zeros(&[2, 3])?;
/// batch.view_mut().slice(0, 1)?.fill(7.0);
/// assert_eq!(batch.to_vec(), [0.0, 0.0, 0.0, 7.0, 7.0, 7.0]);
/// # Ok::<(), sparknet_tensor::Error>(())
/// ```
pub struct TensorViewMut<'a, T: Element> {
    pub(crate) data: &'a mut [T],
    pub(crate) layout: Layout,
}

impl<'a, T: Element> TensorViewMut<'a, T> {
    /// Invariant (upheld by [`Tensor::view_mut`]): `layout` stays inside `data` and reaches no
    /// element twice.
    pub(crate) fn new(data: &'a mut [T], layout: Layout) -> Self {
        TensorViewMut { data, layout }
    }

    /// The size of every axis of the view.
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// The view's layout inside the tensor's buffer.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// A shorter-lived view of the same region (to keep using `self` afterwards).
    pub fn reborrow(&mut self) -> TensorViewMut<'_, T> {
        TensorViewMut { data: &mut *self.data, layout: self.layout.clone() }
    }

    /// The element at `index`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfBounds`](crate::Error::IndexOutOfBounds).
    pub fn get(&self, index: &[usize]) -> Result<T> {
        Ok(self.data[self.layout.index_offset(index)?])
    }

    /// Writes the element at `index`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfBounds`](crate::Error::IndexOutOfBounds).
    pub fn set(&mut self, index: &[usize], value: T) -> Result<()> {
        let at = self.layout.index_offset(index)?;
        self.data[at] = value;
        Ok(())
    }

    /// The half-open box `lo..hi` of the view (see [`Tensor::subarray`]).
    ///
    /// # Errors
    /// As [`Tensor::subarray`].
    pub fn subarray(self, lo: &[usize], hi: &[usize]) -> Result<Self> {
        let layout = self.layout.subarray(lo, hi)?;
        Ok(TensorViewMut { data: self.data, layout })
    }

    /// Entry `index` of `axis`, dropping the axis (see [`Tensor::slice`]).
    ///
    /// # Errors
    /// As [`Tensor::slice`].
    pub fn slice(self, axis: usize, index: usize) -> Result<Self> {
        let layout = self.layout.slice(axis, index)?;
        Ok(TensorViewMut { data: self.data, layout })
    }

    /// Entries `start..start + len` of `axis` (see [`Tensor::narrow`]).
    ///
    /// # Errors
    /// As [`Tensor::narrow`].
    pub fn narrow(self, axis: usize, start: usize, len: usize) -> Result<Self> {
        let layout = self.layout.narrow(axis, start, len)?;
        Ok(TensorViewMut { data: self.data, layout })
    }

    /// Reorders the axes (see [`Tensor::permute`]).
    ///
    /// # Errors
    /// As [`Tensor::permute`].
    pub fn permute(self, axes: &[usize]) -> Result<Self> {
        let layout = self.layout.permute(axes)?;
        Ok(TensorViewMut { data: self.data, layout })
    }

    /// Swaps two axes (see [`Tensor::transpose`]).
    ///
    /// # Errors
    /// As [`Tensor::transpose`].
    pub fn transpose(self, a: usize, b: usize) -> Result<Self> {
        let layout = self.layout.transpose(a, b)?;
        Ok(TensorViewMut { data: self.data, layout })
    }

    /// A copy of the viewed elements as a new contiguous tensor.
    pub fn to_tensor(&self) -> Tensor<T> {
        let mut out = Vec::with_capacity(self.layout.elem_count());
        let src = &*self.data;
        for_each_run(self.layout.shape(), [&self.layout], |[start], len, [stride]| {
            out.extend((0..len).map(|j| src[start + j * stride]));
        });
        Tensor::from_vec(out, self.layout.shape()).expect("the view's shape fits its elements")
    }

    /// The viewed elements as one slice, when the view is contiguous.
    pub fn as_mut_slice(&mut self) -> Option<&mut [T]> {
        if !self.layout.is_contiguous() {
            return None;
        }
        let start = self.layout.offset();
        Some(&mut self.data[start..start + self.layout.elem_count()])
    }
}
