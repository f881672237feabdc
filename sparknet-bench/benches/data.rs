//! sparknet-data: shard scan against memcpy, JPEG decode + Caffe transform per core, and loader
//! throughput, each with its reference measured in the same run.
//!
//! - `data/scan`: reading every payload of a 64 MiB raw shard set through `Dataset` (`copy`:
//!   index lookup + copy into a reused buffer; `crc`: the CRC-checked `get`) against `memcpy` of
//!   the same bytes in the same record-sized pieces from a heap buffer.
//! - `data/jpeg256`: decode one 256x256 JPEG, random 227 crop, mirror, mean-file subtraction into
//!   an `f32` CHW buffer on one thread. The set is built from the photos in
//!   `../shared/assets/data/images` (resized to 256x256, JPEG quality 90) and written to
//!   `target/bench-data/jpeg256/`, where `peers/opencv_decode.py` reads the same files for the
//!   OpenCV comparison (`cv2.imdecode` + numpy crop/mirror/mean).
//! - `data/loader`: batches of 32 of the JPEG set through `Loader` (TRAIN, crop 227, mirror,
//!   mean file) with 1 and 2 decode threads.
//!
//! - `RATIO decode`: the same decode + crop + mirror + mean work on one core, sparknet-data
//!   against OpenCV (`cv2.imdecode` + numpy, `peers/opencv_decode.py`) on the same files, run
//!   from this binary, alternating twice, best pass of each. The peer's Python is
//!   `$SPARKNET_OPENCV_PYTHON`, else `../venv-cv/bin/python` beside the workspace, else
//!   `python3`; without `cv2` the ratio line says SKIPPED.
//!
//! Run: `cargo bench -p sparknet-bench --bench data -- --warm-up-time 1 --measurement-time 3`
//! (the peer alone: `python sparknet-bench/peers/opencv_decode.py target/bench-data/jpeg256`).
// criterion's group macros generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group};
use sparknet_data::{
    ChannelOrder, Dataset, DatasetConfig, DatasetWriter, Decoder, Encoding, Loader, LoaderConfig,
    Mean, MeanImage, Phase, Record, SplitMix64, TransformParams, Transformer,
};

const SCAN_RECORDS: usize = 1024;
const SCAN_RECORD_BYTES: usize = 65_536;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A 64 MiB raw dataset (1024 records of 1x256x256) in a temporary directory.
fn scan_dataset() -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = DatasetConfig {
        encoding: Encoding::RawU8,
        channel_order: ChannelOrder::Gray,
        classes: Vec::new(),
        shard_size: 256,
    };
    let mut w = DatasetWriter::create(dir.path(), config).expect("writer");
    let mut rng = SplitMix64::new(1);
    let mut payload = vec![0u8; SCAN_RECORD_BYTES];
    for i in 0..SCAN_RECORDS {
        payload.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
        w.append(i as u32 % 10, [1, 256, 256], &payload).expect("append");
    }
    w.finish().expect("finish");
    let ds = Dataset::open_mapped(dir.path()).expect("open");
    (dir, ds)
}

/// Builds (once) the 256x256 JPEG set from the shared photos; returns the file paths.
fn jpeg_set() -> Vec<PathBuf> {
    let out = std::env::var_os("SPARKNET_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/bench-data/jpeg256"));
    let assets = std::env::var_os("SPARKNET_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/assets"));
    let src = assets.join("data/images");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()))
        .filter(|p| {
            matches!(p.extension().and_then(|e| e.to_str()), Some("jpg" | "JPEG" | "jpeg" | "png"))
        })
        .collect();
    sources.sort();
    std::fs::create_dir_all(&out).expect("create bench-data dir");
    let mut files = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let dst = out.join(format!("{i:03}.jpg"));
        if !dst.is_file() {
            let Ok(img) = image::open(s) else { continue };
            let img = img.resize_exact(256, 256, image::imageops::FilterType::Triangle).to_rgb8();
            let mut bytes = Vec::new();
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90);
            image::DynamicImage::ImageRgb8(img).write_with_encoder(enc).expect("encode jpeg");
            std::fs::write(&dst, bytes).expect("write jpeg");
        }
        files.push(dst);
    }
    if files.is_empty() {
        // No photos here (a bare machine): use a set built earlier and copied along.
        files = std::fs::read_dir(&out).into_iter().flatten().flatten().map(|e| e.path()).collect();
        files.retain(|p| p.extension().is_some_and(|e| e == "jpg"));
        files.sort();
    }
    assert!(
        !files.is_empty(),
        "no source photos under {} and no JPEGs in {}",
        src.display(),
        out.display()
    );
    files
}

