//! Reductions along one axis (`sum`, `mean`, `max`, `argmax`); the axis is dropped, as numpy's
//! `keepdims=False` does.
//!
//! `sum` accumulates in the element type (wrapping for integers); `mean` accumulates in `f64`.
//! `max` and `argmax` propagate NaN: the first NaN along the axis wins, as in numpy.

use crate::layout::{for_each_offset, for_each_run};
use crate::{Element, Error, Float, Result, Tensor};

impl<T: Element> Tensor<T> {
    /// Calls `f(start, len, stride)` for every run along `axis`, in C order of the other axes.
    fn reduce_axis<U: Element>(
        &self,
        op: &'static str,
        axis: usize,
        f: impl Fn(usize, usize, usize) -> U,
    ) -> Result<Tensor<U>> {
        if axis >= self.ndim() {
            return Err(Error::AxisOutOfRange { op, axis, shape: self.shape().to_vec() });
        }
        let (len, stride) = (self.shape()[axis], self.strides()[axis]);
        if len == 0 {
            return Err(Error::EmptyAxis { op, axis, shape: self.shape().to_vec() });
        }
        let outer = self.layout.slice(axis, 0)?;
        let mut out = Vec::with_capacity(outer.elem_count());
        for_each_offset(&outer, |start| out.push(f(start, len, stride)));
        Tensor::from_vec(out, outer.shape())
    }

    /// Sum along `axis` (zeros when the axis is empty).
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`].
    pub fn sum(&self, axis: usize) -> Result<Tensor<T>> {
        if self.shape().get(axis) == Some(&0) {
            let mut shape = self.shape().to_vec();
            shape.remove(axis);
            return Tensor::zeros(&shape);
        }
        let b = self.buf.as_slice();
        self.reduce_axis("sum", axis, |start, len, stride| {
            (0..len).fold(T::ZERO, |acc, j| acc.elem_add(b[start + j * stride]))
        })
    }

    /// Largest element along `axis` (NaN if any is NaN).
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`], or [`Error::EmptyAxis`] when the axis has no elements.
    pub fn max(&self, axis: usize) -> Result<Tensor<T>> {
        let b = self.buf.as_slice();
        self.reduce_axis("max", axis, |start, len, stride| {
            b[start + argmax_run(b, start, len, stride) * stride]
        })
    }

    /// Index of the largest element along `axis` (the first one on ties; the first NaN if any).
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`], [`Error::EmptyAxis`], or [`Error::ValueOutOfRange`] when the
    /// axis is longer than `i32::MAX`.
    pub fn argmax(&self, axis: usize) -> Result<Tensor<i32>> {
        if let Some(&len) = self.shape().get(axis)
            && i32::try_from(len).is_err()
        {
            let value = len.to_string();
            return Err(Error::ValueOutOfRange { op: "argmax", value, dtype: crate::DType::I32 });
        }
        let b = self.buf.as_slice();
        self.reduce_axis("argmax", axis, |start, len, stride| {
            argmax_run(b, start, len, stride) as i32
        })
    }

    /// Sum of all elements (in the element type; 0 for an empty tensor).
    pub fn sum_all(&self) -> T {
        let b = self.buf.as_slice();
        let mut acc = T::ZERO;
        for_each_run(self.shape(), [&self.layout], |[start], len, [stride]| {
            for j in 0..len {
                acc = acc.elem_add(b[start + j * stride]);
            }
        });
        acc
    }
}

impl<T: Float> Tensor<T> {
    /// Mean along `axis` (accumulated in `f64`).
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`], or [`Error::EmptyAxis`] when the axis has no elements.
    pub fn mean(&self, axis: usize) -> Result<Tensor<T>> {
        let b = self.buf.as_slice();
        self.reduce_axis("mean", axis, |start, len, stride| {
            let s: f64 = (0..len).map(|j| b[start + j * stride].to_f64()).sum();
            T::from_f64(s / len as f64)
        })
    }
}

/// Position of the largest of `len >= 1` elements `b[start + j * stride]`.
fn argmax_run<T: Element>(b: &[T], start: usize, len: usize, stride: usize) -> usize {
    let mut best = 0;
    let mut best_v = b[start];
    if best_v.is_nan() {
        return 0;
    }
    for j in 1..len {
        let v = b[start + j * stride];
        if v.is_nan() {
            return j;
        }
        if v > best_v {
            best = j;
            best_v = v;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arange(shape: &[usize]) -> Tensor<f32> {
        let n = shape.iter().product();
        Tensor::arange(n).unwrap().reshape(shape).unwrap()
    }

    #[test]
    fn sums_means_and_maxima() {
        let t = arange(&[2, 3]);
        assert_eq!(t.sum(0).unwrap().to_vec(), [3., 5., 7.]);
        assert_eq!(t.sum(1).unwrap().to_vec(), [3., 12.]);
        assert_eq!(t.mean(1).unwrap().to_vec(), [1., 4.]);
        assert_eq!(t.max(0).unwrap().to_vec(), [3., 4., 5.]);
        assert_eq!(t.argmax(1).unwrap().to_vec(), [2, 2]);
        assert_eq!(t.sum_all(), 15.);
    }

    #[test]
    fn reductions_on_views_follow_the_view() {
        let t = arange(&[2, 3, 4]).permute(&[2, 0, 1]).unwrap();
        let s = t.sum(2).unwrap();
        assert_eq!(s.shape(), &[4, 2]);
        // s[k, i] = sum_j (12 i + 4 j + k)
        assert_eq!(s.to_vec(), [12., 48., 15., 51., 18., 54., 21., 57.]);
    }

    #[test]
    fn nan_propagates_and_ties_take_the_first() {
        let t = Tensor::from_vec(vec![1.0f64, f64::NAN, 3.0, 5.0, 5.0, 2.0], &[2, 3]).unwrap();
        let m = t.max(1).unwrap().to_vec();
        assert!(m[0].is_nan());
        assert_eq!(m[1], 5.0);
        assert_eq!(t.argmax(1).unwrap().to_vec(), [1, 0]);
    }

    #[test]
    fn bad_axes_and_empty_axes_are_errors() {
        let t = arange(&[2, 3]);
        assert!(matches!(t.sum(2), Err(Error::AxisOutOfRange { axis: 2, .. })));
        let e = Tensor::<f32>::zeros(&[2, 0]).unwrap();
        assert_eq!(e.sum(1).unwrap().to_vec(), [0., 0.]);
        assert!(matches!(e.max(1), Err(Error::EmptyAxis { .. })));
        assert!(matches!(e.mean(1), Err(Error::EmptyAxis { .. })));
    }
}
