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
