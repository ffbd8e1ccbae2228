//! What loading a checkpoint folder means for every family: the file names
//! of Hugging Face's layout and the [`LoadOptions`]. The readers are the
//! families' own (`gpt2::checkpoint`, `llama::checkpoint`), on top of
//! [`crate::weights::WeightFiles`].

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::TensorData;

use crate::ModelError;
use crate::files::write_atomic;
use crate::weights::{self, write_safetensors_to};

/// The file names inside a checkpoint folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file inside a checkpoint folder (when not sharded).
pub const WEIGHTS_FILE: &str = weights::SINGLE_FILE;
/// The index of a sharded checkpoint folder.
pub const INDEX_FILE: &str = weights::INDEX_FILE;
/// The Hugging Face tokenizer inside a checkpoint folder (optional).
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// How a family's `load_with` (e.g. [`Gpt2::load_with`](crate::Gpt2::load_with)) treats what it reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Accept weights holding NaN or infinite values (refused by default
    /// with [`ModelError::NonFiniteWeight`](crate::ModelError::NonFiniteWeight), naming the key and the first
    /// bad element): for studying how such values spread.
    pub allow_non_finite: bool,
}

impl LoadOptions {
    /// The defaults: every check on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`allow_non_finite`](Self::allow_non_finite).
    pub fn allow_non_finite(mut self, allow: bool) -> Self {
        self.allow_non_finite = allow;
        self
    }
}

/// Writes a checkpoint folder in Hugging Face's layout: `entries` as one
/// f32 `model.safetensors` and `config_json` as `config.json`, each through
/// a temporary file renamed into place (a failure keeps the old files).
///
/// A folder holding a sharded checkpoint (`model.safetensors.index.json`)
/// is refused with [`ModelError::BadCheckpoint`]: a `model.safetensors`
/// beside it would make the folder ambiguous, and it would not load.
pub fn save_folder(
    dir: &Path,
    entries: &[(String, TensorData)],
    config_json: &str,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        return Err(ModelError::BadCheckpoint {
            path: index,
            reason: format!(
                "the folder holds a sharded checkpoint; saving `{WEIGHTS_FILE}` beside it \
                 would make the folder ambiguous (and it would not load): save to another \
                 folder, or remove the shards and the index first"
            ),
        });
    }
    write_atomic(&dir.join(WEIGHTS_FILE), |w| {
        write_safetensors_to(w, entries, &BTreeMap::new())
    })?;
    write_atomic(&dir.join(CONFIG_FILE), |w| {
        w.write_all(config_json.as_bytes())
    })
    .map(|_| ())
}

/// GPT-2's `config.json` reader and weight list, under the paths they had
/// before the second family: prefer `hooks_model::gpt2::{load_config,
/// expected_weights}`, or [`crate::AnyConfig::load`] for any family.
pub use crate::gpt2::{expected_weights, load_config};
