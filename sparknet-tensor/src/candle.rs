//! Conversions to and from `candle::Tensor` (feature `candle`).
//!
//! Both directions move whole buffers: a contiguous tensor is handed to candle with one slice copy
//! (`candle::Tensor::from_slice`), a strided one is first gathered run by run; a candle tensor
//! comes back through `flatten_all` + `to_vec1` (one copy, from any device).

use crate::{Element, Error, Result, Tensor};

impl<T: Element + candle::WithDType> Tensor<T> {
    /// A candle tensor on `device` with the same shape and elements.
    ///
    /// # Errors
    /// [`Error::Candle`] when candle cannot allocate on `device`.
    pub fn to_candle(&self, device: &candle::Device) -> Result<candle::Tensor> {
        let shape = self.shape().to_vec();
        let t = match self.as_slice() {
            Some(s) => candle::Tensor::from_slice(s, shape, device)?,
            None => candle::Tensor::from_vec(self.to_vec(), shape, device)?,
        };
        Ok(t)
    }

    /// A tensor with the shape and elements of `t` (copied to the host).
    ///
    /// # Errors
    /// [`Error::DTypeMismatch`] when `t` does not hold `T`, [`Error::Candle`] when the copy fails.
    pub fn from_candle(t: &candle::Tensor) -> Result<Self> {
        if t.dtype() != <T as candle::WithDType>::DTYPE {
            let what = format!("candle tensor of shape {:?}", t.dims());
            let expected = <T as Element>::DTYPE;
            return Err(match dtype_from_candle(t.dtype()) {
                Some(found) => Error::DTypeMismatch { what, expected, found },
                None => Error::Candle(candle::Error::Msg(format!(
                    "{what} holds {:?}, which sparknet-tensor has no element type for",
                    t.dtype()
                ))),
            });
        }
        let data = t.flatten_all()?.to_vec1::<T>()?;
        Tensor::from_vec(data, t.dims())
    }
}

impl<T: Element + candle::WithDType> TryFrom<&Tensor<T>> for candle::Tensor {
    type Error = Error;

    /// Converts onto the CPU device (see [`Tensor::to_candle`]).
    fn try_from(t: &Tensor<T>) -> Result<Self> {
        t.to_candle(&candle::Device::Cpu)
    }
}

impl<T: Element + candle::WithDType> TryFrom<&candle::Tensor> for Tensor<T> {
    type Error = Error;

    /// See [`Tensor::from_candle`].
    fn try_from(t: &candle::Tensor) -> Result<Self> {
        Tensor::from_candle(t)
    }
}

fn dtype_from_candle(d: candle::DType) -> Option<crate::DType> {
    match d {
        candle::DType::F32 => Some(crate::DType::F32),
        candle::DType::F64 => Some(crate::DType::F64),
        candle::DType::U8 => Some(crate::DType::U8),
        candle::DType::I32 => Some(crate::DType::I32),
        _ => None,
    }
}
