//! Turning a record into pixels the transform can index, decoding JPEG/PNG into reused buffers.

use std::io::Cursor;

use image::ImageDecoder;

use crate::format::Encoding;
use crate::reader::Record;

/// Which channel count decoding produces (Caffe's `force_color` / `force_gray`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ColorMode {
    /// Keep the stored channels (Caffe's `DecodeDatumToCVMatNative`); alpha is dropped.
    #[default]
    Native,
    /// Three channels; gray sources are replicated.
    Color,
    /// One channel; colour sources become BT.601 luma with OpenCV's fixed-point weights.
    Gray,
}

/// Where the pixels live and how they are laid out.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Src<'a> {
    /// Channel planes of bytes; `sc` source channels.
    ChwU8 { data: &'a [u8], sc: usize },
    /// Channel planes of little-endian `f32`.
    ChwF32 { data: &'a [u8], sc: usize },
    /// Interleaved bytes (`sc` per pixel) in RGB(A) order; output channel `c` of a colour image
    /// reads source channel `2 - c` (Caffe's BGR).
    HwcRgb { data: &'a [u8], sc: usize },
}

/// A borrowed image of `c` output channels and `h` x `w` pixels.
#[derive(Clone, Copy, Debug)]
pub struct Pixels<'a> {
    /// Output channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    pub(crate) src: Src<'a>,
}

impl Pixels<'_> {
    /// The value of output channel `c` at row `y`, column `x` (all in range).
    #[inline(always)]
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        match self.src {
            Src::ChwU8 { data, sc } => {
                let p = if sc == 1 { 0 } else { c };
                data[(p * self.h + y) * self.w + x] as f32
            }
            Src::ChwF32 { data, sc } => {
                let p = if sc == 1 { 0 } else { c };
                let i = ((p * self.h + y) * self.w + x) * 4;
                f32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]])
            }
            Src::HwcRgb { data, sc } => {
                let p = if sc < 3 { 0 } else { 2 - c };
                data[(y * self.w + x) * sc + p] as f32
            }
        }
    }
}

/// Reusable decode buffers; one per worker thread.
#[derive(Default)]
pub struct Decoder {
    rgb: Vec<u8>,
    gray: Vec<u8>,
}

/// OpenCV's `BGR2GRAY` fixed-point luma: `(4899 R + 9617 G + 1868 B + 2^13) >> 14`.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((4899 * r as u32 + 9617 * g as u32 + 1868 * b as u32 + (1 << 13)) >> 14) as u8
}

impl Decoder {
    /// Fresh, empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pixels of `rec` under `mode`; encoded payloads are decoded into this decoder's buffers.
    /// `Err` describes why the record cannot be read (the caller names shard and record).
    pub fn pixels<'a>(
        &'a mut self,
        rec: &Record<'a>,
        mode: ColorMode,
    ) -> Result<Pixels<'a>, String> {
        let [c, h, w] = rec.shape.map(|d| d as usize);
        let (src, sc, h, w) = match rec.encoding {
            Encoding::RawU8 => (Src::ChwU8 { data: rec.payload, sc: c }, c, h, w),
            Encoding::F32 => (Src::ChwF32 { data: rec.payload, sc: c }, c, h, w),
            Encoding::Encoded => {
                let (sc, h, w) = decode_into(rec.payload, &mut self.rgb)?;
                (Src::HwcRgb { data: &self.rgb, sc }, sc, h, w)
            }
        };
        let color_src = sc >= 3;
        match (mode, color_src) {
            (ColorMode::Gray, true) => {
                self.gray.clear();
                match src {
                    Src::ChwU8 { data, .. } => {
                        let n = h * w;
                        // Stored CHW colour is in the dataset's order; treat planes as B, G, R
                        // (Caffe's order) so that luma weights land on the right planes.
                        self.gray
                            .extend((0..n).map(|i| luma(data[2 * n + i], data[n + i], data[i])));
                    }
                    Src::HwcRgb { data, sc } => {
                        self.gray.extend(data.chunks_exact(sc).map(|p| luma(p[0], p[1], p[2])));
                    }
                    Src::ChwF32 { .. } => {
                        return Err("force_gray on 3-channel f32 records is not supported".into());
                    }
                }
                Ok(Pixels { c: 1, h, w, src: Src::ChwU8 { data: &self.gray, sc: 1 } })
            }
            (ColorMode::Gray, false) => Ok(Pixels { c: 1, h, w, src }),
            (ColorMode::Color, _) => Ok(Pixels { c: 3, h, w, src }),
            (ColorMode::Native, _) => {
                let c = match src {
                    Src::HwcRgb { .. } if color_src => 3,
                    Src::HwcRgb { .. } => 1,
                    _ => sc,
                };
                Ok(Pixels { c, h, w, src })
            }
        }
        .and_then(check_len)
    }
}

