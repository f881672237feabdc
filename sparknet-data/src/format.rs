//! The on-disk shard layout: constants, header/footer/index codecs and the offset arithmetic.
//!
//! All integers are little-endian. A shard is
//!
//! ```text
//! offset 0              header (64 bytes)
//! offset 64             record 0 payload, zero padding up to the next multiple of 64
//!                       record 1 payload, padding, ...
//! index_offset          index: record_count entries of 40 bytes (index_offset is a multiple of 64)
//! file_len - 32         footer (32 bytes)
//! ```
//!
//! Header (64 bytes):
//!
//! | bytes  | field          | meaning                                                   |
//! |--------|----------------|-----------------------------------------------------------|
//! | 0..8   | magic          | `SPKNDATA`                                                |
//! | 8..12  | version        | [`VERSION`] (1)                                           |
//! | 12..16 | flags          | 0 in version 1; any other bit is rejected                 |
//! | 16..24 | record_count   | number of records                                         |
//! | 24..28 | encoding       | 1 raw u8 CHW, 2 encoded JPEG/PNG bytes, 3 f32 CHW (LE)    |
//! | 28..32 | payload_align  | [`PAYLOAD_ALIGN`] (64)                                    |
//! | 32..40 | index_offset   | byte offset of the index                                  |
//! | 40..60 | reserved       | zero                                                      |
//! | 60..64 | header_crc     | CRC-32C of bytes 0..60                                    |
//!
//! Index entry (40 bytes, one per record, in record order):
//!
//! | bytes  | field    | meaning                                                          |
//! |--------|----------|------------------------------------------------------------------|
//! | 0..8   | offset   | payload offset, a multiple of 64, at least 64                    |
//! | 8..16  | length   | payload length in bytes                                          |
//! | 16..20 | label    | class index                                                      |
//! | 20..24 | crc      | CRC-32C (Castagnoli) of the payload bytes                        |
//! | 24..36 | c, h, w  | the image shape as three u32 (decoded shape for encoded records) |
//! | 36..40 | reserved | zero                                                             |
//!
//! Footer (32 bytes): `index_offset` u64, `record_count` u64 (both must equal the header's),
//! `index_crc` u32 (CRC-32C of all index bytes), 4 reserved zero bytes, and the magic `SPKNEND1`.
//!
//! Records are laid out in order without overlap: `offset[i] = align64(offset[i-1] + length[i-1])`
//! and `index_offset = align64(end of the last payload)`. The reader checks every one of these
//! facts when it opens a shard, so a later [`get`](crate::Dataset::get) can never read outside the
//! file.

use serde::{Deserialize, Serialize};

/// Magic bytes at the start of every shard.
pub const MAGIC: [u8; 8] = *b"SPKNDATA";
/// Magic bytes at the very end of every shard.
pub const FOOTER_MAGIC: [u8; 8] = *b"SPKNEND1";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 64;
/// Size of one index entry in bytes.
pub const INDEX_ENTRY_LEN: usize = 40;
/// Footer size in bytes.
pub const FOOTER_LEN: usize = 32;
/// Every payload and the index start at a multiple of this many bytes (a cache line; enough for
/// zero-copy `f32` and SIMD loads from a page-aligned map).
pub const PAYLOAD_ALIGN: u64 = 64;

/// How a record's payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// `c * h * w` bytes, channel-major (CHW).
    RawU8,
    /// A JPEG or PNG file, byte for byte as given.
    Encoded,
    /// `c * h * w` little-endian `f32`, channel-major (CHW).
    F32,
}

impl Encoding {
    /// The header code of this encoding.
    pub fn code(self) -> u32 {
        match self {
            Encoding::RawU8 => 1,
            Encoding::Encoded => 2,
            Encoding::F32 => 3,
        }
    }

