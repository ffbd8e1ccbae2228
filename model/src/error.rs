//! Errors of the model crate: every bad input names what was wrong.

use std::path::{Path, PathBuf};

use hooks_core::path::escape_control;

use crate::finite::NonFiniteSite;

/// What went wrong loading, saving or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{}: {source}", shown(path))]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `config.json` is not a usable GPT-2 config.
    #[error("bad config: {}", escape_control(.0))]
    BadConfig(String),
    /// The safetensors file is malformed or truncated.
    #[error(
        "{}: not a valid safetensors file: {}",
        shown(path),
        escape_control(reason)
    )]
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
    #[error("{}: missing weight `{}`{}", shown(path), escape_control(key), also_looked_for(.also_tried))]
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
    #[error(
        "{}: weight `{}` has shape {found:?}, expected {expected:?}",
        shown(path),
        escape_control(key)
    )]
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
    #[error(
        "{}: weight `{}` has dtype {dtype}; expected {expected}",
        shown(path),
        escape_control(key)
    )]
    WrongDtype {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
        /// The dtype found.
        dtype: String,
        /// The dtypes the reader supports, in words: `F32` for caches and
        /// autoencoders, `F32, BF16 or F16` for checkpoints
        /// ([`crate::weights::FLOAT_DTYPES_SHOWN`]).
        expected: &'static str,
    },
    /// A checkpoint folder whose weight files do not fit together: a
    /// sharded index that is not JSON or not Hugging Face's layout, that
    /// names a shard file not in the folder or leaves one out, that maps a
    /// key to a shard not holding it, a key in two shards; or a folder
    /// holding both `model.safetensors` and an index.
    #[error("{}: {}", shown(path), escape_control(reason))]
    BadCheckpoint {
        /// The index file (the folder when both layouts are there).
        path: PathBuf,
        /// What is wrong, naming the shard files and keys.
        reason: String,
    },
    /// The config and the weights disagree in a way a shape check cannot see.
    #[error("{}: {}", shown(path), escape_control(reason))]
    ConfigMismatch {
        /// The weights file.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// A weight holds a NaN or an infinity (refused unless loaded with
    /// [`LoadOptions::allow_non_finite`](crate::checkpoint::LoadOptions)).
    #[error(
        "{}: weight `{}` holds a non-finite value, {value}, at flat index {index}; \
         non-finite weights are refused unless loaded with `LoadOptions::allow_non_finite`",
        shown(path),
        escape_control(key)
    )]
    NonFiniteWeight {
        /// The file.
        path: PathBuf,
        /// The key as stored.
        key: String,
        /// Flat (row-major) index of the first non-finite element.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// Values at a hook site went non-finite while running: the first site
    /// (and layer) that did, found by [`Gpt2::first_non_finite`](crate::Gpt2::first_non_finite).
    #[error("{0}")]
    NonFinite(Box<NonFiniteSite>),
    /// An output path that exists and is not a regular file (a folder, a
    /// device, a named pipe, a socket): it is never replaced.
    #[error("{}", not_a_file(path, resolved, kind))]
    NotAFile {
        /// The path as given.
        path: PathBuf,
        /// Where its symbolic links lead (the path itself when it is none).
        resolved: PathBuf,
        /// What it is: `a folder`, `a character device`, ...
        kind: &'static str,
    },
    /// A `tokenizer.json` that cannot be used: not JSON (a truncated file),
    /// not Hugging Face's layout, a tokenizer model the `tokenizers` crate
    /// does not implement, or a text it could not encode.
    #[error("{}: {}", shown(path), escape_control(reason))]
    BadTokenizer {
        /// The `tokenizer.json` file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint folder without a `tokenizer.json`, of a model type that
    /// has no bundled tokenizer to fall back to (only `gpt2` has one).
    #[error(
        "{}: no tokenizer.json in the folder; a `{}` model needs one to tokenize text \
         (only `gpt2` folders fall back to the bundled GPT-2 BPE)",
        shown(dir),
        escape_control(model_type)
    )]
    NoTokenizer {
        /// The checkpoint folder.
        dir: PathBuf,
        /// The folder's `model_type`.
        model_type: String,
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
    /// A prompt plus the tokens to generate do not fit the context window
    /// (checked without overflow).
    #[error(
        "a prompt of {prompt} tokens + {new_tokens} new tokens exceeds the context window of {n_positions}"
    )]
    ContextOverflow {
        /// Prompt length.
        prompt: usize,
        /// Tokens asked for.
        new_tokens: usize,
        /// The context window.
        n_positions: usize,
    },
    /// Rows of a batch with different lengths, an empty batch or row, or a
    /// pad mask that does not fit the tokens.
    #[error("bad batch: {}", escape_control(.0))]
    BadBatch(String),
    /// A CUDA device was asked for but none can be used.
    #[error("CUDA is not available: {0}")]
    NoCuda(String),
}

impl ModelError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A path for a message, its control characters escaped.
pub fn shown(path: &Path) -> String {
    escape_control(&path.display().to_string()).into_owned()
}

fn not_a_file(path: &Path, resolved: &Path, kind: &str) -> String {
    if path == resolved {
        format!(
            "cannot write `{}`: it is {kind}, not a regular file (refusing to replace it)",
            shown(path)
        )
    } else {
        format!(
            "cannot write `{}`: it links to `{}`, which is {kind}, not a regular file \
             (refusing to replace it)",
            shown(path),
            shown(resolved)
        )
    }
}

/// ` (also looked for `a`, `b`)`, or nothing.
fn also_looked_for(keys: &[String]) -> String {
    if keys.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = keys
        .iter()
        .map(|k| format!("`{}`", escape_control(k)))
        .collect();
    format!(" (also looked for {})", quoted.join(", "))
}
