//! Which family a checkpoint folder holds, from `config.json`'s
//! `model_type`, and running generic work on it: how the `hooks` tool and
//! other callers that take any folder stay generic over [`HookedModel`].

use std::path::Path;

use burn::tensor::backend::Backend;

use crate::checkpoint::{CONFIG_FILE, LoadOptions};
use crate::{Gpt2, Gpt2Config, HookedModel, Llama, LlamaConfig, ModelDims, ModelError, shown};

/// The `model_type`s a checkpoint folder may have.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["gpt2", "llama", "qwen2", "mistral"];

/// A family whose models load from Hugging Face checkpoint folders.
pub trait FromCheckpoint<B: Backend>: HookedModel<B> {
    /// Loads `dir` (`config.json` plus weights) onto `device`.
    fn load_with(dir: &Path, device: &B::Device, options: LoadOptions) -> Result<Self, ModelError>;
}

impl<B: Backend> FromCheckpoint<B> for Gpt2<B> {
    fn load_with(dir: &Path, device: &B::Device, options: LoadOptions) -> Result<Self, ModelError> {
        Gpt2::load_with(dir, device, options)
    }
}

impl<B: Backend> FromCheckpoint<B> for Llama<B> {
    fn load_with(dir: &Path, device: &B::Device, options: LoadOptions) -> Result<Self, ModelError> {
        Llama::load_with(dir, device, options)
    }
}

/// A checkpoint folder's configuration, of whichever family it is.
#[derive(Clone, Debug)]
pub enum AnyConfig {
    /// `model_type: "gpt2"`.
    Gpt2(Gpt2Config),
    /// `model_type: "llama"`, `"qwen2"` or `"mistral"`.
    Llama(LlamaConfig),
}

/// Work generic over the family, run by [`AnyConfig::run`] with the
/// folder's model type (weights not loaded yet: the work loads them with
/// [`FromCheckpoint::load_with`] when it needs them).
pub trait FamilyJob<B: Backend> {
    /// What the work returns.
    type Output;
    /// Runs with the family's model type `M`.
    fn run<M: FromCheckpoint<B>>(self, config: &AnyConfig) -> Self::Output;
}

impl AnyConfig {
    /// Reads `dir`'s `config.json` and picks the family from its
    /// `model_type` (a GPT-2 config without one, as older exports have, is
    /// GPT-2). An unknown type is an error naming it and the supported ones.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = dir.as_ref().join(CONFIG_FILE);
        let text = crate::inputs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            ModelError::BadConfig(why) => ModelError::BadConfig(format!("{}: {why}", shown(&path))),
            other => other,
        })
    }

    /// Parses `config.json` text (errors do not name the file).
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ModelError::BadConfig(format!("not valid JSON: {e}")))?;
        let model_type = match value.get("model_type") {
            None | Some(serde_json::Value::Null) if value.get("n_embd").is_some() => "gpt2",
            None | Some(serde_json::Value::Null) => {
                return Err(ModelError::BadConfig(format!(
                    "no `model_type` field, so the model family is unknown; supported: {}",
                    SUPPORTED_MODEL_TYPES.join(", ")
                )));
            }
            Some(serde_json::Value::String(t)) => t.as_str(),
            Some(other) => {
                return Err(ModelError::BadConfig(format!(
                    "model_type must be a string, not {other}"
                )));
            }
        };
        match model_type {
            "gpt2" => Ok(AnyConfig::Gpt2(Gpt2Config::from_json(text)?)),
            "llama" | "qwen2" | "mistral" => Ok(AnyConfig::Llama(LlamaConfig::from_json(text)?)),
            other => Err(ModelError::BadConfig(format!(
                "model_type `{}` is not supported; supported: {}",
                hooks_core::path::escape_control(other),
                SUPPORTED_MODEL_TYPES.join(", ")
            ))),
        }
    }

    /// The `model_type`.
    pub fn model_type(&self) -> &str {
        match self {
            AnyConfig::Gpt2(_) => "gpt2",
            AnyConfig::Llama(c) => c.model_type(),
        }
    }

    /// The sizes site shapes are written in.
    pub fn dims(&self) -> ModelDims {
        match self {
            AnyConfig::Gpt2(c) => c.dims(),
            AnyConfig::Llama(c) => c.dims(),
        }
    }

    /// Runs `job` with this family's model type on backend `B`.
    pub fn run<B: Backend, J: FamilyJob<B>>(&self, job: J) -> J::Output {
        match self {
            AnyConfig::Gpt2(_) => job.run::<Gpt2<B>>(self),
            AnyConfig::Llama(_) => job.run::<Llama<B>>(self),
        }
    }
}
