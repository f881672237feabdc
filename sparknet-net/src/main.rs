//! The `sparknet-net` command line: `inspect`, `forward`, `classify`, `time` and `export` for
//! Caffe models (see `sparknet-net --help`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    sparknet_net::malloc::keep_freed_memory();
    // On a rayon worker, so per-layer timing (`time`) and every kernel call run inside the
    // pool instead of handing each call over to it (see `Net::forward`).
    match rayon::scope(|_| cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
