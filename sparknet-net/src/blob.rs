//! Conversions between Caffe's stored blobs (`BlobProto`) and candle tensors.

use candle::{Device, Tensor};

use crate::proto::{BlobProto, BlobShape};
use crate::{Error, Result};

/// A blob's shape: `shape.dim` when present, else the legacy `num/channels/height/width` (4-D).
pub fn blob_shape(b: &BlobProto) -> Vec<usize> {
    match &b.shape {
        Some(s) => s.dim.iter().map(|&d| d.max(0) as usize).collect(),
        None => [b.num(), b.channels(), b.height(), b.width()]
            .iter()
            .map(|&d| d.max(0) as usize)
            .collect(),
    }
}

/// The number of values a shape holds, `None` when its dimensions (zeros aside, since strides
/// multiply the others) multiply past `usize`: a corrupt file can claim any dimensions.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d.max(1)))?;
    Some(shape.iter().product())
}

/// The blob's values as `f32` (`data`, or `double_data` narrowed).
pub fn blob_data(b: &BlobProto) -> Vec<f32> {
    if b.data.is_empty() && !b.double_data.is_empty() {
        b.double_data.iter().map(|&v| v as f32).collect()
    } else {
        b.data.clone()
    }
}

/// Whether the stored blob fits a parameter of shape `want` (Caffe's `Blob::ShapeEquals`: a legacy
/// 4-D blob matches any shape of at most 4 axes padded with leading 1s).
pub fn blob_fits(b: &BlobProto, want: &[usize]) -> bool {
    if b.shape.is_some() {
        return blob_shape(b) == want;
    }
    if want.len() > 4 {
        return false;
    }
    let mut padded = vec![1usize; 4 - want.len()];
    padded.extend_from_slice(want);
    padded == blob_shape(b)
}

/// Builds a tensor of shape `shape` from a stored blob on `device`. `what` labels errors.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the blob's shape or length does not fit `shape`.
pub fn blob_to_tensor(
    b: &BlobProto,
    shape: &[usize],
    device: &Device,
    layer: &str,
    what: &str,
) -> Result<Tensor> {
    let data = blob_data(b);
    let n: usize = shape.iter().product();
    if !blob_fits(b, shape) || data.len() != n {
        let mut got = blob_shape(b);
        if element_count(&got) != Some(data.len()) {
            got = vec![data.len()];
        }
        return Err(Error::ShapeMismatch {
            layer: layer.to_string(),
            what: what.to_string(),
            expected: shape.to_vec(),
            got,
        });
    }
    Ok(Tensor::from_vec(data, shape, device)?)
}

/// A stored blob's own-shaped tensor (for mean files and other free-standing blobs).
///
/// # Errors
/// When the data length disagrees with the shape.
pub fn blob_to_tensor_own(b: &BlobProto, device: &Device) -> Result<Tensor> {
    let shape = blob_shape(b);
    let data = blob_data(b);
    if element_count(&shape) != Some(data.len()) {
        return Err(Error::BlobData { shape: shape.clone(), values: data.len() });
    }
    Ok(Tensor::from_vec(data, shape, device)?)
}

/// A tensor as a V2 `BlobProto` (shape + packed float data).
///
/// # Errors
/// candle errors while copying the data to the host.
pub fn tensor_to_blob(t: &Tensor) -> Result<BlobProto> {
    let data = t.flatten_all()?.to_dtype(candle::DType::F32)?.to_vec1::<f32>()?;
    Ok(BlobProto {
        shape: Some(BlobShape { dim: t.dims().iter().map(|&d| d as i64).collect() }),
        data,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_shapes_match_like_caffe() {
        let b = BlobProto {
            num: Some(1),
            channels: Some(1),
            height: Some(2),
            width: Some(3),
            data: vec![0.0; 6],
            ..Default::default()
        };
        assert!(blob_fits(&b, &[2, 3]));
        assert!(blob_fits(&b, &[1, 2, 3]));
        assert!(!blob_fits(&b, &[3, 2]));
        let t = blob_to_tensor(&b, &[2, 3], &Device::Cpu, "ip", "weights").unwrap();
        assert_eq!(t.dims(), &[2, 3]);
        let err = blob_to_tensor(&b, &[6], &Device::Cpu, "ip", "weights").unwrap_err().to_string();
        assert!(err.contains("layer 'ip': weights: expected shape [6], got [1, 1, 2, 3]"), "{err}");
    }

    #[test]
    fn dimensions_whose_product_overflows_are_an_error() {
        // Found by the `caffemodel` fuzz target (fuzz/README.md): the product overflowed.
        let b = BlobProto {
            shape: Some(BlobShape { dim: vec![1 << 40, 1 << 40, 3] }),
            data: vec![0.0; 3],
            ..Default::default()
        };
        let err = blob_to_tensor_own(&b, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("more than usize::MAX"), "{err}");
        let err = blob_to_tensor(&b, &[3], &Device::Cpu, "ip", "weights").unwrap_err();
        assert!(err.to_string().contains("got [3]"), "{err}");
        // The second one: no values, but strides that overflow.
        let b = BlobProto {
            shape: Some(BlobShape { dim: vec![0, 1 << 40, 1 << 40] }),
            ..Default::default()
        };
        let err = blob_to_tensor_own(&b, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("more than usize::MAX"), "{err}");
    }

    #[test]
    fn round_trip_through_blobproto() {
        let t = Tensor::arange(0f32, 6.0, &Device::Cpu).unwrap().reshape((2, 3)).unwrap();
        let b = tensor_to_blob(&t).unwrap();
        assert_eq!(blob_shape(&b), vec![2, 3]);
        let back = blob_to_tensor_own(&b, &Device::Cpu).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
    }
}
