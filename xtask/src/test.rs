//! `cargo xtask test`: every check CI runs, in the order a developer wants to see failures.
//!
//! 1. `cargo fmt --all -- --check`
//! 2. `cargo clippy --workspace --all-targets -- -D warnings`
//! 3. `cargo doc --workspace --no-deps` with `RUSTDOCFLAGS=-D warnings`
//! 4. the shared assets: present, or a visible skip (`SPARKNET_REQUIRE_ASSETS=1` makes absence fatal)
//! 5. acceptance runs too long for a unit test but cheap enough for CI: full-test-set accuracy of
//!    LeNet (MNIST, 10k) and CIFAR-10 quick (10k) against the independent reference's counts
//! 6. MPI: when `mpicc` and `mpirun` are installed, the `mpi` feature is linted and tested and the
//!    multi-rank examples run under `mpirun` (`SPARKNET_REQUIRE_MPI=1` makes a missing MPI fatal)
//! 7. `cargo test --workspace` last, so its summary is the last thing printed.
//!
//! Flags: `--no-lint` skips steps 1-3 (for a quick local run).

use anyhow::{Result, bail};

use crate::{cargo, env_flag, exec, mpi, project_root};

pub(crate) fn run(args: &[String]) -> Result<()> {
    let lint = !args.iter().any(|a| a == "--no-lint");
    if let Some(bad) = args.iter().find(|a| a.as_str() != "--no-lint") {
        bail!("unknown flag `{bad}` for `cargo xtask test` (known: --no-lint)");
    }

    let mpi = mpi::detect()?;
    // With MPI present the `mpi` feature is built once for clippy, doc and tests alike.
    let features: &[&str] = if mpi.is_some() { &["--features", "sparknet-mpi/mpi"] } else { &[] };

    if lint {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        exec(fmt)?;

        let mut clippy = cargo();
        clippy.args(["clippy", "--workspace", "--all-targets"]).args(features);
        clippy.args(["--", "-D", "warnings"]);
        exec(clippy)?;

        let mut doc = cargo();
        doc.args(["doc", "--workspace", "--no-deps"]).args(features);
        doc.env("RUSTDOCFLAGS", "-D warnings");
        exec(doc)?;
    }

    if check_assets()? {
        let mut accuracy = cargo();
        accuracy.args(["run", "--quiet", "-p", "sparknet-net", "--example", "accuracy"]);
        accuracy.args(["--", "lenet", "cifar10_quick"]);
        exec(accuracy)?;
    }

    if let Some(mpi) = &mpi {
        mpi::run_multi_rank(mpi)?;
    }

    let mut test = cargo();
    test.args(["test", "--workspace"]).args(features);
    exec(test)
}

/// Reports where the shared assets are (true when present); fails when they are required and absent.
fn check_assets() -> Result<bool> {
    let raw = std::env::var_os("SPARKNET_ASSETS").unwrap_or_else(|| "../shared/assets".into());
    let raw = std::path::PathBuf::from(raw);
    let dir = if raw.is_absolute() { raw } else { project_root().join(raw) };
    if dir.is_dir() {
        eprintln!("\nassets: {}", dir.display());
        return Ok(true);
    } else if env_flag("SPARKNET_REQUIRE_ASSETS") {
        bail!("SPARKNET_REQUIRE_ASSETS=1 but the assets directory {} is missing", dir.display());
    } else {
        eprintln!(
            "\nassets: {} not found; tests that need them print SKIPPED (set SPARKNET_ASSETS)",
            dir.display()
        );
    }
    Ok(false)
}
