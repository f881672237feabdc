//! `save_caffemodel` -> `read_caffemodel` round trips: identical parameters, identical forward,
//! identical bytes when saved again; the V1 CIFAR-10 quick model comes back in the V2 format.

use std::collections::HashMap;

use candle::{Device, Tensor};
use sparknet_net::load::read_caffemodel;
use sparknet_net::{Net, NetConfig};

fn forward_prob(net: &mut Net, x: &Tensor) -> Vec<f32> {
    net.forward(&HashMap::from([("data".to_string(), x.clone())])).unwrap();
    net.blob("prob").unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn caffemodel_round_trip_is_bit_identical() {
    let Some(assets) = sparknet_testkit::assets_dir("roundtrip") else { return };
    let dir = tempfile::tempdir().unwrap();
    for (model, weights, input) in [
        (
            "models/lenet_mnist/lenet.prototxt",
            "models/lenet_mnist/lenet_iter_10000.caffemodel",
            [2usize, 1, 28, 28],
        ),
        (
            "models/cifar10_quick/cifar10_quick.prototxt",
            "models/cifar10_quick/cifar10_quick_iter_5000.caffemodel",
            [2, 3, 32, 32],
        ),
    ] {
        let mut a =
            Net::from_files(assets.join(model), Some(&assets.join(weights)), NetConfig::default())
                .unwrap();
        let saved = dir.path().join("a.caffemodel");
        a.save_caffemodel(&saved).unwrap();
        let reread = read_caffemodel(&saved).unwrap();
        assert!(reread.layers.is_empty() && !reread.layer.is_empty(), "written in the V2 format");
        let mut b =
            Net::from_files(assets.join(model), Some(saved.as_path()), NetConfig::default())
                .unwrap();
        for ((na, pa), (nb, pb)) in a.params().iter().zip(b.params().iter()) {
            assert_eq!(na, nb);
            for (ta, tb) in pa.iter().zip(pb) {
                let (va, vb): (Vec<f32>, Vec<f32>) = (
                    ta.flatten_all().unwrap().to_vec1().unwrap(),
                    tb.flatten_all().unwrap().to_vec1().unwrap(),
                );
                assert!(
                    va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{model}: layer {na}"
                );
            }
        }
        let x = Tensor::rand(0f32, 1.0, &input, &Device::Cpu).unwrap();
        assert_eq!(forward_prob(&mut a, &x), forward_prob(&mut b, &x), "{model}");
        let st = dir.path().join("a.safetensors");
        a.save_safetensors(&st).unwrap();
        let loaded = candle::safetensors::load(&st, &Device::Cpu).unwrap();
        let conv1 = &a.params()["conv1"];
        assert_eq!(loaded.len(), a.params().values().map(Vec::len).sum::<usize>());
        assert_eq!(loaded["conv1.0"].dims(), conv1[0].dims());
        assert_eq!(
            loaded["conv1.1"].to_vec1::<f32>().unwrap(),
            conv1[1].to_vec1::<f32>().unwrap(),
            "{model}: safetensors keyed <layer>.<blob>"
        );
        let again = dir.path().join("b.caffemodel");
        b.save_caffemodel(&again).unwrap();
        assert_eq!(
            std::fs::read(&saved).unwrap(),
            std::fs::read(&again).unwrap(),
            "{model}: stable bytes"
        );
    }
}

#[test]
fn weights_must_fit_the_prototxt() {
    let Some(assets) = sparknet_testkit::assets_dir("weights_mismatch") else { return };
    // CIFAR-10 quick weights into CIFAR-10 full: conv1 has the same shape, ip1 does not.
    let err = Net::from_files(
        assets.join("models/cifar10_full/cifar10_full.prototxt"),
        Some(&assets.join("models/cifar10_quick/cifar10_quick_iter_5000.caffemodel")),
        NetConfig::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("layer 'ip1'")
            && err.contains("expected shape [10, 1024], got [1, 1, 64, 1024]"),
        "{err}"
    );
}

#[test]
fn params_and_set_params_exchange_weights() {
    let Some(assets) = sparknet_testkit::assets_dir("set_params") else { return };
    let model = assets.join("models/lenet_mnist/lenet.prototxt");
    let trained = Net::from_files(
        &model,
        Some(&assets.join("models/lenet_mnist/lenet_iter_10000.caffemodel")),
        NetConfig::default(),
    )
    .unwrap();
    let mut fresh = Net::from_files(&model, None, NetConfig::default()).unwrap();
    let x = Tensor::rand(0f32, 1.0, (1, 1, 28, 28), &Device::Cpu).unwrap();
    let mut trained = trained;
    assert_ne!(
        forward_prob(&mut fresh, &x),
        forward_prob(&mut trained, &x),
        "xavier-filled, not trained"
    );
    fresh.set_params(&trained.params()).unwrap();
    assert_eq!(forward_prob(&mut fresh, &x), forward_prob(&mut trained, &x));
    let mut wrong = trained.params();
    wrong.get_mut("ip2").unwrap().pop();
    let err = fresh.set_params(&wrong).unwrap_err().to_string();
    assert!(err.contains("'ip2'") && err.contains("expected 2 parameter blobs, got 1"), "{err}");
}
