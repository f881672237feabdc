//! An ImageNet-like set for machines without ImageNet: deterministic colour JPEGs (256 x 256 by
//! default), `N` classes whose content a net can learn, written in the converter's layout
//! (`train/`, `val/`, `synsets.txt`; see [`imagenet`](crate::convert::imagenet)).
//!
//! Each class has a fixed look drawn from its index alone: a pattern family (stripes, checks,
//! rings or dots), a period, an angle and two colours (hues spaced by the golden ratio, so nearby
//! classes differ in colour). Each image varies it: phase and centre shifts, angle and period
//! jitter, brightness and contrast, and per-pixel noise. The class is therefore readable from any
//! 227 x 227 crop and from its mirror image, while no two images are equal. Every image is a pure
//! function of `(class, classes, seed, index, side)`, so a set is the same at any thread count.
//!
//! ```
//! use sparknet_data::convert::synthetic_imagenet::render_image;
//! let a = render_image(3, 10, 0, 5, 64);
//! assert_eq!(a.len(), 64 * 64 * 3); // interleaved RGB
//! assert_eq!(a, render_image(3, 10, 0, 5, 64));
//! assert_ne!(a, render_image(3, 10, 0, 6, 64)); // another image of the same class
//! ```

use std::path::Path;

use rayon::prelude::*;

use crate::convert::imagenet::{ImagenetReport, SYNSETS_FILE, Split, TRAIN_DIR, VAL_DIR};
use crate::convert::images::ImageReport;
use crate::error::{Error, Result};
use crate::format::Encoding;
use crate::manifest::ChannelOrder;
use crate::sampler::{SplitMix64, mix};
use crate::writer::{DatasetConfig, DatasetWriter};

/// Settings of [`synth_imagenet`].
#[derive(Clone, Debug)]
pub struct SynthOptions {
    /// Number of classes (at least 1).
    pub classes: usize,
    /// Train images per class.
    pub per_class: usize,
    /// Val images per class (0: no val set).
    pub val_per_class: usize,
    /// Seed of the per-image variations (the class looks do not depend on it).
    pub seed: u64,
    /// Image side in pixels (default 256).
    pub side: u32,
    /// JPEG quality (default 90).
    pub quality: u8,
    /// Records per shard (default 10 000).
    pub shard_size: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            classes: 10,
            per_class: 100,
            val_per_class: 10,
            seed: 0,
            side: 256,
            quality: 90,
            shard_size: 10_000,
        }
    }
}

/// Name of synthetic class `k` (synset-like, so the lists sort in label order).
pub fn class_name(k: usize) -> String {
    format!("s{k:08}")
}

fn unit(rng: &mut SplitMix64) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

fn between(rng: &mut SplitMix64, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * unit(rng)
}

/// HSV (all in 0..1) to RGB in 0..255.
fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match i as u32 % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [r * 255.0, g * 255.0, b * 255.0]
}

/// A class's fixed look.
struct Look {
    family: u32,
    period: f32,
    angle: f32,
    fg: [f32; 3],
    bg: [f32; 3],
}

fn look(class: usize, classes: usize) -> Look {
    let mut rng = SplitMix64::new(mix(&[0x05ee_dc1a_55e5, class as u64]));
    // Golden-ratio hue spacing, plus a small class-specific offset.
    let hue = (class as f32 * 0.618_034 + 0.05 * unit(&mut rng)).fract();
    let family = (class % 4) as u32;
    // Classes sharing a family and a similar hue still differ in period and angle.
    let band = (class / 4) as f32 / (classes.div_ceil(4).max(1)) as f32;
    Look {
        family,
        period: 14.0 + 40.0 * ((band * 2.618_034 + 0.3 * unit(&mut rng)).fract()),
        angle: std::f32::consts::PI * ((band * 1.618_034 + 0.25 * unit(&mut rng)).fract()),
        fg: hsv(hue, between(&mut rng, 0.55, 0.95), between(&mut rng, 0.75, 1.0)),
        bg: hsv(
            hue + between(&mut rng, 0.35, 0.65),
            between(&mut rng, 0.3, 0.8),
            between(&mut rng, 0.15, 0.45),
        ),
    }
}

