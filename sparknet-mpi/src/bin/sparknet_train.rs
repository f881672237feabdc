//! `sparknet-train`: test a Caffe net on a sparknet-data dataset (`--eval`, Caffe's `caffe test`).
//!
//! ```text
//! sparknet-train --eval --model lenet_train_test.prototxt --weights lenet_iter_10000.caffemodel \
//!     --test-data mnist-test
//! ```
//! prints one JSON line: `{"event":"test","accuracy":0.9908,"loss":...,"records":10000,...}`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sparknet_mpi::bind::{FeedConfig, PhaseData, data_layers};
use sparknet_mpi::eval::evaluate;
use sparknet_mpi::{Error, LocalComm, Result};
use sparknet_net::load::read_net_prototxt;
use sparknet_net::{Net, NetConfig, Phase};

/// Train or test Caffe nets with SparkNet's model averaging.
#[derive(Parser, Debug)]
#[command(name = "sparknet-train", version)]
struct Args {
    /// Test a trained net (Caffe's `caffe test`) instead of training: needs --model and --weights.
    #[arg(long)]
    eval: bool,
    /// The net definition for --eval (its TEST phase is run).
    #[arg(long, value_name = "PROTOTXT")]
    model: Option<PathBuf>,
    /// Weights (.caffemodel) to test.
    #[arg(long, value_name = "CAFFEMODEL")]
    weights: Option<PathBuf>,
    /// Test dataset directory (sparknet-data), replacing the TEST Data layers' source.
    #[arg(long, value_name = "DIR")]
    test_data: Option<PathBuf>,
    /// Decode threads per data loader.
    #[arg(long, default_value_t = 2)]
    data_threads: usize,
}

fn eval(args: &Args) -> Result<()> {
    let model = args
        .model
        .as_deref()
        .ok_or_else(|| Error::Config("--eval needs --model PROTOTXT".into()))?;
    let weights = args
        .weights
        .as_deref()
        .ok_or_else(|| Error::Config("--eval needs --weights CAFFEMODEL".into()))?;
    let param = read_net_prototxt(model)?;
    let specs = data_layers(&param, Phase::Test, args.test_data.as_deref())?;
    let feed = FeedConfig { rank: 0, world: 1, shuffle: None, seed: 0, threads: args.data_threads };
    let mut data = PhaseData::open(&specs, Phase::Test, feed)?;
    let config = NetConfig {
        phase: Phase::Test,
        seed: None,
        input_shapes: data.input_shapes(),
        ..NetConfig::default()
    };
    let mut net = Net::new(&param, config)?;
    net.copy_from(&sparknet_net::load::read_caffemodel(weights)?)?;
    let scores = evaluate(&mut net, &mut data, &LocalComm::single())?;
    let mut line = serde_json::Map::new();
    line.insert("event".into(), "test".into());
    line.extend(scores.to_json());
    line.insert("seconds".into(), serde_json::json!(scores.seconds));
    println!("{}", serde_json::Value::Object(line));
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.eval {
        eval(&args)
    } else {
        Err(Error::Config("only --eval is available in this build".into()))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sparknet-train: {e}");
            ExitCode::FAILURE
        }
    }
}