/// A deterministic 3x256x256 mean image (the values do not change the work done).
fn mean_image() -> MeanImage {
    let data = (0..3 * 256 * 256).map(|i| 100.0 + (i % 37) as f32).collect();
    MeanImage { c: 3, h: 256, w: 256, data }
}

fn train_params() -> TransformParams {
    TransformParams {
        crop_size: 227,
        mirror: true,
        mean: Mean::File(mean_image()),
        ..Default::default()
    }
}

fn bench_scan(c: &mut Criterion) {
    let (_dir, ds) = scan_dataset();
    let total = (SCAN_RECORDS * SCAN_RECORD_BYTES) as u64;
    let heap: Vec<u8> =
        (0..ds.len()).flat_map(|i| ds.get(i).expect("record").payload.to_vec()).collect();
    let mut dst = vec![0u8; SCAN_RECORD_BYTES];
    let mut g = c.benchmark_group("data/scan");
    g.throughput(Throughput::Bytes(total));
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            for chunk in heap.chunks_exact(SCAN_RECORD_BYTES) {
                dst.copy_from_slice(black_box(chunk));
                black_box(&dst);
            }
        })
    });
    let lax = sparknet_data::OpenOptions::new().verify_crc(false).open(ds.dir()).expect("open");
    g.bench_function("copy", |b| {
        b.iter(|| {
            for i in 0..lax.len() {
                let r = lax.get(black_box(i)).expect("record");
                dst.copy_from_slice(r.payload);
                black_box(&dst);
            }
        })
    });
    g.bench_function("crc", |b| {
        b.iter(|| {
            for i in 0..ds.len() {
                black_box(ds.get(black_box(i)).expect("record").payload.len());
            }
        })
    });
    g.finish();
}

fn bench_jpeg(c: &mut Criterion) {
    let files = jpeg_set();
    let payloads: Vec<Vec<u8>> =
        files.iter().map(|f| std::fs::read(f).expect("read jpeg")).collect();
    let t = Transformer::new(train_params(), Phase::Train).expect("transformer");
    let mut dec = Decoder::new();
    let mut out = vec![0f32; 3 * 227 * 227];
    let mut g = c.benchmark_group("data/jpeg256");
    g.throughput(Throughput::Elements(payloads.len() as u64));
    let mut seed = 0u64;
    g.bench_function("decode_crop_mirror_mean_1core", |b| {
        b.iter(|| {
            for p in &payloads {
                let rec = Record {
                    label: 0,
                    shape: [3, 256, 256],
                    encoding: Encoding::Encoded,
                    payload: p,
                };
                seed += 1;
                t.transform(&rec, &mut dec, &mut SplitMix64::new(seed), &mut out)
                    .expect("transform");
                black_box(&out);
            }
        })
    });
    g.bench_function("decode_only_1core", |b| {
        b.iter(|| {
            for p in &payloads {
                let rec = Record {
                    label: 0,
                    shape: [3, 256, 256],
                    encoding: Encoding::Encoded,
                    payload: p,
                };
                black_box(dec.pixels(&rec, sparknet_data::ColorMode::Native).expect("decode").h);
            }
        })
    });
    g.finish();
}

fn loader_dataset() -> (tempfile::TempDir, Arc<Dataset>) {
    let files = jpeg_set();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = DatasetConfig {
        encoding: Encoding::Encoded,
        channel_order: ChannelOrder::Bgr,
        classes: Vec::new(),
        shard_size: 1000,
    };
    let mut w = DatasetWriter::create(dir.path(), config).expect("writer");
    for round in 0..4 {
        for (i, f) in files.iter().enumerate() {
            w.append((i + round) as u32 % 10, [3, 256, 256], &std::fs::read(f).expect("read"))
                .expect("append");
        }
    }
    w.finish().expect("finish");
    let ds = Arc::new(Dataset::open_mapped(dir.path()).expect("open"));
    (dir, ds)
}

fn bench_loader(c: &mut Criterion) {
    let (_dir, ds) = loader_dataset();
    let mut g = c.benchmark_group("data/loader");
    const BATCH: usize = 32;
    const BATCHES: usize = 4;
    g.throughput(Throughput::Elements((BATCH * BATCHES) as u64));
    for threads in [1usize, 2] {
        let config = LoaderConfig {
            batch_size: BATCH,
            threads,
            prefetch: 2,
            phase: Phase::Train,
            transform: train_params(),
            shuffle: Some(7),
            ..Default::default()
        };
        let mut loader = Loader::new(ds.clone(), config).expect("loader");
        g.bench_function(format!("jpeg256_b32_threads{threads}"), |b| {
            b.iter(|| {
                for _ in 0..BATCHES {
                    black_box(loader.next_batch().expect("batch").data()[0]);
                }
            })
        });
        eprintln!("loader threads={threads}: {:?}", loader.stats());
    }
    g.finish();
}

