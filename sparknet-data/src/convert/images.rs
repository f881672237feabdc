//! Image folders and Caffe list files to a dataset (Caffe's `convert_imageset`).
//!
//! Sources are either a class-per-folder tree (`root/<class>/<image>`, classes sorted by name and
//! numbered from 0, the ImageNet train layout) or a list file of `relative/path label` lines.
//! Images are decoded in parallel (rayon) and written in list order, so the output does not depend
//! on the thread count. Raw records hold BGR (or gray) CHW bytes, as Caffe stores them; encoded
//! records keep the file's bytes unless the image's size changes (or `gray` asks for one
//! channel), in which case the resized image is re-encoded (JPEG quality 95 for JPEG sources, PNG
//! otherwise). Every image is decoded in full once, so an undecodable or truncated file (a JPEG
//! whose last scan has no end-of-image marker) is caught here, not at training time.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};
use crate::format::Encoding;
use crate::manifest::{ChannelOrder, Manifest};
use crate::sampler::SplitMix64;
use crate::writer::{DatasetConfig, DatasetWriter};

/// One source image and its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageItem {
    /// Path of the image file.
    pub path: PathBuf,
    /// Class label.
    pub label: u32,
}

/// How images are resized before storing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Resize {
    /// Keep the size.
    #[default]
    None,
    /// Exactly `width x height` (Caffe's `--resize_width/--resize_height`).
    Exact {
        /// Target width.
        width: u32,
        /// Target height.
        height: u32,
    },
    /// Shorter side to `n`, keeping the aspect ratio (the usual ImageNet preparation).
    ShorterSide(u32),
}

/// Options of [`convert_images`].
#[derive(Clone, Debug)]
pub struct ImageOptions {
    /// Resize policy.
    pub resize: Resize,
    /// Keep JPEG/PNG bytes (`true`) or store raw CHW bytes.
    pub encoded: bool,
    /// Store one gray channel instead of three (Caffe's `--gray`).
    pub gray: bool,
    /// Shuffle the list from this seed before writing (Caffe's `--shuffle`).
    pub shuffle: Option<u64>,
    /// Records per shard.
    pub shard_size: usize,
    /// Skip unreadable images instead of failing.
    pub skip_corrupt: bool,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            resize: Resize::None,
            encoded: true,
            gray: false,
            shuffle: None,
            shard_size: 10_000,
            skip_corrupt: false,
        }
    }
}

/// The outcome of [`convert_images`].
#[derive(Debug)]
pub struct ImageReport {
    /// The committed manifest.
    pub manifest: Manifest,
    /// Errors of the images skipped (only with `skip_corrupt`).
    pub skipped: Vec<Error>,
}

pub(crate) fn is_image(p: &Path) -> bool {
    let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png"))
}

/// Lists a class-per-folder tree: class `k` is the `k`-th subdirectory in name order.
///
/// # Errors
/// [`Error::Io`] for unreadable directories, [`Error::BadSource`] when there is no class folder.
pub fn scan_folders(root: &Path) -> Result<(Vec<ImageItem>, Vec<String>)> {
    let mut classes: Vec<String> = Vec::new();
    for e in std::fs::read_dir(root).at(root)? {
        let e = e.at(root)?;
        if e.file_type().at(&e.path())?.is_dir() {
            classes.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    classes.sort();
    if classes.is_empty() {
        return Err(Error::BadSource {
            path: root.to_path_buf(),
            reason: "no class folders".into(),
        });
    }
    let mut items = Vec::new();
    for (k, c) in classes.iter().enumerate() {
        let dir = root.join(c);
        let mut files: Vec<PathBuf> = Vec::new();
        for e in std::fs::read_dir(&dir).at(&dir)? {
            let p = e.at(&dir)?.path();
            if p.is_file() && is_image(&p) {
                files.push(p);
            }
        }
        files.sort();
        items.extend(files.into_iter().map(|path| ImageItem { path, label: k as u32 }));
    }
    Ok((items, classes))
}

/// Reads a Caffe list file: one `relative/path label` per line (the label after the last space),
/// paths relative to `root`. Classes are `"0"..="max label"`.
///
/// # Errors
/// [`Error::BadSource`] naming the list file and line for a malformed line.
pub fn read_list(root: &Path, list: &Path) -> Result<(Vec<ImageItem>, Vec<String>)> {
    let text = std::fs::read_to_string(list).at(list)?;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| Error::BadSource {
            path: list.to_path_buf(),
            reason: format!("line {}: {why}: {line:?}", n + 1),
        };
        let (p, l) =
            line.rsplit_once(char::is_whitespace).ok_or_else(|| bad("expected `path label`"))?;
        let label: u32 = l.parse().map_err(|_| bad("label is not a non-negative integer"))?;
        items.push(ImageItem { path: root.join(p.trim()), label });
    }
    let max = items.iter().map(|i| i.label).max().unwrap_or(0);
    let classes =
        if items.is_empty() { Vec::new() } else { (0..=max).map(|k| k.to_string()).collect() };
    Ok((items, classes))
}

/// Output size for an image of `w x h` under `resize`.
pub fn target_size(resize: Resize, w: u32, h: u32) -> (u32, u32) {
    match resize {
        Resize::None => (w, h),
        Resize::Exact { width, height } => (width, height),
        Resize::ShorterSide(n) => {
            let s = w.min(h).max(1) as u64;
            let scale = |x: u32| ((x as u64 * n as u64 + s / 2) / s).max(1) as u32;
            (scale(w), scale(h))
        }
    }
}

/// Checks that a JPEG is complete: an end-of-image marker (`FF D9`) follows the start of its last
/// scan (`FF DA`). Neither pair can occur inside entropy-coded data (a data `FF` is stuffed as
/// `FF 00`), so a file cut anywhere after its headers fails. Decoders in lenient mode fill a
/// truncated scan with grey instead of failing, which is why the converters check this.
///
/// ```
/// use sparknet_data::convert::images::jpeg_is_complete;
/// assert!(jpeg_is_complete(&[0xff, 0xd8, 0xff, 0xda, 0, 3, 1, 2, 3, 0xff, 0xd9]));
/// assert!(!jpeg_is_complete(&[0xff, 0xd8, 0xff, 0xda, 0, 3, 1, 2, 3]));
/// ```
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|m| m == [0xff, 0xda]);
    match last_sos {
        Some(at) => bytes[at..].windows(2).any(|m| m == [0xff, 0xd9]),
        None => false,
    }
}

