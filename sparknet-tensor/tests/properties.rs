//! Property tests of the index arithmetic: every view agrees with the index it stands for.
//!
//! Tensors hold `arange` (element = its C-order position in the base), so a value names exactly
//! which base element a view reached.

use proptest::prelude::*;
use sparknet_tensor::Tensor;

/// A shape of rank 1..=4 with dimensions 1..=5.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=5, 1..=4)
}

fn base(shape: &[usize]) -> Tensor<i32> {
    Tensor::arange(shape.iter().product()).unwrap().reshape(shape).unwrap()
}

/// The C-order position of `index` in `shape`.
fn linear(index: &[usize], shape: &[usize]) -> usize {
    index.iter().zip(shape).fold(0, |acc, (i, d)| acc * d + i)
}

/// All multi-indices of `shape` in C order.
fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|mut k| {
            let mut idx = vec![0; shape.len()];
            for (i, d) in idx.iter_mut().zip(shape).rev() {
                *i = k % d;
                k /= d;
            }
            idx
        })
        .collect()
}

/// A shape with a random permutation of its axes.
fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape().prop_flat_map(|s| {
        let n = s.len();
        (Just(s), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
    })
}

/// A shape with a box `lo..hi` inside it.
fn shape_and_box() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<usize>)> {
    shape()
        .prop_flat_map(|s| {
            let bounds: Vec<_> = s.iter().map(|&d| (0..=d, 0..=d)).collect();
            (Just(s), bounds)
        })
        .prop_map(|(s, b)| {
            let (lo, hi) = b.into_iter().map(|(a, c)| (a.min(c), a.max(c))).unzip();
            (s, lo, hi)
        })
}

proptest! {
    #[test]
    fn permute_moves_indices((s, perm) in shape_and_perm()) {
        let t = base(&s);
        let p = t.permute(&perm).unwrap();
        for idx in indices(p.shape()) {
            let mut orig = vec![0; s.len()];
            for (k, &a) in perm.iter().enumerate() {
                orig[a] = idx[k];
            }
            prop_assert_eq!(p.get(&idx).unwrap() as usize, linear(&orig, &s));
        }
        // Walking the view in C order agrees with `get`, contiguous copy or not.
        let flat: Vec<i32> = indices(p.shape()).iter().map(|i| p.get(i).unwrap()).collect();
        prop_assert_eq!(p.to_vec(), flat);
    }

    #[test]
    fn subarray_offsets_by_lo((s, lo, hi) in shape_and_box()) {
        let t = base(&s);
        let b = t.subarray(&lo, &hi).unwrap();
        let want: Vec<usize> = lo.iter().zip(&hi).map(|(l, h)| h - l).collect();
        prop_assert_eq!(b.shape(), want.as_slice());
        let mut flat = vec![0; b.elem_count()];
        b.flat_copy_into(&mut flat).unwrap();
        for (k, idx) in indices(b.shape()).into_iter().enumerate() {
            let orig: Vec<usize> = idx.iter().zip(&lo).map(|(i, l)| i + l).collect();
            prop_assert_eq!(b.get(&idx).unwrap() as usize, linear(&orig, &s));
            prop_assert_eq!(flat[k] as usize, linear(&orig, &s));
        }
    }

    #[test]
    fn reshape_keeps_c_order((s, perm) in shape_and_perm(), split in 0usize..4) {
        let t = base(&s).permute(&perm).unwrap();
        let n = t.elem_count();
        // A target shape with the same count: [n / d, d] for a divisor d, or flat.
        let d = (1..=n).filter(|&d| n.is_multiple_of(d)).nth(split).unwrap_or(1);
        let target = [n / d, d];
        let r = t.reshape(&target).unwrap();
        prop_assert_eq!(r.shape(), &target);
        prop_assert_eq!(r.to_vec(), t.to_vec());
        // A view exactly when the source is contiguous.
        prop_assert_eq!(r.shares_buffer_with(&t), t.is_contiguous());
        for idx in indices(&target) {
            let k = linear(&idx, &target);
            prop_assert_eq!(r.get(&idx).unwrap(), t.to_vec()[k]);
        }
    }

    #[test]
    fn slice_drops_one_axis((s, lo, _hi) in shape_and_box(), axis_seed in 0usize..4) {
        let axis = axis_seed % s.len();
        let i = lo[axis].min(s[axis] - 1);
        let t = base(&s);
        let v = t.slice(axis, i).unwrap();
        prop_assert_eq!(v.ndim(), s.len() - 1);
        for idx in indices(v.shape()) {
            let mut orig = idx.clone();
            orig.insert(axis, i);
            prop_assert_eq!(v.get(&idx).unwrap() as usize, linear(&orig, &s));
        }
    }

    #[test]
    fn in_place_add_on_views_matches_elementwise((s, perm) in shape_and_perm()) {
        let a = base(&s).permute(&perm).unwrap();
        let b = base(&s).permute(&perm).unwrap().to_contiguous();
        let mut sum = a.clone();
        sum.add(&b).unwrap();
        let want: Vec<i32> = a.to_vec().iter().zip(b.to_vec()).map(|(x, y)| x + y).collect();
        prop_assert_eq!(sum.to_vec(), want);
        prop_assert_eq!(a.to_vec(), b.to_vec(), "copy-on-write left the source alone");
    }
}
