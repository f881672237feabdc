//! SparkNet's own NDArray oracles (its `NDArraySpec`), on a 3x4x5 arange, plus the crop flat copy
//! that its data pipeline performs (3x256x256 image -> 3x227x227 random crop).

use sparknet_tensor::{Error, Tensor};

fn arange_3x4x5() -> Tensor<f32> {
    Tensor::arange(60).unwrap().reshape(&[3, 4, 5]).unwrap()
}

#[test]
fn get_1_2_3_is_33() {
    assert_eq!(arange_3x4x5().get(&[1, 2, 3]).unwrap(), 33.0);
}

#[test]
fn subarray_box() {
    let s = arange_3x4x5().subarray(&[0, 1, 2], &[1, 3, 5]).unwrap();
    assert_eq!(s.shape(), &[1, 2, 3]);
    assert_eq!(s.to_vec(), [7., 8., 9., 12., 13., 14.]);
}

#[test]
fn slice_then_slice() {
    let t = arange_3x4x5();
    assert_eq!(t.slice(0, 1).unwrap().slice(1, 2).unwrap().to_vec(), [22., 27., 32., 37.]);
    assert_eq!(t.slice(2, 4).unwrap().slice(0, 2).unwrap().to_vec(), [44., 49., 54., 59.]);
}

#[test]
fn views_share_the_buffer_and_copies_do_not() {
    let t = arange_3x4x5();
    let v = t.subarray(&[0, 1, 2], &[1, 3, 5]).unwrap();
    assert!(v.shares_buffer_with(&t));
    assert!(!v.is_contiguous());
    let c = v.to_contiguous();
    assert!(c.is_contiguous() && !c.shares_buffer_with(&t));
    assert_eq!(c, v);
}

#[test]
fn bad_indices_are_errors_not_panics() {
    let t = arange_3x4x5();
    assert!(matches!(t.get(&[3, 0, 0]), Err(Error::IndexOutOfBounds { .. })));
    assert!(matches!(t.get(&[0, 0]), Err(Error::IndexOutOfBounds { .. })));
    assert!(matches!(t.subarray(&[0, 0, 0], &[1, 5, 1]), Err(Error::BadRange { axis: 1, .. })));
    assert!(matches!(t.subarray(&[2, 0, 0], &[1, 1, 1]), Err(Error::BadRange { axis: 0, .. })));
    assert!(matches!(t.slice(3, 0), Err(Error::AxisOutOfRange { .. })));
    assert!(matches!(t.narrow(2, 4, 2), Err(Error::BadRange { .. })));
    assert!(matches!(t.narrow(2, usize::MAX, 2), Err(Error::BadRange { .. })));
    assert!(matches!(t.permute(&[0, 0, 1]), Err(Error::NotAPermutation { .. })));
    let err = t.reshape(&[7, 9]).unwrap_err();
    assert_eq!(err.to_string(), "reshape: shape mismatch between [3, 4, 5] and [7, 9]");
    let err = Tensor::from_vec(vec![1.0f32; 5], &[2, 3]).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { expected: 6, len: 5, .. }));
    assert!(matches!(Tensor::<u8>::arange(300), Err(Error::ValueOutOfRange { .. })));
    let mut flat = vec![0.0; 59];
    assert!(matches!(t.flat_copy_into(&mut flat), Err(Error::LengthMismatch { .. })));
}

/// The element-by-element reference copy: C order through `get`.
fn copy_by_index(t: &Tensor<f32>) -> Vec<f32> {
    let s = t.shape().to_vec();
    let mut out = Vec::with_capacity(t.elem_count());
    for c in 0..s[0] {
        for h in 0..s[1] {
            for w in 0..s[2] {
                out.push(t.get(&[c, h, w]).unwrap());
            }
        }
    }
    out
}

#[test]
fn crop_227_of_256_flat_copy_matches_elementwise_copy() {
    let n = 3 * 256 * 256;
    // Distinct values (exact in f32) so a misplaced element cannot go unnoticed.
    let image = Tensor::<f32>::arange(n).unwrap().reshape(&[3, 256, 256]).unwrap();
    for (y, x) in [(0, 0), (13, 29), (29, 29)] {
        let crop = image.subarray(&[0, y, x], &[3, y + 227, x + 227]).unwrap();
        let mut flat = vec![-1.0f32; 3 * 227 * 227];
        crop.flat_copy_into(&mut flat).unwrap();
        assert_eq!(flat, copy_by_index(&crop), "crop at ({y}, {x})");
        assert_eq!(flat[0], (y * 256 + x) as f32);
    }
}

#[test]
fn flat_copy_of_a_permuted_view_uses_the_strided_path() {
    let t = arange_3x4x5().permute(&[2, 0, 1]).unwrap();
    let mut flat = vec![0.0; 60];
    t.flat_copy_into(&mut flat).unwrap();
    assert_eq!(flat, copy_by_index(&t));
    assert_eq!(&flat[..4], &[0., 5., 10., 15.]);
}
