//! Full-test-set top-1 accuracy of the reference models, beside OpenCV's counts in
//! `../shared/reference/accuracy.json` (acceptance: equal to within one image).
//!
//! ```text
//! cargo run --release -p sparknet-net --example accuracy -- [CASE ...] [--limit N]
//! ```
//! CASE is one of lenet, cifar10_quick, cifar10_full, resnet20_cifar10, plainnet20_cifar10
//! (default: all). Preprocessing is the reference's: MNIST pixels x 0.00390625; CIFAR-10 planes
//! R,G,B as stored minus `models/cifar10_quick/mean.binaryproto`. Prints one JSON line per case.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle::{Device, Tensor};
use sparknet_net::blob::blob_data;
use sparknet_net::load::read_binaryproto;
use sparknet_net::{Net, NetConfig};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn gunzip(path: &Path) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path)?).read_to_end(&mut out)?;
    Ok(out)
}

/// (images as f32 N x C x H x W, labels, per-image size).
fn dataset(assets: &Path, case: &str) -> Res<(Vec<f32>, Vec<u8>, [usize; 3])> {
    if case == "lenet" {
        let img = gunzip(&assets.join("data/mnist/t10k-images-idx3-ubyte.gz"))?;
        let lab = gunzip(&assets.join("data/mnist/t10k-labels-idx1-ubyte.gz"))?;
        let x = img[16..].iter().map(|&p| f32::from(p) * 0.00390625).collect();
        return Ok((x, lab[8..].to_vec(), [1, 28, 28]));
    }
    let raw = gunzip(&assets.join("data/cifar10/test_batch.bin.gz"))?;
    let mean = blob_data(&read_binaryproto(assets.join("models/cifar10_quick/mean.binaryproto"))?);
    let (mut x, mut labels) = (Vec::with_capacity(raw.len()), Vec::new());
    for rec in raw.chunks_exact(3073) {
        labels.push(rec[0]);
        x.extend(rec[1..].iter().zip(&mean).map(|(&p, m)| f32::from(p) - m));
    }
    Ok((x, labels, [3, 32, 32]))
}

fn main() -> Res<()> {
    sparknet_net::malloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let limit = args
        .iter()
        .position(|a| a == "--limit")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse::<usize>())
        .transpose()?;
    let mut cases: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
        .map(String::as_str)
        .collect();
    if cases.is_empty() {
        cases = vec![
            "lenet",
            "cifar10_quick",
            "cifar10_full",
            "resnet20_cifar10",
            "plainnet20_cifar10",
        ];
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let assets =
        std::env::var("SPARKNET_ASSETS").map_or_else(|_| root.join("../shared/assets"), Into::into);
    let reference = std::env::var("SPARKNET_REFERENCE")
        .map_or_else(|_| root.join("../shared/reference"), Into::into);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference.join("accuracy.json"))?)?;
    let mut mismatches = Vec::new();
    for case in cases {
        let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            reference.join("forward").join(case).join("case.json"),
        )?)?;
        let input = spec["inputs"]
            .as_object()
            .ok_or("case.json without inputs")?
            .keys()
            .next()
            .ok_or("no input")?
            .clone();
        let weights = assets.join(spec["weights"].as_str().ok_or("no weights")?);
        let mut net = Net::from_files(
            assets.join(spec["model"].as_str().ok_or("no model")?),
            Some(weights.as_path()),
            NetConfig::default(),
        )?;
        let (x, labels, [c, h, w]) = dataset(&assets, case)?;
        let n = limit.unwrap_or(labels.len()).min(labels.len());
        let per = c * h * w;
        let start = std::time::Instant::now();
        let mut correct = 0usize;
        for b0 in (0..n).step_by(100) {
            let b = 100.min(n - b0);
            let batch =
                Tensor::from_slice(&x[b0 * per..(b0 + b) * per], (b, c, h, w), &Device::Cpu)?;
            net.forward(&HashMap::from([(input.clone(), batch)]))?;
            let pred = net
                .blob("prob")
                .ok_or("no prob blob")?
                .flatten_from(1)?
                .argmax(1)?
                .to_vec1::<u32>()?;
            correct +=
                pred.iter().zip(&labels[b0..b0 + b]).filter(|(p, l)| **p == u32::from(**l)).count();
        }
        let reference_correct = expected[case]["correct"].as_u64();
        let verdict = match reference_correct {
            Some(r) if n == labels.len() => {
                if (correct as i64 - r as i64).abs() <= 1 {
                    "match"
                } else {
                    "MISMATCH"
                }
            }
            _ => "subset",
        };
        println!(
            "{}",
            serde_json::json!({"case": case, "images": n, "correct": correct, "accuracy": correct as f64 / n as f64,
                "opencv_correct": reference_correct, "verdict": verdict, "seconds": start.elapsed().as_secs_f64()})
        );
        if verdict == "MISMATCH" {
            mismatches.push(format!(
                "{case}: {correct} correct, OpenCV {}",
                reference_correct.unwrap_or(0)
            ));
        }
    }
    if !mismatches.is_empty() {
        return Err(
            format!("accuracy differs from the reference: {}", mismatches.join("; ")).into()
        );
    }
    Ok(())
}
