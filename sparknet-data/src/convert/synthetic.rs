//! A procedurally generated digits set: MNIST-shaped (`1 x 28 x 28` u8, labels 0-9) images
//! rendered from seven-segment strokes with random scale, slant, shift, stroke width and noise.
//!
//! It exists so that training runs on a fresh machine without downloads (the trainer's embedded
//! default falls back to it when no MNIST is found). Every image is a pure function of
//! `(seed, index)`, so a set is reproducible at any thread count.
//!
//! ```
//! use sparknet_data::convert::synthetic::render_digit;
//! let a = render_digit(7, 42, 3);
//! assert_eq!(a, render_digit(7, 42, 3));
//! assert_eq!(a.len(), 28 * 28);
//! assert!(a.iter().any(|&p| p > 200)); // the strokes are bright on a dark background
//! ```

use std::path::Path;

use crate::error::Result;
use crate::format::Encoding;
use crate::manifest::{ChannelOrder, Manifest};
use crate::sampler::{SplitMix64, mix};
use crate::writer::{DatasetConfig, DatasetWriter};

/// Image side in pixels.
pub const SIDE: usize = 28;

/// Segments a, b, c, d, e, f, g as line segments in a unit box (x right, y down).
const SEGMENTS: [((f32, f32), (f32, f32)); 7] = [
    ((0.0, 0.0), (1.0, 0.0)), // a: top
    ((1.0, 0.0), (1.0, 0.5)), // b: top right
    ((1.0, 0.5), (1.0, 1.0)), // c: bottom right
    ((0.0, 1.0), (1.0, 1.0)), // d: bottom
    ((0.0, 0.5), (0.0, 1.0)), // e: bottom left
    ((0.0, 0.0), (0.0, 0.5)), // f: top left
    ((0.0, 0.5), (1.0, 0.5)), // g: middle
];

/// Which segments (bits a..g) each digit lights.
const DIGITS: [u8; 10] = [
    0b0111111, 0b0000110, 0b1011011, 0b1001111, 0b1100110, 0b1101101, 0b1111101, 0b0000111,
    0b1111111, 0b1101111,
];

fn unit(rng: &mut SplitMix64) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

fn between(rng: &mut SplitMix64, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * unit(rng)
}

/// Distance from point `p` to the segment `a`-`b`.
fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (qx, qy) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    (qx * qx + qy * qy).sqrt()
}

/// Renders digit `digit` (taken mod 10) as image `index` of the set seeded by `seed`.
pub fn render_digit(digit: u8, seed: u64, index: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(mix(&[seed, index, u64::from(digit)]));
    let digit = usize::from(digit % 10);
    // Glyph box: about 10-14 px wide and 16-20 px tall, slanted, placed near the centre.
    let (w, h) = (between(&mut rng, 9.0, 13.0), between(&mut rng, 15.0, 19.0));
    let slant = between(&mut rng, -0.25, 0.25);
    let (cx, cy) = (14.0 + between(&mut rng, -2.0, 2.0), 14.0 + between(&mut rng, -2.0, 2.0));
    let stroke = between(&mut rng, 1.1, 2.0);
    let peak = between(&mut rng, 200.0, 255.0);
    // Map the unit box into the image, with the slant shearing x by y.
    let place = |(x, y): (f32, f32)| {
        let (px, py) = ((x - 0.5) * w, (y - 0.5) * h);
        (cx + px - slant * py, cy + py)
    };
    let segs: Vec<((f32, f32), (f32, f32))> = SEGMENTS
        .iter()
        .enumerate()
        .filter(|(s, _)| DIGITS[digit] >> s & 1 == 1)
        .map(|(_, &(a, b))| (place(a), place(b)))
        .collect();
    let mut img = vec![0u8; SIDE * SIDE];
    for (i, px) in img.iter_mut().enumerate() {
        let p = ((i % SIDE) as f32 + 0.5, (i / SIDE) as f32 + 0.5);
        let d = segs.iter().map(|&(a, b)| segment_distance(p, a, b)).fold(f32::INFINITY, f32::min);
        // Anti-aliased stroke: full inside, linear fall-off over one pixel.
        let ink = (stroke + 0.5 - d).clamp(0.0, 1.0);
        let noise = between(&mut rng, 0.0, 24.0);
        *px = (ink * peak + noise).min(255.0) as u8;
    }
    img
}

/// Writes `count` synthetic digits (labels cycling through a seeded order) as a raw-u8
/// `1 x 28 x 28` dataset at `out`.
///
/// # Errors
/// Writer errors naming the output.
pub fn convert_synthetic_digits(
    out: &Path,
    count: usize,
    seed: u64,
    shard_size: usize,
) -> Result<Manifest> {
    let config = DatasetConfig {
        encoding: Encoding::RawU8,
        channel_order: ChannelOrder::Gray,
        classes: (0..10).map(|d| d.to_string()).collect(),
        shard_size,
    };
    let mut w = DatasetWriter::create(out, config)?;
    let mut labels = SplitMix64::new(mix(&[seed, u64::MAX]));
    for i in 0..count {
        let label = labels.below(10) as u8;
        w.append(
            u32::from(label),
            [1, SIDE as u32, SIDE as u32],
            &render_digit(label, seed, i as u64),
        )?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_differ_by_class_and_vary_within_a_class() {
        let mean_diff = |a: &[u8], b: &[u8]| {
            a.iter().zip(b).map(|(&x, &y)| (f32::from(x) - f32::from(y)).abs()).sum::<f32>()
                / a.len() as f32
        };
        let one = render_digit(1, 0, 0);
        let eight = render_digit(8, 0, 0);
        assert!(mean_diff(&one, &eight) > 20.0);
        assert_ne!(render_digit(1, 0, 0), render_digit(1, 0, 1));
        // A 1 lights two segments, an 8 all seven: far less ink.
        let ink = |v: &[u8]| v.iter().filter(|&&p| p > 128).count();
        assert!(ink(&one) * 2 < ink(&eight), "{} {}", ink(&one), ink(&eight));
        // Nothing touches the border (the glyph stays inside the frame).
        assert!((0..SIDE).all(|x| one[x] < 128 && eight[(SIDE - 1) * SIDE + x] < 128));
    }

    #[test]
    fn a_dataset_is_reproducible() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let a = convert_synthetic_digits(&dir.path().join("a"), 50, 9, 20)?;
        let b = convert_synthetic_digits(&dir.path().join("b"), 50, 9, 20)?;
        assert_eq!(a.records, b.records);
        assert_eq!(a.records, 50);
        let (da, db) = (
            crate::Dataset::open_mapped(&dir.path().join("a"))?,
            crate::Dataset::open_mapped(&dir.path().join("b"))?,
        );
        let mut hist = [0usize; 10];
        for i in 0..50 {
            let (ra, rb) = (da.get(i)?, db.get(i)?);
            assert_eq!((ra.label, ra.payload), (rb.label, rb.payload));
            hist[ra.label as usize] += 1;
        }
        assert!(hist.iter().filter(|&&n| n > 0).count() >= 8, "{hist:?}");
        Ok(())
    }
}
