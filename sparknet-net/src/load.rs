//! Reading and writing Caffe's files: `.prototxt` nets and solvers (text format), `.caffemodel`
//! weights (binary `NetParameter`, V1 and V2 layer formats), `.binaryproto` blobs (mean files) and
//! `.solverstate`. Nets are upgraded to the current (V2) form on load, as Caffe does.

use std::path::Path;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::proto::{self, BlobProto, NetParameter, SolverParameter, SolverState};
use crate::upgrade::upgrade_net;
use crate::{Error, Result};

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// `offset` clamped to `text` and moved back to a character boundary.
fn boundary(text: &str, offset: usize) -> usize {
    let mut o = offset.min(text.len());
    while !text.is_char_boundary(o) {
        o -= 1;
    }
    o
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let upto = &text[..boundary(text, offset)];
    let line = upto.matches('\n').count() + 1;
    let col =
        upto.rfind('\n').map_or(upto.chars().count(), |nl| upto[nl + 1..].chars().count()) + 1;
    (line, col)
}

/// The byte offset the text-format error points at. prost-reflect exposes it only through its
/// `Debug` form (`span: a..b`) unless the `miette` feature is on.
fn error_offset(debug: &str) -> Option<usize> {
    let at = debug.find("span: ")? + "span: ".len();
    let digits: String = debug[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The last `key: "value"` (quoted) before `offset`, used to name the layer around a parse error.
fn last_quoted_value(text: &str, key: &str, offset: usize) -> Option<String> {
    let before = &text[..boundary(text, offset)];
    let mut search = before;
    while let Some(pos) = search.rfind(key) {
        let after = before[pos + key.len()..].trim_start();
        let boundary_ok = pos == 0
            || !search.as_bytes()[pos - 1].is_ascii_alphanumeric()
                && search.as_bytes()[pos - 1] != b'_';
        if boundary_ok && let Some(rest) = after.strip_prefix(':') {
            let rest = rest.trim_start();
            let quote = rest.chars().next()?;
            if quote == '"' || quote == '\'' {
                let end = rest[1..].find(quote)?;
                return Some(rest[1..1 + end].to_string());
            }
        }
        search = &before[..pos];
    }
    None
}

/// Parses protobuf text format into the prost message `T` whose full name is `full_name`.
/// `path` only labels errors, which carry `path:line:col`.
pub fn parse_text<T: Message + Default>(full_name: &str, text: &str, path: &Path) -> Result<T> {
    // The embedded descriptor is decoded once per process, not once per file.
    static POOL: std::sync::OnceLock<std::result::Result<DescriptorPool, String>> =
        std::sync::OnceLock::new();
    let pool = POOL
        .get_or_init(|| DescriptorPool::decode(proto::DESCRIPTOR_SET).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::parse(path, format!("embedded caffe.proto descriptor: {e}")))?;
    let desc = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| Error::parse(path, format!("no message {full_name} in caffe.proto")))?;
    let msg = DynamicMessage::parse_text_format(desc, text).map_err(|e| {
        let debug = format!("{e:?}");
        let mut msg = e.to_string();
        // An error at the end of the text (an unclosed `{`) carries no span: it is at the end.
        let offset =
            error_offset(&debug).or_else(|| msg.contains("end of input").then_some(text.len()));
        let line_col = match offset {
            Some(off) => {
                let (line, col) = line_col(text, off);
                if debug.contains("FieldNotFound") && debug.contains("caffe.LayerParameter") {
                    let name = last_quoted_value(text, "name", off).unwrap_or_default();
                    let kind = last_quoted_value(text, "type", off).unwrap_or_default();
                    msg = format!(
                        "layer '{name}' (type '{kind}'): unsupported layer parameter: {msg} \
                         (not a BVLC Caffe field; the layer type is unsupported)"
                    );
                }
                Some((line, col))
            }
            None => None,
        };
        Error::Parse { path: path.to_path_buf(), line_col, msg }
    })?;
    msg.transcode_to::<T>().map_err(|e| Error::parse(path, format!("transcoding {full_name}: {e}")))
}

/// Parses a net definition given as text (upgraded to the V2 form). `path` labels errors.
///
/// # Errors
/// A syntax error names `path:line:col`; a legacy net that cannot be upgraded names the layer.
pub fn parse_net_text(text: &str, path: &Path) -> Result<NetParameter> {
    let net: NetParameter = parse_text("caffe.NetParameter", text, path)?;
    upgrade_net(net, path)
}

/// Reads a `.prototxt` net definition (upgraded to the V2 form).
///
/// # Errors
/// I/O errors, syntax errors (with `file:line:col`) and failed upgrades.
pub fn read_net_prototxt(path: impl AsRef<Path>) -> Result<NetParameter> {
    let path = path.as_ref();
    parse_net_text(&read_text(path)?, path)
}

/// Reads a solver prototxt (`SolverParameter`, text format).
///
/// # Errors
/// I/O and syntax errors (with `file:line:col`).
pub fn read_solver_prototxt(path: impl AsRef<Path>) -> Result<SolverParameter> {
    let path = path.as_ref();
    parse_text("caffe.SolverParameter", &read_text(path)?, path)
}

/// Decodes a binary `NetParameter` (a `.caffemodel`), V1 or V2, upgraded to V2.
///
/// # Errors
/// A truncated or corrupt file is an [`Error::Parse`] naming `path`.
pub fn decode_caffemodel(bytes: &[u8], path: &Path) -> Result<NetParameter> {
    let net = NetParameter::decode(bytes).map_err(|e| {
        Error::parse(
            path,
            format!("not a valid binary caffe.NetParameter (truncated or corrupt?): {e}"),
        )
    })?;
    upgrade_net(net, path)
}

/// Reads a binary `.caffemodel` (V1 `layers` or V2 `layer`), upgraded to the V2 form.
///
/// # Errors
/// I/O errors; a truncated or corrupt file is an [`Error::Parse`] naming the file.
pub fn read_caffemodel(path: impl AsRef<Path>) -> Result<NetParameter> {
    let path = path.as_ref();
    decode_caffemodel(&read_bytes(path)?, path)
}

/// Writes `net` as a binary `.caffemodel` (V2 `layer` format, packed float data).
///
/// # Errors
/// I/O errors.
pub fn write_caffemodel(path: impl AsRef<Path>, net: &NetParameter) -> Result<()> {
    atomic_write(path.as_ref(), &net.encode_to_vec())
}

/// Writes `bytes` to a temporary file beside `path` (`<path>.tmp~`), flushes it to disk, renames
/// it over `path` and flushes the directory: a crash leaves the old file or the new one, never a
/// torn one. On failure the temporary file is removed and `path` is untouched.
///
/// # Errors
/// [`Error::Io`] naming `path` (a missing directory, no permission, a full disk).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp~");
    let tmp = std::path::PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // Make the rename itself durable (best effort: not every file system syncs directories).
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Checks that a file can be written at `path` before a long run relies on it: creates its
/// directory when missing, then creates and removes a probe file beside it. Used for snapshot
/// prefixes and log files before the first iteration.
///
/// # Errors
/// [`Error::Io`] naming the directory or the probe path.
pub fn ensure_writable(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_file() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "is a file, not a directory"),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut probe = path.as_os_str().to_owned();
    probe.push(format!(".probe-{}~", std::process::id()));
    let probe = std::path::PathBuf::from(probe);
    std::fs::write(&probe, b"").map_err(|e| Error::io(&probe, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Where a file that cannot be written at `path` goes instead: the same file name in
/// `$TMPDIR/sparknet-rescue-<pid>/` (created).
///
/// # Errors
/// [`Error::Io`] when that directory cannot be created either.
pub fn fallback_path(path: &Path) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("sparknet-rescue-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir.join(path.file_name().unwrap_or_else(|| std::ffi::OsStr::new("snapshot"))))
}

/// Writes a binary `BlobProto` (`.binaryproto`) atomically.
///
/// # Errors
/// I/O errors naming the file.
pub fn write_binaryproto(path: impl AsRef<Path>, blob: &BlobProto) -> Result<()> {
    atomic_write(path.as_ref(), &blob.encode_to_vec())
}

/// Reads a binary `BlobProto` (`.binaryproto`, e.g. a mean image).
///
/// # Errors
/// I/O errors and corrupt files.
pub fn read_binaryproto(path: impl AsRef<Path>) -> Result<BlobProto> {
    let path = path.as_ref();
    decode_binaryproto(&read_bytes(path)?, path)
}

/// Reads a binary `.solverstate`.
///
/// # Errors
/// I/O errors and corrupt files.
pub fn read_solverstate(path: impl AsRef<Path>) -> Result<SolverState> {
    let path = path.as_ref();
    decode_solverstate(&read_bytes(path)?, path)
}

/// Decodes a binary `SolverState`; `path` names it in errors.
///
/// # Errors
/// A truncated or corrupt message is an [`Error::Parse`] naming `path`.
pub fn decode_solverstate(bytes: &[u8], path: &Path) -> Result<SolverState> {
    SolverState::decode(bytes).map_err(|e| {
        Error::parse(
            path,
            format!("not a valid binary caffe.SolverState (truncated or corrupt?): {e}"),
        )
    })
}

/// Decodes a binary `BlobProto` (a `.binaryproto`); `path` names it in errors.
///
/// # Errors
/// A truncated or corrupt message is an [`Error::Parse`] naming `path`.
pub fn decode_binaryproto(bytes: &[u8], path: &Path) -> Result<BlobProto> {
    BlobProto::decode(bytes)
        .map_err(|e| Error::parse(path, format!("not a valid binary caffe.BlobProto: {e}")))
}

/// Reads a net definition in either form: binary when the extension is `.caffemodel` or
/// `.binaryproto`, text otherwise.
///
/// # Errors
/// As [`read_net_prototxt`] / [`read_caffemodel`].
pub fn read_net_any(path: impl AsRef<Path>) -> Result<NetParameter> {
    let path = path.as_ref();
    match path.extension().and_then(|e| e.to_str()) {
        Some("caffemodel") | Some("binaryproto") => read_caffemodel(path),
        _ => read_net_prototxt(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let text = "name: \"x\"\nlayer {\n  name: \"a\"\n  type: \"ReLU\"\n  bogus_field: 3\n}\n";
        let err = parse_net_text(text, Path::new("net.prototxt")).unwrap_err().to_string();
        assert!(err.starts_with("net.prototxt:5:3: "), "{err}");
        assert!(err.contains("bogus_field"), "{err}");
        assert!(err.contains("layer 'a'"), "{err}");
    }

    #[test]
    fn caffe_text_quirks_parse() {
        let text = "# comment\nname: 'n'\ninput: \"data\"\ninput_shape: { dim: [1, 3] dim: 5 }\n\
                    layer: { name: \"c\" type: \"Convolution\" bottom: \"data\" top: \"c\"\n\
                    convolution_param { num_output: 2 kernel_size: [3, 1] engine: CAFFE } }\n";
        let net = parse_net_text(text, Path::new("t")).unwrap();
        let conv = net.layer[1].convolution_param.as_ref().unwrap();
        assert_eq!(conv.kernel_size, vec![3, 1]);
        assert!(conv.bias_term());
        assert_eq!(net.layer[0].input_param.as_ref().unwrap().shape[0].dim, vec![1, 3, 5]);
    }

    #[test]
    fn no_truncation_or_byte_flip_panics() {
        let text = "name: \"é\" layer { name: \"ç\" type: \"Convolution\" bottom: \"d\" top: \"c\" \
                    convolution_param { num_output: 2 kernel_size: 3 } } # ünïcode\n";
        for cut in 0..=text.len() {
            if text.is_char_boundary(cut) {
                let _ = parse_net_text(&text[..cut], Path::new("t"));
            }
        }
        let mut net = NetParameter::default();
        net.layer.push(proto::LayerParameter {
            name: Some("ip".into()),
            blobs: vec![BlobProto { data: vec![0.5; 8], ..Default::default() }],
            ..Default::default()
        });
        let bytes = net.encode_to_vec();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = decode_caffemodel(&b, Path::new("w"));
            }
        }
    }

    #[test]
    fn atomic_write_leaves_no_temporary_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a_iter_1.caffemodel");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A missing directory is an error naming the file, and leaves nothing.
        let missing = dir.path().join("no/such/dir/x.solverstate");
        let err = atomic_write(&missing, b"x").unwrap_err().to_string();
        assert!(err.starts_with(&missing.display().to_string()), "{err}");
        // A directory where the file should be: the rename fails, the temporary is removed.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("inner")).unwrap();
        assert!(atomic_write(&blocked, b"x").is_err());
        assert!(!dir.path().join("blocked.tmp~").exists());
    }

    #[test]
    fn ensure_writable_creates_the_directory_or_names_what_blocks_it() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("new/snaps/lenet_iter_0.caffemodel");
        ensure_writable(&prefix).unwrap();
        assert!(dir.path().join("new/snaps").is_dir());
        assert_eq!(std::fs::read_dir(dir.path().join("new/snaps")).unwrap().count(), 0);
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        let err = ensure_writable(&file.join("x")).unwrap_err().to_string();
        assert!(err.starts_with(&file.display().to_string()), "{err}");
        let fb = fallback_path(&prefix).unwrap();
        assert_eq!(fb.file_name(), prefix.file_name());
        assert!(fb.parent().unwrap().is_dir());
    }

    #[test]
    fn truncated_caffemodel_is_an_error() {
        let mut net = NetParameter { name: Some("n".into()), ..Default::default() };
        net.layer.push(proto::LayerParameter {
            name: Some("ip".into()),
            blobs: vec![BlobProto { data: vec![1.0; 100], ..Default::default() }],
            ..Default::default()
        });
        let bytes = net.encode_to_vec();
        let err =
            decode_caffemodel(&bytes[..bytes.len() - 7], Path::new("w.caffemodel")).unwrap_err();
        assert!(err.to_string().starts_with("w.caffemodel: not a valid binary"), "{err}");
        assert_eq!(
            decode_caffemodel(&bytes, Path::new("w")).unwrap().layer[0].blobs[0].data.len(),
            100
        );
    }
}