fn check_len(p: Pixels<'_>) -> Result<Pixels<'_>, String> {
    let (len, need, sc) = match p.src {
        Src::ChwU8 { data, sc } => (data.len(), sc * p.h * p.w, sc),
        Src::ChwF32 { data, sc } => (data.len(), sc * p.h * p.w * 4, sc),
        Src::HwcRgb { data, sc } => (data.len(), sc * p.h * p.w, sc),
    };
    if len < need {
        return Err(format!("payload has {len} bytes, shape needs {need}"));
    }
    if p.c == 0 || (sc != 1 && sc < p.c && !matches!(p.src, Src::HwcRgb { .. })) {
        return Err(format!("cannot produce {} channels from {sc}", p.c));
    }
    Ok(p)
}

/// The largest decoded image accepted, in bytes (256 MiB: a 9000 x 9000 RGB photo). A corrupt or
/// hostile header can claim any size; the limit keeps such a record an error instead of an
/// allocation that takes the process down.
pub const MAX_DECODED_BYTES: usize = 1 << 28;

fn check_size(c: usize, h: usize, w: usize) -> Result<(), String> {
    match c.checked_mul(h).and_then(|x| x.checked_mul(w)) {
        Some(n) if n <= MAX_DECODED_BYTES => Ok(()),
        _ => Err(format!(
            "image header claims {w}x{h} pixels of {c} channels, more than the \
             {MAX_DECODED_BYTES}-byte limit (corrupt header?)"
        )),
    }
}

/// Decodes a JPEG with zune-jpeg directly (the decoder `image` wraps), parsing the headers once
/// and decoding straight into `out`. Gray JPEGs stay one channel; everything else becomes RGB.
fn decode_jpeg(bytes: &[u8], out: &mut Vec<u8>) -> Result<(usize, usize, usize), String> {
    use zune_core::colorspace::ColorSpace;
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    d.decode_headers().map_err(|e| format!("cannot decode JPEG: {e:?}"))?;
    let (w, h) = d.dimensions().ok_or("JPEG has no dimensions")?;
    let target = match d.input_colorspace() {
        Some(ColorSpace::Luma | ColorSpace::LumaA) => ColorSpace::Luma,
        _ => ColorSpace::RGB,
    };
    check_size(target.num_components(), h, w)?;
    d.set_options(d.options().jpeg_set_out_colorspace(target));
    let n = d.output_buffer_size().ok_or("JPEG output size unknown")?;
    out.resize(n, 0);
    d.decode_into(out).map_err(|e| format!("cannot decode JPEG: {e:?}"))?;
    let c = target.num_components();
    if n != c * h * w {
        return Err(format!("JPEG decoded to {n} bytes, expected {c}x{h}x{w}"));
    }
    Ok((c, h, w))
}

/// Decodes a JPEG or PNG into `out` as interleaved 8-bit pixels; returns (channels, h, w) where
/// channels is 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA).
pub(crate) fn decode_into(
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> Result<(usize, usize, usize), String> {
    if bytes.starts_with(&[0xff, 0xd8]) {
        return decode_jpeg(bytes, out);
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read image header: {e}"))?;
    if reader.format().is_none() {
        return Err("payload is neither JPEG nor PNG".into());
    }
    let decoder = reader.into_decoder().map_err(|e| format!("cannot decode image: {e}"))?;
    let (w, h) = decoder.dimensions();
    let (w, h) = (w as usize, h as usize);
    check_size(usize::from(decoder.color_type().bytes_per_pixel()), h, w)?;
    let ct = decoder.color_type();
    let sc = match ct {
        image::ColorType::L8 => 1,
        image::ColorType::La8 => 2,
        image::ColorType::Rgb8 => 3,
        image::ColorType::Rgba8 => 4,
        _ => 0,
    };
    if sc > 0 {
        let n = decoder.total_bytes() as usize;
        out.resize(n, 0);
        decoder.read_image(out).map_err(|e| format!("cannot decode image: {e}"))?;
        return Ok((sc, h, w));
    }
    // 16-bit or float images: go through DynamicImage (allocates; rare in image datasets).
    let img = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| format!("cannot decode image: {e}"))?;
    if ct.has_color() {
        let rgb = img.to_rgb8();
        out.clear();
        out.extend_from_slice(rgb.as_raw());
        Ok((3, h, w))
    } else {
        let g = img.to_luma8();
        out.clear();
        out.extend_from_slice(g.as_raw());
        Ok((1, h, w))
    }
}
