//! [`Layout`]: how a tensor's multi-index maps into its buffer (shape, strides, offset), and the
//! run iteration every kernel is built on.
//!
//! Element `[i0, .., ik]` lives at `offset + i0 * strides[0] + .. + ik * strides[k]`. Strides are
//! counted in elements and are never negative; a stride of 0 (only made by `broadcast_to`) repeats
//! one element along an axis.

use crate::{Error, Result};

/// Shape, strides (in elements) and offset of a tensor inside its buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// The number of elements of `shape`, or an error when it overflows `usize`.
pub(crate) fn checked_elem_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::SizeOverflow { shape: shape.to_vec() })
}

/// Row-major (C order) strides of `shape`.
pub(crate) fn c_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc = acc.wrapping_mul(d.max(1));
    }
    strides
}

impl Layout {
    /// The C-contiguous layout of `shape` at offset 0.
    ///
    /// # Errors
    /// [`Error::SizeOverflow`] when the element count does not fit in `usize`.
    pub fn contiguous(shape: &[usize]) -> Result<Self> {
        checked_elem_count(shape)?;
        Ok(Layout { shape: shape.to_vec(), strides: c_strides(shape), offset: 0 })
    }

    /// The C-contiguous layout of a shape already known to fit in memory.
    pub(crate) fn c_order(shape: &[usize]) -> Self {
        Layout { shape: shape.to_vec(), strides: c_strides(shape), offset: 0 }
    }

