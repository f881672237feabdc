//! Image -> input blob, as Caffe's deploy tools prepare one: decode, resize to the net's input
//! size (bilinear), planes in BGR order by default (Caffe's convention; `rgb` keeps the file's
//! order), subtract the mean (a `.binaryproto` image of the same size, else its per-channel
//! means, or given per-channel values), then multiply by `scale` (Caffe's
//! `TransformationParameter` order: `(x - mean) * scale`).

use std::path::{Path, PathBuf};

use candle::{Device, Tensor};
use image::imageops::FilterType;

use crate::blob::{blob_data, blob_shape};
use crate::load::read_binaryproto;
use crate::{Error, Result};

/// How to turn an image into a blob.
#[derive(Debug, Clone, Default)]
pub struct Preprocess {
    /// A `.binaryproto` mean image.
    pub mean_file: Option<PathBuf>,
    /// Per-channel means (in the blob's channel order).
    pub mean_values: Vec<f32>,
    /// Multiplier applied after the mean subtraction (1 when `None`).
    pub scale: Option<f32>,
    /// Output (height, width); `None` keeps the image's size.
    pub resize: Option<(usize, usize)>,
    /// Keep the file's R,G,B order instead of Caffe's B,G,R.
    pub rgb: bool,
}

/// Loads `path` as a `1 x channels x H x W` blob (`channels` 1 or 3).
///
/// # Errors
/// Unreadable images, mean files whose channel count or size does not fit, a mean-value count
/// other than 1 or `channels`.
pub fn image_to_blob(
    path: &Path,
    channels: usize,
    p: &Preprocess,
    device: &Device,
) -> Result<Tensor> {
    let img =
        image::open(path).map_err(|e| Error::parse(path, format!("cannot decode image: {e}")))?;
    let img = match p.resize {
        Some((h, w)) => img.resize_exact(w as u32, h as u32, FilterType::Triangle),
        None => img,
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = h * w;
    let mut data = vec![0f32; channels * plane];
    match channels {
        1 => {
            for (i, px) in img.to_luma8().pixels().enumerate() {
                data[i] = f32::from(px.0[0]);
            }
        }
        3 => {
            for (i, px) in img.to_rgb8().pixels().enumerate() {
                for c in 0..3 {
                    let src = if p.rgb { c } else { 2 - c };
                    data[c * plane + i] = f32::from(px.0[src]);
                }
            }
        }
        c => {
            return Err(Error::option(
                path.display().to_string(),
                format!("a {c}-channel input cannot come from an image"),
            ));
        }
    }
    if let Some(mean_path) = &p.mean_file {
        let mean = read_binaryproto(mean_path)?;
        let shape = blob_shape(&mean);
        let values = blob_data(&mean);
        let (mc, mh, mw) = match shape.as_slice() {
            [1, c, h, w] | [c, h, w] => (*c, *h, *w),
            s => {
                return Err(Error::parse(
                    mean_path,
                    format!("mean blob of shape {s:?}: expected 1xCxHxW"),
                ));
            }
        };
        if mc != channels || crate::blob::element_count(&[mc, mh, mw]) != Some(values.len()) {
            return Err(Error::parse(
                mean_path,
                format!("mean has {mc} channels, the input {channels}"),
            ));
        }
        if (mh, mw) == (h, w) {
            data.iter_mut().zip(&values).for_each(|(x, m)| *x -= m);
        } else {
            for c in 0..channels {
                let m = values[c * mh * mw..(c + 1) * mh * mw]
                    .iter()
                    .map(|&v| f64::from(v))
                    .sum::<f64>()
                    / (mh * mw) as f64;
                data[c * plane..(c + 1) * plane].iter_mut().for_each(|x| *x -= m as f32);
            }
        }
    }
    if !p.mean_values.is_empty() {
        if p.mean_values.len() != 1 && p.mean_values.len() != channels {
            return Err(Error::option(
                "mean_value",
                format!("{} mean values for {channels} channels", p.mean_values.len()),
            ));
        }
        for c in 0..channels {
            let m = p.mean_values[if p.mean_values.len() == 1 { 0 } else { c }];
            data[c * plane..(c + 1) * plane].iter_mut().for_each(|x| *x -= m);
        }
    }
    if let Some(s) = p.scale {
        data.iter_mut().for_each(|x| *x *= s);
    }
    Ok(Tensor::from_vec(data, (1, channels, h, w), &Device::Cpu)?.to_device(device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgr_planes_mean_values_and_scale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("px.png");
        image::RgbImage::from_fn(2, 1, |x, _| image::Rgb([10 + x as u8, 20, 30]))
            .save(&path)
            .unwrap();
        let p =
            Preprocess { mean_values: vec![1.0, 2.0, 3.0], scale: Some(0.5), ..Default::default() };
        let t = image_to_blob(&path, 3, &p, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 1, 2]);
        // B plane first: (30-1)/2, then G (20-2)/2, then R (10|11 - 3)/2.
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v, vec![14.5, 14.5, 9.0, 9.0, 3.5, 4.0]);
        let rgb = image_to_blob(
            &path,
            3,
            &Preprocess { rgb: true, resize: Some((2, 2)), ..Default::default() },
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(rgb.dims(), &[1, 3, 2, 2]);
        let err = image_to_blob(&dir.path().join("none.png"), 3, &p, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("none.png"), "{err}");
    }
}
