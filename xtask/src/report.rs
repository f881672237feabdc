//! What every bench report states about where it ran (machine, OS, load, versions, git commit)
//! and the check that a report directory is complete and parses (used by CI's smoke runs).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::plot;
use crate::train::{Binaries, read_jsonl};

/// First line of a command's stdout (empty when it cannot run).
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(crate::project_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_owned())
        .unwrap_or_default()
}

/// The 1-, 5- and 15-minute load averages (Linux), as text.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Logical cores available to this process.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

/// The git commit at the first call (with `-dirty` when tracked files had changes), so that a
/// report names the commit its runs started from even if HEAD moves meanwhile.
pub(crate) fn git_commit() -> String {
    static COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COMMIT.get_or_init(read_git_commit).clone()
}

fn read_git_commit() -> String {
    let head = first_line("git", &["rev-parse", "--short=12", "HEAD"]);
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(crate::project_root())
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if head.is_empty() {
        "unknown".into()
    } else if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}

/// UTC time now, as `date -u` prints it.
pub(crate) fn now_utc() -> String {
    first_line("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"])
}

/// The "Machine" and "Versions" sections of a report.
pub(crate) fn environment(bins: &Binaries, load_at_start: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_else(|| std::env::consts::OS.into());
    let kernel = first_line("uname", &["-sr"]);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let mut s = String::new();
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| CPU | {cpu} |");
    let _ = writeln!(s, "| logical cores | {} |", cores());
    let _ = writeln!(s, "| memory | {mem} |");
    let _ = writeln!(s, "| OS | {os} ({kernel}) |");
    let _ = writeln!(s, "| load average (1, 5, 15 min) at start | {load_at_start} |");
    let _ = writeln!(s, "| load average at end | {} |", load_average());
    let _ = writeln!(s, "\n## Versions\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| git commit | `{}` |", git_commit());
    let _ = writeln!(s, "| sparknet-train | {} ({} build) |", bins.version(), bins.profile);
    let _ = writeln!(s, "| rustc | {} |", first_line("rustc", &["-V"]));
    let _ = writeln!(s, "| cargo | {} |", first_line("cargo", &["-V"]));
    let launcher = match &bins.mpi {
        Some(m) => first_line(&m.mpirun.to_string_lossy(), &["--version"]),
        None => "none: in-process workers (`--workers K`)".into(),
    };
    let _ = writeln!(s, "| launcher | {launcher} |");
    let font = plot::font_in_use()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "none found: figures drawn without text".into());
    let _ = writeln!(s, "| plot font | {font} |");
    s
}

/// Checks a report directory: `report.md` exists and is non-empty, every `*.jsonl` under it
/// parses line by line, every listed figure exists as a valid SVG and PNG.
pub(crate) fn check(dir: &Path, figures: &[&str]) -> Result<()> {
    let md = dir.join("report.md");
    let text = std::fs::read_to_string(&md).with_context(|| format!("reading {}", md.display()))?;
    if text.trim().is_empty() {
        bail!("{} is empty", md.display());
    }
    let mut jsonl = 0;
    for sub in [dir.to_path_buf(), dir.join("runs")] {
        let Ok(entries) = std::fs::read_dir(&sub) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "jsonl") {
                if read_jsonl(&p)?.is_empty() {
                    bail!("{} has no lines", p.display());
                }
                jsonl += 1;
            }
        }
    }
    if jsonl == 0 {
        bail!("{} holds no JSON-lines logs", dir.display());
    }
    for f in figures {
        plot::check_svg(&dir.join(format!("{f}.svg")))?;
        plot::check_png(&dir.join(format!("{f}.png")))?;
        if !text.contains(&format!("{f}.svg")) {
            bail!("{} does not show {f}.svg", md.display());
        }
    }
    serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(dir.join("summary.json"))
            .with_context(|| format!("reading {}", dir.join("summary.json").display()))?,
    )
    .with_context(|| format!("{}: not JSON", dir.join("summary.json").display()))?;
    eprintln!(
        "report {} complete: report.md, {jsonl} JSON-lines logs, {} figures",
        dir.display(),
        figures.len()
    );
    Ok(())
}

/// Formats seconds for tables.
pub(crate) fn secs(s: f64) -> String {
    if s >= 100.0 {
        format!("{s:.0}")
    } else if s >= 10.0 {
        format!("{s:.1}")
    } else {
        format!("{s:.2}")
    }
}
