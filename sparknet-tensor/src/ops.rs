//! In-place arithmetic: `add`, `sub`, `mul`, `axpy`, `scale`, `add_scalar`, `fill`, `assign`.
//!
//! The kernels live on [`TensorViewMut`]; the [`Tensor`] methods open a view of the whole tensor
//! (copy-on-write) and forward. The right-hand tensor is broadcast to the left's shape (numpy's
//! `a += b`). When both sides are contiguous the loop is a plain slice zip the compiler vectorises;
//! otherwise it walks coalesced inner runs.

use crate::layout::for_each_run;
use crate::{Element, Error, Result, Tensor, TensorViewMut};

impl<T: Element> TensorViewMut<'_, T> {
    /// Applies `f(dst, src)` elementwise, `src` broadcast to the view's shape.
    #[inline(always)]
    fn zip_with(&mut self, op: &'static str, src: &Tensor<T>, f: impl Fn(T, T) -> T) -> Result<()> {
        let src_layout = if src.shape() == self.shape() {
            src.layout.clone()
        } else {
            src.layout.broadcast_to(self.shape()).map_err(|_| Error::ShapeMismatch {
                op,
                left: self.shape().to_vec(),
                right: src.shape().to_vec(),
            })?
        };
        let s = src.buf.as_slice();
        if self.layout.is_contiguous() && src_layout.is_contiguous() {
            let n = self.layout.elem_count();
            let (d0, s0) = (self.layout.offset(), src_layout.offset());
            for (d, &v) in self.data[d0..d0 + n].iter_mut().zip(&s[s0..s0 + n]) {
                *d = f(*d, v);
            }
            return Ok(());
        }
        let shape = self.layout.shape().to_vec();
        let d = &mut *self.data;
        for_each_run(&shape, [&self.layout, &src_layout], |[a, b], len, [sa, sb]| {
            if sa == 1 && sb == 1 {
                for (x, &y) in d[a..a + len].iter_mut().zip(&s[b..b + len]) {
                    *x = f(*x, y);
                }
            } else {
                for j in 0..len {
                    let x = &mut d[a + j * sa];
                    *x = f(*x, s[b + j * sb]);
                }
            }
        });
        Ok(())
    }

    /// Applies `f` to every viewed element.
    #[inline(always)]
    fn map_inplace(&mut self, f: impl Fn(T) -> T) {
        if let Some(s) = self.as_mut_slice() {
            for x in s {
                *x = f(*x);
            }
            return;
        }
        let layout = &self.layout;
        let d = &mut *self.data;
        for_each_run(layout.shape(), [layout], |[a], len, [sa]| {
            if sa == 1 {
                for x in &mut d[a..a + len] {
                    *x = f(*x);
                }
            } else {
                for j in 0..len {
                    let x = &mut d[a + j * sa];
                    *x = f(*x);
                }
            }
        });
    }

    /// `self += other` (broadcasting `other`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `other` does not broadcast to the view's shape.
    pub fn add(&mut self, other: &Tensor<T>) -> Result<()> {
        self.zip_with("add", other, T::elem_add)
    }

    /// `self -= other` (broadcasting `other`).
    ///
    /// # Errors
    /// As [`TensorViewMut::add`].
    pub fn sub(&mut self, other: &Tensor<T>) -> Result<()> {
        self.zip_with("sub", other, T::elem_sub)
    }

    /// `self *= other`, elementwise (broadcasting `other`).
    ///
    /// # Errors
    /// As [`TensorViewMut::add`].
    pub fn mul(&mut self, other: &Tensor<T>) -> Result<()> {
        self.zip_with("mul", other, T::elem_mul)
    }

    /// `self += alpha * x` (BLAS axpy; broadcasting `x`).
    ///
    /// # Errors
    /// As [`TensorViewMut::add`].
    pub fn axpy(&mut self, alpha: T, x: &Tensor<T>) -> Result<()> {
        self.zip_with("axpy", x, |d, v| d.elem_add(alpha.elem_mul(v)))
    }

    /// Overwrites the view with `src` (broadcasting `src`).
    ///
    /// # Errors
    /// As [`TensorViewMut::add`].
    pub fn assign(&mut self, src: &Tensor<T>) -> Result<()> {
        self.zip_with("assign", src, |_, v| v)
    }

    /// `self *= alpha`.
    pub fn scale(&mut self, alpha: T) {
        self.map_inplace(|x| x.elem_mul(alpha));
    }

    /// `self += c` for every element.
    pub fn add_scalar(&mut self, c: T) {
        self.map_inplace(|x| x.elem_add(c));
    }

    /// Sets every viewed element to `value`.
    pub fn fill(&mut self, value: T) {
        self.map_inplace(|_| value);
    }
}

