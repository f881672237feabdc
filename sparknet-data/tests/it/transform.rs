//! Caffe DataTransformer semantics against hand-computed expectations.

use sparknet_data::format::Encoding;
use sparknet_data::{
    Augment, ColorMode, Decoder, Error, Mean, MeanImage, Phase, Record, SplitMix64,
    TransformParams, Transformer,
};

/// A 1-channel 4x5 raw record with value 10*y + x.
fn ramp() -> Vec<u8> {
    (0..4).flat_map(|y| (0..5).map(move |x| (10 * y + x) as u8)).collect()
}

fn rec(payload: &[u8], shape: [u32; 3]) -> Record<'_> {
    Record { label: 0, shape, encoding: Encoding::RawU8, payload }
}

fn run(t: &Transformer, r: &Record<'_>, aug: Augment) -> Vec<f32> {
    let mut d = Decoder::new();
    let px = d.pixels(r, t.color_mode()).unwrap();
    let [c, h, w] = t.output_shape(px.c, px.h, px.w);
    let mut out = vec![f32::NAN; c * h * w];
    t.apply(&px, aug, &mut out).unwrap();
    out
}

#[test]
fn test_phase_centre_crop_with_mean_value_and_scale() {
    let p = TransformParams {
        crop_size: 3,
        scale: 0.5,
        mean: Mean::Values(vec![1.0]),
        ..Default::default()
    };
    let t = Transformer::new(p, Phase::Test).unwrap();
    let data = ramp();
    let r = rec(&data, [1, 4, 5]);
    let mut rng = SplitMix64::new(7);
    // TEST: h_off = (4 - 3) / 2 = 0, w_off = (5 - 3) / 2 = 1, never mirrored.
    let aug = t.augment(4, 5, &mut rng).unwrap();
    assert_eq!(aug, Augment { h_off: 0, w_off: 1, mirror: false });
    let got = run(&t, &r, aug);
    // (v - 1) * 0.5 for v in rows [1 2 3], [11 12 13], [21 22 23].
    assert_eq!(got, vec![0.0, 0.5, 1.0, 5.0, 5.5, 6.0, 10.0, 10.5, 11.0]);
}

#[test]
fn mirror_reverses_columns_of_the_crop() {
    let t = Transformer::new(
        TransformParams { crop_size: 3, mirror: true, ..Default::default() },
        Phase::Train,
    )
    .unwrap();
    let data = ramp();
    let got = run(&t, &rec(&data, [1, 4, 5]), Augment { h_off: 1, w_off: 2, mirror: true });
    // Rows 1..4, columns 2..5, reversed: [14 13 12], [24 23 22], [34 33 32].
    assert_eq!(got, vec![14.0, 13.0, 12.0, 24.0, 23.0, 22.0, 34.0, 33.0, 32.0]);
}

#[test]
fn mean_file_is_indexed_at_the_crop_offset() {
    // Two channels: in[c][y][x] = 50 + 20c + 5y + x; mean[c][y][x] = 5y + x + c.
    // Indexed at the crop offset, (in - mean) = 50 + 19c everywhere, for any offset and mirror;
    // indexed at crop-local positions it would vary with the offset.
    let data: Vec<u8> = (0..2)
        .flat_map(|c| {
            (0..4).flat_map(move |y| (0..5).map(move |x| (50 + 20 * c + 5 * y + x) as u8))
        })
        .collect();
    let mean: Vec<f32> = (0..2)
        .flat_map(|c| (0..4).flat_map(move |y| (0..5).map(move |x| (5 * y + x + c) as f32)))
        .collect();
    let p = TransformParams {
        crop_size: 2,
        scale: 2.0,
        mirror: true,
        mean: Mean::File(MeanImage { c: 2, h: 4, w: 5, data: mean }),
        ..Default::default()
    };
    let t = Transformer::new(p, Phase::Train).unwrap();
    for (h_off, w_off, mirror) in [(0, 0, false), (2, 3, true), (1, 2, false)] {
        let got = run(&t, &rec(&data, [2, 4, 5]), Augment { h_off, w_off, mirror });
        assert_eq!(
            got,
            vec![100.0, 100.0, 100.0, 100.0, 138.0, 138.0, 138.0, 138.0],
            "offset ({h_off}, {w_off})"
        );
    }
}

#[test]
fn per_channel_mean_values_and_no_crop() {
    let data: Vec<u8> = vec![10, 20, 30, 40, 50, 60]; // 3 channels of 1x2
    let p = TransformParams {
        mean: Mean::Values(vec![1.0, 2.0, 3.0]),
        scale: 0.1,
        ..Default::default()
    };
    let t = Transformer::new(p, Phase::Train).unwrap();
    let got = run(&t, &rec(&data, [3, 1, 2]), Augment { h_off: 0, w_off: 0, mirror: false });
    let want = [0.9f32, 1.9, 2.8, 3.8, 4.7, 5.7];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?}");
    }
}

