//! Write-then-read round trips for every encoding, and the atomic-replace behaviour.

use sparknet_data::{ColorMode, Dataset, Decoder, Encoding, OpenOptions};

use crate::common::{Rec, data_dir, raw_records, write};

#[test]
fn raw_u8_round_trip_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let recs = raw_records(23);
    let m = write(dir.path(), Encoding::RawU8, 5, &recs);
    assert_eq!((m.records, m.shards.len(), m.shape), (23, 5, Some([3, 4, 5])));
    let ds = Dataset::open_mapped(dir.path()).unwrap();
    assert_eq!(ds.len(), 23);
    for (i, (label, shape, payload)) in recs.iter().enumerate() {
        let r = ds.get(i).unwrap();
        assert_eq!(
            (r.label, r.shape, r.encoding, r.payload),
            (*label, *shape, Encoding::RawU8, &payload[..])
        );
    }
    // Zero copy: every payload is a slice of its shard's map, 64-byte aligned in memory.
    for i in 0..ds.len() {
        let (k, _) = ds.locate(i).unwrap();
        let map = ds.shards()[k].bytes().as_ptr_range();
        let p = ds.get(i).unwrap().payload;
        assert!(map.contains(&p.as_ptr()) && p.as_ptr_range().end <= map.end);
        assert_eq!(p.as_ptr() as usize % 64, 0);
    }
    let collected: Vec<u32> = ds.iter().map(|r| r.unwrap().label).collect();
    assert_eq!(collected, recs.iter().map(|r| r.0).collect::<Vec<_>>());
    // The heap-backed reader sees the same bytes.
    let heap = OpenOptions::new().in_memory(true).open(dir.path()).unwrap();
    assert_eq!(heap.get(17).unwrap().payload, ds.get(17).unwrap().payload);
    assert!(matches!(
        ds.get(23),
        Err(sparknet_data::Error::IndexOutOfRange { index: 23, len: 23 })
    ));
}

#[test]
fn f32_round_trip_keeps_every_bit() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<Vec<f32>> = (0..4)
        .map(|i| (0..2 * 3 * 3).map(|k| (i * 100 + k) as f32 * -0.37 + f32::EPSILON).collect())
        .collect();
    let mut vals = values.clone();
    vals[3][0] = f32::MIN_POSITIVE / 2.0; // a subnormal survives too
    let recs: Vec<Rec> = vals
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32, [2, 3, 3], v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    write(dir.path(), Encoding::F32, 3, &recs);
    let ds = Dataset::open_mapped(dir.path()).unwrap();
    let mut d = Decoder::new();
    for (i, v) in vals.iter().enumerate() {
        let r = ds.get(i).unwrap();
        assert_eq!(r.encoding, Encoding::F32);
        assert_eq!(r.payload.as_ptr() as usize % 4, 0, "payloads are aligned for f32");
        let px = d.pixels(&r, ColorMode::Native).unwrap();
        let got: Vec<f32> = (0..2)
            .flat_map(|c| (0..3).flat_map(move |y| (0..3).map(move |x| (c, y, x))))
            .map(|(c, y, x)| px.at(c, y, x))
            .collect();
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn encoded_jpeg_and_png_are_kept_byte_for_byte_and_decode_to_bgr() {
    let Some(data) = data_dir("encoded_round_trip") else { return };
    let jpeg = std::fs::read(data.join("images/caffe_examples/cat.jpg")).unwrap();
    let png = std::fs::read(data.join("images/cifar10_style_samples/cat10.png")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let recs: Vec<Rec> = vec![(3, [3, 0, 0], jpeg.clone()), (5, [3, 0, 0], png.clone())];
    write(dir.path(), Encoding::Encoded, 10, &recs);
    let ds = Dataset::open_mapped(dir.path()).unwrap();
    assert_eq!(ds.get(0).unwrap().payload, &jpeg[..]);
    assert_eq!(ds.get(1).unwrap().payload, &png[..]);
    let mut d = Decoder::new();
    let rec = ds.get(1).unwrap();
    let px = d.pixels(&rec, ColorMode::Native).unwrap();
    let reference = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!((px.c, px.h, px.w), (3, reference.height() as usize, reference.width() as usize));
    for (x, y, p) in reference.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        assert_eq!(
            [px.at(0, y, x), px.at(1, y, x), px.at(2, y, x)],
            [p[2] as f32, p[1] as f32, p[0] as f32]
        );
    }
}

#[test]
fn rewriting_replaces_the_old_generation_and_an_abandoned_writer_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), Encoding::RawU8, 4, &raw_records(10));
    let second = write(dir.path(), Encoding::RawU8, 3, &raw_records(7));
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".spk"))
        .collect();
    assert_eq!(files.len(), second.shards.len(), "old shards removed: {files:?}");
    assert!(first.shards.iter().all(|s| !files.contains(&s.file)));
    // A writer dropped before `finish` leaves the committed dataset and no stray files.
    {
        let config = sparknet_data::DatasetConfig {
            encoding: Encoding::RawU8,
            channel_order: sparknet_data::ChannelOrder::Bgr,
            classes: Vec::new(),
            shard_size: 2,
        };
        let mut w = sparknet_data::DatasetWriter::create(dir.path(), config).unwrap();
        for (l, s, p) in raw_records(5) {
            w.append(l, s, &p).unwrap();
        }
    }
    let ds = Dataset::open_mapped(dir.path()).unwrap();
    assert_eq!(ds.len(), 7);
    let n = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(n, second.shards.len() + 1, "only the shards and the manifest remain");
}

