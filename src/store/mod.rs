//! Activation stores: a corpus streamed through any hooked model, the
//! values at chosen sites written to disk in shards, with memory bounded by
//! one shard, resumable, splittable across machines.
//!
//! A store is a folder:
//! - `manifest.json` ([`Manifest`]): the model, corpus, sites, layers,
//!   dtype and row length; the stored keys with their per-token shapes; the
//!   shards with their row and token ranges and SHA-256;
//! - `shard-00000.safetensors`, …: each holds, for N consecutive corpus
//!   tokens (the rows of one block, the batch and position axes flattened),
//!   every stored key as `[N, …]` (`layers.1.resid.torso.post_mlp` is
//!   `[N, D]`; attention sites keep their key and head axes,
//!   `layers.0.attn.qk_probs` is `[N, K, H]`), plus `tokens`, `row` and
//!   `position` `[N]` (i64).
//!
//! [`build_store`] writes one (the `hooks cache --dataset` command),
//! [`ActivationStore`] reads one back, [`merge_manifests`] joins the slices
//! of a corpus split with [`Slice`].

mod corpus;
mod error;
mod integrity;
mod manifest;
mod merge;
mod reader;
mod resume;
mod shard;
mod writer;

pub use corpus::{Corpus, CorpusFormat, Rows, TokenWidth};
pub use error::StoreError;
pub use manifest::{
    CorpusRecord, FORMAT, MANIFEST, Manifest, ShardRecord, Slice, StoreDtype, StoredKey, VERSION,
};
pub use merge::{merge_manifests, slice_manifests};
pub use reader::{ActivationStore, KeyChunk};
pub use shard::shard_file;
pub use writer::{
    ModelRecord, Outcome, Progress, StoreOptions, blocks_needed, build_store, rows_per_shard,
    stored_keys,
};
