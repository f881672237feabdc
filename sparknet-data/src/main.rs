//! `sparknet-data`: convert datasets into sparknet-data shards, compute Caffe mean files, inspect
//! and verify datasets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sparknet_data::convert::{cifar, images, mnist, synthetic};
use sparknet_data::{ColorMode, Dataset, Decoder, Encoding, compute_mean};

#[derive(Parser)]
#[command(
    name = "sparknet-data",
    version,
    about = "Build, inspect and verify sparknet-data datasets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a source dataset into a sparknet-data directory.
    Convert {
        #[command(subcommand)]
        source: Source,
    },
    /// Compute the per-pixel mean image as a Caffe `.binaryproto` (compute_image_mean).
    Mean {
        /// Dataset directory.
        dataset: PathBuf,
        /// Output `.binaryproto`.
        #[arg(long)]
        out: PathBuf,
        /// Skip unreadable records and report how many.
        #[arg(long)]
        skip_corrupt: bool,
    },
    /// Print counts, class histogram, shape and encoding; optionally dump one record as PNG.
    Inspect {
        /// Dataset directory.
        dataset: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Record to dump.
        #[arg(long, requires = "out")]
        dump: Option<usize>,
        /// PNG file for `--dump`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check every record's CRC-32C.
    Verify {
        /// Dataset directory.
        dataset: PathBuf,
        /// Report every bad record instead of stopping at the first.
        #[arg(long)]
        skip_corrupt: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SplitArg {
    Train,
    Test,
}

#[derive(Subcommand)]
enum Source {
    /// MNIST IDX files (gzipped or raw).
    Mnist {
        /// IDX3 image file.
        #[arg(long)]
        images: PathBuf,
        /// IDX1 label file.
        #[arg(long)]
        labels: PathBuf,
        /// Output dataset directory.
        #[arg(long)]
        out: PathBuf,
        /// Records per shard.
        #[arg(long, default_value_t = 100_000)]
        shard_size: usize,
    },
    /// CIFAR-10 binary batches (gzipped or raw).
    Cifar10 {
        /// Directory holding data_batch_*.bin[.gz] and test_batch.bin[.gz].
        #[arg(long)]
        input: PathBuf,
        /// Output dataset directory.
        #[arg(long)]
        out: PathBuf,
        /// Which split.
        #[arg(long, value_enum, default_value = "train")]
        split: SplitArg,
        /// Records per shard.
        #[arg(long, default_value_t = 10_000)]
        shard_size: usize,
    },
    /// A procedurally generated MNIST-shaped digits set (no download needed).
    SyntheticDigits {
        /// Number of images.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Seed: the same seed gives the same set.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output dataset directory.
        #[arg(long)]
        out: PathBuf,
        /// Records per shard.
        #[arg(long, default_value_t = 100_000)]
        shard_size: usize,
    },
    /// A class-per-folder tree or a Caffe list file.
    Images {
        /// Root directory of the images.
        #[arg(long)]
        root: PathBuf,
        /// Caffe list file (`relative/path label` per line); without it, one folder per class.
        #[arg(long)]
        list: Option<PathBuf>,
        /// Output dataset directory.
        #[arg(long)]
        out: PathBuf,
        /// Resize to exactly W,H.
        #[arg(long, value_parser = parse_wh, conflicts_with = "shorter_side")]
        resize: Option<(u32, u32)>,
        /// Resize so the shorter side is N, keeping the aspect ratio.
        #[arg(long)]
        shorter_side: Option<u32>,
        /// Keep the JPEG/PNG bytes (the default).
        #[arg(long, conflicts_with = "raw")]
        encoded: bool,
        /// Store decoded BGR CHW bytes.
        #[arg(long)]
        raw: bool,
        /// Store one gray channel.
        #[arg(long)]
        gray: bool,
        /// Shuffle the image order before writing.
        #[arg(long)]
        shuffle: bool,
        /// Shuffle seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Records per shard.
        #[arg(long, default_value_t = 10_000)]
        shard_size: usize,
        /// Skip unreadable images and report how many.
        #[arg(long)]
        skip_corrupt: bool,
    },
}

fn parse_wh(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(',').ok_or("expected W,H")?;
    let p = |x: &str| x.trim().parse::<u32>().map_err(|e| format!("{x:?}: {e}"));
    Ok((p(w)?, p(h)?))
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    b.set_style(style);
    b.set_message(what.to_string());
    b
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyResult = Result<(), Box<dyn std::error::Error>>;

fn run(cli: Cli) -> AnyResult {
    match cli.command {
        Command::Convert { source } => convert(source),
        Command::Mean { dataset, out, skip_corrupt } => {
            let ds = Dataset::open(&dataset)?;
            let pb = bar(ds.len() as u64, "mean");
            let report = compute_mean(&ds, skip_corrupt, &|n| pb.inc(n))?;
            pb.finish();
            report.blob.write(&out)?;
            println!("mean of {} records written to {}", report.records, out.display());
            report_skipped(&report.skipped);
            Ok(())
        }
        Command::Inspect { dataset, json, dump, out } => {
            inspect(&dataset, json, dump, out.as_deref())
        }
        Command::Verify { dataset, skip_corrupt } => {
            let ds = Dataset::open(&dataset)?;
            let report = ds.verify(skip_corrupt)?;
            report_skipped(&report.corrupt);
            println!("{} records, {} corrupt", report.records, report.corrupt.len());
            if report.corrupt.is_empty() { Ok(()) } else { Err("corrupt records found".into()) }
        }
    }
}

fn report_skipped(errs: &[sparknet_data::Error]) {
    for e in errs {
        eprintln!("skipped: {e}");
    }
    if !errs.is_empty() {
        eprintln!("{} corrupt records skipped", errs.len());
    }
}

fn convert(source: Source) -> AnyResult {
    match source {
        Source::Mnist { images, labels, out, shard_size } => {
            let pb = bar(0, "mnist");
            let m = mnist::convert_mnist(&images, &labels, &out, shard_size, None, &|n| pb.inc(n))?;
            pb.finish();
            println!("{} records in {} shards at {}", m.records, m.shards.len(), out.display());
        }
        Source::SyntheticDigits { count, seed, out, shard_size } => {
            let m = synthetic::convert_synthetic_digits(&out, count, seed, shard_size)?;
            println!("{} records in {} shards at {}", m.records, m.shards.len(), out.display());
        }
        Source::Cifar10 { input, out, split, shard_size } => {
            let split = match split {
                SplitArg::Train => cifar::Split::Train,
                SplitArg::Test => cifar::Split::Test,
            };
            let pb = bar(0, "cifar10");
            let m = cifar::convert_cifar10(&input, split, &out, shard_size, None, &|n| pb.inc(n))?;
            pb.finish();
            println!("{} records in {} shards at {}", m.records, m.shards.len(), out.display());
        }
        Source::Images {
            root,
            list,
            out,
            resize,
            shorter_side,
            encoded: _,
            raw,
            gray,
            shuffle,
            seed,
            shard_size,
            skip_corrupt,
        } => {
            let (items, classes) = match &list {
                Some(l) => images::read_list(&root, l)?,
                None => images::scan_folders(&root)?,
            };
            let resize = match (resize, shorter_side) {
                (Some((width, height)), _) => images::Resize::Exact { width, height },
                (None, Some(n)) => images::Resize::ShorterSide(n),
                (None, None) => images::Resize::None,
            };
            let opts = images::ImageOptions {
                resize,
                encoded: !raw,
                gray,
                shuffle: shuffle.then_some(seed),
                shard_size,
                skip_corrupt,
            };
            let pb = bar(items.len() as u64, "images");
            let r = images::convert_images(items, classes, &out, &opts, &|n| pb.inc(n))?;
            pb.finish();
            report_skipped(&r.skipped);
            println!(
                "{} records in {} shards at {}",
                r.manifest.records,
                r.manifest.shards.len(),
                out.display()
            );
        }
    }
    Ok(())
}

fn inspect(dir: &Path, json: bool, dump: Option<usize>, out: Option<&Path>) -> AnyResult {
    let ds = Dataset::open(dir)?;
    let m = ds.manifest();
    let mut hist = vec![0u64; m.classes.len()];
    for shard in ds.shards() {
        for i in 0..shard.len() {
            let l = shard.entry(i)?.label as usize;
            if l >= hist.len() {
                hist.resize(l + 1, 0);
            }
            hist[l] += 1;
        }
    }
    let bytes: u64 = m.shards.iter().map(|s| s.bytes).sum();
    if json {
        let v = serde_json::json!({
            "records": m.records,
            "shards": m.shards.len(),
            "bytes": bytes,
            "encoding": m.encoding,
            "channel_order": m.channel_order,
            "shape": m.shape,
            "classes": m.classes,
            "histogram": hist,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("dataset:   {}", dir.display());
        println!("records:   {} in {} shards ({bytes} bytes)", m.records, m.shards.len());
        println!("encoding:  {:?}, channels {:?}", m.encoding, m.channel_order);
        match m.shape {
            Some([c, h, w]) => println!("shape:     {c}x{h}x{w}"),
            None => println!("shape:     varies"),
        }
        println!("classes:   {}", m.classes.len());
        for (k, n) in hist.iter().enumerate() {
            let name = m.classes.get(k).map(String::as_str).unwrap_or("?");
            println!("  {k:>5} {name:<20} {n}");
        }
    }
    if let (Some(i), Some(out)) = (dump, out) {
        let rec = ds.get(i)?;
        let png =
            dump_png(&rec, m.channel_order, m.encoding).map_err(|r| format!("record {i}: {r}"))?;
        png.save(out)?;
        println!("record {i} (label {}) written to {}", rec.label, out.display());
    }
    Ok(())
}

fn dump_png(
    rec: &sparknet_data::Record<'_>,
    order: sparknet_data::ChannelOrder,
    enc: Encoding,
) -> Result<image::DynamicImage, String> {
    let mut d = Decoder::new();
    let px = d.pixels(rec, ColorMode::Native)?;
    let (h, w) = (px.h, px.w);
    let val = |c: usize, y: usize, x: usize| px.at(c, y, x).round().clamp(0.0, 255.0) as u8;
    if px.c == 1 {
        let img = image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
            image::Luma([val(0, y as usize, x as usize)])
        });
        return Ok(image::DynamicImage::ImageLuma8(img));
    }
    // Decoded encoded records and BGR datasets hold B, G, R planes; RGB datasets R, G, B.
    let bgr = enc == Encoding::Encoded || order == sparknet_data::ChannelOrder::Bgr;
    let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let (a, b, c) = (val(0, y, x), val(1, y, x), val(2, y, x));
        image::Rgb(if bgr { [c, b, a] } else { [a, b, c] })
    });
    Ok(image::DynamicImage::ImageRgb8(img))
}
