//! Update rules against values worked out by hand from Caffe's formulas (scalar parameters).

use super::*;

fn one(kind: SolverKind, f: impl FnOnce(&mut SolverConfig)) -> Updater {
    let mut c = SolverConfig { kind, base_lr: 0.1, ..Default::default() };
    f(&mut c);
    Updater::new(c, vec![ParamRange { offset: 0, len: 1, lr_mult: 1.0, decay_mult: 1.0 }], 1)
        .unwrap()
}

/// Applies `grads` one per step to a scalar starting at `w0`; returns the trajectory.
fn run(u: &mut Updater, w0: f32, grads: &[f32]) -> Vec<f32> {
    let mut w = [w0];
    grads
        .iter()
        .map(|&g| {
            let mut d = [g];
            u.apply(&mut w, &mut d).unwrap();
            w[0]
        })
        .collect()
}

fn close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((f64::from(*g) - w).abs() <= 1e-6 * w.abs().max(1.0), "{got:?} != {want:?}");
    }
}

#[test]
fn sgd_keeps_the_learning_rate_inside_the_momentum_history() {
    let mut u = one(SolverKind::Sgd, |c| c.momentum = 0.9);
    // h1 = 0.1*1 = 0.1 -> w = 0.9; h2 = 0.1*1 + 0.9*0.1 = 0.19 -> w = 0.71.
    close(&run(&mut u, 1.0, &[1.0, 1.0]), &[0.9, 0.71]);
}

#[test]
fn weight_decay_and_multipliers() {
    let c = SolverConfig { base_lr: 0.1, weight_decay: 0.5, ..Default::default() };
    let ranges = vec![
        ParamRange { offset: 0, len: 1, lr_mult: 1.0, decay_mult: 1.0 },
        ParamRange { offset: 1, len: 1, lr_mult: 2.0, decay_mult: 0.0 },
    ];
    let mut u = Updater::new(c.clone(), ranges.clone(), 2).unwrap();
    let (mut w, mut g) = ([2.0f32, 2.0], [1.0f32, 1.0]);
    u.apply(&mut w, &mut g).unwrap();
    // w0: g = 1 + 0.5*2 = 2, step 0.1*2 -> 1.8; w1: no decay, rate 0.2 -> 1.8.
    close(&w, &[1.8, 1.8]);
    let mut u =
        Updater::new(SolverConfig { regularization: Regularization::L1, ..c }, ranges, 2).unwrap();
    let (mut w, mut g) = ([-2.0f32, 2.0], [0.0f32, 0.0]);
    u.apply(&mut w, &mut g).unwrap();
    // L1: g = 0.5*sign(-2) = -0.5, step -0.05 -> -1.95.
    close(&w, &[-1.95, 2.0]);
}

#[test]
fn nesterov() {
    let mut u = one(SolverKind::Nesterov, |c| c.momentum = 0.5);
    // h1 = 0.1; u1 = 1.5*0.1 - 0 = 0.15 -> 0.85. h2 = 0.05 + 0.1 = 0.15; u2 = 1.5*0.15 - 0.5*0.1 = 0.175.
    close(&run(&mut u, 1.0, &[1.0, 1.0]), &[0.85, 0.675]);
}

#[test]
fn adagrad() {
    let mut u = one(SolverKind::AdaGrad, |c| c.delta = 0.0);
    // h1 = 4, u1 = 0.1*2/2 = 0.1; h2 = 4 + 9 = 13, u2 = 0.1*3/sqrt(13).
    close(&run(&mut u, 1.0, &[2.0, 3.0]), &[0.9, 0.9 - 0.3 / 13f64.sqrt()]);
}

#[test]
fn rmsprop() {
    let mut u = one(SolverKind::RmsProp, |c| {
        c.delta = 0.0;
        c.rms_decay = 0.9;
    });
    // h1 = 0.1*4 = 0.4, u1 = 0.1*2/sqrt(0.4).
    let u1 = 0.2 / 0.4f64.sqrt();
    // h2 = 0.36 + 0.1*1 = 0.46, u2 = 0.1*1/sqrt(0.46).
    close(&run(&mut u, 1.0, &[2.0, 1.0]), &[1.0 - u1, 1.0 - u1 - 0.1 / 0.46f64.sqrt()]);
}

