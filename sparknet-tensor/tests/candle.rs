//! Round trips through `candle::Tensor` (feature `candle`; enabled in workspace test runs because
//! sparknet-net depends on it, and checked alone with `cargo test -p sparknet-tensor --features
//! candle`).
#![cfg(feature = "candle")]

use candle::{DType as CDType, Device, IndexOp};
use sparknet_tensor::{DType, Error, Tensor};

#[test]
fn contiguous_round_trip_keeps_shape_and_values() {
    let t = Tensor::<f32>::arange(24).unwrap().reshape(&[2, 3, 4]).unwrap();
    let c = t.to_candle(&Device::Cpu).unwrap();
    assert_eq!(c.dims(), &[2, 3, 4]);
    assert_eq!(c.dtype(), CDType::F32);
    assert_eq!(c.i((1, 2, 3)).unwrap().to_scalar::<f32>().unwrap(), 23.0);
    let back = Tensor::<f32>::from_candle(&c).unwrap();
    assert_eq!(back, t);
}

#[test]
fn strided_views_convert_in_c_order() {
    let t = Tensor::<i32>::arange(12).unwrap().reshape(&[3, 4]).unwrap();
    let view = t.subarray(&[1, 1], &[3, 4]).unwrap().transpose(0, 1).unwrap();
    let c = candle::Tensor::try_from(&view).unwrap();
    assert_eq!(c.dims(), &[3, 2]);
    assert_eq!(c.to_vec2::<i32>().unwrap(), vec![vec![5, 9], vec![6, 10], vec![7, 11]]);
}

#[test]
fn non_contiguous_candle_tensors_come_back_in_logical_order() {
    let c = candle::Tensor::arange(0f64, 6., &Device::Cpu).unwrap().reshape((2, 3)).unwrap();
    let ct = c.t().unwrap();
    assert!(!ct.is_contiguous());
    let back: Tensor<f64> = Tensor::try_from(&ct).unwrap();
    assert_eq!(back.shape(), &[3, 2]);
    assert_eq!(back.to_vec(), [0., 3., 1., 4., 2., 5.]);
}

#[test]
fn every_element_type_round_trips() {
    let u = Tensor::<u8>::from_vec(vec![0, 7, 255], &[3]).unwrap();
    assert_eq!(Tensor::<u8>::from_candle(&u.to_candle(&Device::Cpu).unwrap()).unwrap(), u);
    let d = Tensor::scalar(-2.5f64);
    let c = d.to_candle(&Device::Cpu).unwrap();
    assert_eq!(c.dims(), &[] as &[usize]);
    assert_eq!(Tensor::<f64>::from_candle(&c).unwrap(), d);
}

#[test]
fn a_dtype_mismatch_is_an_error() {
    let c = candle::Tensor::zeros((2, 2), CDType::F32, &Device::Cpu).unwrap();
    let err = Tensor::<f64>::from_candle(&c).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { expected: DType::F64, found: DType::F32, .. }));
    let half = candle::Tensor::zeros(2, CDType::F16, &Device::Cpu).unwrap();
    assert!(matches!(Tensor::<f32>::from_candle(&half), Err(Error::Candle(_))));
}
