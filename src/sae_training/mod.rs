//! Sparse autoencoders trained inside a Burn loop, with OpenAI's recipe
//! (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"):
//!
//! - TopK (`k` latents per token) or ReLU + L1 autoencoders, the project's
//!   [`SparseAutoencoder`](crate::experiments::SparseAutoencoder): save it
//!   with its `save`, splice it with [`splice_sae`](crate::experiments::splice_sae);
//! - the pre-bias starts at the geometric median (or mean) of a sample, the
//!   decoder rows are random unit directions and the encoder their
//!   transpose, scaled so that the first reconstructions have the data's
//!   norm; there is a latent bias;
//! - decoder rows stay unit-norm: each row's gradient loses its component
//!   along the row before Adam's step, and the rows are renormalised after it;
//! - dead latents (not fired for `dead_after_tokens` tokens) are tracked
//!   and trained by the AuxK loss: their `aux_k` largest pre-activations
//!   reconstruct the residual the live latents leave (coefficient 1/32);
//! - Adam (Burn's), metrics every N steps (MSE, fraction of variance
//!   explained, L0, dead latents) handed to a callback.
//!
//! Activations come from an [`ActivationSource`]: a model run live through
//! hooks ([`LiveSource`]), an activation store written by `hooks cache
//! --dataset` ([`StoreSource`]), memory ([`MemorySource`]) or a source of
//! your own; a [`ShuffleBuffer`] mixes them. [`train_sae`] runs a whole
//! training; [`SaeTrainer::step`] is one step, for a loop of your own.

mod config;
mod dead;
mod error;
mod init;
mod live;
mod metrics;
#[cfg(feature = "collective")]
mod parallel;
mod run;
mod select;
mod source;
mod store;
mod trainer;

pub use config::{PreBiasInit, SaeKind, SaeTrainConfig};
pub use dead::DeadLatents;
pub use error::SaeTrainError;
pub use init::{geometric_median, init_sae, mean, unit_rows};
pub use live::{
    LiveSource, TokenBatches, check_site, random_tokens, repeated_runs, site_width, token_rows,
};
pub use metrics::{Evaluation, MetricsWindow, SaeMetrics, evaluate};
#[cfg(feature = "collective")]
pub use parallel::train_sae_data_parallel;
pub use run::{TrainEvent, TrainedSae, run_steps, train_sae, train_sae_observed};
pub use select::{TopKScan, kth_largest, kth_largest_rows, scan_topk};
pub use source::{ActivationSource, MemorySource, ShuffleBuffer};
pub use store::StoreSource;
pub use trainer::{NoSync, SaeTrainer, StepStats, StepSync, project_out_parallel, to_autodiff};