#[test]
fn adadelta() {
    let mut u = one(SolverKind::AdaDelta, |c| {
        c.base_lr = 1.0;
        c.momentum = 0.9;
        c.delta = 1e-6;
    });
    // h1 = 0.1*1 = 0.1; step1 = 1*sqrt((0+1e-6)/(0.1+1e-6)); u1 = 0.1*step1^2.
    let (d, h1) = (1e-6f64, 0.1f64);
    let s1 = (d / (h1 + d)).sqrt();
    let u1 = 0.1 * s1 * s1;
    let h2 = 0.9 * h1 + 0.1;
    let s2 = ((u1 + d) / (h2 + d)).sqrt();
    let got = run(&mut u, 0.0, &[1.0, 1.0]);
    // f32 history: compare with a relative bound suited to values near 3e-3.
    assert!((f64::from(got[0]) + s1).abs() < 1e-8, "{got:?}");
    assert!((f64::from(got[1]) + s1 + s2).abs() < 1e-7, "{got:?}");
}

#[test]
fn adam_applies_the_bias_correction() {
    let mut u = one(SolverKind::Adam, |c| {
        c.base_lr = 0.001;
        c.momentum = 0.9;
        c.momentum2 = 0.999;
        c.delta = 1e-8;
    });
    // t = 1: m = 0.1g, v = 0.001g^2, correction = sqrt(0.001)/0.1;
    // update = lr * correction * m/(sqrt(v)+eps) = lr * g/(|g| + eps/sqrt(0.001)...) ~ lr.
    let g = 0.5f64;
    let (m, v) = (0.1 * g, 0.001 * g * g);
    let corr = 0.001f64.sqrt() / 0.1;
    let u1 = 0.001 * corr * m / (v.sqrt() + 1e-8);
    close(&run(&mut u, 1.0, &[0.5]), &[1.0 - u1]);
}

#[test]
fn clip_gradients_bounds_the_global_norm_before_decay() {
    let c = SolverConfig { base_lr: 1.0, clip_gradients: 1.0, ..Default::default() };
    let ranges = vec![
        ParamRange { offset: 0, len: 1, lr_mult: 1.0, decay_mult: 1.0 },
        ParamRange { offset: 1, len: 1, lr_mult: 1.0, decay_mult: 1.0 },
    ];
    let mut u = Updater::new(c, ranges, 2).unwrap();
    let (mut w, mut g) = ([0.0f32, 0.0], [3.0f32, 4.0]);
    u.apply(&mut w, &mut g).unwrap();
    close(&w, &[-0.6, -0.8]);
}

#[test]
fn iter_size_normalises_accumulated_gradients() {
    let mut u = one(SolverKind::Sgd, |c| c.iter_size = 4);
    close(&run(&mut u, 1.0, &[8.0]), &[0.8]);
}

#[test]
fn multistep_state_advances_with_the_iteration() {
    let mut u = one(SolverKind::Sgd, |c| {
        c.lr_policy = LrPolicy::MultiStep { gamma: 0.1, stepvalues: vec![1, 2] };
    });
    let rates: Vec<f64> = (0..3)
        .map(|_| {
            let (mut w, mut g) = ([0.0f32], [0.0f32]);
            u.apply(&mut w, &mut g).unwrap()
        })
        .collect();
    assert!((rates[0] - 0.1).abs() < 1e-12 && (rates[1] - 0.01).abs() < 1e-12);
    assert!((rates[2] - 0.001).abs() < 1e-12);
    assert_eq!((u.state().iter, u.state().current_step), (3, 2));
}

