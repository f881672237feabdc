//! [`Tensor`]: a shared buffer plus a [`Layout`]; constructors, indexing, views and copies.

use std::fmt;
use std::sync::Arc;

use crate::layout::{Layout, checked_elem_count, for_each_run};
use crate::{DType, Element, Error, Result, TensorViewMut};

/// An N-dimensional array: an `Arc`-shared buffer seen through a [`Layout`].
///
/// Views (`subarray`, `slice`, `narrow`, `permute`, `broadcast_to`, a contiguous `reshape`) are new
/// `Tensor`s over the **same** buffer: O(rank) to make, no element is copied. Writes are
/// copy-on-write, so a tensor behaves as a value: writing never changes another tensor. See the
/// crate docs for the rules, and [`Tensor::view_mut`] for writing into a region of a tensor.
///
/// Invariant: every position the layout can reach lies inside the buffer.
#[derive(Clone)]
pub struct Tensor<T: Element> {
    pub(crate) buf: Arc<Vec<T>>,
    pub(crate) layout: Layout,
}

impl<T: Element> Tensor<T> {
    // ----- constructors -------------------------------------------------------------------

    /// A C-contiguous tensor owning `data`, read in C (row-major) order.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `data.len()` is not the element count of `shape`.
    pub fn from_vec(data: Vec<T>, shape: &[usize]) -> Result<Self> {
        let layout = Layout::contiguous(shape)?;
        if data.len() != layout.elem_count() {
            return Err(Error::LengthMismatch {
                op: "from_vec",
                shape: shape.to_vec(),
                expected: layout.elem_count(),
                len: data.len(),
            });
        }
        Ok(Tensor { buf: Arc::new(data), layout })
    }

    /// Like [`Tensor::from_vec`], copying from a slice.
    ///
    /// # Errors
    /// As [`Tensor::from_vec`].
    pub fn from_slice(data: &[T], shape: &[usize]) -> Result<Self> {
        Self::from_vec(data.to_vec(), shape)
    }

    /// A tensor of `shape` with every element `value`.
    ///
    /// # Errors
    /// [`Error::SizeOverflow`] when the shape is too large to address.
    pub fn full(shape: &[usize], value: T) -> Result<Self> {
        let n = checked_elem_count(shape)?;
        Self::from_vec(vec![value; n], shape)
    }

    /// Zeros of `shape`.
    ///
    /// # Errors
    /// As [`Tensor::full`].
    pub fn zeros(shape: &[usize]) -> Result<Self> {
        Self::full(shape, T::ZERO)
    }

    /// Ones of `shape`.
    ///
    /// # Errors
    /// As [`Tensor::full`].
    pub fn ones(shape: &[usize]) -> Result<Self> {
        Self::full(shape, T::ONE)
    }

    /// The 1-d tensor `[0, 1, .., n - 1]`.
    ///
    /// # Errors
    /// [`Error::ValueOutOfRange`] when `n - 1` does not fit in an integer element type.
    pub fn arange(n: usize) -> Result<Self> {
        if n > 0 && T::from_usize(n - 1).is_none() {
            let value = (n - 1).to_string();
            return Err(Error::ValueOutOfRange { op: "arange", value, dtype: T::DTYPE });
        }
        let data = (0..n).map(|i| T::from_usize(i).unwrap_or(T::ZERO)).collect();
        Self::from_vec(data, &[n])
    }

    /// A 0-d tensor holding `value`.
    pub fn scalar(value: T) -> Self {
        Tensor { buf: Arc::new(vec![value]), layout: Layout::c_order(&[]) }
    }

    // ----- metadata -----------------------------------------------------------------------

    /// The size of every axis.
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// The step in elements along every axis.
    pub fn strides(&self) -> &[usize] {
        self.layout.strides()
    }

