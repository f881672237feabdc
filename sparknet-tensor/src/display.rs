//! `Display` in numpy's style: nested brackets, right-aligned columns, floats with a decimal
//! point (`1.`), and for tensors of more than 1000 elements only the first and last 3 entries
//! of every long axis around a `...`. A precision (`{:.3}`) applies to float elements.

use std::fmt;

use crate::{Element, Tensor};

/// Above this many elements the output is summarised (numpy's `threshold`).
const THRESHOLD: usize = 1000;
/// Entries shown at each end of a summarised axis (numpy's `edgeitems`).
const EDGE: usize = 3;

/// Which entries of an axis of size `dim` are printed (`None` marks the `...`).
fn shown(dim: usize, summarise: bool) -> Vec<Option<usize>> {
    if summarise && dim > 2 * EDGE {
        (0..EDGE).map(Some).chain([None]).chain((dim - EDGE..dim).map(Some)).collect()
    } else {
        (0..dim).map(Some).collect()
    }
}

struct Printer<'a, T: Element> {
    tensor: &'a Tensor<T>,
    summarise: bool,
    precision: Option<usize>,
    width: usize,
}

impl<T: Element> Printer<'_, T> {
    fn cell(&self, offset: usize) -> String {
        self.tensor.buf[offset].format(self.precision)
    }

    /// Collects every printed element's text (to size the columns).
    fn collect(&self, axis: usize, offset: usize, out: &mut Vec<String>) {
        let layout = &self.tensor.layout;
        if axis == layout.ndim() {
            out.push(self.cell(offset));
            return;
        }
        for i in shown(layout.shape()[axis], self.summarise).into_iter().flatten() {
            self.collect(axis + 1, offset + i * layout.strides()[axis], out);
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, axis: usize, offset: usize) -> fmt::Result {
        let layout = &self.tensor.layout;
        let ndim = layout.ndim();
        if axis == ndim {
            return write!(f, "{:>w$}", self.cell(offset), w = self.width);
        }
        f.write_str("[")?;
        let left = ndim - axis;
        for (k, entry) in shown(layout.shape()[axis], self.summarise).into_iter().enumerate() {
            if k > 0 {
                if left == 1 {
                    f.write_str(" ")?;
                } else {
                    for _ in 0..left - 1 {
                        f.write_str("\n")?;
                    }
                    for _ in 0..=axis {
                        f.write_str(" ")?;
                    }
                }
            }
            match entry {
                Some(i) => self.write(f, axis + 1, offset + i * layout.strides()[axis])?,
                None => f.write_str("...")?,
            }
        }
        f.write_str("]")
    }
}

impl<T: Element> fmt::Display for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut p = Printer {
            tensor: self,
            summarise: self.elem_count() > THRESHOLD,
            precision: f.precision(),
            width: 0,
        };
        let mut cells = Vec::new();
        p.collect(0, self.layout.offset(), &mut cells);
        p.width = cells.iter().map(|c| c.chars().count()).max().unwrap_or(0);
        p.write(f, 0, self.layout.offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tensors_print_like_numpy() {
        let t = Tensor::<f32>::arange(6).unwrap().reshape(&[2, 3]).unwrap();
        assert_eq!(t.to_string(), "[[0. 1. 2.]\n [3. 4. 5.]]");
        let t = Tensor::<i32>::arange(12).unwrap().reshape(&[2, 2, 3]).unwrap();
        assert_eq!(t.to_string(), "[[[ 0  1  2]\n  [ 3  4  5]]\n\n [[ 6  7  8]\n  [ 9 10 11]]]");
        let h = Tensor::<f64>::from_vec(vec![0.5, -1.26], &[2]).unwrap();
        assert_eq!(format!("{h:.1}"), "[ 0.5 -1.3]");
        assert_eq!(Tensor::scalar(7u8).to_string(), "7");
        assert_eq!(Tensor::<f32>::zeros(&[0]).unwrap().to_string(), "[]");
    }

    #[test]
    fn views_print_their_own_elements() {
        let t = Tensor::<u8>::arange(6).unwrap().reshape(&[2, 3]).unwrap();
        assert_eq!(t.transpose(0, 1).unwrap().to_string(), "[[0 3]\n [1 4]\n [2 5]]");
    }

    #[test]
    fn large_tensors_are_summarised() {
        let t = Tensor::<i32>::arange(2000).unwrap().reshape(&[100, 20]).unwrap();
        let s = t.to_string();
        assert!(s.starts_with("[[   0    1    2 ...   17   18   19]\n [  20   21   22 ..."), "{s}");
        assert!(s.contains("\n ...\n [1940"), "{s}");
        assert!(s.ends_with("1997 1998 1999]]"), "{s}");
        assert!(s.lines().count() == 7, "{s}");
    }
}
