//! Access to a tensor's host `f32` data without copies, and back, for the CPU kernels of
//! `sparknet-kernels` (convolution, pooling, LRN, GEMM). On other devices the data makes a round
//! trip through the host.

use candle::{DType, Device, Storage, Tensor};

use crate::{Error, Result};

/// Runs `f` on the tensor's contiguous row-major `f32` data.
///
/// A contiguous CPU `f32` tensor is read in place; anything else is first made contiguous,
/// converted to `f32` and copied to the host.
///
/// # Errors
/// candle errors, and `f`'s errors.
pub fn with_host<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    if t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous() {
        let (storage, layout) = t.storage_and_layout();
        if let Storage::Cpu(cpu) = &*storage {
            let all = cpu.as_slice::<f32>()?;
            let start = layout.start_offset();
            return f(&all[start..start + t.elem_count()]);
        }
    }
    let v = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    f(&v)
}

/// A tensor of `shape` on `device` holding `data` (moved, not copied, on the CPU).
///
/// # Errors
/// candle errors (a length that disagrees with the shape).
pub fn from_host(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
    let t = Tensor::from_vec(data, shape, &Device::Cpu)?;
    if device.is_cpu() { Ok(t) } else { Ok(t.to_device(device)?) }
}

/// Converts a kernel error, naming the layer.
pub fn kernel_err(layer: &str, e: sparknet_kernels::KernelError) -> Error {
    Error::Kernel { layer: layer.to_string(), source: e }
}