#[test]
fn bad_buffers_and_ranges_are_errors() {
    let c = SolverConfig::default();
    let bad = vec![ParamRange { offset: 2, len: 2, lr_mult: 1.0, decay_mult: 1.0 }];
    assert!(matches!(Updater::new(c.clone(), bad, 3), Err(UpdateError::BadRange { .. })));
    let mut u = one(SolverKind::Sgd, |_| {});
    let err = u.apply(&mut [0.0, 0.0], &mut [0.0]).unwrap_err();
    assert!(err.to_string().contains("parameter buffer has 2 elements"), "{err}");
    let wrong = UpdaterState { iter: 0, current_step: 0, history: vec![vec![0.0]; 2] };
    assert!(matches!(u.restore(wrong), Err(UpdateError::History { .. })));
}

#[test]
fn restore_then_continue_equals_the_uninterrupted_run() {
    let grads = [0.3f32, -0.2, 0.7, 0.1, -0.4, 0.9];
    for kind in [
        SolverKind::Sgd,
        SolverKind::Nesterov,
        SolverKind::AdaGrad,
        SolverKind::RmsProp,
        SolverKind::AdaDelta,
        SolverKind::Adam,
    ] {
        let setup = |c: &mut SolverConfig| c.momentum = 0.9;
        let full = run(&mut one(kind, setup), 1.0, &grads);
        let mut first = one(kind, setup);
        let head = run(&mut first, 1.0, &grads[..3]);
        let mut resumed = one(kind, setup);
        resumed.restore(first.state().clone()).unwrap();
        let tail = run(&mut resumed, head[2], &grads[3..]);
        assert_eq!(&full[3..], &tail[..], "{kind:?}");
    }
}

/// `apply_scaled(s)` equals `apply` followed by multiplying every value by `s`, bit for bit, for
/// every rule, including ranges with `lr_mult` 0 (as BatchNorm statistics are), which are scaled
/// but not updated.
#[test]
fn scaled_update_equals_apply_then_scale_bit_for_bit() {
    let ranges = vec![
        ParamRange { offset: 0, len: 5, lr_mult: 1.0, decay_mult: 1.0 },
        ParamRange { offset: 5, len: 3, lr_mult: 2.0, decay_mult: 0.0 },
        // BatchNorm-like statistics: no rate, no decay.
        ParamRange { offset: 8, len: 3, lr_mult: 0.0, decay_mult: 0.0 },
    ];
    let total = 11;
    let value = |i: usize, t: usize| ((i * 7 + t * 13) % 17) as f32 * 0.137 - 1.1;
    for kind in [
        SolverKind::Sgd,
        SolverKind::Nesterov,
        SolverKind::AdaGrad,
        SolverKind::RmsProp,
        SolverKind::AdaDelta,
        SolverKind::Adam,
    ] {
        for scale in [0.5f32, 1.0 / 3.0, 0.25, 1.0] {
            let c = SolverConfig {
                kind,
                base_lr: 0.05,
                momentum: 0.9,
                weight_decay: 0.01,
                ..Default::default()
            };
            let mut plain = Updater::new(c.clone(), ranges.clone(), total).unwrap();
            let mut fused = Updater::new(c, ranges.clone(), total).unwrap();
            let mut w_plain: Vec<f32> = (0..total).map(|i| value(i, 0)).collect();
            let mut w_fused = w_plain.clone();
            for t in 1..4 {
                let grads: Vec<f32> = (0..total).map(|i| value(i, t)).collect();
                let (mut g_plain, mut g_fused) = (grads.clone(), grads);
                let r1 = plain.apply(&mut w_plain, &mut g_plain).unwrap();
                w_plain.iter_mut().for_each(|w| *w *= scale);
                let r2 = fused.apply_scaled(&mut w_fused, &mut g_fused, scale).unwrap();
                assert_eq!(r1, r2);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&w_fused), bits(&w_plain), "{kind:?} scale {scale} step {t}");
                assert_eq!(bits(&g_fused), bits(&g_plain), "{kind:?}: the applied update");
                assert_eq!(fused.state(), plain.state());
            }
            // The statistics were only scaled.
            for (i, w) in w_fused.iter().enumerate().skip(8) {
                assert_eq!(*w, value(i, 0) * scale * scale * scale, "{kind:?} {scale}");
            }
        }
    }
    let mut u = one(SolverKind::Sgd, |_| {});
    let err = u.apply_scaled(&mut [0.0, 0.0], &mut [0.0], 0.5).unwrap_err();
    assert!(err.to_string().contains("parameter buffer has 2 elements"), "{err}");
}

