//! The trainer: data binding, testing, training (one test binary).

use std::path::{Path, PathBuf};

mod bind;
mod default_run;
mod eval;
mod plan;
mod sparknet_loop;

/// The MNIST test set (its first `limit` records) converted into `dir/mnist-test`.
pub fn mnist_test_set(assets: &Path, dir: &Path, limit: Option<usize>) -> PathBuf {
    let mnist = assets.join("data/mnist");
    let out = dir.join("mnist-test");
    sparknet_data::convert::mnist::convert_mnist(
        &mnist.join("t10k-images-idx3-ubyte.gz"),
        &mnist.join("t10k-labels-idx1-ubyte.gz"),
        &out,
        4096,
        limit,
        &|_| {},
    )
    .unwrap();
    out
}
