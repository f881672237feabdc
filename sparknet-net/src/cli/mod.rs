//! Argument definitions and shared helpers of the `sparknet-net` binary.

/// `println!` that ignores a closed pipe (`| head`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod forward;
mod inspect;
mod time;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use sparknet_net::layers::Shape;
use sparknet_net::load::read_net_prototxt;
use sparknet_net::preprocess::Preprocess;
use sparknet_net::proto::FillerParameter;
use sparknet_net::{Error, Net, NetConfig, Phase, Result};

/// Caffe models on candle.
#[derive(Parser, Debug)]
#[command(name = "sparknet-net", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Layers, types, top shapes and parameter counts of a net.
    Inspect(inspect::InspectArgs),
    /// Run a forward pass and write blobs as .npy files.
    Forward(forward::ForwardArgs),
    /// Classify an image: the top classes of the net's output.
    Classify(forward::ClassifyArgs),
    /// Per-layer forward timing, like `caffe time`.
    Time(time::TimeArgs),
    /// Write a model's weights as .safetensors or .caffemodel.
    Export(ExportArgs),
}

/// Which phase's layers to build.
#[derive(ValueEnum, Clone, Copy, Debug, Default)]
pub enum PhaseArg {
    /// TRAIN.
    Train,
    /// TEST.
    #[default]
    Test,
}

impl From<PhaseArg> for Phase {
    fn from(p: PhaseArg) -> Phase {
        match p {
            PhaseArg::Train => Phase::Train,
            PhaseArg::Test => Phase::Test,
        }
    }
}

/// Options every command that builds a net shares.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// Net definition (.prototxt).
    #[arg(long = "model")]
    pub model: PathBuf,
    /// Trained weights (.caffemodel).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Phase whose layers are built.
    #[arg(long, value_enum, default_value_t = PhaseArg::Test)]
    pub phase: PhaseArg,
    /// Net stage for include/exclude rules (repeatable).
    #[arg(long)]
    pub stage: Vec<String>,
    /// Shape of a fed blob, NAME=N,C,H,W (repeatable; completes Data layers).
    #[arg(long = "data-shape", value_parser = parse_shape_arg)]
    pub data_shape: Vec<(String, Shape)>,
    /// Seed of the fillers for weights the caffemodel does not provide.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where a Convolution/Deconvolution/InnerProduct names no filler, use msra weights and
    /// gaussian(std 0.1) biases instead of Caffe's zeros (random-weight comparisons).
    #[arg(long)]
    pub fill_missing: bool,
    /// Run each in-place ReLU as its own layer instead of inside the Convolution below it (same
    /// values; `time` then shows the ReLU's own cost).
    #[arg(long)]
    pub no_fusion: bool,
}

#[derive(Args, Debug)]
struct ExportArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Output file: .safetensors or .caffemodel.
    #[arg(long)]
    to: PathBuf,
    /// Set every BatchNorm to mean 0, variance 1, scale factor 1 (Caffe fills them with zeros,
    /// which makes deep random-weight nets overflow; for comparisons with random weights).
    #[arg(long)]
    bn_unit: bool,
}

