//! The trainer: data binding, testing, training (one test binary).

use std::path::{Path, PathBuf};

mod bind;
mod default_run;
mod eval;
mod lsq;
mod plan;
mod reliability;
mod sparknet_loop;
mod train_lenet;

/// The MNIST test set (its first `limit` records) converted into `dir/mnist-t10k`.
pub fn mnist_test_set(assets: &Path, dir: &Path, limit: Option<usize>) -> PathBuf {
    mnist_set(assets, dir, "t10k", limit)
}

/// MNIST's `train` or `t10k` set (its first `limit` records) converted into `dir/mnist-<set>`.
pub fn mnist_set(assets: &Path, dir: &Path, set: &str, limit: Option<usize>) -> PathBuf {
    let mnist = assets.join("data/mnist");
    let out = dir.join(format!("mnist-{set}"));
    sparknet_data::convert::mnist::convert_mnist(
        &mnist.join(format!("{set}-images-idx3-ubyte.gz")),
        &mnist.join(format!("{set}-labels-idx1-ubyte.gz")),
        &out,
        4096,
        limit,
        &|_| {},
    )
    .unwrap();
    out
}
