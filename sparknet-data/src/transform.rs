//! Caffe's `DataTransformer`: crop, mirror, mean subtraction and scaling into `f32` CHW.
//!
//! For an input of `C x H x W` and `crop_size` `k` (0 means no crop), Caffe computes
//!
//! ```text
//! in TRAIN: do_mirror = mirror && rand(2); h_off = rand(H - k + 1); w_off = rand(W - k + 1)
//! in TEST:  do_mirror = false;             h_off = (H - k) / 2;     w_off = (W - k) / 2
//! top[c][h][mirror ? k-1-w : w] = (in[c][h_off + h][w_off + w] - mean) * scale
//! ```
//!
//! where `mean` is `mean_file[c][h_off + h][w_off + w]` (the mean image is indexed at the crop
//! offset, so it must have the input's full `C x H x W` shape), or `mean_values[c]` (one value is
//! repeated over all channels), or 0. Caffe draws the mirror coin before the offsets; so do we.
//! One deliberate difference: Caffe mirrors in every phase when `mirror: true`; here, as the
//! project specifies, mirroring happens in TRAIN only.
//!
//! One extension: Caffe requires the mean image to have the record's size. Datasets resized to a
//! shorter side of 256 (the usual ImageNet preparation) hold records of varying size; for a record
//! whose size differs from the mean's, the mean's central `crop_size` window is subtracted
//! instead (`mean[c][(mh - k) / 2 + h][(mw - k) / 2 + w]`, following the mirror as above), which
//! needs a crop no larger than the mean. Records of the mean's size keep Caffe's rule exactly.

use crate::decode::{ColorMode, Decoder, Pixels, Src};
use crate::error::{Error, Result};
use crate::proto::BlobProto;
use crate::reader::Record;
use crate::sampler::SplitMix64;

/// The network phase, which selects random or centred crops and whether to mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Phase {
    /// Random crops and mirroring.
    #[default]
    Train,
    /// Centre crops, no mirroring.
    Test,
}

/// A mean image of shape `c x h x w`.
#[derive(Clone, Debug, PartialEq)]
pub struct MeanImage {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// `c * h * w` values, CHW.
    pub data: Vec<f32>,
}

impl MeanImage {
    /// Takes the mean from a `BlobProto` of shape `[1, c, h, w]` or `[c, h, w]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for any other shape.
    pub fn from_blob(blob: &BlobProto) -> Result<Self> {
        let dims: Vec<usize> = match blob.shape.as_slice() {
            [1, c, h, w] | [c, h, w] if *c > 0 && *h > 0 && *w > 0 => {
                vec![*c as usize, *h as usize, *w as usize]
            }
            s => {
                return Err(Error::InvalidArgument(format!(
                    "mean blob has shape {s:?}, expected [1, c, h, w] with c, h, w >= 1"
                )));
            }
        };
        let n = dims[0].checked_mul(dims[1]).and_then(|x| x.checked_mul(dims[2]));
        if n != Some(blob.data.len()) {
            return Err(Error::InvalidArgument(format!(
                "mean blob of shape {:?} holds {} values",
                blob.shape,
                blob.data.len()
            )));
        }
        Ok(MeanImage { c: dims[0], h: dims[1], w: dims[2], data: blob.data.clone() })
    }

    /// Reads a `.binaryproto` mean file.
    ///
    /// # Errors
    /// As [`BlobProto::read`]; a blob that is not a mean image is an [`Error::BadSource`]
    /// naming `path`.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        Self::from_blob(&BlobProto::read(path)?).map_err(|e| match e {
            Error::InvalidArgument(reason) => Error::BadSource { path: path.to_path_buf(), reason },
            e => e,
        })
    }
}

/// What is subtracted before scaling.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Mean {
    /// Nothing.
    #[default]
    None,
    /// Per-channel values (`mean_value` in Caffe); one value applies to every channel.
    Values(Vec<f32>),
    /// A mean image (`mean_file` in Caffe).
    File(MeanImage),
}

