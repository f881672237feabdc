//! `forward` (blobs to .npy files) and `classify` (top classes of an image).

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use sparknet_net::preprocess::image_to_blob;
use sparknet_net::{Error, Net, Result};

use super::{ImageArgs, NetArgs, build_net, file_stem, read_npy_tensor, write_npy_tensor};

/// Flags of `forward`.
#[derive(Args, Debug)]
pub struct ForwardArgs {
    #[command(flatten)]
    net: NetArgs,
    /// A fed blob, NAME=X.npy (float32; repeatable).
    #[arg(long = "input")]
    inputs: Vec<String>,
    /// An image for the net's first input (instead of --input).
    #[arg(long)]
    image: Option<PathBuf>,
    #[command(flatten)]
    pre: ImageArgs,
    /// Blobs to write (comma separated; default: the net's outputs).
    #[arg(long, value_delimiter = ',')]
    blobs: Vec<String>,
    /// Output directory for <blob>.npy files.
    #[arg(long)]
    out: PathBuf,
}

/// Flags of `classify`.
#[derive(Args, Debug)]
pub struct ClassifyArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The image.
    #[arg(long)]
    image: PathBuf,
    #[command(flatten)]
    pre: ImageArgs,
    /// Class names, one per line (e.g. synset_words.txt).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// How many classes to show.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// The probability blob (default: `prob`, else the last output).
    #[arg(long)]
    blob: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Feeds an image to the net's first input.
fn image_inputs(
    net: &Net,
    image: &std::path::Path,
    pre: &ImageArgs,
) -> Result<HashMap<String, candle::Tensor>> {
    let name = net
        .input_names()
        .into_iter()
        .next()
        .ok_or_else(|| Error::option("--image", "the net has no input to feed the image to"))?;
    let declared = net.blob_shape(&name).cloned();
    let channels = declared.as_ref().and_then(|s| s.get(1).copied()).unwrap_or(3);
    let hw = declared.as_ref().filter(|s| s.len() == 4).map(|s| (s[2], s[3]));
    let blob = image_to_blob(image, channels, &pre.preprocess(hw), net.device())?;
    Ok(HashMap::from([(name, blob)]))
}

/// Runs `forward`.
pub fn run_forward(a: &ForwardArgs) -> Result<()> {
    let mut net = build_net(&a.net)?;
    let mut inputs = HashMap::new();
    for spec in &a.inputs {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| Error::option(format!("--input '{spec}'"), "expected NAME=FILE.npy"))?;
        inputs.insert(name.to_string(), read_npy_tensor(file.as_ref())?);
    }
    if let Some(img) = &a.image {
        inputs.extend(image_inputs(&net, img, &a.pre)?);
    }
    if inputs.is_empty() {
        return Err(Error::option(
            "--input",
            format!(
                "nothing to feed: give --input NAME=X.npy or --image (inputs: {:?})",
                net.input_names()
            ),
        ));
    }
    let loss = net.forward(&inputs)?;
    let blobs = if a.blobs.is_empty() { net.output_names() } else { a.blobs.clone() };
    // Every name is checked before the first file is written.
    let tensors = blobs
        .iter()
        .map(|b| {
            net.blob(b)
                .ok_or_else(|| Error::NoSuchBlob { blob: b.clone(), known: net.blob_names() })
        })
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    for (b, t) in blobs.iter().zip(tensors) {
        let path = a.out.join(format!("{}.npy", file_stem(b)));
        write_npy_tensor(&path, t)?;
        say!("{b} {:?} -> {}", t.dims(), path.display());
    }
    if loss != 0.0 {
        say!("loss {loss}");
    }
    Ok(())
}

/// Runs `classify`.
pub fn run_classify(a: &ClassifyArgs) -> Result<()> {
    let mut net = build_net(&a.net)?;
    let inputs = image_inputs(&net, &a.image, &a.pre)?;
    net.forward(&inputs)?;
    let blob = match &a.blob {
        Some(b) => b.clone(),
        None if net.blob("prob").is_some() => "prob".to_string(),
        None => net
            .output_names()
            .pop()
            .ok_or_else(|| Error::option("--blob", "the net has no output"))?,
    };
    let t = net
        .blob(&blob)
        .ok_or_else(|| Error::NoSuchBlob { blob: blob.clone(), known: net.blob_names() })?;
    let probs: Vec<f32> = t.flatten_all()?.to_vec1()?;
    let labels: Vec<String> = match &a.labels {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| Error::io(p, e))?
            .lines()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&x, &y| probs[y].partial_cmp(&probs[x]).unwrap_or(std::cmp::Ordering::Equal));
    let top: Vec<_> = order
        .iter()
        .take(a.top)
        .map(|&i| (i, probs[i], labels.get(i).cloned().unwrap_or_else(|| format!("class {i}"))))
        .collect();
    if a.json {
        let v: Vec<_> =
            top.iter().map(|(i, p, l)| json!({"index": i, "prob": p, "label": l})).collect();
        say!("{}", json!({ "image": a.image, "blob": blob, "top": v }));
    } else {
        for (i, p, l) in top {
            say!("{p:.4} - [{i}] {l}");
        }
    }
    Ok(())
}
