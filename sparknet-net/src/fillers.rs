//! Caffe's parameter fillers (`FillerParameter`): constant, uniform, gaussian (with `sparse`),
//! positive_unitball, xavier and msra (`variance_norm` FAN_IN / FAN_OUT / AVERAGE) and bilinear,
//! drawn from a seeded [`Rng`] so a net's initial weights are reproducible from one seed.
//!
//! Which filler each learnable blob gets follows Caffe's layers ([`layer_fillers`]): the
//! `weight_filler`/`bias_filler` of Convolution, Deconvolution and InnerProduct, PReLU's `filler`
//! (default constant 0.25), Scale's `filler` (default constant 1) and `bias_filler`, Bias's
//! `filler`, and zeros for BatchNorm's statistics.

use crate::proto::filler_parameter::VarianceNorm;
use crate::proto::{FillerParameter, LayerParameter};
use crate::{Error, Result};

/// A small deterministic generator (SplitMix64) with uniform and normal draws.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, 1)` on `f32`'s 24-bit grid (never rounds up to 1, unlike `unit() as f32`).
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Fills `out` with independent Bernoulli draws: `value` with probability `p` (clamped to
    /// `[0, 1]`), else 0. Each `u64` gives two draws compared on 32 bits, so `p` has a
    /// resolution of `2^-32`.
    pub fn bernoulli(&mut self, p: f64, value: f32, out: &mut [f32]) {
        let thr = (p.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64;
        let pick = |bits: u64| if bits < thr { value } else { 0.0 };
        let mut pairs = out.chunks_exact_mut(2);
        for pair in &mut pairs {
            let r = self.next_u64();
            pair[0] = pick(r & 0xFFFF_FFFF);
            pair[1] = pick(r >> 32);
        }
        if let [last] = pairs.into_remainder() {
            *last = pick(self.next_u64() >> 32);
        }
    }

    /// Generator number `index` of the family `seed` (one per layer of a net): `seed` and
    /// `index` go through SplitMix64's mixer, so neighbouring seeds and indices give unrelated
    /// sequences, and none coincides with a nearby plain [`Rng::new`] stream.
    pub fn stream(seed: u64, index: u64) -> Self {
        let mut m = Rng::new(seed ^ 0x5DEE_CE66_D1CE_4E5B);
        let base = m.next_u64();
        let mut m = Rng::new(base ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Rng::new(m.next_u64())
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit() as f32
    }

    /// Normal with `mean` and `std` (Box-Muller).
    pub fn normal(&mut self, mean: f32, std: f32) -> f32 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        mean + std * z as f32
    }
}

fn constant(value: f32) -> FillerParameter {
    FillerParameter { r#type: Some("constant".into()), value: Some(value), ..Default::default() }
}

/// The filler of each learnable blob of `layer` (in blob order), as Caffe's layers choose them.
/// `missing` replaces an absent `weight_filler`/`bias_filler` of Convolution, Deconvolution and
/// InnerProduct (Caffe's default is constant 0, which makes a deploy net without fillers
/// degenerate when it is built with random weights).
pub fn layer_fillers(
    layer: &LayerParameter,
    n_blobs: usize,
    missing: Option<&(FillerParameter, FillerParameter)>,
) -> Vec<FillerParameter> {
    let zero = FillerParameter::default();
    let pair = |w: Option<&FillerParameter>, b: Option<&FillerParameter>| {
        let (dw, db) = missing.cloned().unwrap_or_default();
        vec![w.cloned().unwrap_or(dw), b.cloned().unwrap_or(db)]
    };
    let mut v = match layer.r#type() {
        "Convolution" | "Deconvolution" => {
            let c = layer.convolution_param.as_ref();
            pair(c.and_then(|c| c.weight_filler.as_ref()), c.and_then(|c| c.bias_filler.as_ref()))
        }
        "InnerProduct" => {
            let c = layer.inner_product_param.as_ref();
            pair(c.and_then(|c| c.weight_filler.as_ref()), c.and_then(|c| c.bias_filler.as_ref()))
        }
        "PReLU" => vec![
            layer
                .prelu_param
                .as_ref()
                .and_then(|p| p.filler.clone())
                .unwrap_or_else(|| constant(0.25)),
        ],
        "Scale" => {
            let s = layer.scale_param.as_ref();
            let scale = s.and_then(|s| s.filler.clone()).unwrap_or_else(|| constant(1.0));
            let bias = s.and_then(|s| s.bias_filler.clone()).unwrap_or_default();
            // With a second bottom the only learnable blob is the bias.
            if layer.bottom.len() == 2 { vec![bias] } else { vec![scale, bias] }
        }
        "Bias" => {
            vec![layer.bias_param.as_ref().and_then(|b| b.filler.clone()).unwrap_or_default()]
        }
        _ => Vec::new(),
    };
    v.resize(n_blobs, zero);
    v
}

/// Fills a blob of `shape` per `f`. `layer` labels errors.
///
/// # Errors
/// Unknown filler types, and fillers that need more axes than the blob has.
pub fn fill(layer: &str, f: &FillerParameter, shape: &[usize], rng: &mut Rng) -> Result<Vec<f32>> {
    let count: usize = shape.iter().product();
    let fan = |norm: VarianceNorm| -> Result<f32> {
        if shape.is_empty() || count == 0 {
            return Err(Error::invalid(
                layer,
                "weight_filler",
                format!("{} needs a non-empty blob", f.r#type()),
            ));
        }
        let fan_in = (count / shape[0]) as f32;
        let fan_out = if shape.len() > 1 { (count / shape[1]) as f32 } else { count as f32 };
        Ok(match norm {
            VarianceNorm::FanIn => fan_in,
            VarianceNorm::FanOut => fan_out,
            VarianceNorm::Average => (fan_in + fan_out) / 2.0,
        })
    };
    let data = match f.r#type() {
        "constant" => vec![f.value(); count],
        "uniform" => (0..count).map(|_| rng.uniform(f.min(), f.max())).collect(),
        "gaussian" => {
            let mut v: Vec<f32> = (0..count).map(|_| rng.normal(f.mean(), f.std())).collect();
            if f.sparse() >= 0 && !shape.is_empty() {
                let p = f.sparse() as f64 / shape[0].max(1) as f64;
                v.iter_mut().for_each(|x| {
                    if rng.unit() >= p {
                        *x = 0.0;
                    }
                });
            }
            v
        }
        "positive_unitball" => {
            let mut v: Vec<f32> = (0..count).map(|_| rng.uniform(0.0, 1.0)).collect();
            let dim = count / shape.first().copied().unwrap_or(1).max(1);
            for row in v.chunks_mut(dim.max(1)) {
                let s: f32 = row.iter().sum();
                row.iter_mut().for_each(|x| *x /= s);
            }
            v
        }
        "xavier" => {
            let scale = (3.0 / fan(f.variance_norm())?).sqrt();
            (0..count).map(|_| rng.uniform(-scale, scale)).collect()
        }
        "msra" => {
            let std = (2.0 / fan(f.variance_norm())?).sqrt();
            (0..count).map(|_| rng.normal(0.0, std)).collect()
        }
        "bilinear" => {
            let [.., h, w] = shape else {
                return Err(Error::invalid(layer, "weight_filler", "bilinear needs a 2-D kernel"));
            };
            let (h, w) = (*h, *w);
            let ff = (w as f32 / 2.0).ceil();
            let c = (2.0 * ff - 1.0 - ff % 2.0) / (2.0 * ff);
            (0..count)
                .map(|i| {
                    let (x, y) = ((i % w) as f32, ((i / w) % h) as f32);
                    (1.0 - (x / ff - c).abs()) * (1.0 - (y / ff - c).abs())
                })
                .collect()
        }
        other => {
            return Err(Error::invalid(layer, "filler", format!("unknown filler type '{other}'")));
        }
    };
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(text: &str) -> FillerParameter {
        crate::load::parse_text("caffe.FillerParameter", text, std::path::Path::new("f")).unwrap()
    }

    #[test]
    fn deterministic_moments_and_ranges() {
        let mut rng = Rng::new(7);
        let g = fill("l", &f("type: 'gaussian' mean: 1 std: 2"), &[100, 100], &mut rng).unwrap();
        let mean = g.iter().sum::<f32>() / g.len() as f32;
        let var = g.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / g.len() as f32;
        assert!((mean - 1.0).abs() < 0.05 && (var.sqrt() - 2.0).abs() < 0.05, "{mean} {var}");
        assert_eq!(
            g,
            fill("l", &f("type: 'gaussian' mean: 1 std: 2"), &[100, 100], &mut Rng::new(7))
                .unwrap()
        );
        // xavier on 10 x 30: fan_in 30, scale sqrt(3/30).
        let x = fill("l", &f("type: 'xavier'"), &[10, 30], &mut rng).unwrap();
        let s = 0.1f32.sqrt();
        assert!(x.iter().all(|v| v.abs() <= s) && x.iter().any(|v| v.abs() > 0.9 * s));
        let u = fill("l", &f("type: 'positive_unitball'"), &[3, 4], &mut rng).unwrap();
        assert!(u.chunks(4).all(|r| (r.iter().sum::<f32>() - 1.0).abs() < 1e-5));
        assert!(
            fill("l", &f("type: 'nope'"), &[1], &mut rng)
                .unwrap_err()
                .to_string()
                .contains("unknown filler type 'nope'")
        );
    }

    #[test]
    fn bilinear_kernel_by_hand() {
        // kernel 4 (upsampling by 2): f = 2, c = 0.375 -> weights 0.25, 0.75, 0.75, 0.25 per axis.
        let b = fill("l", &f("type: 'bilinear'"), &[1, 1, 4, 4], &mut Rng::new(0)).unwrap();
        let a = [0.25f32, 0.75, 0.75, 0.25];
        for (i, v) in b.iter().enumerate() {
            assert!((v - a[i / 4] * a[i % 4]).abs() < 1e-6);
        }
    }

    #[test]
    fn sparse_gaussian_keeps_about_sparse_per_output() {
        let g = fill("l", &f("type: 'gaussian' sparse: 5"), &[50, 200], &mut Rng::new(3)).unwrap();
        let nonzero = g.iter().filter(|&&v| v != 0.0).count() as f32 / g.len() as f32;
        assert!((nonzero - 0.1).abs() < 0.02, "{nonzero}");
    }

    #[test]
    fn bernoulli_unit_f32_and_streams() {
        // 100,001 draws (odd: the remainder path) at p = 0.3: the kept fraction is within 5
        // standard deviations (sqrt(0.21 / n) = 0.00145) of p.
        let mut out = vec![f32::NAN; 100_001];
        Rng::new(11).bernoulli(0.3, 2.5, &mut out);
        assert!(out.iter().all(|&v| v == 0.0 || v == 2.5));
        let kept = out.iter().filter(|&&v| v == 2.5).count() as f64 / out.len() as f64;
        assert!((kept - 0.3).abs() < 5.0 * 0.00145, "{kept}");
        let mut all = vec![0.0; 9];
        Rng::new(1).bernoulli(1.0, 1.0, &mut all);
        assert_eq!(all, [1.0; 9]);
        Rng::new(1).bernoulli(0.0, 1.0, &mut all);
        assert_eq!(all, [0.0; 9]);
        let mut r = Rng::new(5);
        assert!((0..10_000).map(|_| r.unit_f32()).all(|u| (0.0..1.0).contains(&u)));
        // Streams: reproducible, distinct per seed and per index.
        let first = |seed, i| Rng::stream(seed, i).next_u64();
        assert_eq!(first(3, 4), first(3, 4));
        let heads = [first(3, 4), first(3, 5), first(4, 4), first(0, 0), Rng::new(3).next_u64()];
        for (i, a) in heads.iter().enumerate() {
            assert!(heads[i + 1..].iter().all(|b| b != a), "{heads:?}");
        }
    }
}