/// `TransformationParameter`'s fields, with Caffe's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct TransformParams {
    /// Multiplier applied after mean subtraction (Caffe: `scale`, default 1).
    pub scale: f32,
    /// Random horizontal flips in TRAIN (Caffe: `mirror`, default false).
    pub mirror: bool,
    /// Square crop side, 0 for none (Caffe: `crop_size`, default 0).
    pub crop_size: usize,
    /// Mean to subtract.
    pub mean: Mean,
    /// Decode as 3 channels (Caffe: `force_color`).
    pub force_color: bool,
    /// Decode as 1 channel (Caffe: `force_gray`).
    pub force_gray: bool,
}

impl Default for TransformParams {
    fn default() -> Self {
        TransformParams {
            scale: 1.0,
            mirror: false,
            crop_size: 0,
            mean: Mean::None,
            force_color: false,
            force_gray: false,
        }
    }
}

/// The random choices for one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    /// Row of the crop's top edge.
    pub h_off: usize,
    /// Column of the crop's left edge.
    pub w_off: usize,
    /// Whether the output is flipped left-right.
    pub mirror: bool,
}

/// Applies [`TransformParams`] in one [`Phase`].
#[derive(Clone, Debug)]
pub struct Transformer {
    params: TransformParams,
    phase: Phase,
}

impl Transformer {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when both `force_color` and `force_gray` are set, or when both
    /// a mean file and mean values would be needed (impossible by construction), or `scale` is
    /// not finite.
    pub fn new(params: TransformParams, phase: Phase) -> Result<Self> {
        if params.force_color && params.force_gray {
            return Err(Error::InvalidArgument(
                "force_color and force_gray are mutually exclusive".into(),
            ));
        }
        if !params.scale.is_finite() {
            return Err(Error::InvalidArgument(format!("scale {} is not finite", params.scale)));
        }
        if let Mean::Values(v) = &params.mean
            && v.is_empty()
        {
            return Err(Error::InvalidArgument("mean values list is empty".into()));
        }
        Ok(Transformer { params, phase })
    }

    /// The parameters.
    pub fn params(&self) -> &TransformParams {
        &self.params
    }

    /// The decode colour mode implied by `force_color` / `force_gray`.
    pub fn color_mode(&self) -> ColorMode {
        match (self.params.force_color, self.params.force_gray) {
            (true, _) => ColorMode::Color,
            (_, true) => ColorMode::Gray,
            _ => ColorMode::Native,
        }
    }

    /// The output `[c, h, w]` for an input of `c` channels and `h` x `w` pixels.
    pub fn output_shape(&self, c: usize, h: usize, w: usize) -> [usize; 3] {
        let k = self.params.crop_size;
        if k > 0 { [c, k, k] } else { [c, h, w] }
    }

    /// Draws the crop offsets and mirror flag for an `h` x `w` input, in Caffe's order.
    ///
    /// # Errors
    /// `Err` when the crop is larger than the image.
    pub fn augment(&self, h: usize, w: usize, rng: &mut SplitMix64) -> Result<Augment, String> {
        let k = self.params.crop_size;
        if k > h || k > w {
            return Err(format!("crop_size {k} is larger than the {h}x{w} image"));
        }
        let train = self.phase == Phase::Train;
        let mirror = train && self.params.mirror && rng.below(2) == 1;
        let (h_off, w_off) = match (k, train) {
            (0, _) => (0, 0),
            (_, true) => {
                (rng.below((h - k + 1) as u64) as usize, rng.below((w - k + 1) as u64) as usize)
            }
            (_, false) => ((h - k) / 2, (w - k) / 2),
        };
        Ok(Augment { h_off, w_off, mirror })
    }