#[test]
fn train_draws_follow_caffes_order_and_cover_every_offset() {
    let t = Transformer::new(
        TransformParams { crop_size: 3, mirror: true, ..Default::default() },
        Phase::Train,
    )
    .unwrap();
    let mut seen = [[false; 3]; 2];
    let mut mirrors = 0;
    for seed in 0..200u64 {
        let aug = t.augment(4, 5, &mut SplitMix64::new(seed)).unwrap();
        // Caffe: mirror coin first, then h_off in 0..=H-k, then w_off in 0..=W-k.
        let mut r = SplitMix64::new(seed);
        let expect = Augment {
            mirror: r.below(2) == 1,
            h_off: r.below(2) as usize,
            w_off: r.below(3) as usize,
        };
        assert_eq!(aug, expect);
        seen[aug.h_off][aug.w_off] = true;
        mirrors += aug.mirror as usize;
    }
    assert!(seen.iter().flatten().all(|&s| s), "all 2x3 offsets drawn");
    assert!((60..140).contains(&mirrors), "about half mirrored: {mirrors}");
    // TEST never mirrors and always centres, whatever the generator.
    let test = Transformer::new(
        TransformParams { crop_size: 3, mirror: true, ..Default::default() },
        Phase::Test,
    )
    .unwrap();
    for seed in 0..20 {
        assert_eq!(
            test.augment(4, 5, &mut SplitMix64::new(seed)).unwrap(),
            Augment { h_off: 0, w_off: 1, mirror: false }
        );
    }
}

#[test]
fn force_color_and_force_gray() {
    let gray = ramp();
    let t =
        Transformer::new(TransformParams { force_color: true, ..Default::default() }, Phase::Test)
            .unwrap();
    let got = run(&t, &rec(&gray, [1, 4, 5]), Augment { h_off: 0, w_off: 0, mirror: false });
    assert_eq!(got.len(), 60);
    assert_eq!(&got[..20], &got[20..40]);
    assert_eq!(&got[..20], &got[40..]);

    // BGR planes: B = 10, G = 200, R = 90 -> luma = (4899*90 + 9617*200 + 1868*10 + 8192) >> 14 = 145.
    let bgr = [10u8, 200, 90];
    let t =
        Transformer::new(TransformParams { force_gray: true, ..Default::default() }, Phase::Test)
            .unwrap();
    let got = run(&t, &rec(&bgr, [3, 1, 1]), Augment { h_off: 0, w_off: 0, mirror: false });
    assert_eq!(got, vec![145.0]);
    assert_eq!(t.color_mode(), ColorMode::Gray);

    let both = TransformParams { force_color: true, force_gray: true, ..Default::default() };
    assert!(matches!(Transformer::new(both, Phase::Train), Err(Error::InvalidArgument(_))));
}

#[test]
fn shape_problems_are_errors_not_panics() {
    let data = ramp();
    let t = Transformer::new(TransformParams { crop_size: 6, ..Default::default() }, Phase::Test)
        .unwrap();
    assert!(t.augment(4, 5, &mut SplitMix64::new(0)).unwrap_err().contains("larger"));
    let wrong_mean = Mean::File(MeanImage { c: 1, h: 2, w: 2, data: vec![0.0; 4] });
    let t =
        Transformer::new(TransformParams { mean: wrong_mean, ..Default::default() }, Phase::Test)
            .unwrap();
    let mut d = Decoder::new();
    let r = rec(&data, [1, 4, 5]);
    let px = d.pixels(&r, ColorMode::Native).unwrap();
    let mut out = vec![0.0; 20];
    let aug = Augment { h_off: 0, w_off: 0, mirror: false };
    assert!(t.apply(&px, aug, &mut out).unwrap_err().contains("mean image is 1x2x2"));
    let t = Transformer::new(
        TransformParams { mean: Mean::Values(vec![1.0, 2.0]), ..Default::default() },
        Phase::Test,
    )
    .unwrap();
    assert!(t.apply(&px, aug, &mut out).unwrap_err().contains("2 mean values"));
    let t = Transformer::new(TransformParams::default(), Phase::Test).unwrap();
    assert!(t.apply(&px, aug, &mut out[..3]).unwrap_err().contains("output holds 3"));
}

