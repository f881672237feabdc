//! `cargo xtask bench-imagenet`: SparkNet's ImageNet benchmark (BVLC CaffeNet or AlexNet) over a
//! grid of (ranks, tau), on a converted ImageNet or, without one, on a synthesized ImageNet-like
//! set (class-dependent 256x256 JPEGs), which the report says.
//!
//! The BVLC `train_val.prototxt` and `solver.prototxt` come from the shared assets; the copies
//! written into the report's `config/` bind the mean file, the batch size (`--batch`), the test
//! interval and `display: 1` (one JSON line per round), and `sparknet-train`'s `--train-data` /
//! `--test-data` bind the Data layers to the shards. Each configuration runs under
//! `mpirun --oversubscribe -n K` with `RAYON_NUM_THREADS = cores / K` when sparknet-train is
//! built with MPI, with `--workers K` in one process otherwise.
//!
//! The data step is one function, [`prepare_data`]: it uses sparknet-data's own ImageNet
//! converter and synthesizer (`convert imagenet`, `synth imagenet`) when the binary has them, and
//! otherwise converts a folder tree with `convert images` (synthesized here when needed).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::flags::{Flags, absolute};
use crate::plot::{Figure, LineChart, Mark, Series, StackedBars, save};
use crate::report::{self, secs};
use crate::train::{self, Binaries, RunLog, RunSpec, Sync};

pub(crate) const USAGE: &str = "\
usage: cargo xtask bench-imagenet [flags]

