//! Seeded randomness at the net level: Dropout masks, STOCHASTIC pooling samples and DummyData
//! fillers follow `NetConfig::seed` pass after pass (Caffe seeds every draw from the solver's
//! `random_seed`), and backward uses the draws of its forward.

use std::collections::HashMap;
use std::path::Path;

use candle::{Device, Tensor};
use sparknet_net::load::parse_net_text;
use sparknet_net::{Net, NetConfig, Phase};

/// Bias (so the input gets a gradient) -> STOCHASTIC pooling -> Dropout, plus DummyData noise;
/// the loss is `sum(out)`.
const NET: &str = "
    input: 'x' input_shape { dim: 2 dim: 3 dim: 8 dim: 8 }
    layer { name: 'b' type: 'Bias' bottom: 'x' top: 'b' }
    layer { name: 'p' type: 'Pooling' bottom: 'b' top: 'p'
            pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 } }
    layer { name: 'd' type: 'Dropout' bottom: 'p' top: 'd' dropout_param { dropout_ratio: 0.3 } }
    layer { name: 'noise' type: 'DummyData' top: 'n'
            dummy_data_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } data_filler { type: 'uniform' } } }
    layer { name: 'sum' type: 'Eltwise' bottom: 'd' bottom: 'n' top: 'out' loss_weight: 1 }";

fn train_net(text: &str, seed: u64) -> Net {
    let param = parse_net_text(text, Path::new("random.prototxt")).unwrap();
    Net::new(&param, NetConfig { phase: Phase::Train, seed: Some(seed), ..NetConfig::default() })
        .unwrap()
}

