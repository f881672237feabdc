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

/// A new tensor of `shape` on `device` whose values `fill` writes into uninitialised host
/// memory (a kernel's output argument); `fill` must write every element when it returns `Ok`.
///
/// # Errors
/// `fill`'s errors; candle errors.
pub fn new_host(
    shape: &[usize],
    device: &Device,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>]) -> Result<()>,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut out: Vec<f32> = Vec::with_capacity(n);
    fill(&mut out.spare_capacity_mut()[..n])?;
    // SAFETY: `fill` returned Ok, so (by its contract, which every caller's kernel documents)
    // it wrote all `n` elements of the spare capacity, the first `n` elements of `out`.
    unsafe { out.set_len(n) };
    from_host(out, shape, device)
}

/// A tensor's contiguous row-major `f32` host data, borrowed in place from a contiguous CPU
/// `f32` tensor (holding its storage's read lock) or copied otherwise; see [`with_host`], which
/// this is for several tensors at once.
pub enum HostView<'a> {
    /// In place: the storage's read guard, the start offset and the element count.
    Borrowed(candle::StorageRef<'a>, usize, usize),
    /// A host copy.
    Owned(Vec<f32>),
}

impl HostView<'_> {
    /// Views `t`'s data.
    ///
    /// # Errors
    /// candle errors.
    pub fn new(t: &Tensor) -> Result<HostView<'_>> {
        if t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous() {
            let (storage, layout) = t.storage_and_layout();
            let start = layout.start_offset();
            if matches!(&*storage, Storage::Cpu(_)) {
                return Ok(HostView::Borrowed(storage, start, t.elem_count()));
            }
        }
        Ok(HostView::Owned(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?))
    }

    /// The values.
    ///
    /// # Errors
    /// candle errors (storage that is not `f32`, which [`HostView::new`] rules out).
    pub fn slice(&self) -> Result<&[f32]> {
        match self {
            HostView::Borrowed(storage, start, n) => match &**storage {
                Storage::Cpu(cpu) => Ok(&cpu.as_slice::<f32>()?[*start..*start + *n]),
                _ => unreachable!("checked to be CPU storage in HostView::new"),
            },
            HostView::Owned(v) => Ok(v),
        }
    }
}
