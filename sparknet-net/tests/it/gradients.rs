//! Finite-difference gradient checks (Caffe's `GradientChecker` method): for a layer with random
//! bottoms and parameters, the objective is `L = sum(r * top)` with fixed random `r`, so
//! `dL/dtop = r`; every bottom and parameter element's analytic gradient from `backward` is
//! compared with the central difference `(L(x + h) - L(x - h)) / 2h`, step `h = 1e-2`,
//! tolerance `1e-2 * max(|analytic|, |numeric|, 1)`. Inputs are drawn away from kinks
//! (ReLU at 0, max-pool ties) so the difference quotient is valid. Loss layers are checked with
//! `r = loss_weight` on their scalar top.

use candle::{Device, Tensor};
use sparknet_net::Phase;
use sparknet_net::layers::{BackwardArgs, ForwardCtx, LayerRegistry};
use sparknet_net::load::parse_net_text;

const STEP: f32 = 1e-2;
const TOL: f32 = 1e-2;

/// Deterministic uniform values in [lo, hi).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.next(lo, hi)).collect()
    }
}

fn t(v: &[f32], s: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), s, &Device::Cpu).unwrap()
}

fn flat(x: &Tensor) -> Vec<f32> {
    x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Checks one layer. `bottoms` are (values, shape); `checked` says which bottoms get a gradient
/// (labels do not); `away` keeps random inputs at least this far from 0 (kinks).
fn check(def: &str, bottoms: &[(Vec<f32>, Vec<usize>)], checked: &[bool], seed: u64) {
    check_with(def, bottoms, checked, seed, true);
}

/// As [`check`]; `with_params: false` skips the learnable blobs (BatchNorm's statistics).
fn check_with(
    def: &str,
    bottoms: &[(Vec<f32>, Vec<usize>)],
    checked: &[bool],
    seed: u64,
    with_params: bool,
) {
    let param = parse_net_text(def, "gradcheck".as_ref()).unwrap();
    let lp = &param.layer[0];
    let mut layer = LayerRegistry::default().create(lp).unwrap();
    let shapes: Vec<Vec<usize>> = bottoms.iter().map(|b| b.1.clone()).collect();
    let pshapes = layer.setup(&shapes).unwrap();
    layer.reshape(&shapes).unwrap();
    let mut rng = Lcg(seed);
    let mut params: Vec<Vec<f32>> =
        pshapes.iter().map(|s| rng.vec(s.iter().product(), -1.0, 1.0)).collect();
    let mut xs: Vec<Vec<f32>> = bottoms.iter().map(|b| b.0.clone()).collect();
    let ctx = ForwardCtx { phase: Phase::Test, device: Device::Cpu };
    let loss_weight = layer.loss_weight_default();
    let objective = |layer: &mut Box<dyn sparknet_net::layers::Layer>,
                     xs: &[Vec<f32>],
                     ps: &[Vec<f32>],
                     r: &[Vec<f32>]|
     -> (f64, Vec<Tensor>) {
        let bt: Vec<Tensor> = xs.iter().zip(&shapes).map(|(v, s)| t(v, s)).collect();
        let pt: Vec<Tensor> = ps.iter().zip(&pshapes).map(|(v, s)| t(v, s)).collect();
        let refs: Vec<&Tensor> = bt.iter().collect();
        let tops = layer.forward(&ctx, &refs, &pt).unwrap();
        let l = tops
            .iter()
            .zip(r)
            .map(|(y, r)| flat(y).iter().zip(r).map(|(a, b)| f64::from(a * b)).sum::<f64>())
            .sum();
        (l, tops)
    };
    // Top weights: fixed random r (or the loss weight for a scalar loss top).
    let (_, tops0) = objective(&mut layer, &xs, &params, &[]);
    let r: Vec<Vec<f32>> = tops0
        .iter()
        .map(|y| {
            if loss_weight != 0.0 && y.elem_count() == 1 {
                vec![loss_weight]
            } else {
                rng.vec(y.elem_count(), -1.0, 1.0)
            }
        })
        .collect();
    let (_, tops) = objective(&mut layer, &xs, &params, &r);
    let bt: Vec<Tensor> = xs.iter().zip(&shapes).map(|(v, s)| t(v, s)).collect();
    let pt: Vec<Tensor> = params.iter().zip(&pshapes).map(|(v, s)| t(v, s)).collect();
    let refs: Vec<&Tensor> = bt.iter().collect();
    let top_refs: Vec<&Tensor> = tops.iter().collect();
    let top_diffs: Vec<Tensor> = r.iter().zip(&tops).map(|(r, y)| t(r, y.dims())).collect();
    let param_down = vec![true; pshapes.len()];
    let grads = layer
        .backward(&BackwardArgs {
            ctx: &ctx,
            bottoms: &refs,
            tops: &top_refs,
            top_diffs: &top_diffs,
            params: &pt,
            propagate_down: checked,
            param_down: &param_down,
        })
        .unwrap();
    let name = lp.r#type().to_string();
    let compare = |what: String, analytic: &[f32], numeric: &[f32]| {
        assert_eq!(analytic.len(), numeric.len(), "{name} {what}: lengths");
        for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
            let scale = a.abs().max(n.abs()).max(1.0);
            assert!(
                (a - n).abs() <= TOL * scale,
                "{name} {what}[{i}]: analytic {a} vs numeric {n}"
            );
        }
    };
    for (j, want) in checked.iter().enumerate() {
        if !want {
            continue;
        }
        let analytic = flat(grads.bottoms[j].as_ref().expect("bottom gradient"));
        let mut numeric = vec![0f32; xs[j].len()];
        for i in 0..xs[j].len() {
            let orig = xs[j][i];
            xs[j][i] = orig + STEP;
            let (lp, _) = objective(&mut layer, &xs, &params, &r);
            xs[j][i] = orig - STEP;
            let (lm, _) = objective(&mut layer, &xs, &params, &r);
            xs[j][i] = orig;
            numeric[i] = ((lp - lm) / (2.0 * f64::from(STEP))) as f32;
        }
        compare(format!("bottom {j}"), &analytic, &numeric);
    }
    for k in 0..params.len() {
        if !with_params {
            break;
        }
        let analytic = flat(grads.params[k].as_ref().expect("param gradient"));
        let mut numeric = vec![0f32; params[k].len()];
        for i in 0..params[k].len() {
            let orig = params[k][i];
            params[k][i] = orig + STEP;
            let (lp, _) = objective(&mut layer, &xs, &params, &r);
            params[k][i] = orig - STEP;
            let (lm, _) = objective(&mut layer, &xs, &params, &r);
            params[k][i] = orig;
            numeric[i] = ((lp - lm) / (2.0 * f64::from(STEP))) as f32;
        }
        compare(format!("param {k}"), &analytic, &numeric);
    }
}

