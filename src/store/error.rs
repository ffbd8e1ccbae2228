//! What can go wrong building or reading an activation store, each error
//! naming the file, line, key or field involved.

use std::path::PathBuf;

use hooks_core::HookError;
use hooks_model::{ModelError, NonFiniteSite, shown};

use super::manifest::StoreDtype;

/// An activation-store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", shown(path))]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The corpus file is malformed (the message names the line or offset).
    #[error("corpus {}: {reason}", shown(path))]
    Corpus {
        /// The corpus file.
        path: PathBuf,
        /// What is wrong, and where.
        reason: String,
    },
    /// A manifest or shard is malformed, missing or does not match its
    /// record.
    #[error("activation store {}: {reason}", shown(path))]
    Store {
        /// The manifest, shard or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The folder holds a store made by a different command: resuming
    /// into it would mix two stores.
    #[error(
        "{} holds an activation store made with a different {field} ({found}, this run: \
         {wanted}); nothing was changed — use another --out folder, or rerun the original command \
         to resume it",
        shown(path)
    )]
    Mismatch {
        /// The manifest.
        path: PathBuf,
        /// The differing field.
        field: &'static str,
        /// The manifest's value.
        found: String,
        /// This run's value.
        wanted: String,
    },
    /// Two slices of a split corpus were made by different commands, so
    /// they cannot be merged into one store.
    #[error(
        "{} was made with a different {field} ({found}) than {} ({wanted}): the slices are not \
         of one store; nothing was written — rerun that slice with the others' command (in a \
         folder of its own, then move its manifest and shards here), or move its manifest away",
        shown(path),
        shown(other)
    )]
    SliceMismatch {
        /// The slice manifest that differs.
        path: PathBuf,
        /// The one it was compared with.
        other: PathBuf,
        /// The differing field.
        field: &'static str,
        /// `path`'s value.
        found: String,
        /// `other`'s value.
        wanted: String,
    },
    /// On resume, the corpus rows an earlier run stored are not the
    /// corpus's rows now: the corpus changed (and kept its size).
    #[error(
        "{} no longer matches {}, which the store was begun from: {what}; nothing was changed — \
         the corpus changed since, so give another --out folder for it (or restore the old \
         corpus to resume)",
        shown(corpus),
        shown(shard)
    )]
    CorpusChanged {
        /// The corpus file.
        corpus: PathBuf,
        /// The shard whose rows differ.
        shard: PathBuf,
        /// Where and how, in words.
        what: String,
    },
    /// A shard's bytes are not those its manifest records: it was changed
    /// or damaged after it was written.
    #[error(
        "activation store shard {}: {what}; it changed after it was written — rebuild the store \
         (or restore the shard from a copy)",
        shown(path)
    )]
    Corrupt {
        /// The shard.
        path: PathBuf,
        /// What differs (size or SHA-256, with both values).
        what: String,
    },
    /// A finite value beyond the range of the store's 16-bit element type,
    /// which would be stored as infinity.
    #[error(
        "`{key}` holds {value} (in corpus row {row}), which overflowed {dtype} (largest finite \
         value {max}) and would be stored as infinity; store with --dtype {suggest} (the shards \
         written so far are kept)",
        key = site.key(),
        max = dtype.max_finite(),
        suggest = dtype.wider()
    )]
    Overflow {
        /// The key, layer and element (its `value` is the infinity it would
        /// become).
        site: Box<NonFiniteSite>,
        /// The finite value.
        value: f32,
        /// The element type it overflows.
        dtype: StoreDtype,
        /// The corpus row it is in.
        row: u64,
    },
    /// An option is out of range, inconsistent with the model, or would
    /// overwrite an input (`--out` naming the corpus or the model).
    #[error("{0}")]
    Options(String),
    /// A key the store does not hold.
    #[error("the store has no key `{key}`; it holds: {}", available.join(", "))]
    UnknownKey {
        /// The key asked for.
        key: String,
        /// The keys it holds.
        available: Vec<String>,
    },
    /// Recorded values went non-finite (the shards before it are kept).
    #[error("{site} (corpus row {row}); the shards written so far are kept")]
    NonFinite {
        /// Where.
        site: Box<NonFiniteSite>,
        /// The corpus row of the batch.
        row: u64,
    },
    /// The model failed.
    #[error(transparent)]
    Model(Box<ModelError>),
    /// A hook path failed.
    #[error(transparent)]
    Hook(Box<HookError>),
}

impl From<ModelError> for StoreError {
    fn from(e: ModelError) -> Self {
        StoreError::Model(Box::new(e))
    }
}

impl From<HookError> for StoreError {
    fn from(e: HookError) -> Self {
        StoreError::Hook(Box::new(e))
    }
}

impl StoreError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed store file.
    pub fn store(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        StoreError::Store {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
