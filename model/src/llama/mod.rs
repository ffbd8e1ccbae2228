//! The Llama family — Llama 3, Qwen2 and Mistral as Hugging Face
//! `transformers` computes them — calling [`LlamaHooks`] at every site.
//!
//! - [`Llama`]: the model (RMS norms, RoPE, grouped-query attention, the
//!   gated SiLU MLP, Mistral's and Qwen2's sliding window); `forward`,
//!   `forward_cached` with a [`LlamaKvCache`], and [`HookedModel`](crate::HookedModel).
//! - [`LlamaConfig`]: `config.json` in transformers 4.x's RoPE style
//!   (`rope_theta`, `rope_scaling`) or 5.x's (`rope_parameters`).
//! - [`checkpoint`]: Hugging Face checkpoints in and out (one file or
//!   shards; F32, BF16, F16), through [`crate::weights::WeightFiles`].
//! - [`rope`]: the frequencies (default and `llama3`) and the rotation.

pub mod checkpoint;
mod config;
mod hooks;
pub mod layers;
mod model;
pub mod rope;

pub use config::{LayerType, LlamaConfig, TokenIds};
pub use hooks::{
    LlamaAttentionHooks, LlamaHooks, LlamaMlpHooks, LlamaResidualStreamHooks,
    LlamaResidualStreamTorsoHooks, RmsNormHooks,
};
pub use model::Llama;

/// The Llama family's KV cache: the one every family shares.
pub type LlamaKvCache<B> = crate::KvCache<B>;