CaffeNet/AlexNet training throughput (images/s), per-round compute / allreduce / data-wait and
test accuracy for every (ranks, tau), on ImageNet or a synthesized ImageNet-like set.

  --imagenet DIR        converted shards (DIR/train, DIR/val sparknet-data datasets, optional
                        DIR/mean.binaryproto) or the ILSVRC-2012 layout (DIR/train/<wnid>/*.JPEG,
                        DIR/val/*.JPEG with DIR/val.txt); without it a synthetic set is made
  --net caffenet|alexnet  BVLC net and solver (default caffenet)
  --ranks 1,2           ranks K (default 1,2)
  --tau 1,10            local steps between averaging rounds (default 1,10)
  --iters N             iterations per worker per run (default 20)
  --minutes M           instead of --iters: wall-time budget per run
  --batch B             batch size per worker, train and test (default 8; BVLC: 256 and 50)
  --base-lr LR          solver base_lr (default: BVLC's 0.01 scaled by B / 256, the linear
                        scaling rule for the smaller batch)
  --test-interval N     iterations between tests (default: iters / 2)
  --classes N           synthetic set: classes (default 10)
  --per-class M         synthetic set: training images per class (default 32)
  --val-per-class V     synthetic set: validation images per class (default 8)
  --threads T           compute threads per rank (default cores / K, at least 1)
  --smoke               seconds-long CI configuration (tiny synthetic set, debug binaries)
  --debug               use debug binaries (default: release; --release with --smoke)
  --out DIR             report directory (default target/bench-imagenet)
";

struct Options {
    imagenet: Option<PathBuf>,
    net: String,
    ranks: Vec<usize>,
    taus: Vec<u64>,
    iters: u64,
    minutes: Option<f64>,
    batch: usize,
    base_lr: Option<f64>,
    test_interval: Option<u64>,
    classes: usize,
    per_class: usize,
    val_per_class: usize,
    threads: Option<usize>,
    smoke: bool,
    debug: bool,
    out: PathBuf,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut f = Flags::new("bench-imagenet", args);
    if f.switch("-h") || f.switch("--help") {
        print!("{USAGE}");
        std::process::exit(0);
    }
    let smoke = f.switch("--smoke");
    let release = f.switch("--release");
    let iters: Option<u64> = f.parsed("--iters")?;
    let minutes: Option<f64> = f.parsed("--minutes")?;
    if iters.is_some() && minutes.is_some() {
        bail!("give --iters or --minutes, not both");
    }
    let o = Options {
        imagenet: f.path("--imagenet")?.map(|p| absolute(&p)).transpose()?,
        net: f.value("--net")?.unwrap_or_else(|| "caffenet".into()),
        ranks: f.list("--ranks")?.unwrap_or_else(|| vec![1, 2]),
        taus: f.list("--tau")?.unwrap_or_else(|| if smoke { vec![1] } else { vec![1, 10] }),
        iters: iters.unwrap_or(if smoke { 2 } else { 20 }),
        minutes,
        batch: f.parsed("--batch")?.unwrap_or(if smoke { 2 } else { 8 }),
        base_lr: f.parsed("--base-lr")?,
        test_interval: f.parsed("--test-interval")?,
        classes: f.parsed("--classes")?.unwrap_or(if smoke { 2 } else { 10 }),
        per_class: f.parsed("--per-class")?.unwrap_or(if smoke { 4 } else { 32 }),
        val_per_class: f.parsed("--val-per-class")?.unwrap_or(if smoke { 2 } else { 8 }),
        threads: f.parsed("--threads")?,
        smoke,
        debug: !release && (f.switch("--debug") || smoke),
        out: match f.path("--out")? {
            Some(p) => absolute(&p)?,
            None => train::target_dir().join(if smoke {
                "bench-imagenet-smoke"
            } else {
                "bench-imagenet"
            }),
        },
    };
    f.finish(USAGE)?;
    if !matches!(o.net.as_str(), "caffenet" | "alexnet") {
        bail!("--net {}: expected caffenet or alexnet", o.net);
    }
    if o.ranks.contains(&0) || o.taus.contains(&0) || o.batch == 0 || o.iters == 0 {
        bail!("--ranks, --tau, --batch and --iters take positive integers");
    }
    if o.classes < 2 || o.per_class == 0 || o.val_per_class == 0 {
        bail!("the synthetic set needs --classes >= 2 and positive --per-class / --val-per-class");
    }
    Ok(o)
}

/// `cargo xtask bench-imagenet`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    let bins = train::build(!opts.debug)?;
    let dir = run_with(&opts, &bins)?;
    if opts.smoke {
        report::check(&dir, &FIGURES)?;
    }
    Ok(())
}

const FIGURES: [&str; 4] =
    ["images-per-second", "breakdown", "accuracy-vs-time", "accuracy-vs-iterations"];

/// The smoke configuration, for CI, with binaries already built; returns the report directory.
pub(crate) fn smoke(bins: &Binaries, out: &Path) -> Result<PathBuf> {
    let opts = parse(&["--smoke".to_owned(), "--out".to_owned(), out.display().to_string()])?;
    let dir = run_with(&opts, bins)?;
    report::check(&dir, &FIGURES)?;
    Ok(dir)
}

/// Datasets bound to a run.
struct Data {
    train: PathBuf,
    val: PathBuf,
    mean: PathBuf,
    /// What was used, for the report.
    note: String,
    synthetic: bool,
}

/// The one data step: converted shards, a converted ILSVRC tree, or a synthetic set.
fn prepare_data(bins: &Binaries, o: &Options) -> Result<Data> {
    let cache = train::target_dir().join("xtask-data");
    match &o.imagenet {
        Some(dir) => imagenet_data(bins, dir, &cache),
        None => synthetic_data(bins, o, &cache),
    }
}

fn mean_of(bins: &Binaries, dataset: &Path, out: &Path) -> Result<()> {
    if out.is_file() {
        return Ok(());
    }
    // sparknet-data's mean command (`compute-mean` in newer versions, `mean` before).
    let sub = if bins.data_help(&["compute-mean"]).is_empty() { "mean" } else { "compute-mean" };
    let tmp = out.with_extension("binaryproto.tmp");
    bins.data(&[sub.as_ref(), dataset.as_os_str(), "--out".as_ref(), tmp.as_os_str()])?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))
}

fn imagenet_data(bins: &Binaries, dir: &Path, cache: &Path) -> Result<Data> {
    let (train, val) = (dir.join("train"), dir.join("val"));
    if train::is_dataset(&train) && train::is_dataset(&val) {
        let mean = dir.join("mean.binaryproto");
        let mean = if mean.is_file() {
            mean
        } else {
            let m = cache.join(format!(
                "imagenet-mean-{}.binaryproto",
                sanitize(&dir.display().to_string())
            ));
            mean_of(bins, &train, &m)?;
            m
        };
        return Ok(Data {
            train,
            val,
            mean,
            note: format!("ImageNet shards from {}", dir.display()),
            synthetic: false,
        });
    }
    if !train.is_dir() || !val.is_dir() {
        bail!(
            "--imagenet {}: expected sparknet-data datasets train/ and val/, or the ILSVRC-2012 layout train/<wnid>/*.JPEG and val/ (with val.txt)",
            dir.display()
        );
    }
    let out = cache.join(format!("imagenet-{}", sanitize(&dir.display().to_string())));
    let (otrain, oval) = (out.join("train"), out.join("val"));
    let labels = [dir.join("val.txt"), dir.join("val/val.txt")].into_iter().find(|p| p.is_file());
    if !bins.data_help(&["convert", "imagenet"]).is_empty() {
        if !(train::is_dataset(&otrain) && train::is_dataset(&oval)) {
            let mut args: Vec<&std::ffi::OsStr> = vec![
                "convert".as_ref(),
                "imagenet".as_ref(),
                "--train".as_ref(),
                train.as_os_str(),
                "--val".as_ref(),
                val.as_os_str(),
            ];
            if let Some(l) = &labels {
                args.extend(["--val-labels".as_ref(), l.as_os_str()]);
            }
            args.extend(["--out".as_ref(), out.as_os_str()]);
            bins.data(&args)?;
        }
    } else {
        // Before the ImageNet converter: class folders and a Caffe list file, shorter side 256.
        let Some(labels) = labels else {
            bail!("{}: no val.txt (Caffe's `name label` list) found", dir.display())
        };
        train::convert_cached(
            bins,
            &otrain,
            &[
                "convert".as_ref(),
                "images".as_ref(),
                "--root".as_ref(),
                train.as_os_str(),
                "--shorter-side".as_ref(),
                "256".as_ref(),
                "--shuffle".as_ref(),
            ],
        )?;
        train::convert_cached(
            bins,
            &oval,
            &[
                "convert".as_ref(),
                "images".as_ref(),
                "--root".as_ref(),
                val.as_os_str(),
                "--list".as_ref(),
                labels.as_os_str(),
                "--shorter-side".as_ref(),
                "256".as_ref(),
            ],
        )?;
    }
    for d in [&otrain, &oval] {
        if !train::is_dataset(d) {
            bail!(
                "the ImageNet conversion of {} left no dataset at {}",
                dir.display(),
                d.display()
            );
        }
    }
    let mean = out.join("mean.binaryproto");
    mean_of(bins, &otrain, &mean)?;
    Ok(Data {
        train: otrain,
        val: oval,
        mean,
        note: format!("ImageNet converted from {}", dir.display()),
        synthetic: false,
    })
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .trim_matches('_')
        .to_owned()
}

fn synthetic_data(bins: &Binaries, o: &Options, cache: &Path) -> Result<Data> {
    let tag = format!("synthetic-imagenet-c{}-n{}-v{}", o.classes, o.per_class, o.val_per_class);
    let out = cache.join(&tag);
    let (train, val) = (out.join("train"), out.join("val"));
    let with_helper = !bins.data_help(&["synth", "imagenet"]).is_empty();
    let how;
    if with_helper {
        how = "sparknet-data synth imagenet";
        if !(train::is_dataset(&train) && train::is_dataset(&val)) {
            let (c, m, v) =
                (o.classes.to_string(), o.per_class.to_string(), o.val_per_class.to_string());
            bins.data(&[
                "synth".as_ref(),
                "imagenet".as_ref(),
                "--classes".as_ref(),
                c.as_ref(),
                "--per-class".as_ref(),
                m.as_ref(),
                "--val-per-class".as_ref(),
                v.as_ref(),
                "--out".as_ref(),
                out.as_os_str(),
            ])?;
        }
    } else {
        how = "cargo xtask's own JPEG synthesizer + sparknet-data convert images";
        let jpegs = cache.join(format!("{tag}-jpeg"));
        if !(train::is_dataset(&train) && train::is_dataset(&val)) {
            synthesize_jpegs(&jpegs, o.classes, o.per_class, o.val_per_class)?;
        }
        train::convert_cached(
            bins,
            &train,
            &[
                "convert".as_ref(),
                "images".as_ref(),
                "--root".as_ref(),
                jpegs.join("train").as_os_str(),
                "--shuffle".as_ref(),
            ],
        )?;
        train::convert_cached(
            bins,
            &val,
            &[
                "convert".as_ref(),
                "images".as_ref(),
                "--root".as_ref(),
                jpegs.join("val").as_os_str(),
            ],
        )?;
    }
    for d in [&train, &val] {
        if !train::is_dataset(d) {
            bail!("the synthetic set left no dataset at {}", d.display());
        }
    }
    let mean = out.join("mean.binaryproto");
    mean_of(bins, &train, &mean)?;
    Ok(Data {
        train,
        val,
        mean,
        note: format!(
            "**synthetic ImageNet-like set** (no `--imagenet` given): {} classes, {} training and {} validation \
             JPEGs per class at 256x256, class-dependent content (made by {how}); accuracies measure this set, \
             not ImageNet",
            o.classes, o.per_class, o.val_per_class
        ),
        synthetic: true,
    })
}

/// SplitMix64: a tiny deterministic generator for the synthetic images.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Writes `dir/{train,val}/c<NNN>/<i>.jpg`: 256x256 images whose stripe orientation, frequency
/// and colour depend on the class, with a random phase, offset disc and noise per image.
fn synthesize_jpegs(
    dir: &Path,
    classes: usize,
    per_class: usize,
    val_per_class: usize,
) -> Result<()> {
    const S: u32 = 256;
    for (split, count, salt) in [("train", per_class, 1u64), ("val", val_per_class, 2u64)] {
        for c in 0..classes {
            let cdir = dir.join(split).join(format!("c{c:03}"));
            std::fs::create_dir_all(&cdir)
                .with_context(|| format!("creating {}", cdir.display()))?;
            let angle = std::f64::consts::PI * c as f64 / classes as f64;
            let freq = 0.03 + 0.05 * ((c * 7) % classes) as f64 / classes as f64;
            let hue = [
                (0.5 + 0.5 * (c as f64 * 2.1).sin()) * 255.0,
                (0.5 + 0.5 * (c as f64 * 1.3 + 2.0).sin()) * 255.0,
                (0.5 + 0.5 * (c as f64 * 0.7 + 4.0).sin()) * 255.0,
            ];
            for i in 0..count {
                let path = cdir.join(format!("{i:05}.jpg"));
                if path.is_file() {
                    continue;
                }
                let mut rng = Mix(salt << 48 ^ (c as u64) << 24 ^ i as u64);
                let phase = rng.unit() * std::f64::consts::TAU;
                let (cx, cy, r) =
                    (rng.unit() * S as f64, rng.unit() * S as f64, 30.0 + rng.unit() * 50.0);
                let (ca, sa) = (angle.cos(), angle.sin());
                let mut img = image::RgbImage::new(S, S);
                for (x, y, px) in img.enumerate_pixels_mut() {
                    let (fx, fy) = (f64::from(x), f64::from(y));
                    let stripe = 0.5
                        + 0.5 * ((fx * ca + fy * sa) * freq * std::f64::consts::TAU + phase).sin();
                    let disc =
                        if (fx - cx).powi(2) + (fy - cy).powi(2) < r * r { 0.35 } else { 0.0 };
                    let noise = (rng.unit() - 0.5) * 40.0;
                    for (k, v) in px.0.iter_mut().enumerate() {
                        let base = hue[k] * (0.35 + 0.65 * stripe)
                            + 255.0 * disc * if k == c % 3 { 1.0 } else { -0.3 };
                        *v = (base + noise).clamp(0.0, 255.0) as u8;
                    }
                }
                let tmp = path.with_extension("jpg.tmp");
                let file = std::fs::File::create(&tmp)
                    .with_context(|| format!("creating {}", tmp.display()))?;
                let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(
                    std::io::BufWriter::new(file),
                    90,
                );
                enc.encode(img.as_raw(), S, S, image::ExtendedColorType::Rgb8)
                    .with_context(|| format!("encoding {}", tmp.display()))?;
                drop(enc);
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("renaming {}", tmp.display()))?;
            }
        }
    }
    Ok(())
}

/// BVLC's base_lr for batch 256.
const BVLC_LR: f64 = 0.01;

impl Options {
    /// The learning rate of the runs: `--base-lr`, or BVLC's scaled by batch / 256.
    fn lr(&self) -> f64 {
        self.base_lr.unwrap_or(BVLC_LR * self.batch as f64 / 256.0)
    }
}

/// Writes the solver and net copies; returns the solver copy and the test interval used.
fn bind(o: &Options, data: &Data, config: &Path, snapshots: &Path) -> Result<(PathBuf, u64)> {
    let models = report_assets().join("prototxt/bvlc_caffe/models");
    let dir =
        models.join(if o.net == "alexnet" { "bvlc_alexnet" } else { "bvlc_reference_caffenet" });
    let (net_src, solver_src) = (dir.join("train_val.prototxt"), dir.join("solver.prototxt"));
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .with_context(|| format!("reading {} (set SPARKNET_ASSETS)", p.display()))
    };
    std::fs::create_dir_all(config).with_context(|| format!("creating {}", config.display()))?;
    let net = config.join(format!("{}_train_val.prototxt", o.net));
    std::fs::write(&net, train::rewrite_net(&read(&net_src)?, Some(&data.mean), Some(o.batch)))
        .with_context(|| format!("writing {}", net.display()))?;
    let (max_iter, test_interval) = match o.minutes {
        Some(_) => (1_000_000, o.test_interval.unwrap_or(50)),
        None => (o.iters, o.test_interval.unwrap_or((o.iters / 2).max(1))),
    };
    let solver = config.join(format!("{}_solver.prototxt", o.net));
    let text = train::rewrite_solver(
        &read(&solver_src)?,
        &[
            ("net", format!("{:?}", net.display().to_string())),
            ("test_interval", test_interval.to_string()),
            ("test_initialization", "false".into()),
            ("display", "1".into()),
            ("base_lr", format!("{}", o.lr())),
            ("max_iter", max_iter.to_string()),
            ("snapshot", "0".into()),
            ("snapshot_prefix", format!("{:?}", snapshots.join(&o.net).display().to_string())),
            ("snapshot_after_train", "false".into()),
            ("solver_mode", "CPU".into()),
        ],
    );
    std::fs::write(&solver, text).with_context(|| format!("writing {}", solver.display()))?;
    Ok((solver, test_interval))
}

fn report_assets() -> PathBuf {
    let raw = std::env::var_os("SPARKNET_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| "../shared/assets".into());
    if raw.is_absolute() { raw } else { crate::project_root().join(raw) }
}

struct Done {
    label: String,
    ranks: usize,
    tau: u64,
    threads: usize,
    log: RunLog,
}

impl Done {
    fn images_per_second(&self, batch: usize) -> Option<f64> {
        let last = self.log.points().last().copied()?;
        (last.train_seconds() > 0.0)
            .then(|| (self.ranks * batch) as f64 * last.iter as f64 / last.train_seconds())
    }
}

fn run_with(o: &Options, bins: &Binaries) -> Result<PathBuf> {
    let load_at_start = report::load_average();
    report::git_commit(); // fixed now: the commit the runs start from
    let started = report::now_utc();
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let runs_dir = o.out.join("runs");
    if runs_dir.exists() {
        std::fs::remove_dir_all(&runs_dir)
            .with_context(|| format!("clearing {}", runs_dir.display()))?;
    }
    let data = prepare_data(bins, o)?;
    let snapshots = train::target_dir().join("xtask-snapshots-imagenet");
    let (solver, test_interval) = bind(o, &data, &o.out.join("config"), &snapshots)?;
    let cores = report::cores();
    let mut done = Vec::new();
    for &k in &o.ranks {
        for &tau in &o.taus {
            if k == 1 && done.iter().any(|d: &Done| d.ranks == 1) {
                continue; // one worker never communicates: tau changes nothing
            }
            let threads = o.threads.unwrap_or((cores / k).max(1));
            let name =
                if k == 1 { format!("{}-k1", o.net) } else { format!("{}-k{k}-tau{tau}", o.net) };
            let spec = RunSpec {
                name,
                solver: solver.clone(),
                train_data: data.train.clone(),
                test_data: data.val.clone(),
                ranks: k,
                tau,
                sync: Sync::Average,
                max_iter: None,
                time_budget: o.minutes.map(|m| m * 60.0),
                comm_delay_ms: 0.0,
                threads,
                target_accuracy: None,
                mean_file: None,
            };
            let log = train::run(bins, &spec, &runs_dir, &crate::project_root())?;
            let label = if k == 1 { "K=1".to_owned() } else { format!("K={k} tau={tau}") };
            done.push(Done { label, ranks: k, tau, threads, log });
        }
    }
    let _ = std::fs::remove_dir_all(&snapshots);
    write_report(o, bins, &data, &done, test_interval, &load_at_start, &started)?;
    eprintln!("\nbench-imagenet report: {}", o.out.join("report.md").display());
    Ok(o.out.clone())
}

fn figures(o: &Options, done: &[Done]) -> Vec<(&'static str, Figure)> {
    let title = if o.net == "alexnet" { "AlexNet" } else { "CaffeNet" };
    let mut taus: Vec<u64> = done.iter().filter(|d| d.ranks > 1).map(|d| d.tau).collect();
    taus.sort_unstable();
    taus.dedup();
    let k1 = done.iter().find(|d| d.ranks == 1).and_then(|d| d.images_per_second(o.batch));
    let ips: Vec<Series> = if taus.is_empty() {
        vec![Series {
            name: "K=1".into(),
            points: k1.map(|v| vec![(1.0, v)]).unwrap_or_default(),
            mark: Mark::Line,
            color: 0,
        }]
    } else {
        taus.iter()
            .enumerate()
            .map(|(i, &t)| {
                let mut pts: Vec<(f64, f64)> = k1.map(|v| vec![(1.0, v)]).unwrap_or_default();
                pts.extend(
                    done.iter()
                        .filter(|d| d.ranks > 1 && d.tau == t)
                        .filter_map(|d| d.images_per_second(o.batch).map(|v| (d.ranks as f64, v))),
                );
                Series { name: format!("tau={t}"), points: pts, mark: Mark::Line, color: i }
            })
            .collect()
    };
    let acc = |f: &dyn Fn(&crate::train::Point) -> f64| {
        crate::plot::accuracy_series(done.iter().map(|d| (d.label.as_str(), &d.log)), f)
    };
    let per: Vec<(f64, f64, f64)> = done.iter().map(|d| d.log.per_round()).collect();
    vec![
        (
            "images-per-second",
            Figure::Lines(LineChart {
                title: format!(
                    "{title}: training images/s (all ranks) against ranks, batch {} per rank",
                    o.batch
                ),
                x_label: "ranks K".into(),
                y_label: "images / s (tests excluded)".into(),
                series: ips,
                zoom_y: false,
            }),
        ),
        (
            "breakdown",
            Figure::Bars(StackedBars {
                title: format!("{title}: seconds per round (rank 0)"),
                y_label: "seconds per round".into(),
                categories: done.iter().map(|d| d.label.clone()).collect(),
                parts: vec![
                    ("compute".into(), per.iter().map(|p| p.0).collect()),
                    ("allreduce".into(), per.iter().map(|p| p.1).collect()),
                    ("data wait".into(), per.iter().map(|p| p.2).collect()),
                ],
            }),
        ),
        (
            "accuracy-vs-time",
            Figure::Lines(LineChart {
                title: format!("{title}: test accuracy against wall time"),
                x_label: "wall seconds (tests included)".into(),
                y_label: "test accuracy".into(),
                series: acc(&|p| p.wall),
                zoom_y: true,
            }),
        ),
        (
            "accuracy-vs-iterations",
            Figure::Lines(LineChart {
                title: format!("{title}: test accuracy against iterations per worker"),
                x_label: "iterations per worker".into(),
                y_label: "test accuracy".into(),
                series: acc(&|p| p.iter as f64),
                zoom_y: true,
            }),
        ),
    ]
}

fn write_report(
    o: &Options,
    bins: &Binaries,
    data: &Data,
    done: &[Done],
    test_interval: u64,
    load_at_start: &str,
    started: &str,
) -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invoked = if args.first().is_some_and(|a| a == "bench-imagenet") {
        format!("cargo xtask {}", args.join(" "))
    } else {
        format!("cargo xtask bench-imagenet {}", if o.smoke { "--smoke" } else { "" })
    };
    let title = if o.net == "alexnet" { "AlexNet" } else { "CaffeNet" };
    let mut md = String::new();
    let _ = writeln!(md, "# bench-imagenet: {title} over ranks and tau\n");
    let _ = writeln!(
        md,
        "Made by `{}` (started {started}, finished {}).\n",
        invoked.trim(),
        report::now_utc()
    );
    if data.synthetic {
        let _ = writeln!(
            md,
            "> **Data: synthetic.** No `--imagenet` was given, so the runs use an ImageNet-like set synthesized for this report, not ImageNet.\n"
        );
    }
    let _ = writeln!(md, "- data: {}", data.note);
    let _ = writeln!(
        md,
        "- train shards: `{}`; validation shards: `{}`; mean: `{}`",
        data.train.display(),
        data.val.display(),
        data.mean.display()
    );
    let _ = writeln!(
        md,
        "- net and solver: BVLC `{}` `train_val.prototxt` / `solver.prototxt` from the shared assets, bound in `config/` \
         (batch {} per rank for train and test instead of 256 / 50, the computed mean file, `display: 1` so every round is one \
         JSON line, tests every {} iterations over the whole validation set, no snapshots), base_lr {} ({})",
        if o.net == "alexnet" { "bvlc_alexnet" } else { "bvlc_reference_caffenet" },
        o.batch,
        test_interval,
        o.lr(),
        if o.base_lr.is_some() { "--base-lr" } else { "BVLC's 0.01 scaled by batch / 256" }
    );
    let _ = writeln!(
        md,
        "- length: {}\n- launcher: {}\n",
        match o.minutes {
            Some(m) => format!("{m} minutes of wall time per run (`--time-budget`)"),
            None => format!("{} iterations per worker per run", o.iters),
        },
        if bins.mpi.is_some() {
            "`mpirun --oversubscribe -n K`, RAYON_NUM_THREADS = cores / K per rank"
        } else {
            "in-process workers (`--workers K`), one thread pool"
        }
    );
    let _ = writeln!(
        md,
        "**This machine was shared with other jobs during the runs** (load averages below): throughput is a lower bound and noisy; the ratios against K = 1 were measured in the same session.\n"
    );
    md.push_str(&report::environment(bins, load_at_start));
    let _ = writeln!(md, "\n## Results\n");
    let _ = writeln!(
        md,
        "| run | K | tau | threads/rank | iterations | rounds | images/s | vs K=1 | per round: compute / allreduce / data wait s | final accuracy | wall s | log |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let k1 = done.iter().find(|d| d.ranks == 1).and_then(|d| d.images_per_second(o.batch));
    let mut runs_json = Vec::new();
    for d in done {
        let pts = d.log.points();
        let last = pts.last().copied().unwrap_or_default();
        let ips = d.images_per_second(o.batch);
        let (pc, pa, pw) = d.log.per_round();
        let final_acc = d.log.done().and_then(|v| v.get("test_accuracy")).and_then(|v| v.as_f64());
        let log_rel =
            d.log.log_file.strip_prefix(&o.out).unwrap_or(&d.log.log_file).display().to_string();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} | [{}]({}) |",
            d.label,
            d.ranks,
            if d.ranks == 1 { "-".into() } else { d.tau.to_string() },
            d.threads,
            last.iter,
            last.round,
            ips.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()),
            ips.zip(k1).map(|(a, b)| format!("{:.2}x", a / b)).unwrap_or_else(|| "-".into()),
            secs(pc),
            secs(pa),
            secs(pw),
            final_acc.map(|a| format!("{a:.4}")).unwrap_or_else(|| "-".into()),
            secs(last.wall),
            log_rel,
            log_rel
        );
        runs_json.push(json!({
            "label": d.label, "ranks": d.ranks, "tau": d.tau, "threads_per_rank": d.threads,
            "iter": last.iter, "rounds": last.round, "images_per_second": ips,
            "ratio_to_k1": ips.zip(k1).map(|(a, b)| a / b),
            "per_round": {"compute": pc, "allreduce": pa, "data_wait": pw},
            "final_accuracy": final_acc, "wall_seconds": last.wall, "process_seconds": d.log.process_seconds,
            "command": d.log.command, "log": log_rel,
        }));
    }
    let _ = writeln!(
        md,
        "\nimages/s = K x batch x iterations / (compute + allreduce + data wait) of rank 0, tests excluded. \
         The per-round columns are means over all rounds; every round's values are in the JSON lines.\n"
    );
    md.push_str("## Figures\n\n");
    for (stem, fig) in figures(o, done) {
        save(&fig, &o.out, stem)?;
        let _ = writeln!(md, "![{stem}]({stem}.svg)\n\n([PNG]({stem}.png))\n");
    }
    let _ = writeln!(
        md,
        "## Reproducing\n\n```sh\n{}\n```\n\nEvery run's exact command line is in `summary.json` (`command`), its JSON lines in `runs/`, its stderr beside them. On a real ImageNet: `cargo xtask bench-imagenet --imagenet DIR --batch 256 --minutes 30 --ranks 1,2,4,8 --tau 1,10,50`.",
        invoked.trim()
    );
    let md_path = o.out.join("report.md");
    std::fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;
    let summary = json!({
        "command": invoked.trim(), "git_commit": report::git_commit(), "started": started, "net": o.net,
        "batch_per_rank": o.batch, "data": data.note, "synthetic": data.synthetic, "test_interval": test_interval,
        "runs": runs_json, "figures": FIGURES,
    });
    let p = o.out.join("summary.json");
    std::fs::write(&p, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", p.display()))?;
    Ok(())
}
