//! MPI checks: find an MPI installation and run the multi-rank examples under `mpirun`.
//!
//! Every example of `sparknet-mpi` whose file name starts with `mpi_` is a multi-rank check: it is
//! built with `--features mpi` and must exit 0 under `mpirun --oversubscribe -n 2` and `-n 4`.
//! Each rank is given one rayon thread (`RAYON_NUM_THREADS=1`) so oversubscribed ranks do not fight
//! over cores.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, env_flag, exec, project_root, which};

/// An MPI installation found on the PATH.
#[derive(Clone, Debug)]
pub(crate) struct Mpi {
    pub(crate) mpirun: PathBuf,
    /// Open MPI refuses more ranks than cores without `--oversubscribe`; MPICH has no such flag.
    pub(crate) open_mpi: bool,
}

/// Finds `mpicc` and `mpirun`; `None` (after a visible skip) when absent, an error when
/// `SPARKNET_REQUIRE_MPI=1`.
pub(crate) fn detect() -> Result<Option<Mpi>> {
    match (which("mpicc"), which("mpirun")) {
        (Some(_), Some(mpirun)) => {
            let version = Command::new(&mpirun).arg("--version").output();
            let open_mpi = version
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("Open MPI"))
                .unwrap_or(false);
            eprintln!(
                "MPI: {} ({})",
                mpirun.display(),
                if open_mpi { "Open MPI" } else { "MPICH or other" }
            );
            Ok(Some(Mpi { mpirun, open_mpi }))
        }
        _ if env_flag("SPARKNET_REQUIRE_MPI") => {
            bail!(
                "SPARKNET_REQUIRE_MPI=1 but mpicc/mpirun are not on the PATH (apt-get install libopenmpi-dev openmpi-bin libclang-dev)"
            )
        }
        _ => {
            eprintln!(
                "SKIPPED MPI checks: mpicc/mpirun not found (apt-get install libopenmpi-dev openmpi-bin libclang-dev)"
            );
            Ok(None)
        }
    }
}

/// `cargo xtask mpi-test`.
pub(crate) fn run_standalone() -> Result<()> {
    match detect()? {
        Some(mpi) => run_multi_rank(&mpi),
        None => Ok(()),
    }
}

/// The `mpi_*` examples of sparknet-mpi, by name.
fn examples() -> Result<Vec<String>> {
    let dir = project_root().join("sparknet-mpi/examples");
    let mut names = Vec::new();
    if dir.is_dir() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
            if stem.starts_with("mpi_") && path.extension().is_some_and(|e| e == "rs") {
                names.push(stem.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Builds the multi-rank examples and runs each at 2 and 4 ranks.
pub(crate) fn run_multi_rank(mpi: &Mpi) -> Result<()> {
    let names = examples()?;
    if names.is_empty() {
        eprintln!("MPI: no sparknet-mpi/examples/mpi_*.rs multi-rank checks yet");
        return Ok(());
    }
    let mut build = cargo();
    build.args(["build", "-p", "sparknet-mpi", "--features", "mpi", "--examples"]);
    exec(build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"));
    for name in &names {
        let exe = target.join("debug/examples").join(name);
        for ranks in ["2", "4"] {
            let mut cmd = Command::new(&mpi.mpirun);
            if mpi.open_mpi {
                cmd.arg("--oversubscribe");
            }
            cmd.args(["-n", ranks]).arg(&exe);
            cmd.env("RAYON_NUM_THREADS", "1").current_dir(project_root());
            exec(cmd)?;
        }
    }
    Ok(())
}