#[test]
fn undecodable_encoded_payload_is_an_error() {
    let junk = b"\xff\xd8\xff\xe0 this is not really a jpeg".to_vec();
    let r = Record { label: 0, shape: [3, 0, 0], encoding: Encoding::Encoded, payload: &junk };
    let t = Transformer::new(TransformParams::default(), Phase::Test).unwrap();
    let mut out = vec![0.0; 4];
    let e = t.transform(&r, &mut Decoder::new(), &mut SplitMix64::new(0), &mut out).unwrap_err();
    assert!(e.contains("decode") || e.contains("header"), "{e}");
}

#[test]
fn decoded_rgb_images_match_the_same_pixels_stored_as_bgr_planes() {
    // One 7x6 RGB image, once as PNG (decoded, interleaved RGB fast path) and once as raw BGR CHW.
    let img = image::RgbImage::from_fn(7, 6, |x, y| {
        image::Rgb([(x * 30 + y) as u8, (y * 40 + x) as u8, (x * y * 5) as u8])
    });
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let n = 42;
    let mut chw = vec![0u8; 3 * n];
    for (i, p) in img.pixels().enumerate() {
        (chw[i], chw[n + i], chw[2 * n + i]) = (p[2], p[1], p[0]);
    }
    let encoded = Record { label: 0, shape: [3, 6, 7], encoding: Encoding::Encoded, payload: &png };
    let raw = rec(&chw, [3, 6, 7]);
    let mean: Vec<f32> = (0..3 * n).map(|i| (i % 11) as f32 * 1.5).collect();
    for m in [
        Mean::File(MeanImage { c: 3, h: 6, w: 7, data: mean }),
        Mean::Values(vec![3.0, 5.0, 7.0]),
        Mean::None,
    ] {
        let p = TransformParams {
            crop_size: 4,
            mirror: true,
            scale: 0.5,
            mean: m,
            ..Default::default()
        };
        let t = Transformer::new(p, Phase::Train).unwrap();
        for aug in [
            Augment { h_off: 1, w_off: 2, mirror: true },
            Augment { h_off: 2, w_off: 0, mirror: false },
        ] {
            assert_eq!(run(&t, &encoded, aug), run(&t, &raw, aug), "{aug:?}");
        }
    }
}

#[test]
fn a_mean_file_of_another_size_subtracts_its_central_crop_window() {
    // Mean 1x3x4 with value 100*y + x; the record is 4x5 (the ramp). Crop 2: the mean's central
    // window starts at ((3 - 2) / 2, (4 - 2) / 2) = (0, 1) whatever the crop offset.
    let mean = MeanImage {
        c: 1,
        h: 3,
        w: 4,
        data: (0..3).flat_map(|y| (0..4).map(move |x| (100 * y + x) as f32)).collect(),
    };
    let p = TransformParams {
        crop_size: 2,
        mirror: true,
        mean: Mean::File(mean),
        ..Default::default()
    };
    let t = Transformer::new(p.clone(), Phase::Train).unwrap();
    let data = ramp();
    let r = rec(&data, [1, 4, 5]);
    let got = run(&t, &r, Augment { h_off: 2, w_off: 3, mirror: false });
    // Image rows 2..4, cols 3..5: [23 24], [33 34]; mean window rows 0..2, cols 1..3: [1 2], [101 102].
    assert_eq!(got, vec![22.0, 22.0, -68.0, -68.0]);
    // Mirrored: the mean follows the source pixel, as in Caffe.
    let got = run(&t, &r, Augment { h_off: 2, w_off: 3, mirror: true });
    assert_eq!(got, vec![22.0, 22.0, -68.0, -68.0]);
    let got = run(&t, &r, Augment { h_off: 0, w_off: 0, mirror: true });
    // Image [0 1], [10 11] minus [1 2], [101 102] = [-1 -1], [-91 -91], reversed per row.
    assert_eq!(got, vec![-1.0, -1.0, -91.0, -91.0]);
    // A record of the mean's own size keeps Caffe's rule (mean at the crop offset).
    let small: Vec<u8> = (0..12).map(|v| v as u8 + 200).collect();
    let r = rec(&small, [1, 3, 4]);
    let got = run(&t, &r, Augment { h_off: 1, w_off: 2, mirror: false });
    // Image rows 1..3, cols 2..4: [206 207], [210 211]; mean [102 103], [202 203].
    assert_eq!(got, vec![104.0, 104.0, 8.0, 8.0]);
    // A crop larger than the mean cannot use it.
    let big = TransformParams { crop_size: 4, ..p };
    let t = Transformer::new(big, Phase::Train).unwrap();
    let mut d = Decoder::new();
    let r = rec(&data, [1, 4, 5]);
    let px = d.pixels(&r, ColorMode::Native).unwrap();
    let mut out = vec![0.0; 16];
    let e = t.apply(&px, Augment { h_off: 0, w_off: 0, mirror: false }, &mut out).unwrap_err();
    assert!(e.contains("mean image is 1x3x4"), "{e}");
}
