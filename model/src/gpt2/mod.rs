//! GPT-2: the reference model of `seed_hooks.py`, calling
//! [`TransformerHooks`] at every site of `SITES.md`.

mod hooks;
pub mod layers;
mod model;

pub use hooks::{
    AttentionHooks, MlpHooks, NormalizationHooks, ResidualStreamHooks, ResidualStreamTorsoHooks,
    TransformerHooks,
};
pub use model::{Gpt2, KvCache};
