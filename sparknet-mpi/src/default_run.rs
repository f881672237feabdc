//! The embedded default of `sparknet-train` without arguments: LeNet on MNIST when the data is
//! found, otherwise on sparknet-data's procedurally generated digits, so the first command of the
//! README works on a fresh machine without downloads.
//!
//! MNIST is looked for, in order, in `$SPARKNET_DATA` (sparknet-data datasets `mnist-train` and
//! `mnist-test`, or the four IDX files, gzipped or not) and in `<assets>/data/mnist` (the IDX
//! files; `$SPARKNET_ASSETS`, else `../shared/assets`). IDX files are converted into a temporary
//! directory on the fly (a few seconds).

use std::path::{Path, PathBuf};

use sparknet_data::convert::mnist::convert_mnist;
use sparknet_data::convert::synthetic::convert_synthetic_digits;

use crate::Result;

/// LeNet for 28x28 digits as Caffe's MNIST example defines it (two 5x5 convolutions with max
/// pooling, a 500-unit hidden layer, 10 outputs), with Data layers whose sources the trainer
/// replaces by the datasets it found.
pub const LENET_NET: &str = r#"name: "LeNet"
layer {
  name: "digits" type: "Data" top: "data" top: "label"
  include { phase: TRAIN }
  transform_param { scale: 0.00390625 }
  data_param { source: "mnist-train" batch_size: 64 }
}
layer {
  name: "digits" type: "Data" top: "data" top: "label"
  include { phase: TEST }
  transform_param { scale: 0.00390625 }
  data_param { source: "mnist-test" batch_size: 100 }
}
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" } }
}
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer {
  name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" } }
}
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer {
  name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 500
    weight_filler { type: "xavier" } bias_filler { type: "constant" } }
}
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer {
  name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10
    weight_filler { type: "xavier" } bias_filler { type: "constant" } }
}
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"#;

/// The default solver: Caffe's LeNet settings (SGD with momentum 0.9, weight decay 5e-4, the
/// `inv` learning-rate policy) for a short run of 1000 iterations, tested every 250. No
/// snapshots unless `--snapshot-prefix` is given. `net` is filled in by the trainer.
pub const LENET_SOLVER: &str = r#"base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 100
test_iter: 100
test_interval: 250
max_iter: 1000
snapshot_prefix: "lenet_default"
snapshot_after_train: false
random_seed: 1
"#;

/// Which data the default run uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultData {
    /// The training dataset directory.
    pub train: PathBuf,
    /// The test dataset directory.
    pub test: PathBuf,
    /// True for MNIST, false for the synthetic digits.
    pub mnist: bool,
    /// One sentence saying what was used and how to get real data.
    pub note: String,
}

/// Records in the synthetic sets (about MNIST's digit size, quick to generate).
pub const SYNTHETIC_TRAIN: usize = 12_000;
/// Records in the synthetic test set.
pub const SYNTHETIC_TEST: usize = 2_000;

/// Finds (or makes, under `scratch`) the default run's datasets. `data` is `$SPARKNET_DATA`,
/// `assets` the assets directory; both may be absent.
///
/// # Errors
/// Conversion errors (a truncated IDX file, an unwritable `scratch`).
pub fn prepare(data: Option<&Path>, assets: Option<&Path>, scratch: &Path) -> Result<DefaultData> {
    if let Some(d) = data {
        let (train, test) = (d.join("mnist-train"), d.join("mnist-test"));
        if train.join("manifest.json").is_file() && test.join("manifest.json").is_file() {
            let note = format!("training on MNIST from {}", d.display());
            return Ok(DefaultData { train, test, mnist: true, note });
        }
        if let Some(found) = convert_idx(d, scratch)? {
            return Ok(found);
        }
    }
    if let Some(a) = assets
        && let Some(found) = convert_idx(&a.join("data/mnist"), scratch)?
    {
        return Ok(found);
    }
    let (train, test) = (scratch.join("synthetic-train"), scratch.join("synthetic-test"));
    convert_synthetic_digits(&train, SYNTHETIC_TRAIN, 1, 4096)?;
    convert_synthetic_digits(&test, SYNTHETIC_TEST, 2, 4096)?;
    let note = "MNIST not found: training on sparknet-data's synthetic digits. For real data, set \
                SPARKNET_DATA to a directory holding the MNIST IDX files \
                (train-images-idx3-ubyte.gz, ...) or the datasets made by `sparknet-data convert \
                mnist` named mnist-train and mnist-test"
        .to_string();
    Ok(DefaultData { train, test, mnist: false, note })
}

fn idx(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()].into_iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

fn convert_idx(dir: &Path, scratch: &Path) -> Result<Option<DefaultData>> {
    let files = (
        idx(dir, "train-images-idx3-ubyte"),
        idx(dir, "train-labels-idx1-ubyte"),
        idx(dir, "t10k-images-idx3-ubyte"),
        idx(dir, "t10k-labels-idx1-ubyte"),
    );
    let (Some(ti), Some(tl), Some(vi), Some(vl)) = files else { return Ok(None) };
    let (train, test) = (scratch.join("mnist-train"), scratch.join("mnist-test"));
    convert_mnist(&ti, &tl, &train, 8192, None, &|_| {})?;
    convert_mnist(&vi, &vl, &test, 8192, None, &|_| {})?;
    let note = format!("training on MNIST (IDX files in {}, converted on the fly)", dir.display());
    Ok(Some(DefaultData { train, test, mnist: true, note }))
}
