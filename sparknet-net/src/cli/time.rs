//! `sparknet-net time`: per-layer forward milliseconds and whole forward-backward passes, like `caffe time` (inputs are random
//! batches of their shapes; label-like tops are zeros, a valid class).

use std::collections::HashMap;
use std::time::Instant;

use clap::Args;
use serde_json::json;
use sparknet_net::{Error, Result};

use super::{NetArgs, build_net};

/// Flags of `time`.
#[derive(Args, Debug)]
pub struct TimeArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Batch size (replaces each input's first dimension).
    #[arg(long)]
    batch: Option<usize>,
    /// Timed iterations (after one warm-up pass).
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Print JSON lines (one per layer, then the totals).
    #[arg(long)]
    json: bool,
}

/// Runs `time`.
pub fn run(a: &TimeArgs) -> Result<()> {
    let mut args = a.net.clone();
    if let Some(b) = a.batch {
        for (_, shape) in &mut args.data_shape {
            if let Some(first) = shape.first_mut() {
                *first = b;
            }
        }
    }
    let mut net = build_net(&args)?;
    let device = net.device().clone();
    let mut inputs = HashMap::new();
    for (k, name) in net.input_names().into_iter().enumerate() {
        let mut shape = net.blob_shape(&name).cloned().ok_or_else(|| {
            Error::option(
                "--data-shape",
                format!("the shape of input '{name}' is unknown: give --data-shape {name}=N,C,H,W"),
            )
        })?;
        if let (Some(b), Some(first)) = (a.batch, shape.first_mut()) {
            *first = b;
        }
        let t = if k == 0 || shape.len() == 4 {
            candle::Tensor::rand(0f32, 1.0, shape.as_slice(), &device)?
        } else {
            candle::Tensor::zeros(shape.as_slice(), candle::DType::F32, &device)?
        };
        inputs.insert(name, t);
    }
    net.forward(&inputs)?;
    let n = net.num_layers();
    let mut per_layer = vec![0f64; n];
    let iterations = a.iterations.max(1);
    let mut passes = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let pass = Instant::now();
        for (i, slot) in per_layer.iter_mut().enumerate() {
            let t0 = Instant::now();
            net.forward_layer(i)?;
            *slot += t0.elapsed().as_secs_f64() * 1e3;
        }
        passes.push(pass.elapsed().as_secs_f64() * 1e3);
    }
    let forward_ms = passes.iter().sum::<f64>() / iterations as f64;
    // The median pass too: on a shared machine the mean takes every stall along (peers such as
    // `opencv_caffe_ref.py` report medians).
    passes.sort_by(f64::total_cmp);
    let forward_median_ms = passes[iterations / 2];
    // A whole forward + backward pass, as `caffe time` reports it (the backward of a net without a
    // loss does nothing, as in Caffe).
    net.forward_backward(&inputs)?;
    let start = Instant::now();
    for _ in 0..iterations {
        net.forward_backward(&inputs)?;
    }
    let forward_backward_ms = start.elapsed().as_secs_f64() * 1e3 / iterations as f64;
    let train_step_ms = train_step_ms(&mut net, &inputs, iterations)?;
    let infos = net.layer_infos();
    for (info, total) in infos.iter().zip(&per_layer) {
        let ms = total / iterations as f64;
        if a.json {
            say!("{}", json!({"layer": info.name, "type": info.kind, "forward_ms": ms}));
        } else {
            say!("{:<28} {:<18} forward: {ms:>9.3} ms", info.name, info.kind);
        }
    }
    if a.json {
        say!(
            "{}",
            json!({"iterations": iterations, "forward_ms": forward_ms,
                   "forward_median_ms": forward_median_ms,
                   "forward_backward_ms": forward_backward_ms, "train_step_ms": train_step_ms})
        );
    } else {
        say!(
            "average forward pass: {forward_ms:.3} ms ({iterations} iterations, median \
             {forward_median_ms:.3} ms)"
        );
        say!("average forward-backward pass: {forward_backward_ms:.3} ms");
        say!("average training step: {train_step_ms:.3} ms (SGD, momentum 0.9, weight decay 5e-4)");
    }
    Ok(())
}

/// A whole training step as a solver runs it, and as `torch_train_bench.py` times PyTorch's:
/// zero the gradients, forward, backward, Caffe's SGD update (momentum 0.9, weight decay 5e-4,
/// lr 0.01) over the flat buffer, and the weights back into the layers.
fn train_step_ms(
    net: &mut sparknet_net::Net,
    inputs: &HashMap<String, candle::Tensor>,
    iterations: usize,
) -> Result<f64> {
    use sparknet_net::proto::SolverParameter;
    use sparknet_net::solver::{SolverConfig, updater_for};
    let param = SolverParameter {
        base_lr: Some(0.01),
        momentum: Some(0.9),
        weight_decay: Some(5e-4),
        ..SolverParameter::default()
    };
    let mut updater = updater_for(net, SolverConfig::from_proto(&param)?)?;
    let mut step = |net: &mut sparknet_net::Net| -> Result<()> {
        net.zero_grads()?;
        net.forward_backward(inputs)?;
        let (params, grads) = net.buffers()?;
        updater.apply(params, grads)?;
        net.sync_params()
    };
    step(net)?;
    let start = Instant::now();
    for _ in 0..iterations {
        step(net)?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e3 / iterations as f64)
}
