//! Sampling with a per-layer KV cache: greedy, temperature, top-p, seeded.

use burn::tensor::backend::Backend;

use crate::finite::first_non_finite;
use crate::{HookedModel, ModelError, NonFiniteSite, TokenBatch};

/// How to pick each next token.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleConfig {
    /// How many tokens to add.
    pub max_new_tokens: usize,
    /// 0 picks the most likely token (greedy); otherwise logits are divided
    /// by it before sampling.
    pub temperature: f32,
    /// Nucleus sampling: sample among the most likely tokens whose
    /// probabilities add up to at least this (1 keeps all).
    pub top_p: f32,
    /// Seed of the sampler.
    pub seed: u64,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            max_new_tokens: 20,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// Extends `prompt` by `config.max_new_tokens` tokens, calling `hooks` at every
/// site of every step (on later steps `attn.k`/`attn.v` see the whole cached
/// length). Returns the new tokens only.
///
/// Logits that go non-finite (NaN or infinite) stop the generation with
/// [`ModelError::NonFinite`], naming the first site that went non-finite
/// (found by [`HookedModel::first_non_finite`] on the sequence so far): sampling
/// from them would print plausible-looking tokens.
pub fn generate<B: Backend, M: HookedModel<B>>(
    model: &M,
    prompt: &[u32],
    config: &SampleConfig,
    hooks: &M::Hooks,
) -> Result<Vec<u32>, ModelError> {
    if !(config.temperature >= 0.0 && config.temperature.is_finite()) {
        return Err(ModelError::BadBatch(format!(
            "temperature must be a finite number ≥ 0, not {}",
            config.temperature
        )));
    }
    if !(config.top_p > 0.0 && config.top_p <= 1.0) {
        return Err(ModelError::BadBatch(format!(
            "top_p must be in (0, 1], not {}",
            config.top_p
        )));
    }
    check_context(prompt.len(), config.max_new_tokens, model.dims().n_ctx)?;
    let mut rng = SplitMix64(config.seed);
    let mut cache = model.new_cache();
    let mut next_input = TokenBatch::single(prompt.to_vec())?;
    let mut out = Vec::with_capacity(config.max_new_tokens);
    for _ in 0..config.max_new_tokens {
        let logits = model.forward_cached(&next_input, &mut cache, hooks)?;
        let [_, s, v] = logits.dims();
        let last: Vec<f32> = logits
            .slice([0..1, s - 1..s, 0..v])
            .into_data()
            .iter::<f32>()
            .collect();
        if let Some((index, value)) = first_non_finite(last.iter().copied()) {
            return Err(non_finite(
                model,
                prompt,
                &out,
                hooks,
                config.max_new_tokens,
                (index, value, v),
            ));
        }
        let token = pick(&last, config, &mut rng);
        out.push(token);
        next_input = TokenBatch::single(vec![token])?;
    }
    Ok(out)
}

/// Checks that `prompt_len` tokens plus `new_tokens` fit a context window of
/// `n_positions`, with checked arithmetic: [`ModelError::TooLong`] when the
/// total is too long, [`ModelError::ContextOverflow`] when it does not even
/// fit a `usize` (`max_new_tokens = usize::MAX` is an error, not a panic).
pub fn check_context(
    prompt_len: usize,
    new_tokens: usize,
    n_positions: usize,
) -> Result<(), ModelError> {
    match prompt_len.checked_add(new_tokens) {
        Some(total) if total <= n_positions => Ok(()),
        Some(total) => Err(ModelError::TooLong {
            row: 0,
            len: total,
            n_positions,
        }),
        None => Err(ModelError::ContextOverflow {
            prompt: prompt_len,
            new_tokens,
            n_positions,
        }),
    }
}

/// The error for logits that went non-finite while generating: the first
/// site that did, found by running the whole sequence so far through the
/// model with a check at every site, or the logits themselves when that
/// finds nothing.
fn non_finite<B: Backend, M: HookedModel<B>>(
    model: &M,
    prompt: &[u32],
    generated: &[u32],
    hooks: &M::Hooks,
    max_new_tokens: usize,
    (index, value, vocab): (usize, f32, usize),
) -> ModelError {
    let during = format!(
        "generation of token {} of {max_new_tokens}",
        generated.len() + 1
    );
    let tokens: Vec<u32> = prompt.iter().chain(generated).copied().collect();
    let found = TokenBatch::single(tokens)
        .and_then(|batch| model.first_non_finite(&batch, hooks))
        .ok()
        .flatten();
    let site = match found {
        Some(site) => NonFiniteSite { during, ..site },
        None => NonFiniteSite {
            during,
            site: "logits".into(),
            layer: None,
            index,
            value,
            shape: vec![1, 1, vocab],
        },
    };
    ModelError::NonFinite(Box::new(site))
}

/// Picks a token from one row of logits.
pub fn pick(logits: &[f32], config: &SampleConfig, rng: &mut SplitMix64) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    if config.temperature == 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, f64::from((l - max) / config.temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (i, p) in probs.iter().enumerate() {
        kept += p.1;
        if kept >= f64::from(config.top_p) {
            cut = i + 1;
            break;
        }
    }
    let probs = &probs[..cut];
    let mass: f64 = probs.iter().map(|p| p.1).sum();
    let mut u = rng.next_f64() * mass;
    for p in probs {
        if u < p.1 {
            return p.0 as u32;
        }
        u -= p.1;
    }
    probs.last().map_or_else(argmax, |p| p.0 as u32)
}

/// A small seeded generator (SplitMix64): reproducible samples without a
/// dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
