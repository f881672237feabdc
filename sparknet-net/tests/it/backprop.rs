//! Net-level backward: shared parameters, the implicit Split, in-place layers, loss_weight,
//! lr_mult 0 and propagate_down, checked by central differences on the flat parameter buffer;
//! BatchNorm's running statistics in TRAIN.

use std::collections::HashMap;

use candle::{Device, Tensor};
use sparknet_net::load::parse_net_text;
use sparknet_net::{Net, NetConfig, Phase};

const SHARED: &str = r#"
  layer { name: "in" type: "Input" top: "x" top: "y"
          input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 } } }
  layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "a"
          param { name: "w" } param { name: "b" lr_mult: 2 }
          inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 }
                                bias_filler { type: "uniform" min: -1 max: 1 } } }
  layer { name: "ip2" type: "InnerProduct" bottom: "x" top: "c"
          param { name: "w" } param { name: "b" }
          inner_product_param { num_output: 2 } }
  layer { name: "tanh" type: "TanH" bottom: "a" top: "a" }
  layer { name: "frozen" type: "Scale" bottom: "c" top: "d" param { lr_mult: 0 }
          scale_param { filler { type: "constant" value: 1.5 } } }
  layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "d" bottom: "a" top: "p" }
  layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss"
          loss_weight: 3 }"#;

fn inputs() -> HashMap<String, Tensor> {
    let x = Tensor::new(&[[0.3f32, -0.7, 1.1], [0.9, 0.2, -0.4]], &Device::Cpu).unwrap();
    let y = Tensor::new(&[[0.5f32, -1.0], [0.25, 0.75]], &Device::Cpu).unwrap();
    HashMap::from([("x".to_string(), x), ("y".to_string(), y)])
}

#[test]
fn shared_split_inplace_and_loss_weight_match_finite_differences() {
    let param = parse_net_text(SHARED, "shared.prototxt".as_ref()).unwrap();
    let mut net =
        Net::new(&param, NetConfig { phase: Phase::Train, ..Default::default() }).unwrap();
    let table = net.param_table().unwrap().to_vec();
    // w and b once (shared by ip2), then the frozen scale.
    let names: Vec<(String, usize, f32)> =
        table.iter().map(|e| (e.layer.clone(), e.blob, e.lr_mult)).collect();
    assert_eq!(
        names,
        vec![("ip1".into(), 0, 1.0), ("ip1".into(), 1, 2.0), ("frozen".into(), 0, 0.0)]
    );
    net.zero_grads().unwrap();
    let loss = net.forward_backward(&inputs()).unwrap();
    assert!(loss > 0.0);
    let analytic = net.grad_buffer().unwrap().to_vec();
    let frozen = &table[2];
    assert!(analytic[frozen.offset..frozen.offset + frozen.len].iter().all(|&g| g == 0.0));
    let n_learn = table[1].offset + table[1].len;
    let h = 1e-2f32;
    for (i, &a) in analytic.iter().enumerate().take(n_learn) {
        let orig = net.param_data().unwrap()[i];
        net.param_buffer().unwrap()[i] = orig + h;
        let lp = net.forward(&inputs()).unwrap();
        net.param_buffer().unwrap()[i] = orig - h;
        let lm = net.forward(&inputs()).unwrap();
        net.param_buffer().unwrap()[i] = orig;
        let numeric = (lp - lm) / (2.0 * h);
        assert!(
            (a - numeric).abs() <= 1e-2 * a.abs().max(numeric.abs()).max(1.0),
            "param {i}: analytic {a} vs numeric {numeric}"
        );
    }
    // Backward accumulates until zeroed (Caffe's param diffs).
    net.forward_backward(&inputs()).unwrap();
    let twice = net.grad_buffer().unwrap().to_vec();
    for (t, a) in twice.iter().zip(&analytic) {
        assert!((t - 2.0 * a).abs() <= 1e-5 * a.abs().max(1.0));
    }
}

#[test]
fn propagate_down_false_stops_the_gradient() {
    let text = r#"
      layer { name: "in" type: "Input" top: "x" top: "y"
              input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 } } }
      layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "a"
              inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
      layer { name: "ip2" type: "InnerProduct" bottom: "a" top: "b" propagate_down: false
              inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
      layer { name: "loss" type: "EuclideanLoss" bottom: "b" bottom: "y" top: "loss" }"#;
    let param = parse_net_text(text, "pd.prototxt".as_ref()).unwrap();
    let mut net =
        Net::new(&param, NetConfig { phase: Phase::Train, ..Default::default() }).unwrap();
    net.zero_grads().unwrap();
    net.forward_backward(&inputs()).unwrap();
    assert!(net.blob_diff("a").is_none());
    assert!(net.blob_diff("b").is_some());
    let table = net.param_table().unwrap().to_vec();
    let grads = net.grad_buffer().unwrap().to_vec();
    let range = |k: usize| &grads[table[k].offset..table[k].offset + table[k].len];
    assert!(range(0).iter().all(|&g| g == 0.0), "ip1 gets no gradient");
    assert!(range(2).iter().any(|&g| g != 0.0), "ip2 does");
}

