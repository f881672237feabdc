//! `sparknet-data`: convert datasets into sparknet-data shards, compute Caffe mean files, inspect
//! and verify datasets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sparknet_data::convert::imagenet;
use sparknet_data::convert::synthetic_imagenet;
use sparknet_data::convert::{cifar, images, mnist, synthetic};
use sparknet_data::{ColorMode, Dataset, Decoder, Encoding, compute_mean_window};

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
    ///
    /// Records of differing sizes (ImageNet resized to a shorter side) are averaged over their
    /// central window of the smallest width and height in the dataset, or of `--center W,H`.
    #[command(visible_alias = "mean")]
    ComputeMean {
        /// Dataset directory.
        dataset: PathBuf,
        /// Output `.binaryproto`.
        #[arg(long)]
        out: PathBuf,
        /// Average each record's central window of width W and height H (given as W,H).
        #[arg(long, value_parser = parse_wh)]
        center: Option<(u32, u32)>,
        /// Skip unreadable records and report how many.
        #[arg(long)]
        skip_corrupt: bool,
    },
    /// Generate a dataset (no download needed).
    Synth {
        #[command(subcommand)]
        kind: SynthKind,
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

#[derive(Subcommand)]
enum SynthKind {
    /// An ImageNet-like set: deterministic 256x256 JPEGs, class-dependent patterns and colours,
    /// in the layout of `convert imagenet` (train/, val/, synsets.txt).
    Imagenet {
        /// Number of classes.
        #[arg(long, default_value_t = 10)]
        classes: usize,
        /// Train images per class.
        #[arg(long, default_value_t = 100)]
        per_class: usize,
        /// Val images per class (0: no val set).
        #[arg(long, default_value_t = 10)]
        val_per_class: usize,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the per-image variations.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Image side in pixels.
        #[arg(long, default_value_t = 256)]
        side: u32,
        /// JPEG quality.
        #[arg(long, default_value_t = 90)]
        quality: u8,
        /// Records per shard.
        #[arg(long, default_value_t = 10_000)]
        shard_size: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnBadArg {
    /// Stop at the first bad image, naming it; nothing is committed.
    Fail,
    /// Leave bad images out, list them on stderr and count them in the summary.
    Skip,
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
    /// ILSVRC-2012: train/<wnid>/*.JPEG and a val folder with its label file, labels in Caffe's
    /// synset order (sorted wnids), into OUT/train, OUT/val and OUT/synsets.txt.
    Imagenet {
        /// The train folder (one subfolder per synset).
        #[arg(long, required_unless_present = "val")]
        train: Option<PathBuf>,
        /// The val folder: flat with --val-labels, or one subfolder per synset.
        #[arg(long)]
        val: Option<PathBuf>,
        /// Val label file, `name label` per line (Caffe's val.txt; label = index or wnid).
        #[arg(long, requires = "val")]
        val_labels: Option<PathBuf>,
        /// Class list (first word per line: synsets.txt or synset_words.txt); default: the
        /// sorted train folder names.
        #[arg(long)]
        synsets: Option<PathBuf>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Resize so the shorter side is N (0: keep the size).
        #[arg(long, default_value_t = 256)]
        shorter_side: u32,
        /// Caffe's --resize_height: with --resize-width, resize to exactly WxH instead.
        #[arg(long, requires = "resize_width")]
        resize_height: Option<u32>,
        /// Caffe's --resize_width: with --resize-height, resize to exactly WxH instead.
        #[arg(long, requires = "resize_height")]
        resize_width: Option<u32>,
        /// Unreadable, truncated or unlabelled images: fail the run (default) or skip and count.
        #[arg(long, value_enum, default_value = "fail")]
        on_bad: OnBadArg,
        /// Seed of the train shuffle.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep the train records in class order (no shuffle).
        #[arg(long)]
        no_shuffle: bool,
        /// Records per shard.
        #[arg(long, default_value_t = 10_000)]
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

/// A bar for one split of an ImageNet-layout job; hidden when the split is empty.
fn split_bar(len: u64, what: &str) -> ProgressBar {
    if len == 0 { ProgressBar::hidden() } else { bar(len, what) }
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
        Command::ComputeMean { dataset, out, center, skip_corrupt } => {
            let ds = Dataset::open_mapped(&dataset)?;
            let window = match center {
                Some((w, h)) => Some((h as usize, w as usize)),
                None if ds.manifest().shape.is_none() && !ds.is_empty() => {
                    let (h, w) = sparknet_data::mean::smallest_size(&ds)?;
                    eprintln!(
                        "records differ in size: averaging each one's central {w}x{h} (WxH) window"
                    );
                    Some((h, w))
                }
                None => None,
            };
            let pb = bar(ds.len() as u64, "mean");
            let report = compute_mean_window(&ds, window, skip_corrupt, &|n| pb.inc(n))?;
            pb.finish();
            report.blob.write(&out)?;
            println!("mean of {} records written to {}", report.records, out.display());
            report_skipped(&report.skipped);
            Ok(())
        }
        Command::Synth { kind } => synth(kind),
        Command::Inspect { dataset, json, dump, out } => {
            inspect(&dataset, json, dump, out.as_deref())
        }
        Command::Verify { dataset, skip_corrupt } => {
            let ds = Dataset::open_mapped(&dataset)?;
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

/// Prints the one-line summary of an ImageNet-layout conversion or synthesis.
fn imagenet_summary(out: &Path, r: &imagenet::ImagenetReport) {
    for (name, split) in [("train", &r.train), ("val", &r.val)] {
        if let Some(s) = split {
            report_skipped(&s.skipped);
            println!(
                "{name}: {} records in {} shards at {}, {} skipped",
                s.manifest.records,
                s.manifest.shards.len(),
                out.join(name).display(),
                s.skipped.len()
            );
        }
    }
    println!(
        "{} classes listed in {}",
        r.synsets.len(),
        out.join(imagenet::SYNSETS_FILE).display()
    );
}

fn synth(kind: SynthKind) -> AnyResult {
    match kind {
        SynthKind::Imagenet {
            classes,
            per_class,
            val_per_class,
            out,
            seed,
            side,
            quality,
            shard_size,
        } => {
            let opts = synthetic_imagenet::SynthOptions {
                classes,
                per_class,
                val_per_class,
                seed,
                side,
                quality,
                shard_size,
            };
            let train = split_bar((classes * per_class) as u64, "train");
            let val = split_bar((classes * val_per_class) as u64, "val");
            let r = synthetic_imagenet::synth_imagenet(&out, &opts, &|s, n| match s {
                imagenet::Split::Train => train.inc(n),
                imagenet::Split::Val => val.inc(n),
            })?;
            train.finish();
            val.finish();
            imagenet_summary(&out, &r);
        }
    }
    Ok(())
}

fn convert(source: Source) -> AnyResult {
    match source {
        Source::Imagenet {
            train,
            val,
            val_labels,
            synsets,
            out,
            shorter_side,
            resize_height,
            resize_width,
            on_bad,
            seed,
            no_shuffle,
            shard_size,
        } => {
            let src = imagenet::ImagenetSource { train, val, val_labels, synsets };
            let resize = match (resize_width, resize_height, shorter_side) {
                (Some(width), Some(height), _) if width > 0 && height > 0 => {
                    images::Resize::Exact { width, height }
                }
                (_, _, 0) => images::Resize::None,
                (_, _, n) => images::Resize::ShorterSide(n),
            };
            let opts = imagenet::ImagenetOptions {
                resize,
                on_bad: match on_bad {
                    OnBadArg::Fail => imagenet::OnBad::Fail,
                    OnBadArg::Skip => imagenet::OnBad::Skip,
                },
                shuffle: (!no_shuffle).then_some(seed),
                shard_size,
            };
            let plan = imagenet::ImagenetPlan::scan(&src)?;
            let (nt, nv) = plan.counts();
            let train = split_bar(nt as u64, "train");
            let val = split_bar(nv as u64, "val");
            let r = plan.convert(&out, &opts, &|s, n| match s {
                imagenet::Split::Train => train.inc(n),
                imagenet::Split::Val => val.inc(n),
            })?;
            train.finish();
            val.finish();
            imagenet_summary(&out, &r);
        }
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
    let ds = Dataset::open_mapped(dir)?;
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
