//! compute_mean and the .binaryproto file.

use sparknet_data::{BlobProto, Dataset, Encoding, MeanImage, compute_mean};

use crate::common::{Rec, write};

#[test]
fn mean_of_raw_records_is_exact_and_round_trips_through_binaryproto() {
    let dir = tempfile::tempdir().unwrap();
    // Three 2x1x2 records; the mean of (k, 2k, 3k, 255 - k) for k = 1, 2, 6 is (3, 6, 9, 252).
    let recs: Vec<Rec> =
        [1u8, 2, 6].iter().map(|&k| (0, [2, 1, 2], vec![k, 2 * k, 3 * k, 255 - k])).collect();
    write(dir.path(), Encoding::RawU8, 2, &recs);
    let ds = Dataset::open_mapped(dir.path()).unwrap();
    let report = compute_mean(&ds, false, &|_| {}).unwrap();
    assert_eq!(report.records, 3);
    assert_eq!(
        report.blob,
        BlobProto { shape: vec![1, 2, 1, 2], data: vec![3.0, 6.0, 9.0, 252.0] }
    );
    let path = dir.path().join("mean.binaryproto");
    report.blob.write(&path).unwrap();
    let back = BlobProto::read(&path).unwrap();
    assert_eq!(back, report.blob);
    let m = MeanImage::read(&path).unwrap();
    assert_eq!((m.c, m.h, m.w, m.data.len()), (2, 1, 2, 4));
}

#[test]
fn differing_shapes_are_an_error_naming_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let recs: Vec<Rec> = vec![(0, [1, 2, 2], vec![0; 4]), (0, [1, 2, 3], vec![0; 6])];
    write(dir.path(), Encoding::RawU8, 1, &recs);
    let ds = Dataset::open_mapped(dir.path()).unwrap();
    let e = compute_mean(&ds, true, &|_| {}).unwrap_err();
    assert!(e.to_string().contains("record 0") && e.to_string().contains("differs"), "{e}");
}
