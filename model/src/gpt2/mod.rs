//! GPT-2: the reference model of `seed_hooks.py`, calling
//! [`TransformerHooks`] at every site of `SITES.md`.

pub mod checkpoint;
mod config;
mod hooks;
pub mod layers;
mod model;

pub use checkpoint::{expected_weights, load_config};
pub use config::{Gpt2Config, Gpt2Sizes};
pub use hooks::{
    AttentionHooks, MlpHooks, NormalizationHooks, ResidualStreamHooks, ResidualStreamTorsoHooks,
    TransformerHooks,
};
pub use model::Gpt2;