/// Random values in [-1, 1) at least `away` from 0.
fn rand_away(rng: &mut Lcg, n: usize, away: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = rng.next(-1.0, 1.0);
            if v.abs() < away { v.signum() * away + v } else { v }
        })
        .collect()
}

fn layer(body: &str) -> String {
    format!("layer {{ name: 'l' bottom: 'x' top: 'y' {body} }}")
}

#[test]
fn convolution_gradients() {
    let mut rng = Lcg(1);
    let x = rng.vec(2 * 4 * 5 * 5, -1.0, 1.0);
    check(
        &layer(
            "type: 'Convolution' convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 group: 2 }",
        ),
        &[(x, vec![2, 4, 5, 5])],
        &[true],
        2,
    );
}

#[test]
fn deconvolution_gradients() {
    let mut rng = Lcg(3);
    let x = rng.vec(2 * 2 * 3 * 3, -1.0, 1.0);
    check(
        &layer(
            "type: 'Deconvolution' convolution_param { num_output: 3 kernel_size: 3 stride: 2 pad: 1 }",
        ),
        &[(x, vec![2, 2, 3, 3])],
        &[true],
        4,
    );
}

#[test]
fn pooling_gradients() {
    // Distinct, well-separated values: no max ties within STEP.
    let n = 2 * 2 * 5 * 5;
    let mut x: Vec<f32> = (0..n).map(|i| (i * 37 % n) as f32 * 0.05).collect();
    x.iter_mut().for_each(|v| *v -= 2.0);
    for def in [
        "type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 2 }",
        "type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }",
        "type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR }",
    ] {
        check(&layer(def), &[(x.clone(), vec![2, 2, 5, 5])], &[true], 5);
    }
    // STOCHASTIC in TEST: sum(x^2) / sum(x) is smooth for positive inputs (here 0.5 ..= 5.45);
    // FLOOR on 5x5 with kernel 2 stride 2 crops the last row and column.
    let pos: Vec<f32> = x.iter().map(|v| v + 2.5).collect();
    for def in [
        "type: 'Pooling' pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 }",
        "type: 'Pooling' pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 round_mode: FLOOR }",
    ] {
        check(&layer(def), &[(pos.clone(), vec![2, 2, 5, 5])], &[true], 5);
    }
}

