//! sparknet-kernels beside candle 0.11 on the same shapes, measured in the same run.
//!
//! - Convolution: LeNet conv2 (64x20x12x12 input, 50x20x5x5 weights) and CIFAR-10 quick conv2
//!   (100x32x16x16, 32x32x5x5, pad 2). `fwd` is the forward pass; `fwd_bwd` is forward plus the
//!   full backward (input, weight and bias gradients): ours calls the three kernels, candle runs
//!   `conv2d` on `Var`s and `backward()` of `sum(y * top)`.
//! - Pooling: LeNet pool1 (64x20x24x24, MAX 2/2) and CIFAR-10 quick pool1 (100x32x32x32, MAX 3/2
//!   ceil mode -> 16x16). Candle has no backward for overlapping windows and no ceil mode, so the
//!   CIFAR comparison is forward only (candle's output is 15x15).
//!
//! Run: `cargo bench -p sparknet-bench --bench kernels -- --warm-up-time 1 --measurement-time 2`.
// criterion's group macros generate undocumented public functions.
#![allow(missing_docs)]

use candle::{DType, Device, Tensor, Var};
use criterion::{Criterion, criterion_group, criterion_main};
use sparknet_kernels::{
    ConvGeometry, PoolGeometry, PoolMethod, Workspace, conv2d_backward_data,
    conv2d_backward_params, conv2d_forward, pool2d_backward, pool2d_forward,
};
use std::hint::black_box;

/// Deterministic pseudo-random values in [-1, 1) (a small LCG; no rand dependency needed).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

struct ConvCase {
    name: &'static str,
    batch: usize,
    g: ConvGeometry,
}

fn conv_cases() -> [ConvCase; 2] {
    let g = |c, hw, m, k, pad| ConvGeometry {
        in_channels: c,
        in_h: hw,
        in_w: hw,
        out_channels: m,
        kernel_h: k,
        kernel_w: k,
        stride_h: 1,
        stride_w: 1,
        pad_h: pad,
        pad_w: pad,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
    };
    [
        ConvCase { name: "conv_lenet_conv2", batch: 64, g: g(20, 12, 50, 5, 0) },
        ConvCase { name: "conv_cifar_quick_conv2", batch: 100, g: g(32, 16, 32, 5, 2) },
    ]
}

fn bench_conv(c: &mut Criterion) {
    for case in conv_cases() {
        let (g, n) = (case.g, case.batch);
        let x = values(n * g.input_len(), 1);
        let w = values(g.weight_len(), 2);
        let b = values(g.out_channels, 3);
        let top = values(n * g.output_len(), 4);
        let mut y = vec![0.0f32; top.len()];
        let mut gx = vec![0.0f32; x.len()];
        let mut gw = vec![0.0f32; w.len()];
        let mut gb = vec![0.0f32; b.len()];
        let mut ws = Workspace::default();

        let dev = Device::Cpu;
        let shape_x = (n, g.in_channels, g.in_h, g.in_w);
        let shape_w = (g.out_channels, g.in_channels, g.kernel_h, g.kernel_w);
        let tx = Var::from_tensor(&Tensor::from_slice(&x, shape_x, &dev).unwrap()).unwrap();
        let tw = Var::from_tensor(&Tensor::from_slice(&w, shape_w, &dev).unwrap()).unwrap();
        let tb =
            Var::from_tensor(&Tensor::from_slice(&b, (1, g.out_channels, 1, 1), &dev).unwrap())
                .unwrap();
        let ttop =
            Tensor::from_slice(&top, (n, g.out_channels, g.out_h(), g.out_w()), &dev).unwrap();
        let candle_fwd = || tx.conv2d(&tw, g.pad_h, 1, 1, 1).unwrap().broadcast_add(&tb).unwrap();

        let mut group = c.benchmark_group(case.name);
        group.sample_size(10);
        group.bench_function("sparknet_fwd", |bch| {
            bch.iter(|| conv2d_forward(&g, n, &x, &w, Some(&b), &mut y, &mut ws).unwrap())
        });
        group.bench_function("candle_fwd", |bch| bch.iter(|| black_box(candle_fwd())));
        group.bench_function("sparknet_fwd_bwd", |bch| {
            bch.iter(|| {
                conv2d_forward(&g, n, &x, &w, Some(&b), &mut y, &mut ws).unwrap();
                conv2d_backward_data(&g, n, &top, &w, &mut gx, &mut ws).unwrap();
                gw.fill(0.0);
                gb.fill(0.0);
                conv2d_backward_params(&g, n, &x, &top, &mut gw, Some(&mut gb), &mut ws).unwrap();
            })
        });
        group.bench_function("candle_fwd_bwd", |bch| {
            bch.iter(|| {
                let loss = (candle_fwd() * &ttop).unwrap().sum_all().unwrap();
                let grads = loss.backward().unwrap();
                black_box((grads.get(&tx).is_some(), grads.get(&tw).is_some()))
            })
        });
        group.finish();
    }
}

fn bench_pool(c: &mut Criterion) {
    // (name, batch, geometry, candle kernel, candle stride, candle has a backward here)
    let cases = [
        (
            "pool_lenet_pool1_max2s2",
            64,
            PoolGeometry {
                channels: 20,
                in_h: 24,
                in_w: 24,
                kernel_h: 2,
                kernel_w: 2,
                stride_h: 2,
                stride_w: 2,
                pad_h: 0,
                pad_w: 0,
            },
            2,
            2,
            true,
        ),
        (
            "pool_cifar_quick_pool1_max3s2",
            100,
            PoolGeometry {
                channels: 32,
                in_h: 32,
                in_w: 32,
                kernel_h: 3,
                kernel_w: 3,
                stride_h: 2,
                stride_w: 2,
                pad_h: 0,
                pad_w: 0,
            },
            3,
            2,
            false,
        ),
    ];
    for (name, n, g, k, s, candle_bwd) in cases {
        let x = values(n * g.input_len(), 5);
        let top = values(n * g.output_len(), 6);
        let mut y = vec![0.0f32; top.len()];
        let mut arg = vec![0u32; top.len()];
        let mut gx = vec![0.0f32; x.len()];
        let dev = Device::Cpu;
        let tx = Var::from_tensor(
            &Tensor::from_slice(&x, (n, g.channels, g.in_h, g.in_w), &dev).unwrap(),
        )
        .unwrap();

        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.bench_function("sparknet_fwd", |bch| {
            bch.iter(|| pool2d_forward(&g, n, PoolMethod::Max, &x, &mut y, Some(&mut arg)).unwrap())
        });
        group.bench_function("candle_fwd", |bch| {
            bch.iter(|| black_box(tx.max_pool2d_with_stride(k, s).unwrap()))
        });
        group.bench_function("sparknet_fwd_bwd", |bch| {
            bch.iter(|| {
                pool2d_forward(&g, n, PoolMethod::Max, &x, &mut y, Some(&mut arg)).unwrap();
                pool2d_backward(&g, n, PoolMethod::Max, &top, Some(&arg), &mut gx).unwrap();
            })
        });
        if candle_bwd {
            let ttop =
                Tensor::from_slice(&top, (n, g.channels, g.out_h(), g.out_w()), &dev).unwrap();
            group.bench_function("candle_fwd_bwd", |bch| {
                bch.iter(|| {
                    let yt = tx.max_pool2d_with_stride(k, s).unwrap();
                    let grads = (yt * &ttop).unwrap().sum_all().unwrap().backward().unwrap();
                    black_box(grads.get(&tx).map(|t| t.dtype() == DType::F32))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_conv, bench_pool);
criterion_main!(benches);
