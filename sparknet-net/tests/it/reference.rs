//! Every case in `reference/forward/<case>/case.json`: feed the stored inputs, compare every
//! listed output with `max|a - b| / max|b| <= 1e-4` (the reference README's measure; OpenCV
//! computes in float32 with its own summation order).

use std::collections::HashMap;
use std::path::Path;

use candle::{Device, Tensor};
use sparknet_net::{Net, NetConfig};

use crate::npy::read_f32;

const TOLERANCE: f32 = 1e-4;

fn run_case(case: &str) {
    run_case_on(case, &Device::Cpu);
}

/// One reference case with the net's blobs and parameters on `device`.
fn run_case_on(case: &str, device: &Device) {
    let Some(reference) = sparknet_testkit::reference_dir(case) else { return };
    let Some(assets) = sparknet_testkit::assets_dir(case) else { return };
    let dir = reference.join("forward").join(case);
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let model = assets.join(spec["model"].as_str().unwrap());
    let weights = assets.join(spec["weights"].as_str().unwrap());
    let config = NetConfig { device: device.clone(), ..NetConfig::default() };
    let mut net = Net::from_files(&model, Some(weights.as_path()), config).unwrap();
    let mut inputs = HashMap::new();
    for (name, file) in spec["inputs"].as_object().unwrap() {
        let (shape, data) = read_f32(&dir.join(file.as_str().unwrap()));
        inputs.insert(name.clone(), Tensor::from_vec(data, shape, &Device::Cpu).unwrap());
    }
    net.forward(&inputs).unwrap();
    for (blob, file) in spec["outputs"].as_object().unwrap() {
        let (shape, want) = read_f32(&dir.join(file.as_str().unwrap()));
        let got = net.blob(blob).unwrap_or_else(|| panic!("{case}: no blob '{blob}'"));
        assert_eq!(got.dims(), shape.as_slice(), "{case}: shape of '{blob}'");
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let max_err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let rel = max_err / max_ref.max(f32::MIN_POSITIVE);
        eprintln!("{case}: {blob}: max|a-b|/max|b| = {rel:.2e}");
        assert!(
            rel <= TOLERANCE,
            "{case}: blob '{blob}' differs: {rel:e} > {TOLERANCE:e} ({})",
            Path::new(file.as_str().unwrap()).display()
        );
    }
}

#[test]
fn lenet() {
    run_case("lenet");
}

#[test]
fn cifar10_quick_v1_caffemodel() {
    run_case("cifar10_quick");
}

#[test]
fn cifar10_full_lrn_within_channel() {
    run_case("cifar10_full");
}

#[test]
fn resnet20_cifar10() {
    run_case("resnet20_cifar10");
}

#[test]
fn plainnet20_cifar10() {
    run_case("plainnet20_cifar10");
}

#[test]
fn mtcnn_det1() {
    run_case("mtcnn_det1");
}

#[test]
fn mtcnn_det2() {
    run_case("mtcnn_det2");
}

#[test]
fn mtcnn_det3() {
    run_case("mtcnn_det3");
}

/// The same cases on the first CUDA device (feature `cuda`), where candle's CUDA ops and the host
/// round trips of the CPU-only kernels run; skipped, saying so, when no GPU is present.
#[cfg(feature = "cuda")]
mod cuda {
    use candle::Device;

    fn on_cuda(case: &str) {
        match Device::new_cuda(0) {
            Ok(device) => super::run_case_on(case, &device),
            Err(e) => eprintln!("{case} on CUDA: skipped, no CUDA device ({e})"),
        }
    }

    #[test]
    fn lenet_on_cuda() {
        on_cuda("lenet");
    }

    #[test]
    fn cifar10_full_on_cuda() {
        on_cuda("cifar10_full");
    }

    #[test]
    fn resnet20_on_cuda() {
        on_cuda("resnet20_cifar10");
    }
}
