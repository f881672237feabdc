//! Solver acceptance: Caffe's six update rules through the real net (InnerProduct +
//! EuclideanLoss) against a closed-form f64 computation, iter_size, snapshot/resume, and LeNet on
//! real MNIST (500 iterations from scratch; resuming Caffe's own lenet_iter_10000.solverstate).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle::{Device, Tensor};
use sparknet_net::load::{parse_net_text, parse_text, read_net_prototxt, read_solver_prototxt};
use sparknet_net::proto::SolverParameter;
use sparknet_net::solver::Solver;
use sparknet_net::{NetConfig, Result};

const LSQ: &str = r#"
  name: "lsq"
  layer { name: "in" type: "Input" top: "x" top: "y"
          input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
  layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p"
          param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
          inner_product_param { num_output: 2
            weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
  layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }"#;

fn data(rows: usize, offset: usize) -> (Vec<f64>, Vec<f64>) {
    let x = (0..rows * 3).map(|i| (((i + offset) * 7 % 11) as f64 - 5.0) / 4.0).collect();
    let y = (0..rows * 2).map(|i| (((i + offset) * 5 % 7) as f64 - 3.0) / 3.0).collect();
    (x, y)
}

fn feed(x: &[f64], y: &[f64], rows: usize) -> HashMap<String, Tensor> {
    let f = |v: &[f64], c: usize| {
        Tensor::from_vec(v.iter().map(|&a| a as f32).collect::<Vec<_>>(), (rows, c), &Device::Cpu)
            .unwrap()
    };
    HashMap::from([("x".to_string(), f(x, 3)), ("y".to_string(), f(y, 2))])
}

fn solver(kind: &str, extra: &str) -> Solver {
    let text = format!(
        "type: '{kind}' base_lr: 0.05 weight_decay: 0.01 lr_policy: 'step' \
         gamma: 0.5 stepsize: 2 random_seed: 3 {extra}"
    );
    let mut p: SolverParameter =
        parse_text("caffe.SolverParameter", &text, "s.prototxt".as_ref()).unwrap();
    p.net_param = Some(parse_net_text(LSQ, "lsq.prototxt".as_ref()).unwrap());
    Solver::from_param(&p, NetConfig::default()).unwrap()
}

/// Caffe's rule in f64 for one blob (w, g after iteration `t`, 1-based), updating history.
#[allow(clippy::too_many_arguments)]
fn rule(kind: &str, lr: f64, m: f64, t: i32, w: &mut f64, g: f64, h: &mut f64, h2: &mut f64) {
    let delta = 1e-8;
    let upd = match kind {
        "SGD" => {
            *h = lr * g + m * *h;
            *h
        }
        "Nesterov" => {
            let prev = *h;
            *h = m * *h + lr * g;
            (1.0 + m) * *h - m * prev
        }
        "AdaGrad" => {
            *h += g * g;
            lr * g / (h.sqrt() + delta)
        }
        "RMSProp" => {
            *h = 0.99 * *h + 0.01 * g * g;
            lr * g / (h.sqrt() + delta)
        }
        "AdaDelta" => {
            *h = m * *h + (1.0 - m) * g * g;
            let step = g * ((*h2 + delta) / (*h + delta)).sqrt();
            *h2 = m * *h2 + (1.0 - m) * step * step;
            lr * step
        }
        "Adam" => {
            *h = m * *h + (1.0 - m) * g;
            *h2 = 0.999 * *h2 + 0.001 * g * g;
            let corr = (1.0 - 0.999f64.powi(t)).sqrt() / (1.0 - m.powi(t));
            lr * corr * *h / (h2.sqrt() + delta)
        }
        other => panic!("no rule {other}"),
    };
    *w -= upd;
}

#[test]
fn six_solvers_match_closed_form() {
    for kind in ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"] {
        let m = if kind == "AdaGrad" || kind == "RMSProp" { 0.0 } else { 0.9 };
        let mut s = solver(kind, if m == 0.0 { "" } else { "momentum: 0.9" });
        let init: Vec<f64> =
            s.net_mut().param_data().unwrap().iter().map(|&v| f64::from(v)).collect();
        let (mut w, mut b) = (init[..6].to_vec(), init[6..].to_vec());
        let (mut hw, mut hb, mut h2w, mut h2b) =
            (vec![0.0; 6], vec![0.0; 2], vec![0.0; 6], vec![0.0; 2]);
        for it in 0..5 {
            let (x, y) = data(4, it);
            s.step(&[feed(&x, &y, 4)]).unwrap();
            // Closed form: L = 1/(2N) sum |W x + b - y|^2.
            let (mut gw, mut gb) = (vec![0.0; 6], vec![0.0; 2]);
            for r in 0..4 {
                for o in 0..2 {
                    let p: f64 = (0..3).map(|k| w[o * 3 + k] * x[r * 3 + k]).sum::<f64>() + b[o];
                    let e = (p - y[r * 2 + o]) / 4.0;
                    gb[o] += e;
                    (0..3).for_each(|k| gw[o * 3 + k] += e * x[r * 3 + k]);
                }
            }
            let lr = 0.05 * 0.5f64.powi(it as i32 / 2);
            let t = it as i32 + 1;
            for k in 0..6 {
                let g = gw[k] + 0.01 * w[k];
                rule(kind, lr, m, t, &mut w[k], g, &mut hw[k], &mut h2w[k]);
            }
            for k in 0..2 {
                rule(kind, 2.0 * lr, m, t, &mut b[k], gb[k], &mut hb[k], &mut h2b[k]);
            }
        }
        let got = s.net_mut().param_data().unwrap().to_vec();
        let want: Vec<f64> = w.iter().chain(&b).copied().collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{kind} [{i}]: {g} vs {w}"
            );
        }
        assert_eq!(s.iter(), 5);
    }
}

