//! What can go wrong training a sparse autoencoder, each error naming the
//! option, step or source involved.

use hooks_core::HookError;
use hooks_model::ModelError;

/// A training error.
#[derive(Debug, thiserror::Error)]
pub enum SaeTrainError {
    /// An option is out of range or inconsistent with the activations
    /// (the message names it).
    #[error("{0}")]
    Config(String),
    /// The activation source failed or gave malformed activations.
    #[error("activation source: {0}")]
    Source(String),
    /// The source had fewer tokens than training needs to start.
    #[error(
        "the activation source ran out after {got} tokens; at least {needed} are needed \
         (the pre-bias sample and one batch)"
    )]
    TooFewTokens {
        /// Tokens the source gave.
        got: usize,
        /// Tokens needed.
        needed: usize,
    },
    /// A loss or a parameter went NaN or infinite.
    #[error(
        "training diverged at step {step}: {what} is not finite (lower the learning rate, \
         or check the activations for NaN or infinity)"
    )]
    NonFinite {
        /// The step (0-based) that produced it.
        step: usize,
        /// What went non-finite.
        what: &'static str,
    },
    /// The model failed while producing activations.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A hook path failed (an unknown site, a wrong layer).
    #[error(transparent)]
    Hook(#[from] HookError),
    /// The activation store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
