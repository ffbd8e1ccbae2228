//! The hyper-parameters of a training run, with the defaults of OpenAI's
//! recipe (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

use crate::experiments::Activation;

use super::error::SaeTrainError;

/// Which sparse autoencoder to train.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SaeKind {
    /// TopK: the `k` largest pre-activations of each token are kept (after
    /// ReLU), the rest zeroed. Sparsity is set directly; the loss is the
    /// reconstruction MSE (plus the auxiliary loss).
    TopK {
        /// Latents kept per token.
        k: usize,
    },
    /// ReLU with an L1 penalty: `loss = mse + l1 · mean_t Σ_i z_ti`
    /// (decoder rows are unit-norm, so this is also Σ_i z_i ‖d_i‖). A larger
    /// coefficient gives fewer active latents and a larger MSE.
    Relu {
        /// The L1 coefficient.
        l1: f64,
    },
}

impl SaeKind {
    /// The [`Activation`] of the trained [`SparseAutoencoder`](crate::experiments::SparseAutoencoder).
    pub fn activation(self) -> Activation {
        match self {
            SaeKind::TopK { k } => Activation::TopK(k),
            SaeKind::Relu { .. } => Activation::Relu,
        }
    }
}

/// How the pre-bias is initialised from a sample of activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PreBiasInit {
    /// The geometric median (Weiszfeld's iterations), as OpenAI does.
    #[default]
    GeometricMedian,
    /// The mean.
    Mean,
    /// Zero.
    Zero,
}

/// Everything a training run needs. Build one with [`SaeTrainConfig::topk`]
/// or [`SaeTrainConfig::relu`] and change fields with struct update syntax.
///
/// Reconstruction error is `mse = mean over tokens and dimensions of
/// (x − x̂)²`; the total loss is `mse + aux_coef · var(x) · aux` for TopK
/// and `mse + l1 · mean_t Σ_i z_ti + aux_coef · var(x) · aux` for ReLU,
/// where `aux` is the AuxK loss: the `aux_k` largest pre-activations among
/// the dead latents reconstruct the residual `x − x̂`, normalised by the
/// residual's variance, and `var(x)` (the batch's variance per dimension, a
/// constant) puts it on the MSE's scale: OpenAI's loss, the normalised MSE
/// plus `aux_coef` times AuxK, multiplied by `var(x)`.
#[derive(Clone, Debug, PartialEq)]
pub struct SaeTrainConfig {
    /// Number of latents L.
    pub n_latents: usize,
    /// TopK or ReLU + L1.
    pub kind: SaeKind,
    /// Optimiser steps.
    pub steps: usize,
    /// Tokens per step.
    pub batch_size: usize,
    /// Adam's learning rate (after warm-up, before decay).
    pub lr: f64,
    /// Steps of linear warm-up from 0 to `lr`.
    pub warmup_steps: usize,
    /// The last `decay_steps` steps decay the rate linearly to 0.
    pub decay_steps: usize,
    /// Adam's β₁.
    pub beta_1: f32,
    /// Adam's β₂.
    pub beta_2: f32,
    /// Adam's ε (OpenAI: 6.25e-10).
    pub epsilon: f32,
    /// Clip the gradient's global norm to this, if set.
    pub grad_clip_norm: Option<f32>,
    /// Latents of the auxiliary loss; `None`: the power of two nearest to
    /// D/2 (OpenAI's choice), at most L.
    pub aux_k: Option<usize>,
    /// Coefficient of the auxiliary loss (OpenAI: 1/32); 0 turns it off.
    pub aux_coef: f64,
    /// A latent is dead when it has not fired for this many tokens
    /// (OpenAI: 10 M). Dead latents get the auxiliary loss and are counted
    /// in the metrics.
    pub dead_after_tokens: u64,
    /// The pre-bias initialisation.
    pub pre_bias_init: PreBiasInit,
    /// Tokens in the sample the pre-bias and the encoder scale are
    /// initialised from (drawn from the source before training).
    pub init_sample_tokens: usize,
    /// Capacity of the shuffling buffer, in tokens (at least one batch).
    pub buffer_tokens: usize,
    /// Steps per metrics report (the reports average over the steps).
    pub metrics_every: usize,
    /// Seed of the initialisation and of the buffer's shuffling.
    pub seed: u64,
}

impl SaeTrainConfig {
    /// A TopK autoencoder with `n_latents` latents keeping `k` per token.
    pub fn topk(n_latents: usize, k: usize) -> Self {
        Self::with_kind(n_latents, SaeKind::TopK { k })
    }

