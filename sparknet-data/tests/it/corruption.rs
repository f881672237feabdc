//! Damaged shards: each kind of damage gives its own error naming the shard (and record).

use std::path::Path;

use sparknet_data::format::{FOOTER_LEN, HEADER_LEN, Header, INDEX_ENTRY_LEN, IndexEntry};
use sparknet_data::{Dataset, Encoding, Error, OpenOptions, Shard};

use crate::common::{only_shard, raw_records, write};

fn dataset_with_one_shard(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), Encoding::RawU8, 100, &raw_records(n));
    let shard = only_shard(dir.path(), &m);
    (dir, shard)
}

fn patch(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

#[test]
fn flipped_payload_byte_is_a_crc_mismatch_naming_shard_and_record() {
    let (dir, shard) = dataset_with_one_shard(6);
    let at =
        Shard::open(&shard, &OpenOptions::new()).unwrap().entry(4).unwrap().offset as usize + 17;
    patch(&shard, |b| b[at] ^= 0x40);
    let ds = Dataset::open_mapped(dir.path()).unwrap();
    assert!(ds.get(3).is_ok());
    match ds.get(4) {
        Err(Error::CrcMismatch { path, record, stored, computed }) => {
            assert_eq!((path, record), (shard.clone(), 4));
            assert_ne!(stored, computed);
        }
        other => panic!("expected CrcMismatch, got {other:?}"),
    }
    let msg = ds.get(4).unwrap_err().to_string();
    assert!(msg.contains(&*shard.to_string_lossy()) && msg.contains("record 4"), "{msg}");
    assert!(matches!(ds.verify(false), Err(Error::CrcMismatch { record: 4, .. })));
    let report = ds.verify(true).unwrap();
    assert_eq!((report.records, report.corrupt.len()), (6, 1));
    // With CRC checks off the bytes are handed out as they are.
    let lax = OpenOptions::new().verify_crc(false).open(dir.path()).unwrap();
    assert!(lax.get(4).is_ok());
}

#[test]
fn truncated_shard_is_reported_as_truncated() {
    for cut in [1usize, FOOTER_LEN, 200, 10_000] {
        let (dir, shard) = dataset_with_one_shard(6);
        let len = std::fs::metadata(&shard).unwrap().len() as usize;
        patch(&shard, |b| b.truncate(len.saturating_sub(cut)));
        match Dataset::open_mapped(dir.path()) {
            Err(Error::Truncated { path, what }) => {
                assert_eq!(path, shard);
                assert!(what.contains("bytes"), "{what}");
            }
            other => panic!("cut {cut}: expected Truncated, got {:?}", other.err()),
        }
    }
}

#[test]
fn damaged_index_fails_its_crc() {
    let (dir, shard) = dataset_with_one_shard(6);
    let h = Shard::open(&shard, &OpenOptions::new()).unwrap();
    let index_at =
        Header::decode(h.bytes()[..HEADER_LEN].try_into().unwrap()).index_offset as usize;
    drop(h);
    patch(&shard, |b| b[index_at + 2 * INDEX_ENTRY_LEN + 9] ^= 1);
    match Dataset::open_mapped(dir.path()) {
        Err(Error::CorruptIndex { path, reason }) => {
            assert_eq!(path, shard);
            assert!(reason.contains("index CRC-32C"), "{reason}");
        }
        other => panic!("expected CorruptIndex, got {:?}", other.err()),
    }
}

#[test]
fn index_entry_pointing_outside_the_payload_area_names_the_record() {
    // The damage is consistent with the index CRC (as a buggy writer would produce), so only the
    // bounds check can catch it.
    let (dir, shard) = dataset_with_one_shard(6);
    patch(&shard, |b| {
        let head: [u8; HEADER_LEN] = b[..HEADER_LEN].try_into().unwrap();
        let idx = Header::decode(&head).index_offset as usize;
        let at = idx + 5 * INDEX_ENTRY_LEN;
        let mut e = IndexEntry::decode(&b[at..at + INDEX_ENTRY_LEN]);
        e.offset += 64 * 1000;
        b[at..at + INDEX_ENTRY_LEN].copy_from_slice(&e.encode());
        let crc = crc32c::crc32c(&b[idx..idx + 6 * INDEX_ENTRY_LEN]);
        let f = b.len() - FOOTER_LEN;
        b[f + 16..f + 20].copy_from_slice(&crc.to_le_bytes());
    });
    match Dataset::open_mapped(dir.path()) {
        Err(Error::CorruptIndex { path, reason }) => {
            assert_eq!(path, shard);
            assert!(
                reason.starts_with("record 5:") && reason.contains("past the payload area"),
                "{reason}"
            );
        }
        other => panic!("expected CorruptIndex, got {:?}", other.err()),
    }
}

#[test]
fn bad_magic_and_bad_version_are_named() {
    let (dir, shard) = dataset_with_one_shard(2);
    patch(&shard, |b| b[..4].copy_from_slice(b"GIF8"));
    match Dataset::open_mapped(dir.path()) {
        Err(Error::BadMagic { path, found }) => {
            assert_eq!((path, &found[..4]), (shard.clone(), &b"GIF8"[..]))
        }
        other => panic!("expected BadMagic, got {:?}", other.err()),
    }

    let (dir, shard) = dataset_with_one_shard(2);
    patch(&shard, |b| {
        let head: [u8; HEADER_LEN] = b[..HEADER_LEN].try_into().unwrap();
        let h = Header { version: 9, ..Header::decode(&head) };
        b[..HEADER_LEN].copy_from_slice(&h.encode());
    });
    match Dataset::open_mapped(dir.path()) {
        Err(Error::BadVersion { path, found, supported }) => {
            assert_eq!((path, found, supported), (shard, 9, 1))
        }
        other => panic!("expected BadVersion, got {:?}", other.err()),
    }
}

#[test]
fn flipped_header_byte_fails_the_header_crc() {
    let (dir, shard) = dataset_with_one_shard(2);
    patch(&shard, |b| b[20] ^= 0x01); // inside record_count
    assert!(
        matches!(Dataset::open_mapped(dir.path()), Err(Error::CorruptHeader { ref path, .. }) if *path == shard)
    );
}

#[test]
fn tiny_or_empty_files_are_truncated_not_panics() {
    let (dir, shard) = dataset_with_one_shard(1);
    for len in [0usize, 7, HEADER_LEN, HEADER_LEN + 5] {
        patch(&shard, |b| b.truncate(len));
        let e = Dataset::open_mapped(dir.path()).err().expect("must fail");
        assert!(matches!(e, Error::Truncated { .. }), "len {len}: {e}");
    }
}

#[test]
fn manifest_problems_are_reported() {
    let (dir, _) = dataset_with_one_shard(3);
    let mpath = dir.path().join("manifest.json");
    let text = std::fs::read_to_string(&mpath).unwrap();
    std::fs::write(&mpath, text.replace("\"records\": 3,", "\"records\": 4,")).unwrap();
    assert!(matches!(Dataset::open_mapped(dir.path()), Err(Error::Manifest { .. })));
    std::fs::write(&mpath, "{ not json").unwrap();
    assert!(matches!(Dataset::open_mapped(dir.path()), Err(Error::Manifest { .. })));
    std::fs::remove_file(&mpath).unwrap();
    assert!(matches!(Dataset::open_mapped(dir.path()), Err(Error::Io { .. })));
}

#[test]
fn label_out_of_range_names_shard_and_record() {
    let (dir, shard) = dataset_with_one_shard(4); // labels 0..=3
    let mpath = dir.path().join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    m["classes"] = serde_json::json!(["a", "b", "c"]);
    std::fs::write(&mpath, m.to_string()).unwrap();
    match Dataset::open_mapped(dir.path()) {
        Err(Error::BadRecord { path, record, reason }) => {
            assert_eq!((path, record), (shard, 3));
            assert!(reason.contains("label 3 is out of range for 3 classes"), "{reason}");
        }
        other => panic!("expected BadRecord, got {:?}", other.err()),
    }
}
