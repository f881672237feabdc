//! Caffe's hot CPU kernels on plain `f32` slices (filled by the kernels work).