    /// A ReLU autoencoder with `n_latents` latents and L1 coefficient `l1`.
    pub fn relu(n_latents: usize, l1: f64) -> Self {
        Self::with_kind(n_latents, SaeKind::Relu { l1 })
    }

    fn with_kind(n_latents: usize, kind: SaeKind) -> Self {
        SaeTrainConfig {
            n_latents,
            kind,
            steps: 1000,
            batch_size: 4096,
            lr: 1e-3,
            warmup_steps: 0,
            decay_steps: 0,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 6.25e-10,
            grad_clip_norm: None,
            aux_k: None,
            aux_coef: 1.0 / 32.0,
            dead_after_tokens: 10_000_000,
            pre_bias_init: PreBiasInit::GeometricMedian,
            init_sample_tokens: 16_384,
            buffer_tokens: 65_536,
            metrics_every: 50,
            seed: 0,
        }
    }

    /// Checks the options against activations of width `d`.
    pub fn validate(&self, d: usize) -> Result<(), SaeTrainError> {
        let bad = |m: String| Err(SaeTrainError::Config(m));
        if d == 0 {
            return bad("the activations have width 0".into());
        }
        if self.n_latents == 0 {
            return bad("the number of latents must be at least 1".into());
        }
        match self.kind {
            SaeKind::TopK { k } if k == 0 || k > self.n_latents => {
                return bad(format!(
                    "k = {k} must be between 1 and the number of latents ({})",
                    self.n_latents
                ));
            }
            SaeKind::Relu { l1 } if !(l1.is_finite() && l1 >= 0.0) => {
                return bad(format!(
                    "the L1 coefficient must be finite and ≥ 0, not {l1}"
                ));
            }
            _ => {}
        }
        if self.steps == 0 {
            return bad("the number of steps must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("the batch size must be at least 1 token".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!(
                "the learning rate must be finite and > 0, not {}",
                self.lr
            ));
        }
        if self.warmup_steps + self.decay_steps > self.steps {
            return bad(format!(
                "warm-up ({}) and decay ({}) steps add up to more than the {} steps",
                self.warmup_steps, self.decay_steps, self.steps
            ));
        }
        for (name, b) in [("β₁", self.beta_1), ("β₂", self.beta_2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("Adam's {name} must be in [0, 1), not {b}"));
            }
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return bad(format!(
                "Adam's ε must be finite and > 0, not {}",
                self.epsilon
            ));
        }
        if let Some(c) = self.grad_clip_norm
            && !(c.is_finite() && c > 0.0)
        {
            return bad(format!("the gradient clipping norm must be > 0, not {c}"));
        }
        if self.aux_k == Some(0) {
            return bad("aux_k must be at least 1 (set aux_coef to 0 to turn AuxK off)".into());
        }
        if let Some(k) = self.aux_k
            && k > self.n_latents
        {
            return bad(format!(
                "aux_k = {k} must be at most the number of latents ({})",
                self.n_latents
            ));
        }
        if !(self.aux_coef.is_finite() && self.aux_coef >= 0.0) {
            return bad(format!(
                "the auxiliary loss coefficient must be finite and ≥ 0, not {}",
                self.aux_coef
            ));
        }
        if self.metrics_every == 0 {
            return bad("metrics_every must be at least 1 step".into());
        }
        if self.buffer_tokens < self.batch_size {
            return bad(format!(
                "the shuffling buffer ({} tokens) must hold at least one batch ({} tokens)",
                self.buffer_tokens, self.batch_size
            ));
        }
        if self
            .memory_bytes(d)
            .is_none_or(|b| b > u128::from(u64::MAX))
        {
            return bad(format!(
                "{} latents of width {d}, batches of {} tokens and a buffer of {} tokens need \
                 more memory than can be addressed",
                self.n_latents, self.batch_size, self.buffer_tokens
            ));
        }
        Ok(())
    }

    /// A lower bound on the bytes a run on activations of width `d` holds
    /// at once (f32): the parameters with their gradients and Adam's two
    /// moments, the shuffling buffer and the initialisation sample, and one
    /// step's latents and reconstructions. `None` if it overflows.
    pub fn memory_bytes(&self, d: usize) -> Option<u128> {
        let (d, l) = (d as u128, self.n_latents as u128);
        let params = d.checked_mul(l)?.checked_mul(2)?.checked_add(d + l)?;
        let held = (self.buffer_tokens as u128).checked_add(self.init_sample_tokens as u128)?;
        let step = (self.batch_size as u128).checked_mul(l.checked_mul(4)?.checked_add(d * 4)?)?;
        params
            .checked_mul(4)?
            .checked_add(held.checked_mul(d)?)?
            .checked_add(step)?
            .checked_mul(4)
    }

    /// The learning rate at step `step` (0-based): linear warm-up, constant,
    /// linear decay to 0 over the last `decay_steps`.
    pub fn lr_at(&self, step: usize) -> f64 {
        let mut factor = 1.0;
        if step < self.warmup_steps {
            factor = (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_from = self.steps.saturating_sub(self.decay_steps);
        if self.decay_steps > 0 && step >= decay_from {
            factor = factor.min((self.steps - step) as f64 / self.decay_steps as f64);
        }
        self.lr * factor
    }

    /// The auxiliary loss's number of latents for width `d`.
    pub fn aux_k_for(&self, d: usize) -> usize {
        let k = self.aux_k.unwrap_or_else(|| {
            let half = (d / 2).max(1);
            let lo = 1usize << (usize::BITS - 1 - half.leading_zeros());
            let hi = lo << 1;
            if half - lo < hi - half { lo } else { hi }
        });
        k.min(self.n_latents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule() {
        let c = SaeTrainConfig {
            steps: 10,
            warmup_steps: 2,
            decay_steps: 4,
            lr: 1.0,
            ..SaeTrainConfig::topk(8, 2)
        };
        let lrs: Vec<f64> = (0..10).map(|s| c.lr_at(s)).collect();
        assert_eq!(lrs, [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]);
        let flat = SaeTrainConfig::topk(8, 2);
        assert_eq!(flat.lr_at(0), flat.lr);
        assert_eq!(flat.lr_at(999), flat.lr);
    }

    #[test]
    fn aux_k_is_a_power_of_two_near_half_the_width() {
        let c = SaeTrainConfig::topk(4096, 16);
        assert_eq!(c.aux_k_for(768), 512); // 384 lies halfway: up, OpenAI's 512 for GPT-2 small
        assert_eq!(c.aux_k_for(256), 128);
        assert_eq!(c.aux_k_for(64), 32);
        assert_eq!(c.aux_k_for(200), 128); // 100 → 128
        assert_eq!(c.aux_k_for(1), 1);
        assert_eq!(SaeTrainConfig::topk(40, 4).aux_k_for(256), 40);
    }

    #[test]
    fn validation_names_the_option() {
        let err = |c: SaeTrainConfig| c.validate(16).unwrap_err().to_string();
        assert!(err(SaeTrainConfig::topk(8, 9)).contains("k = 9"));
        assert!(err(SaeTrainConfig::relu(8, -1.0)).contains("L1"));
        let c = SaeTrainConfig {
            lr: 0.0,
            ..SaeTrainConfig::topk(8, 2)
        };
        assert!(err(c).contains("learning rate"));
        let c = SaeTrainConfig {
            buffer_tokens: 10,
            ..SaeTrainConfig::topk(8, 2)
        };
        assert!(err(c).contains("buffer"));
        let c = SaeTrainConfig {
            steps: 0,
            ..SaeTrainConfig::topk(8, 2)
        };
        assert!(err(c).contains("steps must be at least 1"));
        let c = SaeTrainConfig {
            aux_k: Some(9),
            ..SaeTrainConfig::topk(8, 2)
        };
        assert!(err(c).contains("aux_k = 9 must be at most"));
        let c = SaeTrainConfig::topk(usize::MAX, 2);
        assert!(err(c).contains("more memory than can be addressed"));
        assert!(SaeTrainConfig::topk(8, 2).validate(16).is_ok());
    }

    #[test]
    fn memory_counts_parameters_buffer_and_one_step() {
        let c = SaeTrainConfig {
            batch_size: 10,
            buffer_tokens: 100,
            init_sample_tokens: 50,
            ..SaeTrainConfig::topk(8, 2)
        };
        // d = 4, L = 8: params (2·32 + 12)·4 copies, held 150·4, step 10·(32 + 16); f32.
        assert_eq!(c.memory_bytes(4), Some(((76 * 4) + 600 + 480) * 4));
        assert_eq!(
            SaeTrainConfig::topk(usize::MAX, 2).memory_bytes(usize::MAX),
            None
        );
    }
}