#[test]
fn inner_product_gradients() {
    let mut rng = Lcg(6);
    let x = rng.vec(3 * 2 * 2 * 2, -1.0, 1.0);
    for def in [
        "type: 'InnerProduct' inner_product_param { num_output: 4 }",
        "type: 'InnerProduct' inner_product_param { num_output: 4 transpose: true }",
    ] {
        check(&layer(def), &[(x.clone(), vec![3, 2, 2, 2])], &[true], 7);
    }
}

#[test]
fn neuron_gradients() {
    let mut rng = Lcg(8);
    let x = rand_away(&mut rng, 24, 0.05);
    let xpos: Vec<f32> = x.iter().map(|v| v.abs() + 0.5).collect();
    for def in [
        "type: 'ReLU'",
        "type: 'ReLU' relu_param { negative_slope: 0.1 }",
        "type: 'Sigmoid'",
        "type: 'TanH'",
        "type: 'ELU' elu_param { alpha: 0.7 }",
        "type: 'AbsVal'",
        "type: 'Exp' exp_param { base: 2 scale: 0.5 shift: 0.1 }",
        "type: 'BNLL'",
        "type: 'Power' power_param { power: 2 scale: 0.5 shift: 0.2 }",
    ] {
        check(&layer(def), &[(x.clone(), vec![2, 3, 4])], &[true], 9);
    }
    for def in [
        "type: 'Log' log_param { scale: 2 shift: 0.5 }",
        "type: 'Power' power_param { power: 1.5 scale: 1.0 shift: 0.1 }",
    ] {
        check(&layer(def), &[(xpos.clone(), vec![2, 3, 4])], &[true], 9);
    }
}

#[test]
fn reshaping_and_split_gradients() {
    let mut rng = Lcg(10);
    let x = rng.vec(2 * 3 * 4, -1.0, 1.0);
    check(&layer("type: 'Flatten'"), &[(x.clone(), vec![2, 3, 4])], &[true], 11);
    check(
        &layer("type: 'Reshape' reshape_param { shape { dim: 0 dim: -1 } }"),
        &[(x.clone(), vec![2, 3, 4])],
        &[true],
        11,
    );
    check(
        "layer { name: 's' type: 'Split' bottom: 'x' top: 'a' top: 'b' top: 'c' }",
        &[(x, vec![2, 3, 4])],
        &[true],
        12,
    );
}

