//! numpy `.npy` files: the interchange format of the golden (reference) outputs.
//!
//! Reads format versions 1, 2 and 3 with the little-endian element types `<f4`, `<f8`, `|u1`
//! and `<i4` in C order. Fortran order, big-endian data and other types are rejected with an
//! error that says so. Writes version 1 (version 2 only when the header needs it), C order, with
//! the header padded so the data starts on a 64-byte boundary, as numpy does.

use std::path::Path;

use crate::layout::checked_elem_count;
use crate::{DType, Element, Error, Result, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";

/// A tensor whose element type is known only at run time (what a `.npy` file holds).
#[derive(Debug, Clone, PartialEq)]
pub enum DynTensor {
    /// `<f4` data.
    F32(Tensor<f32>),
    /// `<f8` data.
    F64(Tensor<f64>),
    /// `|u1` data.
    U8(Tensor<u8>),
    /// `<i4` data.
    I32(Tensor<i32>),
}

impl DynTensor {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            DynTensor::F32(_) => DType::F32,
            DynTensor::F64(_) => DType::F64,
            DynTensor::U8(_) => DType::U8,
            DynTensor::I32(_) => DType::I32,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            DynTensor::F32(t) => t.shape(),
            DynTensor::F64(t) => t.shape(),
            DynTensor::U8(t) => t.shape(),
            DynTensor::I32(t) => t.shape(),
        }
    }
}

/// What the header says.
struct Header {
    dtype: DType,
    shape: Vec<usize>,
    data_start: usize,
}

fn npy_err(name: &str, reason: impl Into<String>) -> Error {
    Error::Npy { source_name: name.to_string(), reason: reason.into() }
}

fn parse_header(bytes: &[u8], name: &str) -> Result<Header> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(npy_err(name, "not a .npy file (missing the \\x93NUMPY magic)"));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len, start): (usize, usize) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        _ => return Err(npy_err(name, format!("unsupported format version {major}.{minor}"))),
    };
    let end = start.checked_add(len).filter(|&e| e <= bytes.len());
    let end = end.ok_or_else(|| npy_err(name, "file ends inside the header"))?;
    let text = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| npy_err(name, "header is not ASCII/UTF-8 text"))?;
    let dict =
        parse_dict(text).map_err(|why| npy_err(name, format!("bad header {text:?}: {why}")))?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (key, value) in dict {
        match (key.as_str(), value) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("fortran_order", Value::Bool(b)) => fortran = Some(b),
            ("shape", Value::Tuple(t)) => shape = Some(t),
            (k @ ("descr" | "fortran_order" | "shape"), _) => {
                return Err(npy_err(name, format!("header key '{k}' has the wrong kind of value")));
            }
            _ => {}
        }
    }
    let descr = descr.ok_or_else(|| npy_err(name, "header has no 'descr'"))?;
    let fortran = fortran.ok_or_else(|| npy_err(name, "header has no 'fortran_order'"))?;
    let shape = shape.ok_or_else(|| npy_err(name, "header has no 'shape'"))?;
    let dtype = DType::from_npy_descr(&descr).ok_or_else(|| {
        npy_err(
            name,
            format!(
                "unsupported dtype '{descr}' (readable: little-endian '<f4', '<f8', '|u1', '<i4')"
            ),
        )
    })?;
    if fortran {
        return Err(npy_err(
            name,
            "Fortran-order arrays are not supported; save a C-order copy \
             (numpy.ascontiguousarray) instead",
        ));
    }
    Ok(Header { dtype, shape, data_start: end })
}

#[derive(Debug)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses the Python dict literal of a header: string keys; string, bool or int-tuple values.
fn parse_dict(text: &str) -> std::result::Result<Vec<(String, Value)>, String> {
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    p.expect(b'{')?;
    let mut out = Vec::new();
    loop {
        p.ws();
        if p.eat(b'}') {
            return Ok(out);
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let value = match p.peek() {
            Some(b'\'' | b'"') => Value::Str(p.string()?),
            Some(b'(') => Value::Tuple(p.tuple()?),
            _ if p.eat_word("True") => Value::Bool(true),
            _ if p.eat_word("False") => Value::Bool(false),
            _ => return Err(format!("unexpected value for key '{key}' at byte {}", p.i)),
        };
        out.push((key, value));
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}')?;
            return Ok(out);
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }
    fn eat_word(&mut self, w: &str) -> bool {
        let hit = self.s[self.i..].starts_with(w.as_bytes());
        if hit {
            self.i += w.len();
        }
        hit
    }
    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let q = self.peek().filter(|&c| c == b'\'' || c == b'"');
        let q = q.ok_or_else(|| format!("expected a string at byte {}", self.i))?;
        let from = self.i + 1;
        let len = self.s[from..].iter().position(|&c| c == q).ok_or("unterminated string")?;
        self.i = from + len + 1;
        Ok(String::from_utf8_lossy(&self.s[from..from + len]).into_owned())
    }
    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Ok(dims);
            }
            let from = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[from..self.i]).unwrap_or("");
            let d = digits.parse().map_err(|_| format!("expected a dimension at byte {from}"))?;
            dims.push(d);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

