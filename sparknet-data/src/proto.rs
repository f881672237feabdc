//! A hand-rolled codec for Caffe's `BlobProto`, enough to write and read mean files
//! (`.binaryproto`) without a protobuf dependency.
//!
//! Fields handled (numbers from Caffe's `caffe.proto`, `message BlobProto`):
//!
//! | number | field      | type                        | wire type              |
//! |--------|------------|-----------------------------|------------------------|
//! | 1      | `num`      | `optional int32`            | 0 (varint)             |
//! | 2      | `channels` | `optional int32`            | 0 (varint)             |
//! | 3      | `height`   | `optional int32`            | 0 (varint)             |
//! | 4      | `width`    | `optional int32`            | 0 (varint)             |
//! | 5      | `data`     | `repeated float [packed]`   | 2 (packed) or 5 (one)  |
//! | 7      | `shape`    | `optional BlobShape`        | 2 (length-delimited)   |
//! | 8      | `double_data` | `repeated double [packed]` | 2 (packed) or 1 (one) |
//!
//! `BlobShape` has one field, `dim = 1`, `repeated int64 [packed]`. The writer emits a 4-D blob
//! as Caffe's `compute_image_mean` does: the legacy fields `num, channels, height, width`, then
//! the packed data, and no `shape` (so a mean written here is byte-identical to Caffe's for the
//! same values); other ranks are written as `data` and `shape`. The reader takes the shape from
//! the legacy fields when any is present (Caffe's `Blob::FromProto` rule), else from `shape`, and
//! skips every other field (`diff`, `double_diff`, unknown numbers).

use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// A mean image (or any 4-D blob) as stored in a `.binaryproto`.
#[derive(Clone, Debug, PartialEq)]
pub struct BlobProto {
    /// Blob shape (for a mean file `[1, c, h, w]`).
    pub shape: Vec<i64>,
    /// Values in row-major order.
    pub data: Vec<f32>,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, ((field as u64) << 3) | wire as u64);
}

impl BlobProto {
    /// A blob of shape `[1, c, h, w]`.
    pub fn mean(c: usize, h: usize, w: usize, data: Vec<f32>) -> Self {
        BlobProto { shape: vec![1, c as i64, h as i64, w as i64], data }
    }

