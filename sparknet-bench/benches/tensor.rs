//! sparknet-tensor kernels, each beside `memcpy` of the same bytes in the same run.
//!
//! - `crop_227`: SparkNet's data-layer copy, a 3x227x227 crop view of a 3x256x256 f32 image copied
//!   into a flat buffer (`flat_copy_into`), against `copy_from_slice` of the same byte count and
//!   against an element-by-element copy through `get`.
//! - `stream_60m`: in-place `add`, `scale` and `axpy` over 60M f32 (AlexNet's parameter count),
//!   against a 60M-float `memcpy`. Throughput counts every byte read plus every byte written:
//!   memcpy and scale move 2 x 240 MB per call, add and axpy 3 x 240 MB.
//!
//! `cargo bench -p sparknet-bench --bench tensor` measures the full sizes. Under `cargo test
//! --benches` (no `--bench` argument) criterion runs each routine once, and the streams shrink
//! to 64K floats so the check stays fast.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sparknet_tensor::Tensor;

/// The full stream length, or a small one when criterion runs in test mode.
fn stream_len() -> usize {
    if std::env::args().any(|a| a == "--bench") { 60_000_000 } else { 1 << 16 }
}

fn crop_227(c: &mut Criterion) {
    let image = Tensor::<f32>::arange(3 * 256 * 256).unwrap().reshape(&[3, 256, 256]).unwrap();
    let crop = image.subarray(&[0, 14, 15], &[3, 241, 242]).unwrap();
    let n = crop.elem_count();
    let mut dst = vec![0.0f32; n];
    let src = image.as_slice().unwrap();

    let mut g = c.benchmark_group("crop_227");
    g.throughput(Throughput::Bytes((n * size_of::<f32>()) as u64));
    g.bench_function("flat_copy_into", |b| {
        b.iter(|| black_box(&crop).flat_copy_into(black_box(&mut dst)).unwrap())
    });
    g.bench_function("memcpy_same_bytes", |b| {
        b.iter(|| black_box(&mut dst[..]).copy_from_slice(black_box(&src[..n])))
    });
    g.bench_function("get_per_element", |b| {
        b.iter(|| {
            let mut k = 0;
            for ch in 0..3 {
                for y in 0..227 {
                    for x in 0..227 {
                        dst[k] = black_box(&crop).get(&[ch, y, x]).unwrap();
                        k += 1;
                    }
                }
            }
        })
    });
    g.finish();
}

fn stream_60m(c: &mut Criterion) {
    let n = stream_len();
    let bytes = (n * size_of::<f32>()) as u64;
    let x = Tensor::<f32>::full(&[n], 1e-3).unwrap();
    let mut y = Tensor::<f32>::full(&[n], 1.0).unwrap();

    let mut g = c.benchmark_group("stream_60m");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(2 * bytes));
    g.bench_function("memcpy", |b| {
        let src = x.as_slice().unwrap();
        b.iter(|| y.as_mut_slice().copy_from_slice(black_box(src)))
    });
    // Multiplying by -1 keeps the values bounded and away from denormals.
    g.bench_function("scale", |b| b.iter(|| y.scale(black_box(-1.0))));
    g.throughput(Throughput::Bytes(3 * bytes));
    g.bench_function("add", |b| b.iter(|| y.add(black_box(&x)).unwrap()));
    g.bench_function("axpy", |b| b.iter(|| y.axpy(black_box(0.5), black_box(&x)).unwrap()));
    g.finish();
    assert!(y.as_slice().is_some_and(|s| s.iter().all(|v| v.is_finite())));
}

criterion_group!(benches, crop_227, stream_60m);
criterion_main!(benches);
