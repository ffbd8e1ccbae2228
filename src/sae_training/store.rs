//! Activations from an activation store (`hooks cache --dataset`): one
//! key's values, one shard per `fill` (memory holds the shuffling buffer
//! and one shard), from the first shard again after the last (`cycle`, the
//! default).

use std::path::Path;

use crate::store::{ActivationStore, StoredKey};

use super::error::SaeTrainError;
use super::source::ActivationSource;

/// One key of an activation store, shard by shard in corpus order.
pub struct StoreSource {
    store: ActivationStore,
    key: StoredKey,
    width: usize,
    next_shard: usize,
    cycle: bool,
    passes: usize,
}

impl StoreSource {
    /// Opens the store in `dir` and picks `key` (a `hooks cache` key such as
    /// `layers.0.mlp.post_act`; an unknown key is an error listing the
    /// stored ones).
    pub fn open(dir: &Path, key: &str) -> Result<Self, SaeTrainError> {
        let store = ActivationStore::open(dir)?;
        let stored = store.key(key)?.clone();
        let width = store.width(key)?;
        if store.manifest().shards.is_empty() || store.tokens() == 0 {
            return Err(SaeTrainError::Source(format!(
                "the store in {} holds no tokens",
                dir.display()
            )));
        }
        Ok(StoreSource {
            store,
            key: stored,
            width,
            next_shard: 0,
            cycle: true,
            passes: 0,
        })
    }

    /// Whether to start again after the last shard (default true).
    pub fn cycle(mut self, cycle: bool) -> Self {
        self.cycle = cycle;
        self
    }

    /// Tokens in the store.
    pub fn tokens(&self) -> u64 {
        self.store.tokens()
    }

    /// Completed passes over the store.
    pub fn passes(&self) -> usize {
        self.passes
    }

    /// The store.
    pub fn store(&self) -> &ActivationStore {
        &self.store
    }
}

impl ActivationSource for StoreSource {
    fn width(&self) -> usize {
        self.width
    }

    fn fill(&mut self, out: &mut Vec<f32>) -> Result<usize, SaeTrainError> {
        let shards = self.store.manifest().shards.len();
        // Skips empty shards; gives up after one whole pass without a token.
        for _ in 0..=shards {
            if self.next_shard == shards {
                if !self.cycle {
                    return Ok(0);
                }
                self.next_shard = 0;
            }
            let i = self.next_shard;
            self.next_shard += 1;
            if self.next_shard == shards {
                self.passes += 1;
            }
            let (values, n) = self.store.read_key(i, &self.key)?;
            if values.len() != n * self.width {
                return Err(SaeTrainError::Source(format!(
                    "{}: `{}` holds {} values for {n} tokens of width {}",
                    self.store.shard_path(i).display(),
                    self.key.key,
                    values.len(),
                    self.width
                )));
            }
            if n > 0 {
                out.extend_from_slice(&values);
                return Ok(n);
            }
        }
        Ok(0)
    }

    fn describe(&self) -> String {
        format!(
            "`{}` of the store of {} tokens",
            self.key.key,
            self.store.tokens()
        )
    }
}