/// Prepares one record: (shape, payload). `Err` says why the image cannot be used.
pub fn prepare(
    bytes: Vec<u8>,
    opts: &ImageOptions,
) -> std::result::Result<([u32; 3], Vec<u8>), String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let fmt = image::guess_format(&bytes).map_err(|e| format!("unknown image format: {e}"))?;
    if fmt == image::ImageFormat::Jpeg && !jpeg_is_complete(&bytes) {
        return Err("truncated JPEG: no end-of-image marker after the last scan".into());
    }
    let img = image::load_from_memory_with_format(&bytes, fmt)
        .map_err(|e| format!("cannot decode: {e}"))?;
    let (w, h) = target_size(opts.resize, img.width(), img.height());
    let resized = (w, h) != (img.width(), img.height());
    let img = if resized { img.resize_exact(w, h, FilterType::Triangle) } else { img };
    let c: u32 = if opts.gray || (opts.encoded && !img.color().has_color()) { 1 } else { 3 };
    if opts.encoded {
        if !resized && !opts.gray {
            // The size is already right: keep the file's bytes (no re-encoding loss).
            return Ok(([c, h, w], bytes));
        }
        let mut out = Vec::new();
        let img = if opts.gray { image::DynamicImage::ImageLuma8(img.to_luma8()) } else { img };
        let res = if fmt == image::ImageFormat::Jpeg {
            let img = if opts.gray { img } else { image::DynamicImage::ImageRgb8(img.to_rgb8()) };
            img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95))
        } else {
            img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        };
        res.map_err(|e| format!("cannot re-encode: {e}"))?;
        return Ok(([c, h, w], out));
    }
    let n = (w * h) as usize;
    if opts.gray {
        return Ok(([1, h, w], img.to_luma8().into_raw()));
    }
    let rgb = img.to_rgb8();
    let mut chw = vec![0u8; 3 * n];
    for (i, p) in rgb.as_raw().chunks_exact(3).enumerate() {
        chw[i] = p[2];
        chw[n + i] = p[1];
        chw[2 * n + i] = p[0];
    }
    Ok(([3, h, w], chw))
}

/// Converts `items` into a dataset at `out`, committed atomically (see [`DatasetWriter`]): on an
/// error nothing new is published and a dataset already at `out` stays as it was.
///
/// # Errors
/// [`Error::BadImage`] naming the image file and its class (`classes[label]`, or the label when
/// the list is shorter) for an unreadable, truncated or undecodable image (unless
/// `skip_corrupt`); writer errors.
pub fn convert_images(
    mut items: Vec<ImageItem>,
    classes: Vec<String>,
    out: &Path,
    opts: &ImageOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ImageReport> {
    if let Some(seed) = opts.shuffle {
        let mut rng = SplitMix64::new(seed);
        for i in (1..items.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
    let class_of =
        |label: u32| classes.get(label as usize).cloned().unwrap_or_else(|| label.to_string());
    let (encoding, channel_order) = match (opts.encoded, opts.gray) {
        (true, false) => (Encoding::Encoded, ChannelOrder::Bgr),
        (true, true) => (Encoding::Encoded, ChannelOrder::Gray),
        (false, false) => (Encoding::RawU8, ChannelOrder::Bgr),
        (false, true) => (Encoding::RawU8, ChannelOrder::Gray),
    };
    let config = DatasetConfig {
        encoding,
        channel_order,
        classes: classes.clone(),
        shard_size: opts.shard_size,
    };
    let mut w = DatasetWriter::create(out, config)?;
    let mut skipped = Vec::new();
    let chunk = 64 * rayon::current_num_threads();
    for part in items.chunks(chunk) {
        let done: Vec<_> = part
            .par_iter()
            .map(|it| {
                let bytes = std::fs::read(&it.path).map_err(|e| format!("cannot read: {e}"))?;
                prepare(bytes, opts)
            })
            .collect();
        for (it, r) in part.iter().zip(done) {
            match r {
                Ok((shape, payload)) => w.append(it.label, shape, &payload)?,
                Err(reason) => {
                    let e = Error::BadImage {
                        path: it.path.clone(),
                        class: class_of(it.label),
                        reason,
                    };
                    if !opts.skip_corrupt {
                        return Err(e);
                    }
                    skipped.push(e);
                }
            }
        }
        progress(part.len() as u64);
    }
    Ok(ImageReport { manifest: w.finish()?, skipped })
}