/// Prints the ratios the issue asks for, timed back to back in this run.
fn ratios() {
    let (_dir, ds) = scan_dataset();
    let heap: Vec<u8> =
        (0..ds.len()).flat_map(|i| ds.get(i).expect("record").payload.to_vec()).collect();
    let lax = sparknet_data::OpenOptions::new().verify_crc(false).open(ds.dir()).expect("open");
    let mut dst = vec![0u8; SCAN_RECORD_BYTES];
    let best = |f: &mut dyn FnMut()| {
        (0..7)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let gb = (SCAN_RECORDS * SCAN_RECORD_BYTES) as f64 / 1e9;
    let m = best(&mut || {
        for chunk in heap.chunks_exact(SCAN_RECORD_BYTES) {
            dst.copy_from_slice(black_box(chunk));
            black_box(&dst);
        }
    });
    let s = best(&mut || {
        for i in 0..lax.len() {
            dst.copy_from_slice(lax.get(i).expect("record").payload);
            black_box(&dst);
        }
    });
    let v = best(&mut || {
        for i in 0..ds.len() {
            black_box(ds.get(i).expect("record").payload.len());
        }
    });
    eprintln!(
        "RATIO scan: memcpy {:.2} GB/s, shard copy {:.2} GB/s ({:.2}x), CRC-checked get {:.2} GB/s ({:.2}x)",
        gb / m,
        gb / s,
        m / s,
        gb / v,
        m / v
    );
}

/// The Python that runs the OpenCV peer.
fn peer_python() -> PathBuf {
    if let Some(p) = std::env::var_os("SPARKNET_OPENCV_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join("../venv-cv/bin/python");
    if venv.is_file() { venv } else { PathBuf::from("python3") }
}

/// One run of the OpenCV peer for `seconds`: its best pass in images/s, or why it did not run.
fn opencv_peer(dir: &Path, seconds: f64) -> Result<(f64, String), String> {
    let script = workspace_root().join("sparknet-bench/peers/opencv_decode.py");
    let out = std::process::Command::new(peer_python())
        .arg(&script)
        .arg(dir)
        .arg(seconds.to_string())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", peer_python().display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("").to_string());
    }
    let best = text
        .split("best pass ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("unexpected peer output: {text}"))?;
    let version = text.split(':').next().unwrap_or("opencv").to_string();
    Ok((best, version))
}

/// Decode + crop + mirror + mean on one core, beside the OpenCV peer on the same files.
fn decode_ratio() {
    let files = jpeg_set();
    let Some(dir) = files[0].parent().map(Path::to_path_buf) else { return };
    let payloads: Vec<Vec<u8>> =
        files.iter().map(|f| std::fs::read(f).expect("read jpeg")).collect();
    let t = Transformer::new(train_params(), Phase::Train).expect("transformer");
    let mut dec = Decoder::new();
    let mut out = vec![0f32; 3 * 227 * 227];
    let mut seed = 0u64;
    let mut ours = |seconds: f64| {
        let start = Instant::now();
        let mut best = 0f64;
        while start.elapsed().as_secs_f64() < seconds {
            let t0 = Instant::now();
            for p in &payloads {
                let rec = Record {
                    label: 0,
                    shape: [3, 256, 256],
                    encoding: Encoding::Encoded,
                    payload: p,
                };
                seed += 1;
                t.transform(&rec, &mut dec, &mut SplitMix64::new(seed), &mut out)
                    .expect("transform");
                black_box(&out);
            }
            best = best.max(payloads.len() as f64 / t0.elapsed().as_secs_f64());
        }
        best
    };
    ours(0.5); // warm-up
    let (mut best_ours, mut best_cv, mut version) = (0f64, 0f64, String::new());
    for _ in 0..2 {
        best_ours = best_ours.max(ours(3.0));
        match opencv_peer(&dir, 3.0) {
            Ok((v, ver)) => {
                best_cv = best_cv.max(v);
                version = ver;
            }
            Err(why) => {
                eprintln!(
                    "RATIO decode+crop227+mirror+mean (1 core, {} files): sparknet {best_ours:.0} img/s; OpenCV SKIPPED ({why})",
                    payloads.len()
                );
                return;
            }
        }
    }
    eprintln!(
        "RATIO decode+crop227+mirror+mean (1 core, {} files 256x256): sparknet {best_ours:.0} img/s, {version} {best_cv:.0} img/s ({:.2}x OpenCV)",
        payloads.len(),
        best_ours / best_cv
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench_scan, bench_jpeg, bench_loader
}

fn main() {
    ratios();
    decode_ratio();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