    /// Serialises the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() * 4 + 64);
        if self.shape.len() == 4 {
            for (k, &d) in self.shape.iter().enumerate() {
                put_key(&mut out, k as u32 + 1, 0);
                // int32 fields: negative values are sign-extended to 10 bytes, as protobuf does.
                put_varint(&mut out, d as i32 as i64 as u64);
            }
        }
        put_key(&mut out, 5, 2);
        put_varint(&mut out, self.data.len() as u64 * 4);
        for v in &self.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if self.shape.len() == 4 {
            return out;
        }
        let mut dims = Vec::new();
        for &d in &self.shape {
            put_varint(&mut dims, d as u64);
        }
        let mut shape = Vec::new();
        put_key(&mut shape, 1, 2);
        put_varint(&mut shape, dims.len() as u64);
        shape.extend_from_slice(&dims);
        put_key(&mut out, 7, 2);
        put_varint(&mut out, shape.len() as u64);
        out.extend_from_slice(&shape);
        out
    }

    /// Parses a message; `Err` carries a description of the first malformed byte.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut r = Reader { b: bytes, at: 0 };
        let mut legacy = [None::<i64>; 4];
        let mut shape = Vec::new();
        let mut data = Vec::new();
        while !r.done() {
            let key = r.varint()?;
            let (field, wire) = (key >> 3, (key & 7) as u8);
            match (field, wire) {
                (1..=4, 0) => legacy[field as usize - 1] = Some(r.varint()? as i32 as i64),
                (5, 2) => {
                    let body = r.bytes()?;
                    if body.len() % 4 != 0 {
                        return Err(format!(
                            "packed float data of {} bytes is not a multiple of 4",
                            body.len()
                        ));
                    }
                    data.extend(
                        body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    );
                }
                (5, 5) => data.push(f32::from_le_bytes(r.fixed::<4>()?)),
                (8, 2) => {
                    let body = r.bytes()?;
                    if body.len() % 8 != 0 {
                        return Err(format!(
                            "packed double data of {} bytes is not a multiple of 8",
                            body.len()
                        ));
                    }
                    data.extend(body.chunks_exact(8).map(|c| {
                        f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                    }));
                }
                (8, 1) => data.push(f64::from_le_bytes(r.fixed::<8>()?) as f32),
                (7, 2) => {
                    let mut s = Reader { b: r.bytes()?, at: 0 };
                    shape.clear();
                    while !s.done() {
                        let key = s.varint()?;
                        match (key >> 3, key & 7) {
                            (1, 2) => {
                                let mut p = Reader { b: s.bytes()?, at: 0 };
                                while !p.done() {
                                    shape.push(p.varint()? as i64);
                                }
                            }
                            (1, 0) => shape.push(s.varint()? as i64),
                            (_, w) => s.skip(w as u8)?,
                        }
                    }
                }
                (_, w) => r.skip(w)?,
            }
        }
        if legacy.iter().any(Option::is_some) {
            shape = legacy.iter().map(|d| d.unwrap_or(1)).collect();
        }
        let count =
            shape.iter().try_fold(1i64, |acc, &d| if d < 0 { None } else { acc.checked_mul(d) });
        if count != Some(data.len() as i64) {
            return Err(format!("shape {shape:?} does not match {} data values", data.len()));
        }
        Ok(BlobProto { shape, data })
    }

    /// Writes the blob to `path` atomically.
    ///
    /// # Errors
    /// [`Error::Io`] naming `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::writer::write_atomic(path, &self.encode())
    }

    /// Reads a blob from `path`.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::BadSource`] naming `path` if it is not a valid `BlobProto`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).at(path)?;
        Self::decode(&bytes).map_err(|reason| Error::BadSource { path: path.to_path_buf(), reason })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.b.len()
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.b.get(self.at) else {
                return Err(format!("varint runs past the end at byte {}", self.at));
            };
            self.at += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes ending at byte {}", self.at))
    }

    fn bytes(&mut self) -> std::result::Result<&'a [u8], String> {
        let n = self.varint()?;
        let end = (self.at as u64).checked_add(n).filter(|&e| e <= self.b.len() as u64);
        let Some(end) = end else {
            return Err(format!(
                "field of {n} bytes at byte {} runs past the end ({} bytes)",
                self.at,
                self.b.len()
            ));
        };
        let s = &self.b[self.at..end as usize];
        self.at = end as usize;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let Some(s) = self.b.get(self.at..self.at + N) else {
            return Err(format!("{N}-byte field at byte {} runs past the end", self.at));
        };
        self.at += N;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn skip(&mut self, wire: u8) -> std::result::Result<(), String> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.fixed::<8>().map(drop),
            2 => self.bytes().map(drop),
            5 => self.fixed::<4>().map(drop),
            w => Err(format!("unsupported wire type {w} at byte {}", self.at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_expected_bytes_for_a_tiny_blob() {
        let b = BlobProto::mean(1, 1, 2, vec![1.0, -2.0]);
        let bytes = b.encode();
        // num=1, channels=1, height=1, width=2 as varints.
        assert_eq!(&bytes[..8], &[0x08, 1, 0x10, 1, 0x18, 1, 0x20, 2]);
        // data: key 5/packed, 8 bytes, two little-endian floats.
        assert_eq!(&bytes[8..10], &[0x2a, 8]);
        assert_eq!(&bytes[10..14], &1.0f32.to_le_bytes());
        assert_eq!(&bytes[14..18], &(-2.0f32).to_le_bytes());
        // Nothing else: no `shape` for a 4-D blob, as Caffe's compute_image_mean writes it.
        assert_eq!(bytes.len(), 18);
        assert_eq!(BlobProto::decode(&bytes).unwrap(), b);
        // Other ranks carry `shape`: key 7, length 4, then BlobShape { dim (packed): [1, 2] }.
        let v = BlobProto { shape: vec![1, 2], data: vec![1.0, -2.0] };
        let bytes = v.encode();
        assert_eq!(&bytes[..2], &[0x2a, 8]);
        assert_eq!(&bytes[10..], &[0x3a, 4, 0x0a, 2, 1, 2]);
        assert_eq!(BlobProto::decode(&bytes).unwrap(), v);
    }

    #[test]
    fn reads_shape_only_and_unpacked_floats() {
        // shape {dim: 2} (unpacked dim), then two unpacked data floats, then an unknown varint field.
        let mut m = vec![0x3a, 2, 0x08, 2, 0x2d];
        m.extend_from_slice(&3.5f32.to_le_bytes());
        m.push(0x2d);
        m.extend_from_slice(&4.5f32.to_le_bytes());
        m.extend_from_slice(&[0x50, 0x7f]);
        let b = BlobProto::decode(&m).unwrap();
        assert_eq!(b, BlobProto { shape: vec![2], data: vec![3.5, 4.5] });
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(BlobProto::decode(&[0x2a, 9, 0, 0]).unwrap_err().contains("runs past"));
        assert!(BlobProto::decode(&[0x08]).unwrap_err().contains("varint"));
        let mut m = BlobProto::mean(1, 2, 2, vec![0.0; 4]).encode();
        m[7] = 3; // width 3: 1*2*3 != 4 values
        assert!(BlobProto::decode(&m).unwrap_err().contains("does not match"));
    }
}