    /// The full layout (shape, strides, offset into the buffer).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.layout.ndim()
    }

    /// The number of elements.
    pub fn elem_count(&self) -> usize {
        self.layout.elem_count()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// True when the elements are one C-order run of the buffer.
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// True when `self` and `other` are views of one buffer.
    pub fn shares_buffer_with(&self, other: &Tensor<T>) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }

    // ----- element access -----------------------------------------------------------------

    /// The element at `index`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfBounds`] when `index` has the wrong length or a coordinate too large.
    pub fn get(&self, index: &[usize]) -> Result<T> {
        Ok(self.buf[self.layout.index_offset(index)?])
    }

    /// Writes the element at `index` (copy-on-write, see the crate docs).
    ///
    /// # Errors
    /// As [`Tensor::get`].
    pub fn set(&mut self, index: &[usize], value: T) -> Result<()> {
        self.view_mut().set(index, value)
    }

    /// The elements as one slice, when the tensor is contiguous.
    pub fn as_slice(&self) -> Option<&[T]> {
        self.is_contiguous().then(|| {
            let start = self.layout.offset();
            &self.buf[start..start + self.elem_count()]
        })
    }

    /// The elements as one mutable slice in C order, copying first when the buffer is shared,
    /// the layout is not contiguous, or it repeats elements (broadcast).
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        if !self.is_contiguous() {
            *self = self.to_contiguous();
        }
        self.make_unique();
        let (start, n) = (self.layout.offset(), self.elem_count());
        let buf = Arc::get_mut(&mut self.buf).expect("make_unique leaves a unique buffer");
        &mut buf[start..start + n]
    }

    /// A mutable view of the whole tensor. When the buffer is shared with another tensor, or the
    /// layout repeats elements (broadcast), the viewed elements are first copied into a fresh
    /// buffer of their own; otherwise writes go straight into the existing buffer.
    pub fn view_mut(&mut self) -> TensorViewMut<'_, T> {
        self.make_unique();
        let buf = Arc::get_mut(&mut self.buf).expect("make_unique leaves a unique buffer");
        TensorViewMut::new(buf, self.layout.clone())
    }

    /// Ensures writes through the layout touch no other tensor and no element twice.
    fn make_unique(&mut self) {
        if Arc::get_mut(&mut self.buf).is_some() && !self.layout.has_aliasing() {
            return;
        }
        let data = self.to_vec();
        self.layout = Layout::c_order(self.layout.shape());
        self.buf = Arc::new(data);
    }

    // ----- copies -------------------------------------------------------------------------

    /// The elements in C order, in a new `Vec`.
    pub fn to_vec(&self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.elem_count());
        let src = self.buf.as_slice();
        for_each_run(self.shape(), [&self.layout], |[start], len, [stride]| {
            if stride == 1 {
                out.extend_from_slice(&src[start..start + len]);
            } else {
                out.extend((0..len).map(|j| src[start + j * stride]));
            }
        });
        out
    }

    /// Copies the elements in C order into `dst`, a whole inner run at a time (`copy_from_slice`)
    /// wherever the innermost stride is 1, as SparkNet's `flatCopy` does.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `dst.len()` is not the element count.
    pub fn flat_copy_into(&self, dst: &mut [T]) -> Result<()> {
        if dst.len() != self.elem_count() {
            return Err(Error::LengthMismatch {
                op: "flat_copy_into",
                shape: self.shape().to_vec(),
                expected: self.elem_count(),
                len: dst.len(),
            });
        }
        let src = self.buf.as_slice();
        let mut pos = 0;
        for_each_run(self.shape(), [&self.layout], |[start], len, [stride]| {
            let out = &mut dst[pos..pos + len];
            if stride == 1 {
                out.copy_from_slice(&src[start..start + len]);
            } else {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = src[start + j * stride];
                }
            }
            pos += len;
        });
        Ok(())
    }

    /// A C-contiguous tensor with the same elements: `self` (shared, no copy) when it already is
    /// contiguous, a fresh buffer otherwise.
    pub fn to_contiguous(&self) -> Self {
        if self.is_contiguous() {
            return self.clone();
        }
        Tensor { buf: Arc::new(self.to_vec()), layout: Layout::c_order(self.shape()) }
    }

    /// The elements converted to another element type (`as` casts: floats truncate toward zero
    /// and saturate when cast to integers).
    pub fn cast<U: Element>(&self) -> Tensor<U> {
        let data: Vec<U> =
            self.to_vec().into_iter().map(|v| U::from_f64_lossy(v.to_f64())).collect();
        Tensor { buf: Arc::new(data), layout: Layout::c_order(self.shape()) }
    }

    // ----- views --------------------------------------------------------------------------

    fn with_layout(&self, layout: Layout) -> Self {
        Tensor { buf: Arc::clone(&self.buf), layout }
    }

    /// The half-open box `lo..hi` (one bound per axis) as a view; the rank is kept.
    ///
    /// # Errors
    /// [`Error::RankMismatch`] or [`Error::BadRange`] when the box does not fit.
    pub fn subarray(&self, lo: &[usize], hi: &[usize]) -> Result<Self> {
        Ok(self.with_layout(self.layout.subarray(lo, hi)?))
    }

    /// Entry `index` of `axis` as a view with that axis dropped.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`] or [`Error::BadRange`].
    pub fn slice(&self, axis: usize, index: usize) -> Result<Self> {
        Ok(self.with_layout(self.layout.slice(axis, index)?))
    }

    /// Entries `start..start + len` of `axis` as a view.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`] or [`Error::BadRange`].
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Self> {
        Ok(self.with_layout(self.layout.narrow(axis, start, len)?))
    }

    /// The same elements in C order under a new shape: a view when the tensor is contiguous,
    /// otherwise a contiguous copy.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the element counts differ.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        match self.layout.reshape(shape)? {
            Some(layout) => Ok(self.with_layout(layout)),
            None => self.to_contiguous().reshape(shape),
        }
    }

    /// Reorders the axes: axis `i` of the result is axis `axes[i]` of `self` (a view).
    ///
    /// # Errors
    /// [`Error::NotAPermutation`].
    pub fn permute(&self, axes: &[usize]) -> Result<Self> {
        Ok(self.with_layout(self.layout.permute(axes)?))
    }

    /// Swaps axes `a` and `b` (a view).
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`].
    pub fn transpose(&self, a: usize, b: usize) -> Result<Self> {
        Ok(self.with_layout(self.layout.transpose(a, b)?))
    }

    /// numpy broadcasting to `shape` (a view whose stretched axes have stride 0).
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes are incompatible.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Self> {
        Ok(self.with_layout(self.layout.broadcast_to(shape)?))
    }

    // ----- comparison ---------------------------------------------------------------------

    /// The largest `|a - b|` over all elements (computed in `f64`); NaN when any element is NaN.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the shapes differ.
    pub fn max_abs_diff(&self, other: &Tensor<T>) -> Result<f64> {
        if self.shape() != other.shape() {
            return Err(Error::ShapeMismatch {
                op: "max_abs_diff",
                left: self.shape().to_vec(),
                right: other.shape().to_vec(),
            });
        }
        let (a, b) = (self.buf.as_slice(), other.buf.as_slice());
        let mut worst = 0.0f64;
        for_each_run(self.shape(), [&self.layout, &other.layout], |[sa, sb], len, [ia, ib]| {
            for j in 0..len {
                let d = (a[sa + j * ia].to_f64() - b[sb + j * ib].to_f64()).abs();
                if d.is_nan() || d > worst {
                    worst = d;
                }
            }
        });
        Ok(worst)
    }

    /// True when the shapes are equal and every pair of elements differs by at most `tol`
    /// (NaN never compares equal).
    pub fn approx_eq(&self, other: &Tensor<T>, tol: f64) -> bool {
        self.max_abs_diff(other).is_ok_and(|d| d <= tol)
    }
}

impl<T: Element> PartialEq for Tensor<T> {
    /// Equal shapes and equal elements (layouts may differ).
    fn eq(&self, other: &Self) -> bool {
        self.shape() == other.shape() && self.to_vec() == other.to_vec()
    }
}

impl<T: Element> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}>{:?} ", T::DTYPE, self.shape())?;
        fmt::Display::fmt(self, f)
    }
}
