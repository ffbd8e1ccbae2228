//! burn-hooks: a statically typed hook DSL for transformer interpretability
//! on Burn — one dependency for the whole system.
//!
//! - [`hooks_core`]'s runtime (hooks, sites, trees, paths, ready hooks,
//!   autoencoder splices) is re-exported at the root;
//! - [`macro@HookCollection`] derives hook trees from plain structs;
//! - [`model`] has the model families in Burn (GPT-2, faithful to the
//!   reference at every site, and the Llama family: Llama 3, Qwen2,
//!   Mistral), each with its own derived tree behind one trait
//!   ([`model::HookedModel`]), their checkpoints, tokenizers and sampling;
//! - [`experiments`] is what researchers do with any hooked model (cache,
//!   ablate, patch, attribute, splice SAEs), [`train`] trains through hooks,
//!   [`store`] streams a corpus's activations to disk,
//!   and [`cli`] is the `hooks` tool (feature `cli`, on by default).
//!
//! Start with the README; `examples/` has what a user runs first.

// Errors name the file, key and shapes involved; they are returned while
// loading or checking inputs, never per tensor operation.
#![allow(clippy::result_large_err)]

extern crate self as burn_hooks;

pub use hooks_core::*;
pub use hooks_model as model;

#[cfg(feature = "cli")]
pub mod cli;
pub mod experiments;
pub mod sae_training;
pub mod site_order;
pub mod store;
pub mod train;

/// The hook DSL and the model's main types.
pub mod prelude {
    pub use hooks_core::prelude::*;
    pub use hooks_model::{Gpt2, Gpt2Config, HookedModel, KvCache, TokenBatch, TransformerHooks};
}

/// The README's Rust examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
