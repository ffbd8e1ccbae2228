//! Rotary position embeddings as Hugging Face `transformers` computes them
//! for Llama, Qwen2 and Mistral: the `rotate_half` convention (a head's
//! first half rotates against its second half, not interleaved pairs), the
//! default frequencies `1/θ^(2i/d)` and Llama 3's rescaling of them
//! (`_compute_llama3_parameters`).
//!
//! The frequencies, angles and their cosines and sines are computed on the
//! host in f64 and rounded to f32 once: a table of `positions × d/2` values
//! is cheap next to one projection, and it is then the correctly rounded
//! table (transformers computes it in f32, whose angle `position · inv_freq`
//! loses about `position · 2⁻²⁴` radians).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// The RoPE parameters of a config: `rope_theta` and the rescaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeConfig {
    /// The base θ of the frequencies (`rope_theta`).
    pub theta: f64,
    /// How the frequencies are rescaled (`rope_type`).
    pub scaling: RopeScaling,
}

impl Default for RopeConfig {
    /// θ = 10000 without rescaling (transformers' default for all three
    /// families).
    fn default() -> Self {
        RopeConfig {
            theta: 10_000.0,
            scaling: RopeScaling::Default,
        }
    }
}

/// The rescalings of the frequencies this crate computes; transformers'
/// other `rope_type`s are refused when a config is read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// `rope_type: "default"` (or no `rope_scaling`): the frequencies as they are.
    Default,
    /// `rope_type: "llama3"` (Llama 3.1 and later): low frequencies divided
    /// by `factor`, high ones kept, the band between interpolated.
    Llama3 {
        /// How much the low frequencies are slowed (8 in Llama 3.1).
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings /
        /// low_freq_factor` count as low frequency (1 in Llama 3.1).
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings /
        /// high_freq_factor` count as high frequency (4 in Llama 3.1).
        high_freq_factor: f64,
        /// The context the model was first trained on (8192 in Llama 3.1).
        original_max_position_embeddings: usize,
    },
}

impl RopeScaling {
    /// Its `rope_type` in `config.json`.
    pub fn rope_type(&self) -> &'static str {
        match self {
            RopeScaling::Default => "default",
            RopeScaling::Llama3 { .. } => "llama3",
        }
    }
}

/// The `rope_type`s this crate implements, for error messages.
pub const SUPPORTED_ROPE_TYPES: &str = "\"default\", \"llama3\"";

/// The `d/2` inverse frequencies of a head of width `head_dim` (even):
/// `1 / θ^(2i/d)`, then rescaled as `rope.scaling` says, exactly as
/// transformers' `_compute_default_rope_parameters` and
/// `_compute_llama3_parameters` (in f64).
pub fn inv_freq(rope: &RopeConfig, head_dim: usize) -> Vec<f64> {
    let d = head_dim as f64;
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| 1.0 / rope.theta.powf((2 * i) as f64 / d))
        .collect();
    match rope.scaling {
        RopeScaling::Default => base,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old_context = original_max_position_embeddings as f64;
            let low_freq_wavelen = old_context / low_freq_factor;
            let high_freq_wavelen = old_context / high_freq_factor;
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (old_context / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// Cosines and sines of `position · inv_freq` for each position, each
/// multiplied by `factor` (the attention's d^-1/4, so that rotating and
/// scaling are one pass), as `[N, d/2]` f32 values, N = `positions.len()`.
pub fn cos_sin(inv_freq: &[f64], positions: &[i64], factor: f64) -> (Vec<f32>, Vec<f32>) {
    let n = positions.len() * inv_freq.len();
    let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for &p in positions {
        for &f in inv_freq {
            let (s, c) = (p as f64 * f).sin_cos();
            cos.push((c * factor) as f32);
            sin.push((s * factor) as f32);
        }
    }
    (cos, sin)
}

/// The rotation of one forward call, shared by every layer: for each head
/// count it is used with (queries' H, keys' Hkv), `[B,S,Hx,d]` tables of
/// the cosines `[c, c]` and signed sines `[−s, s]` (times d^-1/4) at the
/// tokens' positions, laid out as the rotated tensor is. Full-size tables
/// keep every product of the rotation a contiguous same-shape pass (a
/// `[B,S,1,d/2]` table broadcast over heads, multiplied into a sliced
/// half, takes Flex's scalar strided path: ~20× slower at Qwen2-0.5B's
/// shape).
#[derive(Clone, Debug)]
pub struct RopeTables<B: Backend> {
    /// `(Hx, cos [B,S,Hx,d], signed sin [B,S,Hx,d])`.
    tables: Vec<(usize, Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> RopeTables<B> {
    /// The tables for `[B,S]` position ids (row-major), with the scale
    /// `factor` folded in, for tensors of each head count in `heads`.
    pub fn new(
        rope: &RopeConfig,
        head_dim: usize,
        positions: &[i64],
        [b, s]: [usize; 2],
        factor: f64,
        heads: &[usize],
        device: &B::Device,
    ) -> Self {
        let freqs = inv_freq(rope, head_dim);
        let (cos, sin) = cos_sin(&freqs, positions, factor);
        let half = head_dim / 2;
        let mut tables: Vec<(usize, Tensor<B, 4>, Tensor<B, 4>)> = Vec::new();
        for &hx in heads {
            if tables.iter().any(|t| t.0 == hx) {
                continue;
            }
            let n = positions.len() * hx * head_dim;
            let (mut c_full, mut s_full) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for (c_row, s_row) in cos.chunks(half).zip(sin.chunks(half)) {
                for _ in 0..hx {
                    c_full.extend_from_slice(c_row);
                    c_full.extend_from_slice(c_row);
                    s_full.extend(s_row.iter().map(|v| -v));
                    s_full.extend_from_slice(s_row);
                }
            }
            let shape = [b, s, hx, head_dim];
            tables.push((
                hx,
                Tensor::from_data(TensorData::new(c_full, shape), device),
                Tensor::from_data(TensorData::new(s_full, shape), device),
            ));
        }
        RopeTables { tables }
    }

    /// Rotates `[B,S,Hx,d]` queries or keys as transformers'
    /// `x·cos + rotate_half(x)·sin` (then times the tables' factor): with
    /// `x₁`, `x₂` the two halves of a head, `[x₁·c + x₂·(−s), x₂·c + x₁·s]`,
    /// the same products and sums term by term (`x₂·(−s)` is `−(x₂·s)`
    /// exactly). `Hx` must be one of the head counts the tables were made
    /// for.
    pub fn rotate(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, s, h, d] = x.dims();
        let half = d / 2;
        let (_, cos, sin) = self
            .tables
            .iter()
            .find(|t| t.0 == h)
            .expect("RopeTables made for this head count");
        let x1 = x.clone().slice([0..b, 0..s, 0..h, 0..half]);
        let x2 = x.clone().slice([0..b, 0..s, 0..h, half..d]);
        let swapped = Tensor::cat(vec![x2, x1], 3);
        x * cos.clone() + swapped * sin.clone()
    }
}