/// Parses `NAME=N,C,H,W`.
pub fn parse_shape_arg(s: &str) -> std::result::Result<(String, Shape), String> {
    let (name, dims) = s.split_once('=').ok_or_else(|| format!("'{s}': expected NAME=N,C,H,W"))?;
    let dims = dims
        .split(',')
        .map(|d| d.trim().parse::<usize>().map_err(|e| format!("'{s}': {e}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((name.to_string(), dims))
}

/// Parses `a,b,c` floats.
pub fn parse_floats(s: &str) -> std::result::Result<Vec<f32>, String> {
    s.split(',').map(|v| v.trim().parse::<f32>().map_err(|e| format!("'{v}': {e}"))).collect()
}

/// Parses `H,W`.
pub fn parse_hw(s: &str) -> std::result::Result<(usize, usize), String> {
    match s
        .split(',')
        .map(|v| v.trim().parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
    {
        Ok(v) if v.len() == 2 => Ok((v[0], v[1])),
        _ => Err(format!("'{s}': expected H,W")),
    }
}

/// Image preprocessing flags.
#[derive(Args, Debug, Clone)]
pub struct ImageArgs {
    /// Mean image (.binaryproto).
    #[arg(long = "mean-file")]
    pub mean_file: Option<PathBuf>,
    /// Per-channel means, e.g. 104,117,123.
    #[arg(long = "mean-values", value_parser = parse_floats)]
    pub mean_values: Option<Vec<f32>>,
    /// Multiplier after the mean subtraction.
    #[arg(long)]
    pub scale: Option<f32>,
    /// Resize to H,W (default: the net's input size).
    #[arg(long, value_parser = parse_hw)]
    pub resize: Option<(usize, usize)>,
    /// Keep the image's R,G,B plane order (default: Caffe's B,G,R).
    #[arg(long)]
    pub rgb: bool,
}

impl ImageArgs {
    /// The library's preprocessing settings; `default_hw` is the net's input size.
    pub fn preprocess(&self, default_hw: Option<(usize, usize)>) -> Preprocess {
        Preprocess {
            mean_file: self.mean_file.clone(),
            mean_values: self.mean_values.clone().unwrap_or_default(),
            scale: self.scale,
            resize: self.resize.or(default_hw),
            rgb: self.rgb,
        }
    }
}

/// Builds the net the flags describe (weights loaded when given).
pub fn build_net(a: &NetArgs) -> Result<Net> {
    build_net_with_seed(a, Some(a.seed))
}

/// As [`build_net`], with the filler seed given (`None`: zero-initialised, shapes only).
pub fn build_net_with_seed(a: &NetArgs, seed: Option<u64>) -> Result<Net> {
    let param = read_net_prototxt(&a.model)?;
    let config = NetConfig {
        phase: a.phase.into(),
        stages: a.stage.clone(),
        input_shapes: a.data_shape.iter().cloned().collect::<HashMap<_, _>>(),
        seed,
        missing_fillers: a.fill_missing.then(|| {
            let w = FillerParameter { r#type: Some("msra".into()), ..Default::default() };
            let b = FillerParameter {
                r#type: Some("gaussian".into()),
                std: Some(0.1),
                ..Default::default()
            };
            (w, b)
        }),
        fuse_activations: !a.no_fusion,
        ..NetConfig::default()
    };
    let mut net = Net::new(&param, config).map_err(|e| e.in_file(&a.model))?;
    if let Some(w) = &a.weights {
        let missing = net.copy_from_file(w)?;
        if !missing.is_empty() {
            eprintln!(
                "warning: {} has no weights for layer(s) {} (truncated, or another net's \
                 weights?); they keep {}",
                w.display(),
                missing.iter().map(|l| format!("'{l}'")).collect::<Vec<_>>().join(", "),
                if seed.is_some() { "their fillers' values" } else { "zeros" }
            );
        }
    }
    Ok(net)
}

/// A blob name as a file name (characters other than letters, digits, `_`, `.`, `-` become `_`).
pub fn file_stem(blob: &str) -> String {
    blob.chars()
        .map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' })
        .collect()
}

fn export(a: &ExportArgs) -> Result<()> {
    let mut net = build_net(&a.net)?;
    if a.bn_unit {
        net.unit_batch_norm()?;
    }
    match a.to.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => net.save_safetensors(&a.to),
        Some("caffemodel") => net.save_caffemodel(&a.to),
        _ => Err(Error::option(
            a.to.display().to_string(),
            "the extension must be .safetensors or .caffemodel",
        )),
    }?;
    say!("wrote {}", a.to.display());
    Ok(())
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::run(&a),
        Command::Forward(a) => forward::run_forward(&a),
        Command::Classify(a) => forward::run_classify(&a),
        Command::Time(a) => time::run(&a),
        Command::Export(a) => export(&a),
    }
}

/// Reads a float32 `.npy` file as a CPU candle tensor.
pub fn read_npy_tensor(path: &Path) -> Result<candle::Tensor> {
    let t =
        sparknet_tensor::read_npy::<f32>(path).map_err(|e| Error::parse(path, e.to_string()))?;
    t.to_candle(&candle::Device::Cpu).map_err(|e| Error::parse(path, e.to_string()))
}

/// Writes a candle tensor as a float32 `.npy` file.
pub fn write_npy_tensor(path: &Path, t: &candle::Tensor) -> Result<()> {
    let t = t.to_dtype(candle::DType::F32)?;
    let host = sparknet_tensor::Tensor::<f32>::from_candle(&t)
        .map_err(|e| Error::parse(path, e.to_string()))?;
    sparknet_tensor::write_npy(path, &host).map_err(|e| Error::parse(path, e.to_string()))
}
