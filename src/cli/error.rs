//! Errors of the `hooks` command and the exit code of each kind.

use std::fmt;
use std::path::{Path, PathBuf};

use hooks_core::HookError;
use hooks_core::path::escape_control;

use hooks_model::ModelError;
use hooks_model::shown;

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
    /// `config.json`, weights (`model.safetensors` or shards with
    /// `model.safetensors.index.json`) or index, or weights holding NaN or
    /// infinity (without `--allow-non-finite`).
    pub const MODEL_FILES: u8 = 4;
    /// Values went non-finite while running (the message names the first
    /// layer and site that did, or the training step); nothing was written.
    pub const NON_FINITE: u8 = 5;
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
    /// Values went non-finite while running (exit 5): the first site that
    /// did, and what the command did about it.
    NonFinite {
        /// Where.
        site: Box<hooks_model::NonFiniteSite>,
        /// E.g. "nothing was written to `out.safetensors`".
        note: String,
    },
    /// Values went non-finite while running somewhere other than a site
    /// (a training loss or parameter), described in words (exit 5).
    Diverged(String),
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
            CliError::NonFinite { .. } | CliError::Diverged(_) => exit::NON_FINITE,
            CliError::Other(_) => exit::FAILURE,
        }
    }
}

/// Classifies a [`ModelError`] raised outside loading.
fn model_error_code(e: &ModelError) -> u8 {
    match e {
        ModelError::TokenOutOfRange { .. }
        | ModelError::TooLong { .. }
        | ModelError::ContextOverflow { .. }
        | ModelError::BadBatch(_)
        | ModelError::Hook(_) => exit::INVALID_INPUT,
        ModelError::BadConfig(_)
        | ModelError::BadSafetensors { .. }
        | ModelError::BadCheckpoint { .. }
        | ModelError::MissingKey { .. }
        | ModelError::WrongShape { .. }
        | ModelError::WrongDtype { .. }
        | ModelError::ConfigMismatch { .. }
        | ModelError::NonFiniteWeight { .. }
        | ModelError::BadTokenizer { .. }
        | ModelError::NoTokenizer { .. } => exit::MODEL_FILES,
        ModelError::NonFinite(_) => exit::NON_FINITE,
        _ => exit::FAILURE,
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Input(msg) | CliError::Diverged(msg) | CliError::Other(msg) => {
                f.write_str(msg)
            }
            CliError::Hook(e) => write!(f, "{e}"),
            CliError::ModelFiles { dir, source } => {
                write!(f, "cannot load the checkpoint in `{}`: ", shown(dir))?;
                match &**source {
                    ModelError::NonFiniteWeight {
                        path,
                        key,
                        index,
                        value,
                    } => write!(
                        f,
                        "{}: weight `{}` holds a non-finite value, {value}, at flat index \
                         {index}; pass --allow-non-finite to load it anyway",
                        shown(path),
                        escape_control(key)
                    ),
                    other => write!(f, "{other}"),
                }
            }
            CliError::Model(e) => write!(f, "{e}"),
            CliError::NonFinite { site, note } => write!(f, "{site}; {note}"),
        }
    }
}

impl std::error::Error for CliError {}

/// The error for an output file that could not be written: the I/O error's
/// own words after the path ("cannot write `out.safetensors`: No space left
/// on device (os error 28)").
pub fn write_error(out: &Path, e: ModelError) -> CliError {
    match e {
        ModelError::Io { source, .. } => {
            CliError::Other(format!("cannot write `{}`: {source}", shown(out)))
        }
        e @ ModelError::NotAFile { .. } => CliError::Other(format!(
            "{e}; give the path of a regular file, or `-` for standard output"
        )),
        other => CliError::Other(format!("cannot write `{}`: {other}", shown(out))),
    }
}

/// `text` with control characters escaped line by line (newlines kept), for
/// anything printed to the terminal that may echo user input.
pub fn escape_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| escape_control(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

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
        let never = HookError::NeverFired {
            hooks: vec![hooks_core::HookCalls {
                site: "attn.q".into(),
                stage: hooks_core::Stage::Fwd,
                hook: "Record".into(),
                calls: 0,
                layers: vec![],
            }],
        };
        let strict = CliError::from(never);
        assert_eq!(strict.exit_code(), exit::INVALID_INPUT);
        assert_eq!(
            strict.to_string(),
            "1 hook never ran: `Record` on `attn.q.fwd`"
        );
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

    #[test]
    fn escaping_keeps_lines() {
        assert_eq!(escape_lines("a\u{1b}[31mb\nc\td"), "a\\u{1b}[31mb\nc\\td");
    }
}