#[test]
fn loss_gradients() {
    let mut rng = Lcg(13);
    let a = rng.vec(3 * 4, -1.0, 1.0);
    let b = rng.vec(3 * 4, -1.0, 1.0);
    check(
        "layer { name: 'e' type: 'EuclideanLoss' bottom: 'a' bottom: 'b' top: 'l' }",
        &[(a.clone(), vec![3, 4]), (b, vec![3, 4])],
        &[true, true],
        14,
    );
    let scores = rng.vec(3 * 4 * 2, -2.0, 2.0);
    check(
        "layer { name: 's' type: 'SoftmaxWithLoss' bottom: 'a' bottom: 'l' top: 'loss' }",
        &[(scores.clone(), vec![3, 4, 2]), (vec![0., 3., 1., 2., 2., 0.], vec![3, 2])],
        &[true, false],
        15,
    );
    check(
        "layer { name: 's' type: 'SoftmaxWithLoss' bottom: 'a' bottom: 'l' top: 'loss' \
         loss_param { ignore_label: 1 normalization: BATCH_SIZE } }",
        &[(scores, vec![3, 4, 2]), (vec![0., 1., 1., 2., 3., 0.], vec![3, 2])],
        &[true, false],
        16,
    );
}

#[test]
fn lrn_gradients() {
    let mut rng = Lcg(17);
    let x = rng.vec(2 * 5 * 3 * 3, -1.0, 1.0);
    for def in [
        "type: 'LRN' lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 1.5 }",
        "type: 'LRN' lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }",
    ] {
        check(&layer(def), &[(x.clone(), vec![2, 5, 3, 3])], &[true], 18);
    }
}

#[test]
fn concat_slice_softmax_gradients() {
    let mut rng = Lcg(19);
    let a = rng.vec(2 * 3 * 2, -1.0, 1.0);
    let b = rng.vec(4, -1.0, 1.0);
    check(
        "layer { name: 'c' type: 'Concat' bottom: 'a' bottom: 'b' top: 'y' }",
        &[(a.clone(), vec![2, 3, 2]), (b, vec![2, 1, 2])],
        &[true, true],
        20,
    );
    check(
        "layer { name: 's' type: 'Slice' bottom: 'a' top: 'p' top: 'q' slice_param { axis: 1 slice_point: 1 } }",
        &[(a.clone(), vec![2, 3, 2])],
        &[true],
        21,
    );
    check(&layer("type: 'Softmax'"), &[(a, vec![2, 3, 2])], &[true], 22);
}

#[test]
fn eltwise_gradients() {
    let mut rng = Lcg(23);
    let a = rng.vec(12, -1.0, 1.0);
    let b = rng.vec(12, -1.0, 1.0);
    let c = rng.vec(12, -1.0, 1.0);
    for op in ["operation: SUM coeff: 0.5 coeff: -2 coeff: 1", "operation: PROD", "operation: MAX"]
    {
        check(
            &format!(
                "layer {{ name: 'e' type: 'Eltwise' bottom: 'a' bottom: 'b' bottom: 'c' top: 'y' eltwise_param {{ {op} }} }}"
            ),
            &[(a.clone(), vec![3, 4]), (b.clone(), vec![3, 4]), (c.clone(), vec![3, 4])],
            &[true, true, true],
            24,
        );
    }
}

#[test]
fn scale_bias_batchnorm_gradients() {
    let mut rng = Lcg(25);
    let x = rng.vec(2 * 3 * 2 * 2, -1.0, 1.0);
    let f = rng.vec(3 * 2 * 2, -1.0, 1.0);
    check(
        &layer("type: 'Scale' scale_param { axis: 1 num_axes: 1 bias_term: true }"),
        &[(x.clone(), vec![2, 3, 2, 2])],
        &[true],
        26,
    );
    check(
        "layer { name: 's' type: 'Scale' bottom: 'x' bottom: 'f' top: 'y' scale_param { bias_term: true } }",
        &[(x.clone(), vec![2, 3, 2, 2]), (f.clone(), vec![3, 2, 2])],
        &[true, true],
        27,
    );
    check(
        &layer("type: 'Bias' bias_param { axis: 1 num_axes: 2 }"),
        &[(x.clone(), vec![2, 3, 2, 2])],
        &[true],
        28,
    );
    check(
        "layer { name: 'b' type: 'Bias' bottom: 'x' bottom: 'f' top: 'y' }",
        &[(x.clone(), vec![2, 3, 2, 2]), (f, vec![3, 2, 2])],
        &[true, true],
        29,
    );
    // Batch statistics (the TRAIN computation; TEST phase here so the running blobs stay put).
    check_with(
        &layer("type: 'BatchNorm' batch_norm_param { use_global_stats: false }"),
        &[(x, vec![2, 3, 2, 2])],
        &[true],
        30,
        false,
    );
}