    /// The size of every axis.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The step in elements along every axis.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Position of element `[0, .., 0]` in the buffer.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements (the product of the shape; 1 for a 0-d tensor).
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the elements are the C-order run `offset..offset + elem_count` of the buffer.
    /// Axes of size 1 may have any stride.
    pub fn is_contiguous(&self) -> bool {
        if self.shape.contains(&0) {
            return true;
        }
        let mut expected = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 {
                if s != expected {
                    return false;
                }
                expected *= d;
            }
        }
        true
    }

    /// True when two different indices can reach the same element (a broadcast axis).
    pub fn has_aliasing(&self) -> bool {
        self.shape.iter().zip(&self.strides).any(|(&d, &s)| d > 1 && s == 0)
    }

    /// The buffer position of `index`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfBounds`] when `index` has the wrong length or a coordinate too large.
    pub fn index_offset(&self, index: &[usize]) -> Result<usize> {
        let ok = index.len() == self.ndim() && index.iter().zip(&self.shape).all(|(i, d)| i < d);
        if !ok {
            return Err(Error::IndexOutOfBounds {
                index: index.to_vec(),
                shape: self.shape.clone(),
            });
        }
        Ok(self.offset + index.iter().zip(&self.strides).map(|(i, s)| i * s).sum::<usize>())
    }

    fn check_axis(&self, op: &'static str, axis: usize) -> Result<()> {
        if axis < self.ndim() {
            Ok(())
        } else {
            Err(Error::AxisOutOfRange { op, axis, shape: self.shape.clone() })
        }
    }

    fn check_rank(&self, op: &'static str, got: usize) -> Result<()> {
        if got == self.ndim() {
            Ok(())
        } else {
            Err(Error::RankMismatch { op, shape: self.shape.clone(), expected: self.ndim(), got })
        }
    }

    /// The half-open box `lo..hi` (one bound per axis); keeps the rank.
    pub(crate) fn subarray(&self, lo: &[usize], hi: &[usize]) -> Result<Self> {
        self.check_rank("subarray", lo.len())?;
        self.check_rank("subarray", hi.len())?;
        let mut out = self.clone();
        for axis in 0..self.ndim() {
            let (l, h, d) = (lo[axis], hi[axis], self.shape[axis]);
            if l > h || h > d {
                let shape = self.shape.clone();
                return Err(Error::BadRange { op: "subarray", axis, lo: l, hi: h, dim: d, shape });
            }
            out.shape[axis] = h - l;
            // An empty box never dereferences its offset, so keep it in range.
            if h > l {
                out.offset += l * self.strides[axis];
            }
        }
        Ok(out)
    }

    /// `len` entries of `axis` starting at `start`; keeps the rank.
    pub(crate) fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Self> {
        self.check_axis("narrow", axis)?;
        let dim = self.shape[axis];
        let end = start.checked_add(len).filter(|&e| e <= dim);
        let Some(end) = end else {
            let (shape, hi) = (self.shape.clone(), start.saturating_add(len));
            return Err(Error::BadRange { op: "narrow", axis, lo: start, hi, dim, shape });
        };
        let mut out = self.clone();
        out.shape[axis] = end - start;
        if len > 0 {
            out.offset += start * self.strides[axis];
        }
        Ok(out)
    }

    /// Entry `index` of `axis`, dropping that axis.
    pub(crate) fn slice(&self, axis: usize, index: usize) -> Result<Self> {
        self.check_axis("slice", axis)?;
        let dim = self.shape[axis];
        if index >= dim {
            let shape = self.shape.clone();
            let hi = index + 1;
            return Err(Error::BadRange { op: "slice", axis, lo: index, hi, dim, shape });
        }
        let mut out = self.clone();
        out.offset += index * self.strides[axis];
        out.shape.remove(axis);
        out.strides.remove(axis);
        Ok(out)
    }

    /// Axis `i` of the result is axis `axes[i]` of `self`.
    pub(crate) fn permute(&self, axes: &[usize]) -> Result<Self> {
        let mut seen = vec![false; self.ndim()];
        let valid = axes.len() == self.ndim()
            && axes.iter().all(|&a| a < seen.len() && !std::mem::replace(&mut seen[a], true));
        if !valid {
            return Err(Error::NotAPermutation { axes: axes.to_vec(), shape: self.shape.clone() });
        }
        Ok(Layout {
            shape: axes.iter().map(|&a| self.shape[a]).collect(),
            strides: axes.iter().map(|&a| self.strides[a]).collect(),
            offset: self.offset,
        })
    }

    /// Swaps two axes.
    pub(crate) fn transpose(&self, a: usize, b: usize) -> Result<Self> {
        self.check_axis("transpose", a)?;
        self.check_axis("transpose", b)?;
        let mut out = self.clone();
        out.shape.swap(a, b);
        out.strides.swap(a, b);
        Ok(out)
    }

    /// numpy broadcasting: trailing axes align; an axis of size 1 (or a missing leading axis)
    /// stretches with stride 0.
    pub(crate) fn broadcast_to(&self, shape: &[usize]) -> Result<Self> {
        let err = || Error::Broadcast { from: self.shape.clone(), to: shape.to_vec() };
        if shape.len() < self.ndim() {
            return Err(err());
        }
        checked_elem_count(shape)?;
        let lead = shape.len() - self.ndim();
        let mut strides = vec![0; shape.len()];
        for (axis, (&d, &s)) in self.shape.iter().zip(&self.strides).enumerate() {
            let target = shape[lead + axis];
            if d == target {
                strides[lead + axis] = s;
            } else if d != 1 {
                return Err(err());
            }
        }
        Ok(Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }

    /// The same elements under `shape`, when that needs no copy (the layout is contiguous).
    /// `Ok(None)` means a copy is needed.
    pub(crate) fn reshape(&self, shape: &[usize]) -> Result<Option<Self>> {
        let n = checked_elem_count(shape)?;
        if n != self.elem_count() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                left: self.shape.clone(),
                right: shape.to_vec(),
            });
        }
        if !self.is_contiguous() {
            return Ok(None);
        }
        Ok(Some(Layout { shape: shape.to_vec(), strides: c_strides(shape), offset: self.offset }))
    }
}

/// Merges axes that are contiguous with each other in every layout and drops axes of size 1.
/// The C-order visiting sequence is unchanged.
fn coalesce<const N: usize>(
    shape: &[usize],
    strides: [&[usize]; N],
) -> (Vec<usize>, [Vec<usize>; N]) {
    let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out_strides: [Vec<usize>; N] = std::array::from_fn(|_| Vec::with_capacity(shape.len()));
    for (axis, &d) in shape.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let mergeable = out_shape.last().is_some()
            && (0..N).all(|k| out_strides[k].last() == Some(&(strides[k][axis] * d)));
        if mergeable {
            *out_shape.last_mut().expect("checked non-empty") *= d;
            for (k, s) in out_strides.iter_mut().enumerate() {
                *s.last_mut().expect("checked non-empty") = strides[k][axis];
            }
        } else {
            out_shape.push(d);
            for (k, s) in out_strides.iter_mut().enumerate() {
                s.push(strides[k][axis]);
            }
        }
    }
    (out_shape, out_strides)
}

