//! Reading the reference `.npy` files through sparknet-tensor.

use std::path::Path;

/// Reads a float32 `.npy` file: (shape, data).
pub fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let t = sparknet_tensor::read_npy::<f32>(path).unwrap_or_else(|e| panic!("{e}"));
    (t.shape().to_vec(), t.to_vec())
}
