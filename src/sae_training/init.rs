//! Initialisation from a sample of activations, as OpenAI does it: the
//! pre-bias at the sample's geometric median (or mean), decoder rows random
//! unit directions, the encoder their transpose, scaled so that the first
//! reconstructions have the sample's norm.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::experiments::SparseAutoencoder;
use hooks_model::sample::SplitMix64;

use super::config::{PreBiasInit, SaeTrainConfig};

/// The mean of `n` row-major vectors of width `d`.
pub fn mean(data: &[f32], d: usize) -> Vec<f32> {
    let n = data.len() / d;
    let mut sum = vec![0f64; d];
    for row in data.chunks_exact(d) {
        for (s, &x) in sum.iter_mut().zip(row) {
            *s += f64::from(x);
        }
    }
    sum.iter().map(|s| (s / n.max(1) as f64) as f32).collect()
}

/// The geometric median (the point minimising the sum of Euclidean
/// distances) of the rows of `data`, by Weiszfeld's iterations from the
/// mean, stopping when a step moves less than `1e-6` of the median's scale
/// or after `max_iter` steps. Rows that coincide with the current estimate
/// are skipped in that step, as in Vardi and Zhang's fix.
pub fn geometric_median(data: &[f32], d: usize, max_iter: usize) -> Vec<f32> {
    let mut y: Vec<f64> = mean(data, d).into_iter().map(f64::from).collect();
    let mut next = vec![0f64; d];
    for _ in 0..max_iter {
        next.iter_mut().for_each(|v| *v = 0.0);
        let mut weight = 0f64;
        for row in data.chunks_exact(d) {
            let dist = row
                .iter()
                .zip(&y)
                .map(|(&x, &m)| (f64::from(x) - m).powi(2))
                .sum::<f64>()
                .sqrt();
            if dist < 1e-12 {
                continue;
            }
            let w = 1.0 / dist;
            weight += w;
            for (n, &x) in next.iter_mut().zip(row) {
                *n += w * f64::from(x);
            }
        }
        if weight == 0.0 {
            break;
        }
        let mut moved = 0f64;
        let mut scale = 0f64;
        for (m, n) in y.iter_mut().zip(&next) {
            let v = n / weight;
            moved += (v - *m).powi(2);
            scale += v * v;
            *m = v;
        }
        if moved.sqrt() <= 1e-6 * scale.sqrt().max(1e-12) {
            break;
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}

/// Standard normal draws (Box–Muller on SplitMix64), reproducible on every
/// backend.
pub(crate) fn normal(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// Each row of `[L, D]` divided by its norm.
pub fn unit_rows<B: Backend>(t: Tensor<B, 2>) -> Tensor<B, 2> {
    let norms = t
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    t / norms
}

/// A new autoencoder of width `d` for `config`, initialised from `sample`
/// (row-major, whole tokens of width `d`; may be empty for a zero
/// pre-bias and an unscaled encoder).
pub fn init_sae<B: Backend>(
    config: &SaeTrainConfig,
    d: usize,
    sample: &[f32],
    device: &B::Device,
) -> SparseAutoencoder<B> {
    let l = config.n_latents;
    let mut rng = SplitMix64(config.seed ^ 0x5AE0_1217);
    let pre_bias = match (config.pre_bias_init, sample.is_empty()) {
        (_, true) | (PreBiasInit::Zero, _) => vec![0f32; d],
        (PreBiasInit::Mean, false) => mean(sample, d),
        (PreBiasInit::GeometricMedian, false) => geometric_median(sample, d, 100),
    };
    let decoder = unit_rows(Tensor::<B, 2>::from_data(
        TensorData::new(normal(&mut rng, l * d), [l, d]),
        device,
    ));
    let mut sae = SparseAutoencoder {
        pre_bias: Param::from_tensor(Tensor::from_data(TensorData::new(pre_bias, [d]), device)),
        encoder: Param::from_tensor(decoder.clone().transpose()),
        latent_bias: Param::from_tensor(Tensor::zeros([l], device)),
        decoder: Param::from_tensor(decoder),
        activation: config.kind.activation(),
    };
    if let Some(s) = encoder_scale(&sae, sample, d) {
        sae.encoder = sae.encoder.map(|e| e * s);
    }
    sae
}

/// The factor that makes the mean norm of `x̂ − pre_bias` equal the mean
/// norm of `x − pre_bias` over (the first 4096 tokens of) the sample. The
/// latent bias is zero at initialisation, so the reconstruction is linear in
/// the encoder's scale and one pass finds it.
fn encoder_scale<B: Backend>(sae: &SparseAutoencoder<B>, sample: &[f32], d: usize) -> Option<f32> {
    let n = (sample.len() / d).min(4096);
    if n == 0 {
        return None;
    }
    let device = sae.encoder.val().device();
    let x = Tensor::<B, 2>::from_data(TensorData::new(sample[..n * d].to_vec(), [n, d]), &device);
    let b = sae.pre_bias.val().unsqueeze_dim::<2>(0);
    let centred = x.clone() - b.clone();
    let recon = sae.decode(sae.encode(x)) - b;
    let norm = |t: Tensor<B, 2>| -> f32 {
        t.powf_scalar(2.0)
            .sum_dim(1)
            .sqrt()
            .mean()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_or(0.0, |v| v[0])
    };
    let (want, got) = (norm(centred), norm(recon));
    (want.is_finite() && got.is_finite() && got > 0.0 && want > 0.0).then(|| want / got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometric_median_of_points() {
        // Three points of a triangle with all angles < 120°: the Fermat point.
        // For an equilateral triangle it is the centroid.
        let s3 = 3f32.sqrt();
        let tri = [0.0, 0.0, 2.0, 0.0, 1.0, s3];
        let m = geometric_median(&tri, 2, 1000);
        assert!(
            (m[0] - 1.0).abs() < 1e-4 && (m[1] - s3 / 3.0).abs() < 1e-4,
            "{m:?}"
        );
        // An outlier moves the mean but hardly the median.
        let mut pts = vec![0f32; 2 * 9];
        pts.extend([1000.0, 1000.0]);
        for (i, p) in pts.chunks_mut(2).take(9).enumerate() {
            p[0] = (i as f32 - 4.0) * 0.01;
        }
        let m = geometric_median(&pts, 2, 1000);
        assert!(m[0].abs() < 0.05 && m[1].abs() < 0.05, "{m:?}");
        assert!((mean(&pts, 2)[0] - 100.0).abs() < 0.1);
        // Collinear points: any point of the middle segment; 5 points, the middle one.
        let line = [0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 10.0, 0.0];
        let m = geometric_median(&line, 2, 1000);
        assert!((m[0] - 2.0).abs() < 1e-3 && m[1].abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn the_encoder_starts_as_the_scaled_transpose_of_unit_decoder_rows() {
        type B = burn_flex::Flex;
        let (d, n) = (12, 300);
        let mut rng = SplitMix64(4);
        // Data around an offset, so the median is far from zero.
        let sample: Vec<f32> = normal(&mut rng, n * d)
            .into_iter()
            .enumerate()
            .map(|(i, v)| v + (i % d) as f32)
            .collect();
        for (kind, init) in [
            (SaeTrainConfig::topk(40, 4), PreBiasInit::GeometricMedian),
            (SaeTrainConfig::relu(40, 0.1), PreBiasInit::Mean),
        ] {
            let config = SaeTrainConfig {
                pre_bias_init: init,
                ..kind
            };
            let sae = init_sae::<B>(&config, d, &sample, &Default::default());
            let host = |t: Tensor<B, 2>| t.into_data().to_vec::<f32>().unwrap();
            let dec = host(sae.decoder.val());
            let enc_t = host(sae.encoder.val().transpose());
            for row in dec.chunks(d) {
                let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-5);
            }
            let s = enc_t[0] / dec[0];
            assert!(s > 0.0);
            for (e, w) in enc_t.iter().zip(&dec) {
                assert!((e - s * w).abs() < 1e-5 * s.max(1.0), "{e} vs {s} · {w}");
            }
            let b = sae.pre_bias.val().into_data().to_vec::<f32>().unwrap();
            let expected = match init {
                PreBiasInit::Mean => mean(&sample, d),
                _ => geometric_median(&sample, d, 100),
            };
            assert_eq!(b, expected);
            assert!((b[d - 1] - (d - 1) as f32).abs() < 0.3, "{b:?}");
            // The scale: reconstructions of the sample have its norm.
            let x = Tensor::<B, 2>::from_data(
                TensorData::new(sample.clone(), [n, d]),
                &Default::default(),
            );
            let bias = sae.pre_bias.val().unsqueeze_dim::<2>(0);
            let norm = |t: Tensor<B, 2>| -> f32 {
                t.powf_scalar(2.0).sum_dim(1).sqrt().mean().into_scalar()
            };
            let want = norm(x.clone() - bias.clone());
            let got = norm(sae.decode(sae.encode(x)) - bias);
            assert!((got - want).abs() < 1e-3 * want, "{got} vs {want}");
        }
    }

    #[test]
    fn normal_draws_have_unit_variance() {
        let v = normal(&mut SplitMix64(3), 20_001);
        assert_eq!(v.len(), 20_001);
        let m = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(m.abs() < 0.03 && (var - 1.0).abs() < 0.03, "{m} {var}");
    }
}
