//! The reference GPT-2 in Burn, faithful at every hook site.
//!
//! - [`Gpt2`]: the model; `forward(&batch, &hooks)` calls a
//!   [`TransformerHooks`] at every site of `SITES.md`, with the layer in the
//!   context inside blocks and none outside.
//! - [`TokenBatch`]: token rows (optionally padded), checked before any
//!   tensor work; [`KvCache`] and [`sample`] for generation.
//! - [`checkpoint`]: Hugging Face GPT-2 checkpoints in and out ([`weights`]:
//!   safetensors files read defensively; [`finite`]: NaN and infinity checks;
//!   [`files`]: atomic output files).
//! - [`tokenizer`]: a folder's Hugging Face `tokenizer.json`, or GPT-2's BPE
//!   (tiktoken's bundled `r50k_base`) for GPT-2 folders without one.
//! - [`backend`]: the CPU backends and CUDA behind the `cuda` feature.

#![warn(missing_docs)]
// Errors name the file, key and shapes involved; they are returned while
// loading or checking inputs, never per tensor operation.
#![allow(clippy::result_large_err)]

pub mod alloc;
mod autodiff_matmul;
pub mod backend;
mod batch;
pub mod checkpoint;
mod config;
mod error;
pub mod family;
pub mod files;
pub mod finite;
mod fused;
pub mod gpt2;
mod hooked;
pub mod inputs;
pub mod kv_cache;
pub mod llama;
pub mod ops;
pub mod sample;
pub mod tokenizer;
pub mod weights;

pub use batch::TokenBatch;
pub use checkpoint::LoadOptions;
pub use error::{ModelError, shown};
pub use family::{AnyConfig, FamilyJob, FromCheckpoint, SUPPORTED_MODEL_TYPES};
pub use finite::NonFiniteSite;
pub use gpt2::{
    AttentionHooks, Gpt2, Gpt2Config, Gpt2Sizes, MlpHooks, NormalizationHooks, ResidualStreamHooks,
    ResidualStreamTorsoHooks, TransformerHooks,
};
pub use hooked::{HookedModel, ModelDims};
pub use kv_cache::KvCache;
pub use llama::{Llama, LlamaConfig, LlamaHooks, LlamaKvCache};
