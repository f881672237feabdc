//! Test-only helpers shared by the sparknet crates (a dev-dependency, never a normal one).
//!
//! Tests that read the real files beside the repository (`../shared/assets`, `../shared/reference`)
//! find them through [`assets_dir`] and [`reference_dir`]:
//!
//! ```no_run
//! let Some(assets) = sparknet_testkit::assets_dir("lenet_forward") else { return };
//! let model = assets.join("models/lenet_mnist/lenet.prototxt");
//! # let _ = model;
//! ```
//!
//! - `SPARKNET_ASSETS` names the assets directory (default `../shared/assets`). A relative value is
//!   resolved against the workspace root, not the test's working directory (cargo runs each test
//!   binary inside its crate directory).
//! - When the directory is absent the helper prints a visible `SKIPPED` line to stderr and returns
//!   `None`; with `SPARKNET_REQUIRE_ASSETS=1` (set by CI) it panics instead, so a skip becomes a
//!   failure.
//! - `SPARKNET_REFERENCE` likewise names the reference outputs (default `../shared/reference`).

pub mod alloc;

use std::path::{Path, PathBuf};

/// The workspace root (the directory holding the virtual manifest).
pub fn workspace_root() -> PathBuf {
    // This crate lives at `<root>/sparknet-testkit`.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Resolves `var` (or `default` when unset) against the workspace root.
fn resolve(var: &str, default: &str) -> PathBuf {
    let raw = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    if raw.is_absolute() { raw } else { workspace_root().join(raw) }
}

/// True when `SPARKNET_REQUIRE_ASSETS` asks for missing assets to fail the test.
pub fn assets_required() -> bool {
    matches!(std::env::var("SPARKNET_REQUIRE_ASSETS").as_deref(), Ok("1") | Ok("true") | Ok("yes"))
}

fn found_or_skip(dir: PathBuf, var: &str, test: &str) -> Option<PathBuf> {
    if dir.is_dir() {
        return Some(dir);
    }
    let msg = format!("{var} directory {} not found", dir.display());
    if assets_required() {
        panic!("{test}: {msg} and SPARKNET_REQUIRE_ASSETS=1");
    }
    eprintln!("SKIPPED {test}: {msg} (set {var} to run it)");
    None
}

/// The shared assets directory, or `None` (after printing a skip) when it is absent.
///
/// # Panics
/// When the directory is absent and `SPARKNET_REQUIRE_ASSETS=1`.
pub fn assets_dir(test: &str) -> Option<PathBuf> {
    found_or_skip(resolve("SPARKNET_ASSETS", "../shared/assets"), "SPARKNET_ASSETS", test)
}

/// The shared reference-output directory, or `None` (after printing a skip) when it is absent.
///
/// # Panics
/// When the directory is absent and `SPARKNET_REQUIRE_ASSETS=1`.
pub fn reference_dir(test: &str) -> Option<PathBuf> {
    found_or_skip(resolve("SPARKNET_REFERENCE", "../shared/reference"), "SPARKNET_REFERENCE", test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_virtual_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn relative_paths_resolve_against_the_root() {
        let p = resolve("SPARKNET_TESTKIT_UNSET_VARIABLE", "../x");
        assert_eq!(p, workspace_root().join("../x"));
    }
}
