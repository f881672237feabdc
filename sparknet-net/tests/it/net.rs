//! Net-level behaviour on small hand-written nets: in-place blob semantics, implicit splits,
//! shared parameters, reshape to fed shapes, loss weights and errors that name the layer.

use std::collections::HashMap;
use std::path::Path;

use candle::{Device, Tensor};
use sparknet_net::load::parse_net_text;
use sparknet_net::{Net, NetConfig, Phase};

fn net(text: &str) -> sparknet_net::Result<Net> {
    Net::new(&parse_net_text(text, Path::new("test.prototxt"))?, NetConfig::default())
}

fn feed(x: &[f32], shape: &[usize]) -> HashMap<String, Tensor> {
    HashMap::from([("x".to_string(), Tensor::from_vec(x.to_vec(), shape, &Device::Cpu).unwrap())])
}

fn vals(n: &Net, blob: &str) -> Vec<f32> {
    n.blob(blob).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

const FANOUT: &str = "
    input: 'x' input_shape { dim: 1 dim: 4 }
    layer { name: 'neg' type: 'Power' bottom: 'x' top: 'y' power_param { scale: -1 } }
    layer { name: 'relu' type: 'ReLU' bottom: 'y' top: 'y' }
    layer { name: 'a' type: 'Power' bottom: 'y' top: 'a' power_param { shift: 1 } }
    layer { name: 'b' type: 'Power' bottom: 'y' top: 'b' power_param { scale: 2 } }
    layer { name: 'sum' type: 'Eltwise' bottom: 'a' bottom: 'b' top: 'out' }";

#[test]
fn in_place_results_and_splits() {
    let mut n = net(FANOUT).unwrap();
    let names: Vec<String> = n.graph().layers.iter().map(|l| l.name.clone()).collect();
    assert_eq!(names, ["input", "neg", "relu", "y_relu_0_split", "a", "b", "sum"]);
    n.forward(&feed(&[1., -2., 3., -4.], &[1, 4])).unwrap();
    // 'y' is the value after the in-place ReLU.
    assert_eq!(vals(&n, "y"), [0., 2., 0., 4.]);
    assert_eq!(vals(&n, "out"), [1., 7., 1., 13.]);
    assert_eq!(n.output_names(), ["out"]);
}

#[test]
fn reshapes_to_the_fed_batch() {
    let mut n = net(FANOUT).unwrap();
    n.forward(&feed(&[-1.0; 12], &[3, 4])).unwrap();
    assert_eq!(n.blob("out").unwrap().dims(), &[3, 4]);
    assert_eq!(n.blob_shape("a"), Some(&vec![3, 4]));
}

#[test]
fn shared_params_by_name() {
    let text = "
        input: 'x' input_shape { dim: 1 dim: 2 }
        layer { name: 'p' type: 'InnerProduct' bottom: 'x' top: 'p' param { name: 'w' } param { name: 'b' }
                inner_product_param { num_output: 1 } }
        layer { name: 'q' type: 'InnerProduct' bottom: 'x' top: 'q' param { name: 'w' } param { name: 'b' }
                inner_product_param { num_output: 1 } }";
    let mut n = net(text).unwrap();
    let mut w = n.params();
    w.insert(
        "p".into(),
        vec![
            Tensor::new(&[[2f32, 3.]], &Device::Cpu).unwrap(),
            Tensor::new(&[1f32], &Device::Cpu).unwrap(),
        ],
    );
    w.remove("q");
    n.set_params(&w).unwrap();
    n.forward(&feed(&[1., 1.], &[1, 2])).unwrap();
    assert_eq!(vals(&n, "p"), [6.]);
    assert_eq!(vals(&n, "q"), [6.], "q shares p's blobs");
}

#[test]
fn loss_weights_sum_into_the_returned_loss() {
    let text = "
        input: 'x' input: 'y' input_shape { dim: 2 dim: 2 } input_shape { dim: 2 dim: 2 }
        layer { name: 'e' type: 'EuclideanLoss' bottom: 'x' bottom: 'y' top: 'l' loss_weight: 3 }";
    let mut n = net(text).unwrap();
    let mut inputs = feed(&[1., 2., 3., 4.], &[2, 2]);
    inputs.insert("y".into(), Tensor::zeros((2, 2), candle::DType::F32, &Device::Cpu).unwrap());
    let loss = n.forward(&inputs).unwrap();
    assert!((loss - 3.0 * 30.0 / 4.0).abs() < 1e-5, "{loss}");
}

#[test]
fn errors_name_the_layer_and_shapes() {
    let e = net(
        "input: 'x' input_shape { dim: 1 dim: 2 } layer { name: 'r' type: 'ReLU' bottom: 'x' bottom: 'x' top: 'y' }",
    );
    assert_eq!(
        e.err().unwrap().to_string(),
        "layer 'r' (ReLU): expected exactly 1 bottom blobs, got 2"
    );
    let e = net(
        "input: 'x' input_shape { dim: 1 dim: 2 } layer { name: 'w' type: 'Whatever' bottom: 'x' top: 'y' }",
    );
    assert!(
        e.err().unwrap().to_string().starts_with("layer 'w': unsupported layer type 'Whatever'")
    );
    let text = "input: 'x' input_shape { dim: 1 dim: 2 } layer { name: 'ip' type: 'InnerProduct' bottom: 'x' top: 'y' inner_product_param { num_output: 3 } }";
    let mut n = net(text).unwrap();
    let e = n.forward(&feed(&[0.; 3], &[1, 3])).unwrap_err().to_string();
    assert!(e.contains("layer 'ip'") && e.contains("[3, 2]") && e.contains("[3, 3]"), "{e}");
    let e = n
        .forward(&HashMap::from([(
            "nope".to_string(),
            Tensor::zeros(1, candle::DType::F32, &Device::Cpu).unwrap(),
        )]))
        .unwrap_err();
    assert!(e.to_string().contains("'nope' is not an input"), "{e}");
}

#[test]
fn train_phase_selects_layers() {
    let text = "
        input: 'x' input_shape { dim: 1 dim: 2 }
        layer { name: 'd' type: 'Dropout' bottom: 'x' top: 'y' include { phase: TRAIN } }";
    let train = Net::new(
        &parse_net_text(text, Path::new("t")).unwrap(),
        NetConfig { phase: Phase::Train, ..NetConfig::default() },
    )
    .unwrap();
    assert_eq!(train.num_layers(), 2);
    assert_eq!(net(text).unwrap().num_layers(), 1);
}