#[test]
fn iter_size_two_equals_the_doubled_batch() {
    let mut a = solver("SGD", "momentum: 0.9 iter_size: 2");
    let mut b = solver("SGD", "momentum: 0.9");
    let (x, y) = data(8, 0);
    let halves: Vec<_> = (0..2)
        .map(|half| {
            let r = half * 4;
            feed(&x[r * 3..(r + 4) * 3], &y[r * 2..(r + 4) * 2], 4)
        })
        .collect();
    a.step(&halves).unwrap();
    b.step(&[feed(&x, &y, 8)]).unwrap();
    let (pa, pb) =
        (a.net_mut().param_data().unwrap().to_vec(), b.net_mut().param_data().unwrap().to_vec());
    for (u, v) in pa.iter().zip(&pb) {
        assert!((u - v).abs() <= 1e-6, "{pa:?} vs {pb:?}");
    }
}

#[test]
fn snapshot_then_resume_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("lsq").to_string_lossy().into_owned();
    for kind in ["SGD", "Adam", "AdaDelta"] {
        let extra = format!("momentum: 0.9 snapshot_prefix: '{prefix}_{kind}'");
        let mut full = solver(kind, &extra);
        let mut first = solver(kind, &extra);
        let batch = |it: usize| data(4, it);
        for it in 0..6 {
            let (x, y) = batch(it);
            full.step(&[feed(&x, &y, 4)]).unwrap();
        }
        for it in 0..3 {
            let (x, y) = batch(it);
            first.step(&[feed(&x, &y, 4)]).unwrap();
        }
        let (_, state) = first.snapshot().unwrap();
        assert!(state.ends_with(format!("lsq_{kind}_iter_3.solverstate")));
        let mut resumed = solver(kind, &extra);
        resumed.restore(&state).unwrap();
        assert_eq!(resumed.iter(), 3);
        for it in 3..6 {
            let (x, y) = batch(it);
            resumed.step(&[feed(&x, &y, 4)]).unwrap();
        }
        let a: Vec<u32> =
            full.net_mut().param_data().unwrap().iter().map(|v| v.to_bits()).collect();
        let b: Vec<u32> =
            resumed.net_mut().param_data().unwrap().iter().map(|v| v.to_bits()).collect();
        assert_eq!(a, b, "{kind}");
    }
}

