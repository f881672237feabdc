//! `cargo xtask bench-peers`: sparknet beside its peers in one run, interleaved, as ratios.
//!
//! Builds the release `sparknet-net` binary, then, for each round, thread count and case, runs
//! sparknet's `time --json` and right after it the peer script of `../shared/peers` on the same
//! work (PyTorch's `torch_train_bench.py` in both memory layouts for training steps, OpenCV's
//! `opencv_caffe_ref.py` for inference), so both see the same machine load. Each program's
//! figure per case is the best (lowest) of its rounds' medians; the ratio is the faster peer's
//! time over sparknet's (above 1: sparknet is faster). The last column is sparknet's two-thread
//! time over its one-thread time (the issue's scaling target: at most 0.6).
//!
//! Cases: LeNet b64, CIFAR-10 quick b100 and AlexNet b32 training steps against PyTorch;
//! ResNet-20 and PlainNet-20 b100 inference against OpenCV, and their training steps (sparknet
//! alone: the PyTorch peer has no ResNet). Options:
//! `--threads 1,2` `--rounds 3` `--cases lenet,cifar10_quick,alexnet,resnet20,plainnet20`
//! `--python PATH` (default `$SPARKNET_PEER_PYTHON` or `python3`) `--quick` (fewer iterations)
//! `--bin LABEL=PATH` (repeatable: time these `sparknet-net` binaries instead of building one,
//! each interleaved with the others and the peers, one column each: a before/after table).
//! A peer that cannot run (no torch, no cv2) leaves its column empty, with the reason printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, exec, project_root};

/// One line of the table: what sparknet runs and which peer runs the same work.
struct Case {
    /// Row label.
    label: &'static str,
    /// `--cases` name.
    key: &'static str,
    /// `time` arguments (model and shapes; paths relative to `../shared`).
    sparknet: Vec<String>,
    /// Which figure of `time --json` to read.
    figure: &'static str,
    /// The peer, if any.
    peer: Option<Peer>,
    /// Iterations (normal, quick).
    iterations: (usize, usize),
}

enum Peer {
    /// `torch_train_bench.py --nets NAME` training steps, both layouts.
    Torch(&'static str),
    /// `opencv_caffe_ref.py` forward passes of a deploy net with weights and an input file.
    OpenCv { prototxt: String, weights: String, input: String, batch: usize },
}

fn cases(shared: &Path) -> Vec<Case> {
    let s = |p: &str| shared.join(p).display().to_string();
    let m = |p: &str| s(&format!("assets/models/{p}"));
    let train = |model: String, shape: &str, batch: usize| {
        let mut v = vec!["--model".into(), model, "--phase".into(), "train".into()];
        v.extend(["--data-shape".into(), shape.into(), "--batch".into(), batch.to_string()]);
        v
    };
    let deploy = |case: &str, weights: String| {
        let prototxt = s(&format!("reference/forward/{case}/deploy.prototxt"));
        let v = vec![
            "--model".into(),
            prototxt.clone(),
            "--weights".into(),
            weights.clone(),
            "--batch".into(),
            "100".into(),
        ];
        let input = s(&format!("reference/forward/{case}/input_Data1.npy"));
        (v, Peer::OpenCv { prototxt, weights, input, batch: 100 })
    };
    let (resnet_fwd, resnet_cv) =
        deploy("resnet20_cifar10", m("resnet20_cifar10/ResNet_20.caffemodel"));
    let (plain_fwd, plain_cv) =
        deploy("plainnet20_cifar10", m("plainnet20_cifar10/PlainNet_20.caffemodel"));
    vec![
        Case {
            label: "LeNet b64 train step",
            key: "lenet",
            sparknet: train(m("lenet_mnist/lenet_train_test.prototxt"), "data=64,1,28,28", 64),
            figure: "train_step_ms",
            peer: Some(Peer::Torch("lenet")),
            iterations: (30, 10),
        },
        Case {
            label: "CIFAR-10 quick b100 train step",
            key: "cifar10_quick",
            sparknet: train(
                m("cifar10_quick/cifar10_quick_train_test.prototxt"),
                "data=100,3,32,32",
                100,
            ),
            figure: "train_step_ms",
            peer: Some(Peer::Torch("cifar10_quick")),
            iterations: (15, 5),
        },
        Case {
            label: "AlexNet b32 train step",
            key: "alexnet",
            sparknet: train(
                s("assets/prototxt/bvlc_caffe/models/bvlc_alexnet/train_val.prototxt"),
                "data=32,3,227,227",
                32,
            ),
            figure: "train_step_ms",
            peer: Some(Peer::Torch("alexnet")),
            iterations: (4, 2),
        },
        Case {
            label: "ResNet-20 b100 inference",
            key: "resnet20",
            sparknet: resnet_fwd,
            figure: "forward_median_ms",
            peer: Some(resnet_cv),
            iterations: (10, 4),
        },
        Case {
            label: "PlainNet-20 b100 inference",
            key: "plainnet20",
            sparknet: plain_fwd,
            figure: "forward_median_ms",
            peer: Some(plain_cv),
            iterations: (10, 4),
        },
        Case {
            label: "ResNet-20 b100 train step",
            key: "resnet20",
            sparknet: train(
                m("resnet20_cifar10/res20_cifar_train_test.prototxt"),
                "Data1=100,3,32,32",
                100,
            ),
            figure: "train_step_ms",
            peer: None,
            iterations: (6, 3),
        },
        Case {
            label: "PlainNet-20 b100 train step",
            key: "plainnet20",
            sparknet: train(
                m("plainnet20_cifar10/plain20_cifar_train_test.prototxt"),
                "Data1=100,3,32,32",
                100,
            ),
            figure: "train_step_ms",
            peer: None,
            iterations: (6, 3),
        },
    ]
}

struct Options {
    threads: Vec<usize>,
    rounds: usize,
    keys: Option<Vec<String>>,
    python: String,
    quick: bool,
    bins: Vec<(String, PathBuf)>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        threads: vec![1, 2],
        rounds: 3,
        keys: None,
        python: std::env::var("SPARKNET_PEER_PYTHON").unwrap_or_else(|_| "python3".into()),
        quick: false,
        bins: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--threads" => {
                o.threads = value()?
                    .split(',')
                    .map(|t| t.parse().with_context(|| format!("--threads {t}")))
                    .collect::<Result<_>>()?;
            }
            "--rounds" => o.rounds = value()?.parse().context("--rounds")?,
            "--cases" => o.keys = Some(value()?.split(',').map(String::from).collect()),
            "--python" => o.python = value()?.clone(),
            "--quick" => o.quick = true,
            "--bin" => {
                let v = value()?;
                let (label, path) = v.split_once('=').context("--bin LABEL=PATH")?;
                o.bins.push((label.to_string(), PathBuf::from(path)));
            }
            other => bail!("bench-peers: unknown option `{other}`"),
        }
    }
    if o.rounds == 0 || o.threads.is_empty() {
        bail!("bench-peers: --rounds and --threads must be non-empty");
    }
    Ok(o)
}