/// Positive, distinct inputs (STOCHASTIC pooling samples by value).
fn input() -> HashMap<String, Tensor> {
    let x: Vec<f32> = (0..2 * 3 * 8 * 8).map(|i| 0.1 + (i * 53 % 384) as f32 / 100.0).collect();
    HashMap::from([("x".into(), Tensor::from_vec(x, (2, 3, 8, 8), &Device::Cpu).unwrap())])
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Per step: the output and the input's gradient.
fn steps(seed: u64, n: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut net = train_net(NET, seed);
    (0..n)
        .map(|_| {
            net.forward_backward(&input()).unwrap();
            (vals(net.blob("out").unwrap()), vals(net.blob_diff("b").unwrap()))
        })
        .collect()
}

#[test]
fn same_seed_same_draws_step_after_step() {
    let a = steps(5, 3);
    assert_eq!(a, steps(5, 3), "two nets with seed 5 draw alike, bit for bit");
    assert_ne!(a, steps(6, 3), "seed 6 draws otherwise");
    assert_ne!(a[0], a[1], "every step draws afresh");
    assert_ne!(a[1], a[2], "every step draws afresh");
}

#[test]
fn backward_uses_the_forward_draws() {
    let mut net = train_net(NET, 11);
    let (mut kept, mut total) = (0usize, 0usize);
    for _ in 0..20 {
        net.forward_backward(&input()).unwrap();
        let x = vals(net.blob("b").unwrap());
        let (p, d) = (vals(net.blob("p").unwrap()), vals(net.blob("d").unwrap()));
        let (dp, db) = (vals(net.blob_diff("p").unwrap()), vals(net.blob_diff("b").unwrap()));
        // Dropout: the gradient is the forward's mask (0 or 1/0.7), d = p * mask.
        for o in 0..p.len() {
            assert!(dp[o] == 0.0 || (dp[o] - 1.0 / 0.7).abs() < 1e-6, "mask {}", dp[o]);
            assert_eq!(d[o], p[o] * dp[o], "output {o}: d = p * mask");
            kept += usize::from(dp[o] != 0.0);
            total += 1;
        }
        // STOCHASTIC pooling (2x2 windows, stride 2): each window's gradient sits on the one
        // element the forward sampled, whose value is the pooled output.
        for (o, (&po, &g)) in p.iter().zip(&dp).enumerate() {
            let (plane, oy, ox) = (o / 16, o / 4 % 4, o % 4);
            let cells: Vec<usize> = [(0, 0), (0, 1), (1, 0), (1, 1)]
                .iter()
                .map(|(dy, dx)| plane * 64 + (2 * oy + dy) * 8 + 2 * ox + dx)
                .collect();
            let hit: Vec<usize> = cells.iter().copied().filter(|&i| db[i] != 0.0).collect();
            if g == 0.0 {
                assert!(hit.is_empty(), "window {o}: dropped, no gradient");
            } else {
                assert_eq!(hit.len(), 1, "window {o}: one sampled element");
                assert_eq!((db[hit[0]], x[hit[0]]), (g, po), "window {o}");
            }
        }
    }
    // 20 x 96 Bernoulli(0.7) draws: sd sqrt(0.21 / 1920) = 0.0105; bound 5 sd.
    let f = kept as f64 / total as f64;
    assert!((f - 0.7).abs() < 5.0 * 0.0105, "kept fraction {f}");
}

#[test]
fn dropout_keep_fraction() {
    let text = "input: 'x' input_shape { dim: 1 dim: 100000 }
        layer { name: 'd' type: 'Dropout' bottom: 'x' top: 'y' dropout_param { dropout_ratio: 0.25 } }";
    let mut net = train_net(text, 3);
    let x = HashMap::from([(
        "x".into(),
        Tensor::ones((1, 100_000), candle::DType::F32, &Device::Cpu).unwrap(),
    )]);
    net.forward(&x).unwrap();
    let y = vals(net.blob("y").unwrap());
    assert!(y.iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
    // Binomial(1e5, 0.75): sd sqrt(0.1875 / 1e5) = 0.00137; bound 5 sd.
    let f = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
    assert!((f - 0.75).abs() < 5.0 * 0.00137, "kept fraction {f}");
    // TEST: identity.
    let param = parse_net_text(text, Path::new("d.prototxt")).unwrap();
    let mut test = Net::new(&param, NetConfig::default()).unwrap();
    test.forward(&x).unwrap();
    assert!(vals(test.blob("y").unwrap()).iter().all(|&v| v == 1.0));
}

/// Two solvers from one solver prototxt (`random_seed: 7`) train a net with Dropout to the same
/// weights, bit for bit (Caffe's reproducibility from `random_seed`, which the data-parallel
/// trainer's "K = 1 equals the plain solver" relies on for such nets).
#[test]
fn solvers_with_one_random_seed_train_alike() {
    use sparknet_net::load::parse_text;
    use sparknet_net::proto::SolverParameter;
    use sparknet_net::solver::Solver;
    let net = "
        layer { name: 'in' type: 'Input' top: 'x' top: 'y'
                input_param { shape { dim: 8 dim: 6 } shape { dim: 8 dim: 2 } } }
        layer { name: 'h' type: 'InnerProduct' bottom: 'x' top: 'h'
                inner_product_param { num_output: 16 weight_filler { type: 'xavier' } } }
        layer { name: 'drop' type: 'Dropout' bottom: 'h' top: 'h' }
        layer { name: 'o' type: 'InnerProduct' bottom: 'h' top: 'o'
                inner_product_param { num_output: 2 weight_filler { type: 'xavier' } } }
        layer { name: 'loss' type: 'EuclideanLoss' bottom: 'o' bottom: 'y' top: 'loss' }";
    let train = |seed: u64| {
        let text = format!(
            "type: 'SGD' base_lr: 0.1 momentum: 0.9 lr_policy: 'fixed' random_seed: {seed}"
        );
        let mut p: SolverParameter =
            parse_text("caffe.SolverParameter", &text, "s.prototxt".as_ref()).unwrap();
        p.net_param = Some(parse_net_text(net, Path::new("drop.prototxt")).unwrap());
        let mut s = Solver::from_param(&p, NetConfig::default()).unwrap();
        let x: Vec<f32> = (0..48).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
        let y: Vec<f32> = (0..16).map(|i| ((i * 5 % 7) as f32 - 3.0) / 3.0).collect();
        for _ in 0..5 {
            let batch = HashMap::from([
                ("x".to_string(), Tensor::from_vec(x.clone(), (8, 6), &Device::Cpu).unwrap()),
                ("y".to_string(), Tensor::from_vec(y.clone(), (8, 2), &Device::Cpu).unwrap()),
            ]);
            s.step(&[batch]).unwrap();
        }
        s.net_mut().param_data().unwrap().to_vec()
    };
    let a = train(7);
    assert!(a == train(7), "same random_seed, same weights bit for bit");
    assert!(a != train(8), "another random_seed, other weights");
}