#[test]
fn prelu_crop_and_more_loss_gradients() {
    let mut rng = Lcg(31);
    let x = rand_away(&mut rng, 2 * 3 * 2 * 2, 0.05);
    for def in ["type: 'PReLU'", "type: 'PReLU' prelu_param { channel_shared: true }"] {
        check(&layer(def), &[(x.clone(), vec![2, 3, 2, 2])], &[true], 32);
    }
    let big = rng.vec(2 * 3 * 4 * 4, -1.0, 1.0);
    check(
        "layer { name: 'c' type: 'Crop' bottom: 'x' bottom: 'r' top: 'y' crop_param { axis: 2 offset: 1 offset: 2 } }",
        &[(big, vec![2, 3, 4, 4]), (vec![0.0; 2 * 3 * 2 * 2], vec![2, 3, 2, 2])],
        &[true, false],
        33,
    );
    let logits = rng.vec(3 * 4, -2.0, 2.0);
    let targets = rng.vec(3 * 4, 0.0, 1.0);
    check(
        "layer { name: 's' type: 'SigmoidCrossEntropyLoss' bottom: 'x' bottom: 't' top: 'l' }",
        &[(logits, vec![3, 4]), (targets, vec![3, 4])],
        &[true, false],
        34,
    );
    let a = rng.vec(4 * 2, -0.4, 0.4);
    let b = rng.vec(4 * 2, -0.4, 0.4);
    for def in ["", "contrastive_loss_param { legacy_version: true margin: 2 }"] {
        check(
            &format!(
                "layer {{ name: 'c' type: 'ContrastiveLoss' bottom: 'a' bottom: 'b' bottom: 'y' top: 'l' {def} }}"
            ),
            &[(a.clone(), vec![4, 2]), (b.clone(), vec![4, 2]), (vec![1., 0., 0., 1.], vec![4])],
            &[true, true, false],
            35,
        );
    }
}

#[test]
fn dropout_train_mask_scales_and_routes_the_gradient() {
    let param = parse_net_text(
        "layer { name: 'd' type: 'Dropout' bottom: 'x' top: 'y' dropout_param { dropout_ratio: 0.4 } }",
        "drop".as_ref(),
    )
    .unwrap();
    let mut l = LayerRegistry::default().create(&param.layer[0]).unwrap();
    let shape = vec![4usize, 250];
    l.setup(std::slice::from_ref(&shape)).unwrap();
    l.reshape(std::slice::from_ref(&shape)).unwrap();
    let ctx = ForwardCtx { phase: Phase::Train, device: Device::Cpu };
    let x = Tensor::full(2f32, (4, 250), &Device::Cpu).unwrap();
    let y = l.forward(&ctx, &[&x], &[]).unwrap().remove(0);
    let yv = flat(&y);
    let kept = yv.iter().filter(|&&v| v != 0.0).count();
    assert!(
        yv.iter().all(|&v| v == 0.0 || (v - 2.0 / 0.6).abs() < 1e-5),
        "kept x scaled by 1/(1-p)"
    );
    assert!((450..750).contains(&kept), "about 60% kept: {kept}");
    let dy = Tensor::full(3f32, (4, 250), &Device::Cpu).unwrap();
    let g = l
        .backward(&BackwardArgs {
            ctx: &ctx,
            bottoms: &[&x],
            tops: &[&y],
            top_diffs: std::slice::from_ref(&dy),
            params: &[],
            propagate_down: &[true],
            param_down: &[],
        })
        .unwrap();
    let gx = flat(g.bottoms[0].as_ref().unwrap());
    // Same mask, same scale: dx = dy * y / x.
    for (d, v) in gx.iter().zip(&yv) {
        assert!((d - 3.0 * v / 2.0).abs() < 1e-5);
    }
}
