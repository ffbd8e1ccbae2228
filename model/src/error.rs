//! Errors of the model crate: every bad input names what was wrong.

use std::path::PathBuf;

/// What went wrong loading, saving or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `config.json` is not a usable GPT-2 config.
    #[error("bad config: {0}")]
    BadConfig(String),
    /// The safetensors file is malformed or truncated.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    BadSafetensors {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A hook could not run during the forward pass ([`hooks_core::Ctx::fail`]):
    /// a patch source of the wrong shape, a missing recording.
    #[error(transparent)]
    Hook(#[from] hooks_core::HookFault),
    /// A weight the model needs is not in the file.
    #[error("{}: missing weight `{key}`{}", path.display(), also_looked_for(.also_tried))]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key, without prefix.
        key: String,
        /// Other names tried for the same weight (GPT-2 checkpoints may
        /// prefix every key with `transformer.`); empty when there are none.
        also_tried: Vec<String>,
    },
    /// A weight has the wrong shape.
    #[error("{}: weight `{key}` has shape {found:?}, expected {expected:?}", path.display())]
    WrongShape {
        /// The file.
        path: PathBuf,
        /// The key as found.
        key: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A weight has an unsupported element type.
    #[error("{}: weight `{key}` has dtype {dtype}; expected F32", path.display())]
    WrongDtype {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
        /// The dtype found.
        dtype: String,
    },
    /// The config and the weights disagree in a way a shape check cannot see.
    #[error("{}: {reason}", path.display())]
    ConfigMismatch {
        /// The weights file.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// A token id outside the vocabulary.
    #[error(
        "token id {token} at row {row}, position {position} is outside the vocabulary (size {vocab_size})"
    )]
    TokenOutOfRange {
        /// The id.
        token: u32,
        /// Batch row.
        row: usize,
        /// Position in the row.
        position: usize,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A sequence longer than the context window.
    #[error(
        "sequence of {len} tokens (row {row}) is longer than the context window of {n_positions}"
    )]
    TooLong {
        /// Batch row.
        row: usize,
        /// Its length.
        len: usize,
        /// The context window.
        n_positions: usize,
    },
    /// Rows of a batch with different lengths, an empty batch or row, or a
    /// pad mask that does not fit the tokens.
    #[error("bad batch: {0}")]
    BadBatch(String),
    /// A CUDA device was asked for but none can be used.
    #[error("CUDA is not available: {0}")]
    NoCuda(String),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

/// ` (also looked for `a`, `b`)`, or nothing.
fn also_looked_for(keys: &[String]) -> String {
    if keys.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    format!(" (also looked for {})", quoted.join(", "))
}
