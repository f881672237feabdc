//! `cargo xtask`: project automation, the matklad way (plain Rust, no extra tools to install).
//!
//! - `cargo xtask test`: the README's test command and what CI runs (see [`mod@test`]).
//! - `cargo xtask mpi-test`: only the multi-rank MPI checks (see [`mod@mpi`]).
//! - `cargo xtask bench-scaling`: iterations and time to a target accuracy over workers K and
//!   sync period tau, and the paper's speedup-vs-communication-cost model (see [`mod@scaling`]).
//! - `cargo xtask bench-imagenet`: CaffeNet/AlexNet throughput and accuracy over (ranks, tau) on
//!   ImageNet or a synthesized ImageNet-like set (see [`mod@imagenet`]).
//! - `cargo xtask bench-peers`: sparknet beside the PyTorch and OpenCV peers, interleaved, as
//!   ratios (see [`mod@peers`]).
//!
//! The bench commands drive `sparknet-train` and `sparknet-data` as processes ([`mod@train`]) and
//! write a report directory: Markdown, JSON lines, SVG and PNG figures ([`mod@plot`],
//! [`mod@report`]).

mod flags;
mod imagenet;
mod mpi;
mod peers;
mod plot;
mod report;
mod scaling;
mod test;
mod train;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test       fmt --check, clippy -D warnings, rustdoc -D warnings, MPI multi-rank checks, cargo test
  mpi-test   build the MPI examples and run each under mpirun -n 2 and -n 4
  bench-peers     sparknet beside PyTorch/OpenCV (../shared/peers), interleaved, as ratios
  bench-scaling   iterations/time to target accuracy over K and tau, speedup-vs-S model (--help)
  bench-imagenet  CaffeNet/AlexNet over (ranks, tau) on ImageNet or a synthesized set (--help)
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("mpi-test") => mpi::run_standalone(),
        Some("bench-peers") => peers::run(&args[1..]),
        Some("bench-scaling") => scaling::run(&args[1..]),
        Some("bench-imagenet") => imagenet::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown xtask command `{other}`\n\n{USAGE}"),
        None => bail!("missing xtask command\n\n{USAGE}"),
    }
}

/// The workspace root (xtask lives in `<root>/xtask`).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The cargo that runs us (`$CARGO`), falling back to `cargo` on the PATH.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

/// Runs `cmd`, echoing it first; fails with the command line when it exits non-zero.
pub(crate) fn exec(mut cmd: Command) -> Result<()> {
    let line = format!("{cmd:?}");
    eprintln!("\n$ {line}");
    let status = cmd.status().with_context(|| format!("could not start {line}"))?;
    if !status.success() {
        bail!("command failed ({status}): {line}");
    }
    Ok(())
}

/// True when the environment variable is set to a truthy value (`1`, `true`, `yes`).
pub(crate) fn env_flag(name: &str) -> bool {
    matches!(std::env::var(name).as_deref(), Ok("1") | Ok("true") | Ok("yes"))
}

/// Looks a program up on the PATH.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}