    /// Writes the transformed image into `out` (`c * oh * ow` values, see [`output_shape`](Self::output_shape)).
    ///
    /// # Errors
    /// `Err` when the mean does not fit the image or `out` has the wrong length.
    pub fn apply(&self, px: &Pixels<'_>, aug: Augment, out: &mut [f32]) -> Result<(), String> {
        let [c, oh, ow] = self.output_shape(px.c, px.h, px.w);
        if out.len() != c * oh * ow {
            return Err(format!(
                "output holds {} values, the {c}x{oh}x{ow} result needs {}",
                out.len(),
                c * oh * ow
            ));
        }
        if aug.h_off + oh > px.h || aug.w_off + ow > px.w {
            return Err(format!(
                "crop at ({}, {}) of {oh}x{ow} leaves the {}x{} image",
                aug.h_off, aug.w_off, px.h, px.w
            ));
        }
        let scale = self.params.scale;
        match &self.params.mean {
            Mean::File(m) => {
                let k = self.params.crop_size;
                let fits = m.c == c && m.data.len() == m.c * m.h * m.w;
                let (y0, x0) = if fits && (m.h, m.w) == (px.h, px.w) {
                    // Caffe: the mean is indexed at the crop offset.
                    (aug.h_off, aug.w_off)
                } else if fits && k > 0 && k <= m.h && k <= m.w {
                    // Variable-size records: the mean's central crop window.
                    ((m.h - k) / 2, (m.w - k) / 2)
                } else {
                    return Err(format!(
                        "mean image is {}x{}x{} but the image is {c}x{}x{} (a mean of another size needs a crop_size no larger than the mean)",
                        m.c, m.h, m.w, px.h, px.w
                    ));
                };
                let mean = MeanRef::File { data: &m.data, h: m.h, w: m.w, y0, x0 };
                run(px, aug, oh, ow, out, mean, scale);
            }
            Mean::Values(v) => {
                if v.len() != 1 && v.len() != c {
                    return Err(format!("{} mean values for a {c}-channel image", v.len()));
                }
                run(px, aug, oh, ow, out, MeanRef::Values(v), scale);
            }
            Mean::None => run(px, aug, oh, ow, out, MeanRef::Values(&[0.0]), scale),
        }
        Ok(())
    }

    /// Decodes `rec`, draws its augmentation from `rng` and writes the result into `out`.
    ///
    /// # Errors
    /// `Err` describing an undecodable payload or a shape that does not fit (the caller names the
    /// shard and record).
    pub fn transform(
        &self,
        rec: &Record<'_>,
        decoder: &mut Decoder,
        rng: &mut SplitMix64,
        out: &mut [f32],
    ) -> Result<(), String> {
        let px = decoder.pixels(rec, self.color_mode())?;
        let aug = self.augment(px.h, px.w, rng)?;
        self.apply(&px, aug, out)
    }
}

