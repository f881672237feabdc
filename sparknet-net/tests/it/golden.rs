//! Nets shipped without weights, built with seeded random weights, against goldens from OpenCV's
//! Caffe importer (`tests/golden/<net>.json`, produced by `scripts/opencv_random_check.py` with
//! `GOLDEN=...`: our exported caffemodel read by OpenCV 4.14, input `x[i] = sin(0.001 i)`).
//! Only the seed and OpenCV's outputs are committed, never weights.

use std::collections::HashMap;

use candle::{Device, Tensor};
use sparknet_net::load::read_net_prototxt;
use sparknet_net::proto::FillerParameter;
use sparknet_net::{Net, NetConfig};

fn check(name: &str) {
    let Some(assets) = sparknet_testkit::assets_dir(name) else { return };
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.json"));
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let missing = (
        FillerParameter { r#type: Some("msra".into()), ..Default::default() },
        FillerParameter { r#type: Some("gaussian".into()), std: Some(0.1), ..Default::default() },
    );
    let config = NetConfig {
        seed: g["seed"].as_u64(),
        missing_fillers: Some(missing),
        ..NetConfig::default()
    };
    let mut net =
        Net::new(&read_net_prototxt(assets.join(g["prototxt"].as_str().unwrap())).unwrap(), config)
            .unwrap();
    net.unit_batch_norm().unwrap();
    let shape: Vec<usize> =
        g["input_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|i| (0.001 * i as f64).sin() as f32).collect();
    let input = net.input_names()[0].clone();
    net.forward(&HashMap::from([(input, Tensor::from_vec(x, shape, &Device::Cpu).unwrap())]))
        .unwrap();
    let got: Vec<f32> =
        net.blob(g["blob"].as_str().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f32> =
        g["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    assert!(err <= 1e-4, "{name}: max|a-b|/max|b| = {err:e}");
}

#[test]
fn squeezenet_v1_1_random_weights_match_opencv() {
    check("squeezenet");
}

#[test]
fn mobilenet_v1_random_weights_match_opencv() {
    check("mobilenet");
}