    /// The encoding for a header code, if it is one.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Encoding::RawU8),
            2 => Some(Encoding::Encoded),
            3 => Some(Encoding::F32),
            _ => None,
        }
    }

    /// The payload length a record of shape `[c, h, w]` must have, or `None` for encoded records
    /// (any length) or when the product overflows.
    pub fn expected_len(self, shape: [u32; 3]) -> Option<u64> {
        let n = (shape[0] as u64).checked_mul(shape[1] as u64)?.checked_mul(shape[2] as u64)?;
        match self {
            Encoding::RawU8 => Some(n),
            Encoding::F32 => n.checked_mul(4),
            Encoding::Encoded => None,
        }
    }
}

/// The parsed fixed-size header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// Flag bits (0 in version 1).
    pub flags: u32,
    /// Number of records.
    pub record_count: u64,
    /// Encoding code (see [`Encoding::code`]).
    pub encoding: u32,
    /// Payload alignment.
    pub payload_align: u32,
    /// Byte offset of the index.
    pub index_offset: u64,
}

impl Header {
    /// Serialises the header, CRC included.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.record_count.to_le_bytes());
        b[24..28].copy_from_slice(&self.encoding.to_le_bytes());
        b[28..32].copy_from_slice(&self.payload_align.to_le_bytes());
        b[32..40].copy_from_slice(&self.index_offset.to_le_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses the fields (magic and CRC are checked by the reader, which names the file).
    pub fn decode(b: &[u8; HEADER_LEN]) -> Self {
        Header {
            version: u32_at(b, 8),
            flags: u32_at(b, 12),
            record_count: u64_at(b, 16),
            encoding: u32_at(b, 24),
            payload_align: u32_at(b, 28),
            index_offset: u64_at(b, 32),
        }
    }

    /// The stored header CRC and the CRC of the bytes it covers.
    pub fn crcs(b: &[u8; HEADER_LEN]) -> (u32, u32) {
        (u32_at(b, 60), crc32c::crc32c(&b[..60]))
    }
}

/// One record's index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Payload offset in the shard.
    pub offset: u64,
    /// Payload length in bytes.
    pub length: u64,
    /// Class label.
    pub label: u32,
    /// CRC-32C of the payload.
    pub crc: u32,
    /// Shape `[c, h, w]`.
    pub shape: [u32; 3],
}

impl IndexEntry {
    /// Serialises the entry.
    pub fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut b = [0u8; INDEX_ENTRY_LEN];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.length.to_le_bytes());
        b[16..20].copy_from_slice(&self.label.to_le_bytes());
        b[20..24].copy_from_slice(&self.crc.to_le_bytes());
        for (k, d) in self.shape.iter().enumerate() {
            b[24 + 4 * k..28 + 4 * k].copy_from_slice(&d.to_le_bytes());
        }
        b
    }

    /// Parses an entry from exactly [`INDEX_ENTRY_LEN`] bytes.
    pub fn decode(b: &[u8]) -> Self {
        IndexEntry {
            offset: u64_at(b, 0),
            length: u64_at(b, 8),
            label: u32_at(b, 16),
            crc: u32_at(b, 20),
            shape: [u32_at(b, 24), u32_at(b, 28), u32_at(b, 32)],
        }
    }
}

/// The parsed footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Byte offset of the index (equals the header's).
    pub index_offset: u64,
    /// Number of records (equals the header's).
    pub record_count: u64,
    /// CRC-32C of the whole index.
    pub index_crc: u32,
}

impl Footer {
    /// Serialises the footer, magic included.
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(&self.index_offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.record_count.to_le_bytes());
        b[16..20].copy_from_slice(&self.index_crc.to_le_bytes());
        b[24..32].copy_from_slice(&FOOTER_MAGIC);
        b
    }

    /// Parses the footer fields and returns them with the magic found.
    pub fn decode(b: &[u8; FOOTER_LEN]) -> (Self, [u8; 8]) {
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[24..32]);
        (
            Footer {
                index_offset: u64_at(b, 0),
                record_count: u64_at(b, 8),
                index_crc: u32_at(b, 16),
            },
            magic,
        )
    }
}

