//! burn-hooks: a statically typed hook DSL for transformer interpretability
//! on Burn — one dependency for the whole system.
//!
//! - [`hooks_core`]'s runtime (hooks, sites, trees, paths, ready hooks,
//!   autoencoder splices) is re-exported at the root;
//! - [`macro@HookCollection`] derives hook trees from plain structs;
//! - [`model`] is the reference GPT-2 in Burn, faithful at every site.
//!
//! Start with the README; `examples/` has what a user runs first.

extern crate self as burn_hooks;

pub use hooks_core::*;
pub use hooks_model as model;

/// The hook DSL and the model's main types.
pub mod prelude {
    pub use hooks_core::prelude::*;
    pub use hooks_model::{Gpt2, Gpt2Config, KvCache, TokenBatch, TransformerHooks};
}

/// The README's Rust examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
