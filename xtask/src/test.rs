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
//! 7. the bench commands' smoke configurations (`cargo xtask bench-scaling --smoke`,
//!    `cargo xtask bench-imagenet --smoke`, seconds each) on the debug binaries that step 8 builds
//!    anyway (`cargo test --no-run` first), each checking that its report files exist and parse;
//!    with the shared assets only (their LeNet and CaffeNet prototxts), a visible skip otherwise
//! 8. `cargo test --workspace` last, so its summary is the last thing printed.
//!
//! Flags: `--no-lint` skips steps 1-3, `--no-smoke` step 7 (for a quick local run).

use anyhow::{Result, bail};

use crate::{cargo, env_flag, exec, imagenet, mpi, project_root, scaling, train};

pub(crate) fn run(args: &[String]) -> Result<()> {
    let lint = !args.iter().any(|a| a == "--no-lint");
    let smoke = !args.iter().any(|a| a == "--no-smoke");
    if let Some(bad) = args.iter().find(|a| !matches!(a.as_str(), "--no-lint" | "--no-smoke")) {
        bail!("unknown flag `{bad}` for `cargo xtask test` (known: --no-lint, --no-smoke)");
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

    let assets = check_assets()?;
    if assets {
        let mut accuracy = cargo();
        accuracy.args(["run", "--quiet", "-p", "sparknet-net", "--example", "accuracy"]);
        accuracy.args(["--", "lenet", "cifar10_quick"]);
        exec(accuracy)?;
    }

    if let Some(mpi) = &mpi {
        mpi::run_multi_rank(mpi)?;
    }

    if smoke && assets {
        bench_smoke(features, mpi.as_ref())?;
    } else if smoke {
        eprintln!(
            "\nSKIPPED bench smoke runs: they use the shared assets' LeNet and CaffeNet prototxts"
        );
    }

    let mut test = cargo();
    test.args(["test", "--workspace"]).args(features);
    exec(test)
}

/// Step 7: builds what `cargo test` will run (so nothing is built twice), then runs both bench
/// commands' smoke configurations on its debug `sparknet-train` and `sparknet-data`.
fn bench_smoke(features: &[&str], mpi: Option<&mpi::Mpi>) -> Result<()> {
    let mut build = cargo();
    build.args(["test", "--workspace", "--no-run"]).args(features);
    exec(build)?;
    let bins = match train::existing("debug", mpi.cloned()) {
        Ok(b) => b,
        Err(_) => {
            // Not built for the tests: build the two binaries with the same features.
            let mut b = cargo();
            b.args(["build", "-p", "sparknet-mpi", "-p", "sparknet-data"]);
            b.args(["--bin", "sparknet-train", "--bin", "sparknet-data"]).args(features);
            exec(b)?;
            train::existing("debug", mpi.cloned())?
        }
    };
    let out = train::target_dir().join("xtask-smoke");
    eprintln!("\n$ cargo xtask bench-scaling --smoke (debug binaries)");
    scaling::smoke(&bins, &out.join("bench-scaling"))?;
    eprintln!("\n$ cargo xtask bench-imagenet --smoke (debug binaries)");
    imagenet::smoke(&bins, &out.join("bench-imagenet"))?;
    Ok(())
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