/// Rounds `x` up to a multiple of `align` (a power of two), or `None` on overflow.
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// The payload offsets and the index offset for records of the given lengths, exactly as the
/// writer lays them out; `None` if the file would exceed `u64`.
pub fn layout(lengths: &[u64]) -> Option<(Vec<u64>, u64)> {
    let mut offsets = Vec::with_capacity(lengths.len());
    let mut pos = HEADER_LEN as u64;
    for &len in lengths {
        offsets.push(pos);
        pos = align_up(pos.checked_add(len)?, PAYLOAD_ALIGN)?;
    }
    Some((offsets, pos))
}

/// The total file length for an index at `index_offset` holding `count` entries.
pub fn file_len(index_offset: u64, count: u64) -> Option<u64> {
    index_offset
        .checked_add(count.checked_mul(INDEX_ENTRY_LEN as u64)?)?
        .checked_add(FOOTER_LEN as u64)
}

/// Checks that `entry` (record `i`) lies inside the payload area, starts aligned, and follows the
/// previous record's end `prev_end` without overlap. Returns the end of its payload.
pub fn check_entry(entry: &IndexEntry, prev_end: u64, index_offset: u64) -> Result<u64, String> {
    if !entry.offset.is_multiple_of(PAYLOAD_ALIGN) {
        return Err(format!(
            "payload offset {} is not a multiple of {PAYLOAD_ALIGN}",
            entry.offset
        ));
    }
    if entry.offset < prev_end {
        return Err(format!(
            "payload offset {} overlaps the previous record (ends at {prev_end})",
            entry.offset
        ));
    }
    let end = entry.offset.checked_add(entry.length).ok_or_else(|| {
        format!("payload offset {} + length {} overflows", entry.offset, entry.length)
    })?;
    if end > index_offset {
        return Err(format!(
            "payload [{}, {end}) runs past the payload area, which ends at {index_offset}",
            entry.offset
        ));
    }
    Ok(end)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_crc_covers_fields() {
        let h = Header {
            version: VERSION,
            flags: 0,
            record_count: 7,
            encoding: 2,
            payload_align: 64,
            index_offset: 4096,
        };
        let mut b = h.encode();
        assert_eq!(&b[..8], b"SPKNDATA");
        assert_eq!(Header::decode(&b), h);
        let (stored, computed) = Header::crcs(&b);
        assert_eq!(stored, computed);
        b[17] ^= 1;
        let (stored, computed) = Header::crcs(&b);
        assert_ne!(stored, computed);
    }

    #[test]
    fn entry_and_footer_round_trip() {
        let e = IndexEntry {
            offset: 128,
            length: 3072,
            label: 9,
            crc: 0xdead_beef,
            shape: [3, 32, 32],
        };
        assert_eq!(IndexEntry::decode(&e.encode()), e);
        let f = Footer { index_offset: 3264, record_count: 1, index_crc: 42 };
        let (g, magic) = Footer::decode(&f.encode());
        assert_eq!((g, magic), (f, FOOTER_MAGIC));
    }

    #[test]
    fn check_entry_names_each_violation() {
        let e = IndexEntry { offset: 64, length: 10, label: 0, crc: 0, shape: [1, 1, 10] };
        assert_eq!(check_entry(&e, 64, 128), Ok(74));
        assert!(
            check_entry(&IndexEntry { offset: 65, ..e }, 64, 128).unwrap_err().contains("multiple")
        );
        assert!(check_entry(&e, 70, 128).unwrap_err().contains("overlaps"));
        assert!(
            check_entry(&IndexEntry { length: 100, ..e }, 64, 128).unwrap_err().contains("past")
        );
        assert!(
            check_entry(&IndexEntry { length: u64::MAX, ..e }, 64, 128)
                .unwrap_err()
                .contains("overflows")
        );
    }
}
