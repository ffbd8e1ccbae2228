//! GPT-2 hyper-parameters, read from and written to Hugging Face's `config.json`.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The subset of a Hugging Face GPT-2 `config.json` the model needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Model width D.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Number of attention heads H.
    pub n_head: usize,
    /// Context window (position embeddings).
    pub n_positions: usize,
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// MLP width F; `None` means 4 D.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Whether the unembedding is the token embedding (GPT-2's default).
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Must be a tanh GELU (`gelu_new`, GPT-2's).
    #[serde(default = "default_activation")]
    pub activation_function: String,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_activation() -> String {
    "gelu_new".to_string()
}

impl Gpt2Config {
    /// GPT-2 small: 12 layers, width 768, 12 heads, 1024 positions, 50257 tokens.
    pub fn gpt2_small() -> Self {
        Self::new(12, 768, 12, 1024, 50257)
    }

    /// A config with GPT-2's defaults for everything else.
    pub fn new(
        n_layer: usize,
        n_embd: usize,
        n_head: usize,
        n_positions: usize,
        vocab_size: usize,
    ) -> Self {
        Gpt2Config {
            n_embd,
            n_layer,
            n_head,
            n_positions,
            vocab_size,
            layer_norm_epsilon: 1e-5,
            n_inner: None,
            tie_word_embeddings: true,
            activation_function: default_activation(),
        }
    }

    /// MLP width F.
    pub fn d_mlp(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Head width d.
    pub fn d_head(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Checks the numbers make a model.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |why: String| Err(ModelError::BadConfig(why));
        if self.n_embd == 0 || self.n_layer == 0 || self.n_head == 0 {
            return bad("n_embd, n_layer and n_head must be positive".into());
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if self.n_positions == 0 || self.vocab_size == 0 {
            return bad("n_positions and vocab_size must be positive".into());
        }
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast"
        ) {
            return bad(format!(
                "activation_function `{}` is not supported; GPT-2 uses the tanh GELU `gelu_new`",
                self.activation_function
            ));
        }
        Ok(())
    }

    /// Parses `config.json` text.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let config: Gpt2Config = serde_json::from_str(text)
            .map_err(|e| ModelError::BadConfig(format!("config.json: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// `config.json` text in Hugging Face's layout.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("a config serialises");
        let map = value
            .as_object_mut()
            .expect("a struct serialises to an object");
        map.insert("model_type".into(), "gpt2".into());
        map.insert("n_ctx".into(), self.n_positions.into());
        map.insert(
            "architectures".into(),
            serde_json::json!(["GPT2LMHeadModel"]),
        );
        serde_json::to_string_pretty(&value).expect("json")
    }
}