/// MNIST from the IDX gz files: (images scaled by 1/256 as lenet_train_test does, labels).
fn mnist(dir: &Path, set: &str, limit: usize) -> (Vec<f32>, Vec<f32>) {
    let read = |name: String| {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(dir.join(name)).unwrap())
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    let img = read(format!("{set}-images-idx3-ubyte.gz"));
    let lab = read(format!("{set}-labels-idx1-ubyte.gz"));
    let n = (lab.len() - 8).min(limit);
    let x = img[16..16 + n * 784].iter().map(|&p| f32::from(p) * 0.003_906_25).collect();
    let y = lab[8..8 + n].iter().map(|&l| f32::from(l)).collect();
    (x, y)
}

fn batch_of(x: &[f32], y: &[f32], start: usize, b: usize) -> Result<HashMap<String, Tensor>> {
    let n = y.len();
    let idx: Vec<usize> = (0..b).map(|i| (start + i) % n).collect();
    let xs: Vec<f32> =
        idx.iter().flat_map(|&i| x[i * 784..(i + 1) * 784].iter().copied()).collect();
    let ys: Vec<f32> = idx.iter().map(|&i| y[i]).collect();
    Ok(HashMap::from([
        ("data".to_string(), Tensor::from_vec(xs, (b, 1, 28, 28), &Device::Cpu)?),
        ("label".to_string(), Tensor::from_vec(ys, b, &Device::Cpu)?),
    ]))
}

fn lenet_solver(assets: &Path) -> Solver {
    let dir = assets.join("models/lenet_mnist");
    let mut p = read_solver_prototxt(dir.join("lenet_solver.prototxt")).unwrap();
    p.net_param = Some(read_net_prototxt(dir.join("lenet_train_test.prototxt")).unwrap());
    p.net = None;
    let config = NetConfig {
        input_shapes: HashMap::from([("data".to_string(), vec![64, 1, 28, 28])]),
        ..Default::default()
    };
    Solver::from_param(&p, config).unwrap()
}

fn accuracy(s: &mut Solver, x: &[f32], y: &[f32]) -> f32 {
    let iters = y.len() / 100;
    let mut next = 0;
    let scores = s
        .test(0, &mut || {
            let b = batch_of(x, y, next, 100);
            next += 100;
            b
        })
        .unwrap();
    assert!(iters > 0);
    scores.iter().find(|t| t.blob == "accuracy").unwrap().value
}

#[test]
fn lenet_500_iterations_on_mnist() {
    let Some(assets) = sparknet_testkit::assets_dir("lenet_500_iterations_on_mnist") else {
        return;
    };
    let mnist_dir = assets.join("data/mnist");
    let (tx, ty) = mnist(&mnist_dir, "train", 60_000);
    let (vx, vy) = mnist(&mnist_dir, "t10k", 10_000);
    let mut s = lenet_solver(&assets);
    let mut next = 0;
    for _ in 0..500 {
        let b = batch_of(&tx, &ty, next, 64).unwrap();
        next += 64;
        s.step(&[b]).unwrap();
    }
    // test_iter 100 x batch 100: the whole 10k test set.
    let acc = accuracy(&mut s, &vx, &vy);
    println!("lenet 500 iterations: test accuracy {acc}");
    assert!(acc >= 0.97, "accuracy {acc}");
}

#[test]
fn lenet_resumes_caffe_solverstate() {
    let Some(assets) = sparknet_testkit::assets_dir("lenet_resumes_caffe_solverstate") else {
        return;
    };
    let mnist_dir = assets.join("data/mnist");
    let (tx, ty) = mnist(&mnist_dir, "train", 60_000);
    let (vx, vy) = mnist(&mnist_dir, "t10k", 10_000);
    let mut s = lenet_solver(&assets);
    s.restore(assets.join("models/lenet_mnist/lenet_iter_10000.solverstate")).unwrap();
    assert_eq!(s.iter(), 10_000);
    let mut next = 0;
    for _ in 0..100 {
        let b = batch_of(&tx, &ty, next, 64).unwrap();
        next += 64;
        s.step(&[b]).unwrap();
    }
    assert_eq!(s.iter(), 10_100);
    let acc = accuracy(&mut s, &vx, &vy);
    println!("lenet resumed at 10000 + 100 iterations: test accuracy {acc}");
    assert!(acc >= 0.99, "accuracy {acc}");
}

