//! A small flag parser for the bench commands: `--name value`, `--name=value` and switches, with
//! an error naming any flag left unread (no parser dependency, as the rest of xtask).

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result, bail};

/// The command's arguments, consumed flag by flag; [`Flags::finish`] rejects what is left.
pub(crate) struct Flags {
    command: &'static str,
    args: Vec<String>,
}

impl Flags {
    pub(crate) fn new(command: &'static str, args: &[String]) -> Flags {
        Flags { command, args: args.to_vec() }
    }

    /// True (and consumed) when the switch is present.
    pub(crate) fn switch(&mut self, name: &str) -> bool {
        let before = self.args.len();
        self.args.retain(|a| a != name);
        before != self.args.len()
    }

    /// The value of `--name V` or `--name=V` (the last one wins), consumed.
    pub(crate) fn value(&mut self, name: &str) -> Result<Option<String>> {
        let mut found = None;
        let mut i = 0;
        while i < self.args.len() {
            if self.args[i] == name {
                if i + 1 >= self.args.len() {
                    bail!("`cargo xtask {}`: {name} needs a value", self.command);
                }
                found = Some(self.args.remove(i + 1));
                self.args.remove(i);
            } else if let Some(v) =
                self.args[i].strip_prefix(name).and_then(|r| r.strip_prefix('='))
            {
                found = Some(v.to_owned());
                self.args.remove(i);
            } else {
                i += 1;
            }
        }
        Ok(found)
    }

    /// A parsed value.
    pub(crate) fn parsed<T: FromStr>(&mut self, name: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        let command = self.command;
        self.value(name)?
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| anyhow::anyhow!("`cargo xtask {command}`: {name} {v:?}: {e}"))
            })
            .transpose()
    }

    /// A comma-separated list (`--ranks 1,2,4`).
    pub(crate) fn list<T: FromStr>(&mut self, name: &str) -> Result<Option<Vec<T>>>
    where
        T::Err: std::fmt::Display,
    {
        let command = self.command;
        let Some(v) = self.value(name)? else { return Ok(None) };
        let items = v
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim().parse::<T>().map_err(|e| {
                    anyhow::anyhow!("`cargo xtask {command}`: {name} {v:?}: item {s:?}: {e}")
                })
            })
            .collect::<Result<Vec<T>>>()?;
        if items.is_empty() {
            bail!("`cargo xtask {command}`: {name} is empty");
        }
        Ok(Some(items))
    }

    /// A path.
    pub(crate) fn path(&mut self, name: &str) -> Result<Option<PathBuf>> {
        Ok(self.value(name)?.map(PathBuf::from))
    }

    /// Fails naming the first argument nobody asked for.
    pub(crate) fn finish(self, usage: &str) -> Result<()> {
        if let Some(bad) = self.args.first() {
            bail!("unknown argument `{bad}` for `cargo xtask {}`\n\n{usage}", self.command);
        }
        Ok(())
    }
}

/// Resolves a user path against the directory `cargo xtask` was started from.
pub(crate) fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    Ok(cwd.join(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::new("t", &args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn values_lists_and_switches() {
        let mut f = flags(&["--ranks", "1,2,4", "--quick", "--out=x", "--iters", "5"]);
        assert!(f.switch("--quick"));
        assert!(!f.switch("--smoke"));
        assert_eq!(f.list::<usize>("--ranks").unwrap(), Some(vec![1, 2, 4]));
        assert_eq!(f.path("--out").unwrap(), Some(PathBuf::from("x")));
        assert_eq!(f.parsed::<u64>("--iters").unwrap(), Some(5));
        f.finish("").unwrap();
    }

    #[test]
    fn errors_name_the_flag() {
        let mut f = flags(&["--ranks", "1,x"]);
        let err = f.list::<usize>("--ranks").unwrap_err().to_string();
        assert!(err.contains("--ranks") && err.contains("\"x\""), "{err}");
        let err = flags(&["--bogus"]).finish("usage").unwrap_err().to_string();
        assert!(err.contains("--bogus"), "{err}");
        assert!(flags(&["--out"]).value("--out").is_err());
    }
}