/// The number after `"key":` in a JSON line (the peers and `time --json` print flat objects).
fn json_number(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = line[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest.find([',', '}', ' ']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn json_string<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = line[at..].trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

/// Runs `cmd` with `threads` threads, returning its stdout (an error with stderr's tail if it
/// fails).
fn output(mut cmd: Command, threads: usize) -> Result<String> {
    let t = threads.to_string();
    cmd.env("RAYON_NUM_THREADS", &t).env("OMP_NUM_THREADS", &t);
    let line = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("could not start {line}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(4).collect();
        bail!(
            "{line} failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Best (lowest) figure per program per (case, threads, column).
type Results = BTreeMap<(usize, usize, String), f64>;

fn record(r: &mut Results, key: (usize, usize, String), v: f64) {
    let e = r.entry(key).or_insert(f64::INFINITY);
    *e = e.min(v);
}

fn run_sparknet(bin: &Path, c: &Case, threads: usize, quick: bool) -> Result<f64> {
    let mut cmd = Command::new(bin);
    let iters = if quick { c.iterations.1 } else { c.iterations.0 };
    cmd.arg("time").args(&c.sparknet).args(["--iterations", &iters.to_string(), "--json"]);
    let out = output(cmd, threads)?;
    out.lines()
        .rev()
        .find_map(|l| json_number(l, c.figure))
        .with_context(|| format!("no {} in sparknet's output", c.figure))
}

/// Runs the peer; returns `(column, ms)` pairs.
fn run_peer(
    o: &Options,
    peers: &Path,
    p: &Peer,
    threads: usize,
) -> Result<Vec<(&'static str, f64)>> {
    let mut cmd = Command::new(&o.python);
    match p {
        Peer::Torch(net) => {
            let steps = if o.quick { "8" } else { "20" };
            let steps = if *net == "alexnet" { if o.quick { "2" } else { "4" } } else { steps };
            cmd.arg(peers.join("torch_train_bench.py"))
                .args(["--nets", net, "--threads", &threads.to_string(), "--modes", "train"])
                .args([
                    "--layouts",
                    "nchw,nhwc",
                    "--steps",
                    steps,
                    "--warmup",
                    "2",
                    "--retries",
                    "0",
                ]);
            let out = output(cmd, threads)?;
            let mut v = Vec::new();
            for l in out.lines().filter(|l| l.contains("median_step_ms")) {
                let ms = json_number(l, "median_step_ms").context("median_step_ms")?;
                let col = if json_string(l, "layout") == Some("NHWC") {
                    "torch_nhwc"
                } else {
                    "torch_nchw"
                };
                v.push((col, ms));
            }
            if v.is_empty() {
                bail!("torch_train_bench.py printed no JSON lines");
            }
            Ok(v)
        }
        Peer::OpenCv { prototxt, weights, input, batch } => {
            cmd.arg(peers.join("opencv_caffe_ref.py"))
                .args(["--prototxt", prototxt, "--model", weights, "--input", input])
                .args(["--batch", &batch.to_string(), "--bench", if o.quick { "4" } else { "10" }])
                .args(["--threads", &threads.to_string(), "--retries", "0"]);
            let out = output(cmd, threads)?;
            let ms = out
                .lines()
                .filter_map(|l| l.strip_prefix("JSON "))
                .find_map(|l| json_number(l, "median_ms"))
                .context("no JSON line from opencv_caffe_ref.py")?;
            Ok(vec![("opencv", ms)])
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| project_root().join("target"), PathBuf::from)
}

/// Entry point of `cargo xtask bench-peers`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let shared = project_root().join("../shared");
    let peers = shared.join("peers");
    if !peers.is_dir() {
        bail!("no peer scripts at {}", peers.display());
    }
    let bins = if o.bins.is_empty() {
        let mut build = cargo();
        build.args(["build", "--release", "-p", "sparknet-net", "--bin", "sparknet-net"]);
        exec(build)?;
        vec![("sparknet".to_string(), target_dir().join("release/sparknet-net"))]
    } else {
        o.bins.clone()
    };
    let all = cases(&shared);
    let chosen: Vec<usize> = (0..all.len())
        .filter(|&i| o.keys.as_ref().is_none_or(|k| k.iter().any(|k| k == all[i].key)))
        .collect();
    let mut best = Results::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for round in 1..=o.rounds {
        for &t in &o.threads {
            for &i in &chosen {
                let c = &all[i];
                eprintln!("round {round}/{}, {} thread(s): {}", o.rounds, t, c.label);
                for (label, bin) in &bins {
                    match run_sparknet(bin, c, t, o.quick) {
                        Ok(ms) => record(&mut best, (i, t, label.clone()), ms),
                        Err(e) => {
                            failed.insert(format!("{label} {}", c.label), format!("{e:#}"));
                        }
                    }
                }
                if let Some(p) = &c.peer {
                    match run_peer(&o, &peers, p, t) {
                        Ok(v) => v
                            .into_iter()
                            .for_each(|(col, ms)| record(&mut best, (i, t, col.to_string()), ms)),
                        Err(e) => {
                            failed.insert(format!("peer of {}", c.label), format!("{e:#}"));
                        }
                    }
                }
            }
        }
    }
    for (what, why) in &failed {
        eprintln!("note: {what} did not run: {why}");
    }
    let labels: Vec<&str> = bins.iter().map(|(l, _)| l.as_str()).collect();
    print_table(&all, &chosen, &o.threads, &labels, &best);
    Ok(())
}

fn print_table(all: &[Case], chosen: &[usize], threads: &[usize], labels: &[&str], best: &Results) {
    let get = |i: usize, t: usize, col: &str| best.get(&(i, t, col.to_string())).copied();
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let mut head = "| case | threads |".to_string();
    for l in labels {
        head += &format!(" {l} ms |");
    }
    head += " PyTorch NCHW ms | PyTorch NHWC ms | OpenCV ms |";
    for l in labels {
        head += &format!(" ratio {l} |");
    }
    for l in labels {
        head += &format!(" {l} 2t/1t |");
    }
    println!("{head}");
    println!("|{}", "---|".repeat(head.matches('|').count() - 1));
    for &i in chosen {
        for &t in threads {
            let peer = ["torch_nchw", "torch_nhwc", "opencv"]
                .iter()
                .filter_map(|c| get(i, t, c))
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
            let mut row = format!("| {} | {t} |", all[i].label);
            for l in labels {
                row += &format!(" {} |", f(get(i, t, l)));
            }
            for c in ["torch_nchw", "torch_nhwc", "opencv"] {
                row += &format!(" {} |", f(get(i, t, c)));
            }
            for l in labels {
                let ratio = match (get(i, t, l), peer) {
                    (Some(s), Some(p)) => format!("{:.2}", p / s),
                    _ => "-".into(),
                };
                row += &format!(" {ratio} |");
            }
            for l in labels {
                let scaling = match (t, get(i, 1, l), get(i, t, l)) {
                    (2, Some(one), Some(two)) => format!("{:.2}", two / one),
                    _ => String::new(),
                };
                row += &format!(" {scaling} |");
            }
            println!("{row}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_json_numbers_and_strings() {
        let l = r#"{"iterations": 10, "forward_ms": 1.5, "train_step_ms": 12.25}"#;
        assert_eq!(json_number(l, "train_step_ms"), Some(12.25));
        assert_eq!(json_number(l, "iterations"), Some(10.0));
        assert_eq!(json_number(l, "missing"), None);
        let t = r#"{"layout": "NHWC", "median_step_ms": 3.0}"#;
        assert_eq!(json_string(t, "layout"), Some("NHWC"));
        assert_eq!(json_number(t, "median_step_ms"), Some(3.0));
    }

    #[test]
    fn options_parse() {
        let a: Vec<String> =
            ["--threads", "1", "--rounds", "2", "--cases", "lenet"].map(String::from).to_vec();
        let o = parse(&a).unwrap();
        assert_eq!((o.threads, o.rounds, o.keys), (vec![1], 2, Some(vec!["lenet".to_string()])));
        assert!(parse(&["--bogus".to_string()]).is_err());
    }
}
