//! Fuzz bodies for sparknet-data's readers: the shard reader (validation, every record read with
//! and without its CRC check and decoded to pixels in each colour mode) with the manifest parser,
//! and the IDX, CIFAR-10 and mean-file readers (after gunzipping, as the converters do). Each body
//! panics only when a reader breaks its contract: a panic inside a reader, or an error that does
//! not name the file it is about.

use std::path::Path;

use sparknet_data::convert::cifar::parse_batch;
use sparknet_data::convert::gunzip_if_gz;
use sparknet_data::convert::mnist::{parse_idx_images, parse_idx_labels};
use sparknet_data::{
    BlobProto, ChannelOrder, ColorMode, DatasetConfig, DatasetWriter, Decoder, Encoding, Manifest,
    MeanImage, Shard, Transformer,
};

/// Panics unless `msg` starts with `path` (every reader error names its file first).
fn names(msg: &str, path: &Path) {
    let p = path.display().to_string();
    assert!(msg.starts_with(&p), "error does not name {p}: {msg}");
}

/// Records read per shard (a fuzzed index may claim many).
const MAX_RECORDS: usize = 64;

/// The shard reader, and the same bytes as a manifest.
pub fn shard(data: &[u8]) {
    let path = Path::new("fuzz.spk");
    match Shard::from_bytes(path, data.to_vec()) {
        Err(e) => names(&e.to_string(), path),
        Ok(shard) => {
            let transformer = Transformer::new(Default::default(), sparknet_data::Phase::Test)
                .expect("default transform");
            let mut d = Decoder::new();
            for i in 0..shard.len().min(MAX_RECORDS) {
                if let Err(e) = shard.get(i) {
                    names(&e.to_string(), path);
                }
                let rec = shard.get_unverified(i).expect("index below len");
                for mode in [ColorMode::Native, ColorMode::Color, ColorMode::Gray] {
                    if let Ok(px) = d.pixels(&rec, mode) {
                        let [c, h, w] = transformer.output_shape(px.c, px.h, px.w);
                        if c * h * w <= 1 << 22 {
                            let aug = sparknet_data::Augment { h_off: 0, w_off: 0, mirror: false };
                            let _ = transformer.apply(&px, aug, &mut vec![0f32; c * h * w]);
                        }
                    }
                }
            }
            assert!(shard.get(shard.len()).is_err(), "a record past the end");
        }
    }
    let path = Path::new("manifest.json");
    if let Err(e) = Manifest::parse(data, path) {
        names(&e.to_string(), path);
    }
}

/// The converters' source readers: IDX images and labels, a CIFAR-10 batch, a mean file.
pub fn idx_cifar(data: &[u8]) {
    let path = Path::new("fuzz-source");
    let bytes = match gunzip_if_gz(data.to_vec(), path) {
        Err(e) => return names(&e.to_string(), path),
        Ok(b) => b,
    };
    match parse_idx_images(bytes.clone(), path) {
        Err(e) => names(&e.to_string(), path),
        Ok(images) => {
            for i in 0..images.len().min(MAX_RECORDS) {
                assert_eq!(images.image(i).len(), images.rows * images.cols);
            }
        }
    }
    if let Err(e) = parse_idx_labels(bytes.clone(), path) {
        names(&e.to_string(), path);
    }
    if let Err(e) = parse_batch(bytes.clone(), path) {
        names(&e.to_string(), path);
    }
    if let Ok(blob) = BlobProto::decode(&bytes)
        && let Ok(mean) = MeanImage::from_blob(&blob)
    {
        assert_eq!(mean.data.len(), mean.c * mean.h * mean.w);
    }
}

/// Valid inputs for both bodies: a raw and an encoded shard, a manifest, IDX files, a CIFAR-10
/// batch and a mean file, each also gzipped where the converters accept gzip.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut out = Vec::new();
    for (k, encoding) in [Encoding::RawU8, Encoding::F32, Encoding::Encoded].into_iter().enumerate()
    {
        let sub = dir.path().join(format!("ds{k}"));
        let config = DatasetConfig {
            encoding,
            channel_order: ChannelOrder::Bgr,
            classes: Vec::new(),
            shard_size: 100,
        };
        let mut w = DatasetWriter::create(&sub, config).expect("writer");
        for i in 0..3u32 {
            let payload = match encoding {
                Encoding::RawU8 => (0..2 * 3 * 4).map(|x| (x as u32 * 7 + i) as u8).collect(),
                Encoding::F32 => {
                    (0..2 * 3 * 4).flat_map(|x| (x as f32 - i as f32).to_le_bytes()).collect()
                }
                Encoding::Encoded => png(i),
            };
            let shape = if encoding == Encoding::Encoded { [3, 3, 4] } else { [2, 3, 4] };
            w.append(i, shape, &payload).expect("append");
        }
        let m = w.finish().expect("finish");
        out.push(("shard", std::fs::read(sub.join(&m.shards[0].file)).expect("shard")));
        out.push(("shard", std::fs::read(sub.join("manifest.json")).expect("manifest")));
    }
    let mut idx = Vec::new();
    for v in [0x0803u32, 2, 3, 3] {
        idx.extend_from_slice(&v.to_be_bytes());
    }
    idx.extend(0..18u8);
    let mut labels = Vec::new();
    for v in [0x0801u32, 2] {
        labels.extend_from_slice(&v.to_be_bytes());
    }
    labels.extend([3u8, 9]);
    let mut cifar = vec![7u8];
    cifar.extend((0..3072).map(|x| x as u8));
    let mean = BlobProto::mean(2, 2, 3, (0..12).map(|x| x as f32).collect()).encode();
    for b in [idx, labels, cifar, mean] {
        out.push(("idx_cifar", gzip(&b)));
        out.push(("idx_cifar", b));
    }
    out
}

fn png(i: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8, y as u8, i as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("png");
    out.into_inner()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).expect("gzip");
    e.finish().expect("gzip")
}