#[test]
fn writer_rejects_bad_payloads_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let config = sparknet_data::DatasetConfig {
        encoding: Encoding::RawU8,
        channel_order: sparknet_data::ChannelOrder::Gray,
        classes: vec!["a".into(), "b".into()],
        shard_size: 2,
    };
    let mut w = sparknet_data::DatasetWriter::create(dir.path(), config).unwrap();
    let e = w.append(0, [1, 2, 2], &[0; 3]).unwrap_err();
    assert!(e.to_string().contains("must be 4 bytes"), "{e}");
    let e = w.append(2, [1, 2, 2], &[0; 4]).unwrap_err();
    assert!(e.to_string().contains("label 2 is out of range for 2 classes"), "{e}");
}

#[test]
fn jpeg_decoding_matches_the_image_crate_for_color_and_gray() {
    let Some(data) = data_dir("jpeg_decode") else { return };
    let mut d = Decoder::new();
    for file in ["caffe_examples/cat.jpg", "caffe_examples/cat_gray.jpg", "mtcnn_faces/test2.jpg"] {
        let bytes = std::fs::read(data.join("images").join(file)).unwrap();
        let reference = image::load_from_memory(&bytes).unwrap();
        let rec = sparknet_data::Record {
            label: 0,
            shape: [0, 0, 0],
            encoding: Encoding::Encoded,
            payload: &bytes,
        };
        let px = d.pixels(&rec, ColorMode::Native).unwrap();
        assert_eq!(
            (px.h, px.w),
            (reference.height() as usize, reference.width() as usize),
            "{file}"
        );
        if reference.color().has_color() {
            assert_eq!(px.c, 3, "{file}");
            for (x, y, p) in reference.to_rgb8().enumerate_pixels() {
                let (x, y) = (x as usize, y as usize);
                let got = [px.at(0, y, x), px.at(1, y, x), px.at(2, y, x)];
                assert_eq!(got, [p[2] as f32, p[1] as f32, p[0] as f32], "{file} at ({x}, {y})");
            }
        } else {
            assert_eq!(px.c, 1, "{file}");
            for (x, y, p) in reference.to_luma8().enumerate_pixels() {
                assert_eq!(px.at(0, y as usize, x as usize), p[0] as f32, "{file} at ({x}, {y})");
            }
        }
        // A truncated file is an error or a decodable prefix, never a panic.
        let cut = sparknet_data::Record { payload: &bytes[..bytes.len() / 3], ..rec };
        let _ = d.pixels(&cut, ColorMode::Native);
        let header_only = sparknet_data::Record { payload: &bytes[..20], ..rec };
        assert!(d.pixels(&header_only, ColorMode::Native).is_err(), "{file}");
    }
}