impl<T: Element> Tensor<T> {
    /// `self += other` (broadcasting `other`; copy-on-write).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming both shapes when `other` does not broadcast to `self`.
    pub fn add(&mut self, other: &Tensor<T>) -> Result<()> {
        self.view_mut().add(other)
    }

    /// `self -= other` (broadcasting `other`; copy-on-write).
    ///
    /// # Errors
    /// As [`Tensor::add`].
    pub fn sub(&mut self, other: &Tensor<T>) -> Result<()> {
        self.view_mut().sub(other)
    }

    /// `self *= other` elementwise (broadcasting `other`; copy-on-write).
    ///
    /// # Errors
    /// As [`Tensor::add`].
    pub fn mul(&mut self, other: &Tensor<T>) -> Result<()> {
        self.view_mut().mul(other)
    }

    /// `self += alpha * x` (broadcasting `x`; copy-on-write).
    ///
    /// # Errors
    /// As [`Tensor::add`].
    pub fn axpy(&mut self, alpha: T, x: &Tensor<T>) -> Result<()> {
        self.view_mut().axpy(alpha, x)
    }

    /// `self *= alpha` (copy-on-write).
    pub fn scale(&mut self, alpha: T) {
        self.view_mut().scale(alpha);
    }

    /// `self += c` for every element (copy-on-write).
    pub fn add_scalar(&mut self, c: T) {
        self.view_mut().add_scalar(c);
    }

    /// Sets every element to `value` (copy-on-write).
    pub fn fill(&mut self, value: T) {
        self.view_mut().fill(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: &[f32], shape: &[usize]) -> Tensor<f32> {
        Tensor::from_slice(data, shape).unwrap()
    }

    #[test]
    fn contiguous_arithmetic() {
        let mut a = t(&[1., 2., 3., 4.], &[2, 2]);
        let b = t(&[10., 20., 30., 40.], &[2, 2]);
        a.add(&b).unwrap();
        assert_eq!(a.to_vec(), [11., 22., 33., 44.]);
        a.sub(&b).unwrap();
        a.mul(&b).unwrap();
        assert_eq!(a.to_vec(), [10., 40., 90., 160.]);
        a.scale(0.5);
        a.add_scalar(1.0);
        assert_eq!(a.to_vec(), [6., 21., 46., 81.]);
        a.axpy(-2.0, &b).unwrap();
        assert_eq!(a.to_vec(), [-14., -19., -14., 1.]);
    }

    #[test]
    fn strided_operands_and_broadcast() {
        let mut a = Tensor::<f32>::arange(6).unwrap().reshape(&[2, 3]).unwrap();
        let bt = t(&[1., 2., 3., 4., 5., 6.], &[3, 2]).transpose(0, 1).unwrap();
        a.add(&bt).unwrap();
        assert_eq!(a.to_vec(), [1., 4., 7., 5., 8., 11.]);
        a.sub(&t(&[1., 1., 1.], &[3])).unwrap();
        assert_eq!(a.to_vec(), [0., 3., 6., 4., 7., 10.]);
        let err = a.add(&t(&[1., 2.], &[2])).unwrap_err();
        assert_eq!(err.to_string(), "add: shape mismatch between [2, 3] and [2]");
    }

    #[test]
    fn writes_are_copy_on_write() {
        let base = Tensor::<i32>::arange(12).unwrap().reshape(&[3, 4]).unwrap();
        let mut view = base.slice(0, 1).unwrap();
        assert!(view.shares_buffer_with(&base));
        view.add_scalar(100);
        assert_eq!(view.to_vec(), [104, 105, 106, 107]);
        assert_eq!(base.get(&[1, 0]).unwrap(), 4, "the base is untouched");
        assert!(!view.shares_buffer_with(&base));
    }

    #[test]
    fn unique_views_write_in_place_and_broadcasts_materialise() {
        let mut a = Tensor::<f64>::zeros(&[2, 3]).unwrap();
        a.view_mut().narrow(1, 1, 2).unwrap().fill(1.0);
        assert_eq!(a.to_vec(), [0., 1., 1., 0., 1., 1.]);
        let mut b = t(&[1., 2.], &[2]).broadcast_to(&[3, 2]).unwrap();
        b.set(&[0, 0], 9.0).unwrap();
        assert_eq!(b.to_vec(), [9., 2., 1., 2., 1., 2.]);
    }

    #[test]
    fn view_mut_ops_on_a_strided_region() {
        let mut a = Tensor::<u8>::zeros(&[3, 3]).unwrap();
        let ones = Tensor::<u8>::ones(&[3]).unwrap();
        let mut col = a.view_mut().slice(1, 2).unwrap();
        col.add(&ones).unwrap();
        col.axpy(2, &ones).unwrap();
        col.scale(10);
        assert_eq!(a.to_vec(), [0, 0, 30, 0, 0, 30, 0, 0, 30]);
    }
}