/// The mean in the form the row loop needs.
#[derive(Clone, Copy)]
enum MeanRef<'a> {
    /// A `c x h x w` mean image; output pixel `(y, x)` (before mirroring) subtracts the mean at
    /// `(y0 + y, x0 + x)`.
    File { data: &'a [f32], h: usize, w: usize, y0: usize, x0: usize },
    /// One value per channel, or one for all.
    Values(&'a [f32]),
}

/// The shared loop, one output row at a time: the source layout and the mean kind are resolved
/// per row so the per-pixel work is a load, a subtract and a multiply.
fn run(
    px: &Pixels<'_>,
    aug: Augment,
    oh: usize,
    ow: usize,
    out: &mut [f32],
    mean: MeanRef<'_>,
    scale: f32,
) {
    if let Src::HwcRgb { data, sc: 3 } = px.src
        && px.c == 3
    {
        return run_rgb_to_bgr(data, px.w, aug, oh, ow, out, mean, scale);
    }
    let (h, w) = (px.h, px.w);
    for ch in 0..px.c {
        for y in 0..oh {
            let sy = aug.h_off + y;
            let row = &mut out[(ch * oh + y) * ow..(ch * oh + y + 1) * ow];
            let (mrow, mv) = match mean {
                MeanRef::File { data: m, h: mh, w: mw, y0, x0 } => {
                    (Some(&m[(ch * mh + y0 + y) * mw + x0..][..ow]), 0.0)
                }
                MeanRef::Values(v) => (None, if v.len() == 1 { v[0] } else { v[ch] }),
            };
            match px.src {
                Src::ChwU8 { data, sc } => {
                    let p = if sc == 1 { 0 } else { ch };
                    let s = &data[(p * h + sy) * w + aug.w_off..][..ow];
                    write_row(s.iter().map(|&v| v as f32), mrow, mv, scale, aug.mirror, row);
                }
                Src::ChwF32 { data, sc } => {
                    let p = if sc == 1 { 0 } else { ch };
                    let s = &data[((p * h + sy) * w + aug.w_off) * 4..][..ow * 4];
                    let it =
                        s.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    write_row(it, mrow, mv, scale, aug.mirror, row);
                }
                Src::HwcRgb { data, sc } => {
                    let p = if sc < 3 { 0 } else { 2 - ch };
                    let s = &data[(sy * w + aug.w_off) * sc..][..ow * sc];
                    if sc == 3 {
                        // The common case, with a constant stride the compiler can unroll.
                        let it = s.chunks_exact(3).map(|px| px[p] as f32);
                        write_row(it, mrow, mv, scale, aug.mirror, row);
                    } else {
                        let it = s.chunks_exact(sc).map(|px| px[p] as f32);
                        write_row(it, mrow, mv, scale, aug.mirror, row);
                    }
                }
            }
        }
    }
}

/// The decoded-JPEG fast path: one pass over each interleaved RGB source row writes the three
/// BGR output rows.
#[allow(clippy::too_many_arguments)]
fn run_rgb_to_bgr(
    data: &[u8],
    w: usize,
    aug: Augment,
    oh: usize,
    ow: usize,
    out: &mut [f32],
    mean: MeanRef<'_>,
    scale: f32,
) {
    let plane = oh * ow;
    let (b_out, rest) = out.split_at_mut(plane);
    let (g_out, r_out) = rest.split_at_mut(plane);
    for y in 0..oh {
        let sy = aug.h_off + y;
        let s = &data[(sy * w + aug.w_off) * 3..][..ow * 3];
        let (bo, go, ro) =
            (&mut b_out[y * ow..][..ow], &mut g_out[y * ow..][..ow], &mut r_out[y * ow..][..ow]);
        // Output x reads source column `x` or, mirrored, `ow - 1 - x`.
        let col = |x: usize| if aug.mirror { ow - 1 - x } else { x };
        match mean {
            MeanRef::File { data: m, h: mh, w: mw, y0, x0 } => {
                let row = |ch: usize| &m[(ch * mh + y0 + y) * mw + x0..][..ow];
                let (mb, mg, mr) = (row(0), row(1), row(2));
                for x in 0..ow {
                    let c = col(x);
                    let p = &s[3 * c..3 * c + 3];
                    bo[x] = (p[2] as f32 - mb[c]) * scale;
                    go[x] = (p[1] as f32 - mg[c]) * scale;
                    ro[x] = (p[0] as f32 - mr[c]) * scale;
                }
            }
            MeanRef::Values(v) => {
                let mv = |ch: usize| if v.len() == 1 { v[0] } else { v[ch] };
                let (mb, mg, mr) = (mv(0), mv(1), mv(2));
                for x in 0..ow {
                    let c = col(x);
                    let p = &s[3 * c..3 * c + 3];
                    bo[x] = (p[2] as f32 - mb) * scale;
                    go[x] = (p[1] as f32 - mg) * scale;
                    ro[x] = (p[0] as f32 - mr) * scale;
                }
            }
        }
    }
}

/// `row[x] = (src[x] - mean[x]) * scale`, reversed when mirrored.
#[inline(always)]
fn write_row(
    src: impl Iterator<Item = f32>,
    mrow: Option<&[f32]>,
    mv: f32,
    scale: f32,
    mirror: bool,
    row: &mut [f32],
) {
    match (mrow, mirror) {
        (Some(m), false) => {
            row.iter_mut().zip(src.zip(m)).for_each(|(o, (v, m))| *o = (v - m) * scale)
        }
        (Some(m), true) => {
            row.iter_mut().rev().zip(src.zip(m)).for_each(|(o, (v, m))| *o = (v - m) * scale)
        }
        (None, false) => row.iter_mut().zip(src).for_each(|(o, v)| *o = (v - mv) * scale),
        (None, true) => row.iter_mut().rev().zip(src).for_each(|(o, v)| *o = (v - mv) * scale),
    }
}