/// A net with an InnerProduct and a BatchNorm (whose statistics live in the parameter buffer).
const IP_BN: &str = r#"
  name: "ip_bn"
  layer { name: "in" type: "Input" top: "x" top: "y"
          input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
  layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p"
          inner_product_param { num_output: 2
            weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
  layer { name: "bn" type: "BatchNorm" bottom: "p" top: "q" }
  layer { name: "loss" type: "EuclideanLoss" bottom: "q" bottom: "y" top: "loss" }"#;

fn ip_bn_solver() -> Solver {
    let text = "base_lr: 0.05 momentum: 0.9 weight_decay: 0.01 lr_policy: 'fixed' random_seed: 5";
    let mut p: crate::proto::SolverParameter =
        crate::load::parse_text("caffe.SolverParameter", text, "s.prototxt".as_ref()).unwrap();
    p.net_param = Some(crate::load::parse_net_text(IP_BN, "ip_bn.prototxt".as_ref()).unwrap());
    Solver::from_param(&p, crate::NetConfig::default()).unwrap()
}

fn ip_bn_batch(t: usize) -> std::collections::HashMap<String, candle::Tensor> {
    let v = |n: usize, k: usize| -> Vec<f32> {
        (0..n).map(|i| ((i * k + t * 5) % 9) as f32 / 3.0 - 1.2).collect()
    };
    let dev = candle::Device::Cpu;
    std::collections::HashMap::from([
        ("x".to_string(), candle::Tensor::from_vec(v(12, 7), (4, 3), &dev).unwrap()),
        ("y".to_string(), candle::Tensor::from_vec(v(8, 5), (4, 2), &dev).unwrap()),
    ])
}

/// `Solver::step_scaled` equals `step` followed by scaling the whole buffer (BatchNorm
/// statistics included), and the next step sees the scaled weights (the tensors are refreshed).
#[test]
fn scaled_solver_step_equals_step_then_scale() {
    let bits = |s: &mut Solver| -> Vec<u32> {
        s.net_mut().param_data().unwrap().iter().map(|x| x.to_bits()).collect()
    };
    let (mut plain, mut fused) = (ip_bn_solver(), ip_bn_solver());
    assert_eq!(bits(&mut plain), bits(&mut fused), "same seed, same init");
    for t in 0..3 {
        let loss = plain.step(&[ip_bn_batch(t)]).unwrap();
        plain.net_mut().param_buffer().unwrap().iter_mut().for_each(|w| *w *= 0.5);
        let loss_fused = fused.step_scaled(&[ip_bn_batch(t)], 0.5).unwrap();
        assert_eq!(loss.to_bits(), loss_fused.to_bits(), "step {t}: the same weights went in");
        assert_eq!(bits(&mut plain), bits(&mut fused), "step {t}");
        assert_eq!(fused.iter(), t as u64 + 1);
    }
    // The BatchNorm statistics (mean, variance, scale factor) are in the buffer and were scaled.
    let table = fused.net_mut().param_table().unwrap().to_vec();
    let bn: Vec<_> = table.iter().filter(|e| e.layer == "bn").collect();
    assert_eq!(bn.len(), 3);
    let data = fused.net_mut().param_data().unwrap().to_vec();
    let factor = data[bn[2].offset];
    assert!(factor > 0.0 && factor < 1.0, "scale factor {factor} went through three scalings");
    // A plain step after the scaled one starts from the scaled weights, as a sync would give.
    plain.step(&[ip_bn_batch(9)]).unwrap();
    fused.step(&[ip_bn_batch(9)]).unwrap();
    assert_eq!(bits(&mut plain), bits(&mut fused));
    let ip = fused.net().params()["ip"][0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let at = table.iter().find(|e| e.layer == "ip" && e.blob == 0).unwrap().offset;
    assert_eq!(ip, fused.net_mut().param_data().unwrap()[at..at + 6]);
}