/// Renders image `index` of class `class` (of `classes`) as `side x side` interleaved RGB bytes.
pub fn render_image(class: usize, classes: usize, seed: u64, index: u64, side: u32) -> Vec<u8> {
    let l = look(class, classes);
    let mut rng = SplitMix64::new(mix(&[seed, class as u64, index]));
    let n = side as usize;
    let angle = l.angle + between(&mut rng, -0.12, 0.12);
    let period = l.period * between(&mut rng, 0.9, 1.1);
    let (px, py) = (between(&mut rng, 0.0, period), between(&mut rng, 0.0, period));
    let (cx, cy) = (n as f32 * between(&mut rng, 0.3, 0.7), n as f32 * between(&mut rng, 0.3, 0.7));
    let gain = between(&mut rng, 0.8, 1.15);
    let contrast = between(&mut rng, 0.75, 1.0);
    let (cs, sn) = (angle.cos(), angle.sin());
    let inv = 1.0 / period;
    let mid = [0, 1, 2].map(|c| (l.fg[c] + l.bg[c]) * 0.5);
    let fg = [0, 1, 2].map(|c| (mid[c] + (l.fg[c] - mid[c]) * contrast) * gain);
    let bg = [0, 1, 2].map(|c| (mid[c] + (l.bg[c] - mid[c]) * contrast) * gain);
    let mut noise = rng.next_u64() as u32 | 1;
    let mut out = vec![0u8; n * n * 3];
    for (y, row) in out.chunks_exact_mut(n * 3).enumerate() {
        let yf = y as f32 - cy;
        for (x, p) in row.chunks_exact_mut(3).enumerate() {
            let xf = x as f32 - cx;
            // Rotated coordinates in periods.
            let u = (xf * cs + yf * sn + px) * inv;
            let v = (-xf * sn + yf * cs + py) * inv;
            // Triangle waves in 0..1, sharpened into soft-edged bands.
            let tri = |t: f32| (2.0 * (t - t.floor()) - 1.0).abs();
            let band = |t: f32| ((tri(t) - 0.5) * 4.0).clamp(-1.0, 1.0) * 0.5 + 0.5;
            let a = match l.family {
                0 => band(u),
                1 => {
                    let (s, t) = (band(u) - 0.5, band(v) - 0.5);
                    (s * t * 4.0).clamp(-1.0, 1.0) * 0.5 + 0.5
                }
                2 => band((xf * xf + yf * yf).sqrt() * inv),
                _ => {
                    let (du, dv) = (u - u.floor() - 0.5, v - v.floor() - 0.5);
                    ((0.3 - (du * du + dv * dv).sqrt()) * 12.0).clamp(0.0, 1.0)
                }
            };
            for c in 0..3 {
                // xorshift32 noise, about +-14 levels.
                noise ^= noise << 13;
                noise ^= noise >> 17;
                noise ^= noise << 5;
                let e = ((noise >> 24) as f32 - 127.5) * 0.11;
                p[c] = (bg[c] + (fg[c] - bg[c]) * a + e).clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Renders and JPEG-encodes one image.
pub fn render_jpeg(
    class: usize,
    classes: usize,
    seed: u64,
    index: u64,
    side: u32,
    quality: u8,
) -> std::result::Result<Vec<u8>, String> {
    let rgb = render_image(class, classes, seed, index, side);
    let mut bytes = Vec::with_capacity(rgb.len() / 8);
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
    image::ImageEncoder::write_image(enc, &rgb, side, side, image::ExtendedColorType::Rgb8)
        .map_err(|e| format!("cannot encode JPEG: {e}"))?;
    Ok(bytes)
}

/// Writes one split: `per_class` images of every class, in a seeded shuffled order.
fn write_split(
    dir: &Path,
    opts: &SynthOptions,
    per_class: usize,
    index_base: u64,
    shuffle: Option<u64>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ImageReport> {
    let classes: Vec<String> = (0..opts.classes).map(class_name).collect();
    let config = DatasetConfig {
        encoding: Encoding::Encoded,
        channel_order: ChannelOrder::Bgr,
        classes,
        shard_size: opts.shard_size,
    };
    let mut w = DatasetWriter::create(dir, config)?;
    // Round-robin over the classes, then (train) a Fisher-Yates shuffle.
    let mut order: Vec<(usize, u64)> =
        (0..per_class as u64).flat_map(|i| (0..opts.classes).map(move |k| (k, i))).collect();
    if let Some(seed) = shuffle {
        let mut rng = SplitMix64::new(mix(&[seed, 0x0541_7f1e]));
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
    }
    let chunk = 32 * rayon::current_num_threads().max(1);
    let side = opts.side;
    for part in order.chunks(chunk) {
        let done: Vec<_> = part
            .par_iter()
            .map(|&(k, i)| {
                render_jpeg(k, opts.classes, opts.seed, index_base + i, side, opts.quality)
            })
            .collect();
        for (&(k, i), r) in part.iter().zip(done) {
            let bytes = r.map_err(|reason| Error::BadImage {
                path: dir.join(format!("{}-{i}", class_name(k))),
                class: class_name(k),
                reason,
            })?;
            w.append(k as u32, [3, side, side], &bytes)?;
        }
        progress(part.len() as u64);
    }
    Ok(ImageReport { manifest: w.finish()?, skipped: Vec::new() })
}

/// Writes a synthetic ImageNet-like set at `out`: `out/train` (`classes x per_class` records,
/// shuffled), `out/val` (`classes x val_per_class`, when non-zero) and `out/synsets.txt`, each
/// committed atomically. `progress(split, n)` is called as images are done.
///
/// ```
/// use sparknet_data::Dataset;
/// use sparknet_data::convert::synthetic_imagenet::{SynthOptions, synth_imagenet};
///
/// let out = tempfile::tempdir()?;
/// let opts = SynthOptions { classes: 3, per_class: 4, val_per_class: 1, side: 32, ..Default::default() };
/// let report = synth_imagenet(out.path(), &opts, &|_, _| {})?;
/// assert_eq!(report.synsets, ["s00000000", "s00000001", "s00000002"]);
/// let train = Dataset::open_mapped(&out.path().join("train"))?;
/// assert_eq!((train.len(), train.get(0)?.shape), (12, [3, 32, 32]));
/// assert_eq!(Dataset::open_mapped(&out.path().join("val"))?.len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] for zero classes, zero train images, a side below 8 or a quality
/// outside 1..=100; writer errors.
pub fn synth_imagenet(
    out: &Path,
    opts: &SynthOptions,
    progress: &(dyn Fn(Split, u64) + Sync),
) -> Result<ImagenetReport> {
    if opts.classes == 0 || opts.per_class == 0 {
        return Err(Error::InvalidArgument(
            "synthetic ImageNet needs at least one class and one image per class".into(),
        ));
    }
    if opts.side < 8 || !(1..=100).contains(&opts.quality) {
        return Err(Error::InvalidArgument(format!(
            "side {} (at least 8) or JPEG quality {} (1..=100) out of range",
            opts.side, opts.quality
        )));
    }
    std::fs::create_dir_all(out).map_err(|source| Error::Io { path: out.to_path_buf(), source })?;
    let p = |n| progress(Split::Train, n);
    let train = write_split(&out.join(TRAIN_DIR), opts, opts.per_class, 0, Some(opts.seed), &p)?;
    let val = if opts.val_per_class > 0 {
        // Val images continue each class's index sequence, so they never repeat a train image.
        let p = |n| progress(Split::Val, n);
        let base = opts.per_class as u64;
        Some(write_split(&out.join(VAL_DIR), opts, opts.val_per_class, base, None, &p)?)
    } else {
        None
    };
    let synsets: Vec<String> = (0..opts.classes).map(class_name).collect();
    let text: String = synsets.iter().map(|s| format!("{s}\n")).collect();
    crate::writer::write_atomic(&out.join(SYNSETS_FILE), text.as_bytes())?;
    Ok(ImagenetReport { synsets, train: Some(train), val })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean absolute difference of two byte images.
    fn diff(a: &[u8], b: &[u8]) -> f32 {
        a.iter().zip(b).map(|(&x, &y)| (f32::from(x) - f32::from(y)).abs()).sum::<f32>()
            / a.len() as f32
    }

    /// Per-channel mean colour.
    fn colour(a: &[u8]) -> [f32; 3] {
        let mut s = [0f32; 3];
        for p in a.chunks_exact(3) {
            for c in 0..3 {
                s[c] += f32::from(p[c]);
            }
        }
        s.map(|v| v / (a.len() / 3) as f32)
    }

    #[test]
    fn classes_differ_more_than_images_of_one_class() {
        // Mean colour is a crude feature, yet it already separates classes better than it
        // varies within one: the nearest class centroid (over 8 images) is the right one.
        let classes = 12;
        let centroid = |k: usize| {
            let mut s = [0f32; 3];
            for i in 0..8 {
                let c = colour(&render_image(k, classes, 1, i, 64));
                (0..3).for_each(|j| s[j] += c[j] / 8.0);
            }
            s
        };
        let cents: Vec<[f32; 3]> = (0..classes).map(centroid).collect();
        let mut right = 0;
        for k in 0..classes {
            for i in 100..104 {
                let c = colour(&render_image(k, classes, 1, i, 64));
                let d = |m: &[f32; 3]| (0..3).map(|j| (c[j] - m[j]).powi(2)).sum::<f32>();
                let best = (0..classes)
                    .min_by(|&a, &b| d(&cents[a]).total_cmp(&d(&cents[b])))
                    .unwrap_or(usize::MAX);
                right += usize::from(best == k);
            }
        }
        assert!(right >= 40, "{right} of 48 held-out images nearest their class centroid");
        // Two images of a class differ (noise, shifts), and not only by a little.
        let (a, b) = (render_image(0, classes, 1, 0, 64), render_image(0, classes, 1, 1, 64));
        assert!(diff(&a, &b) > 5.0, "{}", diff(&a, &b));
        // The seed changes the images but not the class look.
        let c = render_image(0, classes, 2, 0, 64);
        assert_ne!(a, c);
        let ca = colour(&a);
        let cc = colour(&c);
        assert!((0..3).all(|j| (ca[j] - cc[j]).abs() < 40.0), "{ca:?} {cc:?}");
    }

    #[test]
    fn bad_options_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let bad = |o: SynthOptions| synth_imagenet(dir.path(), &o, &|_, _| {}).is_err();
        assert!(bad(SynthOptions { classes: 0, ..Default::default() }));
        assert!(bad(SynthOptions { per_class: 0, ..Default::default() }));
        assert!(bad(SynthOptions { quality: 0, ..Default::default() }));
        assert!(bad(SynthOptions { side: 4, ..Default::default() }));
    }
}
