//! Errors of the `hooks` command and the exit code of each kind.

use std::fmt;
use std::path::{Path, PathBuf};

use hooks_core::HookError;

use crate::ModelError;

/// Exit codes of the `hooks` command.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Anything not covered below (an output file that cannot be written, no CUDA, ...).
    pub const FAILURE: u8 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: u8 = 2;
    /// Invalid input: an unknown site pattern, bad or out-of-vocabulary
    /// tokens, rows of unequal lengths, a bad gradient target.
    pub const INVALID_INPUT: u8 = 3;
    /// A checkpoint that cannot be loaded: missing or malformed
    /// `config.json` or `model.safetensors`.
    pub const MODEL_FILES: u8 = 4;
}

/// What went wrong; its `Display` is the message printed after `error: `.
#[derive(Debug)]
pub enum CliError {
    /// Invalid input described in words (exit 3).
    Input(String),
    /// A site pattern that names no site (exit 3); the message comes from
    /// hooks-core and suggests the closest name.
    Hook(Box<HookError>),
    /// The checkpoint in `dir` cannot be loaded (exit 4).
    ModelFiles {
        /// The checkpoint folder.
        dir: PathBuf,
        /// Why.
        source: Box<ModelError>,
    },
    /// An error of the model while running (exit 3 for bad batches, 4 for
    /// checkpoint problems, 1 otherwise).
    Model(Box<ModelError>),
    /// Anything else (exit 1).
    Other(String),
}

impl CliError {
    /// A checkpoint loading error.
    pub fn model_files(dir: &Path, source: ModelError) -> Self {
        CliError::ModelFiles {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) | CliError::Hook(_) => exit::INVALID_INPUT,
            CliError::ModelFiles { .. } => exit::MODEL_FILES,
            CliError::Model(e) => model_error_code(e),
            CliError::Other(_) => exit::FAILURE,
        }
    }
}

/// Classifies a [`ModelError`] raised outside loading.
fn model_error_code(e: &ModelError) -> u8 {
    match e {
        ModelError::TokenOutOfRange { .. }
        | ModelError::TooLong { .. }
        | ModelError::BadBatch(_)
        | ModelError::Hook(_) => exit::INVALID_INPUT,
        ModelError::BadConfig(_)
        | ModelError::BadSafetensors { .. }
        | ModelError::MissingKey { .. }
        | ModelError::WrongShape { .. }
        | ModelError::WrongDtype { .. }
        | ModelError::ConfigMismatch { .. } => exit::MODEL_FILES,
        _ => exit::FAILURE,
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Input(msg) | CliError::Other(msg) => f.write_str(msg),
            CliError::Hook(e) => write!(f, "{e}"),
            CliError::ModelFiles { dir, source } => {
                write!(
                    f,
                    "cannot load the checkpoint in `{}`: {source}",
                    dir.display()
                )
            }
            CliError::Model(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<HookError> for CliError {
    fn from(e: HookError) -> Self {
        CliError::Hook(Box::new(e))
    }
}

impl From<ModelError> for CliError {
    fn from(e: ModelError) -> Self {
        CliError::Model(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(CliError::Input("x".into()).exit_code(), exit::INVALID_INPUT);
        assert_eq!(CliError::Other("x".into()).exit_code(), exit::FAILURE);
        let bad = ModelError::BadBatch("rows".into());
        assert_eq!(CliError::from(bad).exit_code(), exit::INVALID_INPUT);
        let cfg = ModelError::BadConfig("no".into());
        assert_eq!(
            CliError::model_files(Path::new("m"), cfg).exit_code(),
            exit::MODEL_FILES
        );
        let cuda = ModelError::NoCuda("no driver".into());
        assert_eq!(CliError::from(cuda).exit_code(), exit::FAILURE);
    }
}