#[test]
fn batch_norm_train_updates_running_statistics_as_caffe() {
    let text = r#"
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 2 dim: 1 dim: 2 } } }
      layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"
              batch_norm_param { moving_average_fraction: 0.9 } }"#;
    let param = parse_net_text(text, "bn.prototxt".as_ref()).unwrap();
    let mut net =
        Net::new(&param, NetConfig { phase: Phase::Train, ..Default::default() }).unwrap();
    // Channel 0: 1, 2, 3, 4 (mean 2.5, biased var 1.25); channel 1: 0, 0, 2, 2 (mean 1, var 1).
    let x = Tensor::from_vec(vec![1f32, 2., 0., 0., 3., 4., 2., 2.], (2, 2, 1, 2), &Device::Cpu)
        .unwrap();
    let feed = HashMap::from([("x".to_string(), x)]);
    net.forward(&feed).unwrap();
    net.forward(&feed).unwrap();
    let w = net.params();
    let blobs = &w["bn"];
    let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    // Two updates: factor = (0 * 0.9 + 1) * 0.9 + 1; sums = s + 0.9 s; var with m/(m-1) = 4/3.
    let close = |a: &[f32], b: &[f32]| {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5) || panic!("{a:?} vs {b:?}")
    };
    close(&v(&blobs[2]), &[1.9]);
    close(&v(&blobs[0]), &[2.5 * 1.9, 1.9]);
    close(&v(&blobs[1]), &[1.25 * 4.0 / 3.0 * 1.9, 4.0 / 3.0 * 1.9]);
    // The flat buffer holds the same values (it is what snapshots and averaging see).
    let flat = net.param_data().unwrap().to_vec();
    close(&flat, &[2.5 * 1.9, 1.9, 1.25 * 4.0 / 3.0 * 1.9, 4.0 / 3.0 * 1.9, 1.9]);
    let y = v(net.blob("x").unwrap());
    close(&y[..2], &[(1.0 - 2.5) / (1.25f32 + 1e-5).sqrt(), (2.0 - 2.5) / (1.25f32 + 1e-5).sqrt()]);
}

/// A small conv net whose in-place ReLUs the net fuses into the convolutions (one leaky), with
/// a third ReLU that must stay separate: its bottom is also read by the Eltwise.
const FUSABLE: &str = r#"
  layer { name: "in" type: "Input" top: "x" top: "y"
          input_param { shape { dim: 2 dim: 3 dim: 7 dim: 7 } shape { dim: 2 dim: 5 } } }
  layer { name: "c1" type: "Convolution" bottom: "x" top: "c1"
          convolution_param { num_output: 4 kernel_size: 3 pad: 1
                              weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "uniform" min: -0.5 max: 0.5 } } }
  layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
  layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
          convolution_param { num_output: 4 kernel_size: 3 stride: 2
                              weight_filler { type: "gaussian" std: 0.5 } } }
  layer { name: "r2" type: "ReLU" bottom: "c2" top: "c2" relu_param { negative_slope: 0.1 } }
  layer { name: "c3" type: "Convolution" bottom: "c2" top: "c3"
          convolution_param { num_output: 4 kernel_size: 1
                              weight_filler { type: "gaussian" std: 0.5 } } }
  layer { name: "r3" type: "ReLU" bottom: "c3" top: "r3" }
  layer { name: "sum" type: "Eltwise" bottom: "r3" bottom: "c3" top: "s" }
  layer { name: "ip" type: "InnerProduct" bottom: "s" top: "p"
          inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
  layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }"#;

/// Fusing in-place ReLUs into the convolution below them changes no value: blobs, loss and
/// every parameter gradient are bit-identical to running each ReLU as its own layer.
#[test]
fn fused_relu_is_bit_identical_to_separate_layers() {
    let param = parse_net_text(FUSABLE, "fusable.prototxt".as_ref()).unwrap();
    let run = |fuse: bool| {
        let config =
            NetConfig { phase: Phase::Train, fuse_activations: fuse, ..Default::default() };
        let mut net = Net::new(&param, config).unwrap();
        let mut r = 7u32;
        let mut next = || {
            r = r.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (r >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let x: Vec<f32> = (0..2 * 3 * 49).map(|_| next()).collect();
        let y: Vec<f32> = (0..10).map(|_| next()).collect();
        let feed = HashMap::from([
            ("x".to_string(), Tensor::from_vec(x, (2, 3, 7, 7), &Device::Cpu).unwrap()),
            ("y".to_string(), Tensor::from_vec(y, (2, 5), &Device::Cpu).unwrap()),
        ]);
        net.zero_grads().unwrap();
        let loss = net.forward_backward(&feed).unwrap();
        let blobs: Vec<Vec<f32>> = ["c1", "c2", "c3", "r3", "s", "p"]
            .iter()
            .map(|b| net.blob(b).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect();
        (loss, blobs, net.grad_buffer().unwrap().to_vec(), net.fused_layers())
    };
    let (loss, blobs, grads, fused) = run(true);
    let (loss_ref, blobs_ref, grads_ref, none) = run(false);
    assert_eq!(fused, vec!["r1".to_string(), "r2".to_string()], "r3 is not in place");
    assert!(none.is_empty());
    assert_eq!(loss.to_bits(), loss_ref.to_bits());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (b, r) in blobs.iter().zip(&blobs_ref) {
        assert_eq!(bits(b), bits(r));
    }
    assert!(blobs[0].contains(&0.0), "the ReLU clipped something");
    assert!(grads.iter().any(|&g| g != 0.0));
    assert_eq!(bits(&grads), bits(&grads_ref));
}