fn decode_with<T: Element>(bytes: &[u8], header: &Header, name: &str) -> Result<Tensor<T>> {
    let n = checked_elem_count(&header.shape)?;
    let data = &bytes[header.data_start..];
    let need = n.checked_mul(size_of::<T>()).ok_or_else(|| npy_err(name, "shape too large"))?;
    if data.len() != need {
        return Err(npy_err(
            name,
            format!(
                "data holds {} bytes, shape {:?} of {} needs {need}",
                data.len(),
                header.shape,
                header.dtype
            ),
        ));
    }
    Tensor::from_vec(T::from_le_bytes_vec(data), &header.shape)
}

fn decode_named<T: Element>(bytes: &[u8], name: &str) -> Result<Tensor<T>> {
    let header = parse_header(bytes, name)?;
    if header.dtype != T::DTYPE {
        let what = format!("npy {name}");
        return Err(Error::DTypeMismatch { what, expected: T::DTYPE, found: header.dtype });
    }
    decode_with(bytes, &header, name)
}

fn decode_dyn_named(bytes: &[u8], name: &str) -> Result<DynTensor> {
    let h = parse_header(bytes, name)?;
    Ok(match h.dtype {
        DType::F32 => DynTensor::F32(decode_with(bytes, &h, name)?),
        DType::F64 => DynTensor::F64(decode_with(bytes, &h, name)?),
        DType::U8 => DynTensor::U8(decode_with(bytes, &h, name)?),
        DType::I32 => DynTensor::I32(decode_with(bytes, &h, name)?),
    })
}

/// Decodes an in-memory `.npy` image whose element type must be `T`.
///
/// # Errors
/// [`Error::Npy`] for a malformed or unsupported file, [`Error::DTypeMismatch`] for another type.
pub fn decode_npy<T: Element>(bytes: &[u8]) -> Result<Tensor<T>> {
    decode_named(bytes, "<bytes>")
}

/// Decodes an in-memory `.npy` image of any supported element type.
///
/// # Errors
/// [`Error::Npy`] for a malformed or unsupported file.
pub fn decode_npy_dyn(bytes: &[u8]) -> Result<DynTensor> {
    decode_dyn_named(bytes, "<bytes>")
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// Reads a `.npy` file whose element type must be `T`.
///
/// # Errors
/// [`Error::Io`], [`Error::Npy`] or [`Error::DTypeMismatch`], naming the file.
pub fn read_npy<T: Element>(path: impl AsRef<Path>) -> Result<Tensor<T>> {
    let path = path.as_ref();
    decode_named(&read_file(path)?, &path.display().to_string())
}

/// Reads a `.npy` file of any supported element type.
///
/// # Errors
/// [`Error::Io`] or [`Error::Npy`], naming the file.
pub fn read_npy_dyn(path: impl AsRef<Path>) -> Result<DynTensor> {
    let path = path.as_ref();
    decode_dyn_named(&read_file(path)?, &path.display().to_string())
}

/// The `.npy` image of `tensor` (its elements in C order, whatever its layout).
pub fn encode_npy<T: Element>(tensor: &Tensor<T>) -> Vec<u8> {
    let shape = match tensor.shape() {
        [d] => format!("({d},)"),
        dims => {
            let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    };
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        T::DTYPE.npy_descr()
    );
    // Magic, version and length field, then the dict padded with spaces and ended by '\n'.
    let unpadded = dict.len() + 1;
    let (version, prefix) =
        if 10 + unpadded + 63 <= usize::from(u16::MAX) { (1u8, 10) } else { (2, 12) };
    let hlen = (prefix + unpadded).div_ceil(64) * 64 - prefix;
    let mut out = Vec::with_capacity(prefix + hlen + tensor.elem_count() * size_of::<T>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(hlen as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(prefix + hlen - 1, b' ');
    out.push(b'\n');
    match tensor.as_slice() {
        Some(s) => T::extend_le_bytes(s, &mut out),
        None => T::extend_le_bytes(&tensor.to_vec(), &mut out),
    }
    out
}

/// Writes `tensor` to a `.npy` file.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_npy<T: Element>(path: impl AsRef<Path>, tensor: &Tensor<T>) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, encode_npy(tensor))
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

impl<T: Element> Tensor<T> {
    /// Reads a `.npy` file (see [`read_npy`]).
    ///
    /// # Errors
    /// As [`read_npy`].
    pub fn read_npy(path: impl AsRef<Path>) -> Result<Self> {
        read_npy(path)
    }

    /// Writes the tensor to a `.npy` file (see [`write_npy`]).
    ///
    /// # Errors
    /// As [`write_npy`].
    pub fn write_npy(&self, path: impl AsRef<Path>) -> Result<()> {
        write_npy(path, self)
    }
}