/// Visits `N` equally shaped layouts together in C order, one inner run at a time:
/// `f(starts, len, inner_strides)` where run element `j` of layout `k` is at
/// `starts[k] + j * inner_strides[k]`. Runs are as long as coalescing allows.
pub(crate) fn for_each_run<const N: usize>(
    shape: &[usize],
    layouts: [&Layout; N],
    mut f: impl FnMut([usize; N], usize, [usize; N]),
) {
    if shape.contains(&0) {
        return;
    }
    let (cshape, cstrides) = coalesce(shape, layouts.map(|l| l.strides.as_slice()));
    let offsets = layouts.map(|l| l.offset);
    let Some((&len, outer)) = cshape.split_last() else {
        f(offsets, 1, [0; N]);
        return;
    };
    let inner: [usize; N] = std::array::from_fn(|k| cstrides[k][outer.len()]);
    let mut idx = vec![0usize; outer.len()];
    let mut cur = offsets;
    loop {
        f(cur, len, inner);
        let mut axis = outer.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            idx[axis] += 1;
            for (c, s) in cur.iter_mut().zip(&cstrides) {
                *c += s[axis];
            }
            if idx[axis] < outer[axis] {
                break;
            }
            idx[axis] = 0;
            for (c, s) in cur.iter_mut().zip(&cstrides) {
                *c -= s[axis] * outer[axis];
            }
        }
    }
}

/// Visits the buffer position of every element of `layout` in C order.
pub(crate) fn for_each_offset(layout: &Layout, mut f: impl FnMut(usize)) {
    for_each_run(&layout.shape, [layout], |[start], len, [stride]| {
        for j in 0..len {
            f(start + j * stride);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(l: &Layout) -> Vec<usize> {
        let mut v = Vec::new();
        for_each_offset(l, |o| v.push(o));
        v
    }

    #[test]
    fn contiguous_strides_and_offsets() {
        let l = Layout::contiguous(&[2, 3]).unwrap();
        assert_eq!(l.strides(), &[3, 1]);
        assert!(l.is_contiguous());
        assert_eq!(offsets(&l), (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn transposed_visits_in_c_order_of_the_view() {
        let l = Layout::contiguous(&[2, 3]).unwrap().transpose(0, 1).unwrap();
        assert!(!l.is_contiguous());
        assert_eq!(offsets(&l), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn coalescing_merges_only_adjacent_contiguous_axes() {
        let l = Layout::contiguous(&[3, 8, 8]).unwrap().subarray(&[0, 1, 0], &[3, 3, 8]).unwrap();
        let (shape, [strides]) = coalesce(l.shape(), [l.strides()]);
        assert_eq!(shape, vec![3, 16]);
        assert_eq!(strides, vec![64, 1]);
    }

    #[test]
    fn zero_d_and_empty() {
        let l = Layout::contiguous(&[]).unwrap();
        assert_eq!(offsets(&l), vec![0]);
        let e = Layout::contiguous(&[2, 0, 3]).unwrap();
        assert!(offsets(&e).is_empty());
    }

    #[test]
    fn broadcast_rules() {
        let l = Layout::contiguous(&[3, 1]).unwrap();
        let b = l.broadcast_to(&[2, 3, 4]).unwrap();
        assert_eq!(b.strides(), &[0, 1, 0]);
        assert!(b.has_aliasing());
        assert!(matches!(l.broadcast_to(&[3, 2, 4]), Err(Error::Broadcast { .. })));
        assert!(matches!(l.broadcast_to(&[4]), Err(Error::Broadcast { .. })));
    }

    #[test]
    fn size_overflow_is_an_error() {
        assert!(matches!(Layout::contiguous(&[usize::MAX, 2]), Err(Error::SizeOverflow { .. })));
    }
}