#[test]
fn solver_config_from_prototxt() {
    use sparknet_net::solver::{LrPolicy, Regularization, SolverConfig, SolverKind};
    let parse = |t: &str| -> SolverParameter {
        parse_text("caffe.SolverParameter", t, "s.prototxt".as_ref()).unwrap()
    };
    // The legacy enum when `type` is absent; `type` wins otherwise.
    let c = SolverConfig::from_proto(&parse("solver_type: ADAM base_lr: 0.1")).unwrap();
    assert_eq!(c.kind, SolverKind::Adam);
    let c = SolverConfig::from_proto(&parse("type: 'Nesterov' solver_type: ADAM")).unwrap();
    assert_eq!(c.kind, SolverKind::Nesterov);
    let c = SolverConfig::from_proto(&parse(
        "lr_policy: 'multistep' gamma: 0.1 stepvalue: 10 stepvalue: 20 \
         regularization_type: 'L1' iter_size: 3 clip_gradients: 5",
    ))
    .unwrap();
    assert_eq!(c.lr_policy, LrPolicy::MultiStep { gamma: 0.1f32 as f64, stepvalues: vec![10, 20] });
    assert_eq!((c.regularization, c.iter_size, c.clip_gradients), (Regularization::L1, 3, 5.0));
    assert_eq!(c.kind, SolverKind::Sgd);
    let inv = SolverConfig::from_proto(&parse("lr_policy: 'inv' gamma: 0.0001 power: 0.75"))
        .unwrap()
        .lr_policy;
    let want = 0.01 * (1.0 + 0.0001f32 as f64 * 100.0).powf(-(0.75f32 as f64));
    assert!((inv.rate(0.01, 100) - want).abs() < 1e-12);
    for (text, what) in [
        ("type: 'Momentum'", "unknown solver type 'Momentum'"),
        ("lr_policy: 'cosine'", "unknown policy 'cosine'"),
        ("lr_policy: 'step' gamma: 0.1", "stepsize"),
        ("regularization_type: 'L3'", "L3"),
        ("iter_size: 0", "iter_size"),
    ] {
        let e = SolverConfig::from_proto(&parse(text)).unwrap_err().to_string();
        assert!(e.contains(what), "{text}: {e}");
    }
}

#[test]
fn solve_loop_tests_displays_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("run").to_string_lossy().into_owned();
    let text = format!(
        "base_lr: 0.05 momentum: 0.9 display: 2 test_iter: 1 test_interval: 3 snapshot: 4 \
         snapshot_prefix: '{prefix}' max_iter: 6 average_loss: 2"
    );
    let mut p: SolverParameter =
        parse_text("caffe.SolverParameter", &text, "s.prototxt".as_ref()).unwrap();
    p.net_param = Some(parse_net_text(LSQ, "lsq.prototxt".as_ref()).unwrap());
    let mut s = Solver::from_param(&p, NetConfig::default()).unwrap();
    let (x, y) = data(4, 0);
    let mut events = Vec::new();
    s.solve(None, &mut || Ok(feed(&x, &y, 4)), &mut |_| Ok(feed(&x, &y, 4)), &mut |e| {
        events.push(e.clone())
    })
    .unwrap();
    use sparknet_net::solver::Event;
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e {
            Event::Train { iter, .. } => format!("train{iter}"),
            Event::Test { iter, .. } => format!("test{iter}"),
            Event::Snapshot { .. } => "snap".into(),
        })
        .collect();
    assert_eq!(kinds, ["test0", "train0", "train2", "test3", "snap", "train4", "test6"]);
    assert_eq!(s.iter(), 6);
    assert!(dir.path().join("run_iter_4.caffemodel").exists());
    assert!(dir.path().join("run_iter_4.solverstate").exists());
    let st =
        sparknet_net::load::read_solverstate(dir.path().join("run_iter_4.solverstate")).unwrap();
    assert_eq!((st.iter(), st.history.len()), (4, 2));
    // Parameters written in place (as an allreduce does) are what the next snapshot saves.
    s.net_mut().param_buffer().unwrap().fill(0.5);
    let (model, _) = s.snapshot().unwrap();
    let saved = sparknet_net::load::read_caffemodel(model).unwrap();
    let ip = saved.layer.iter().find(|l| l.name() == "ip").unwrap();
    assert!(ip.blobs.iter().all(|b| b.data.iter().all(|&v| v == 0.5)));
}
