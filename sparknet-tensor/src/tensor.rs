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

    /// The elements in C order, without a copy when this tensor is the only owner of a buffer
    /// that holds exactly its elements in order.
    pub fn into_vec(self) -> Vec<T> {
        let whole = self.layout.offset() == 0 && self.buf.len() == self.elem_count();
        if whole && self.is_contiguous() {
            match Arc::try_unwrap(self.buf) {
                Ok(v) => v,
                Err(shared) => shared.as_ref().clone(),
            }
        } else {
            self.to_vec()
        }
    }

    /// A new contiguous tensor of `f` applied to every element.
    pub fn map<U: Element>(&self, f: impl Fn(T) -> U) -> Tensor<U> {
        let data: Vec<U> = self.to_vec().into_iter().map(f).collect();
        Tensor { buf: Arc::new(data), layout: Layout::c_order(self.shape()) }
    }

    /// The elements converted to another element type (`as` casts: floats truncate toward zero
    /// and saturate when cast to integers).
    pub fn cast<U: Element>(&self) -> Tensor<U> {
        self.map(|v| U::from_f64_lossy(v.to_f64()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors() {
        assert_eq!(Tensor::<u8>::ones(&[2]).unwrap().to_vec(), [1, 1]);
        assert_eq!(Tensor::<i32>::full(&[1, 2], -3).unwrap().to_vec(), [-3, -3]);
        assert_eq!(Tensor::<f64>::zeros(&[]).unwrap().elem_count(), 1);
        assert_eq!(Tensor::<u8>::arange(256).unwrap().get(&[255]).unwrap(), 255);
        assert!(matches!(Tensor::<f32>::zeros(&[usize::MAX, 2]), Err(Error::SizeOverflow { .. })));
        assert_eq!(Tensor::scalar(3i32).shape(), &[] as &[usize]);
    }

    #[test]
    fn into_vec_moves_or_copies() {
        let t = Tensor::<f32>::arange(6).unwrap();
        let ptr = t.as_slice().unwrap().as_ptr();
        let v = t.into_vec();
        assert_eq!(v.as_ptr(), ptr, "a sole owner gives its buffer away");
        let t = Tensor::<f32>::arange(6).unwrap().reshape(&[2, 3]).unwrap();
        let keep = t.clone();
        assert_eq!(t.narrow(1, 1, 2).unwrap().into_vec(), [1., 2., 4., 5.]);
        assert_eq!(t.into_vec(), keep.to_vec());
    }

    #[test]
    fn map_cast_and_mut_slices() {
        let t = Tensor::<f32>::from_vec(vec![-1.7, 0.2, 300.0], &[3]).unwrap();
        assert_eq!(t.cast::<u8>().to_vec(), [0, 0, 255]);
        assert_eq!(t.cast::<i32>().to_vec(), [-1, 0, 300]);
        assert_eq!(t.map(|v| i32::from(v > 0.0)).to_vec(), [0, 1, 1]);
        let mut m =
            Tensor::<i32>::arange(6).unwrap().reshape(&[2, 3]).unwrap().transpose(0, 1).unwrap();
        m.as_mut_slice()[0] = 10;
        assert!(m.is_contiguous());
        assert_eq!(m.to_vec(), [10, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn approx_eq_and_max_abs_diff() {
        let a = Tensor::<f32>::from_vec(vec![1.0, 2.0], &[2]).unwrap();
        let b = Tensor::<f32>::from_vec(vec![1.0, 2.001], &[2]).unwrap();
        assert!((a.max_abs_diff(&b).unwrap() - 0.001).abs() < 1e-6);
        assert!(a.approx_eq(&b, 1e-2) && !a.approx_eq(&b, 1e-4));
        let nan = Tensor::<f32>::from_vec(vec![f32::NAN, 2.0], &[2]).unwrap();
        assert!(a.max_abs_diff(&nan).unwrap().is_nan());
        assert!(!nan.approx_eq(&nan, 1.0));
        let col = a.reshape(&[2, 1]).unwrap();
        assert!(!a.approx_eq(&col, 1.0));
        let err = a.max_abs_diff(&col).unwrap_err();
        assert_eq!(err.to_string(), "max_abs_diff: shape mismatch between [2] and [2, 1]");
    }
}
