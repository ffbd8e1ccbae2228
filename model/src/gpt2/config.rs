//! GPT-2 hyper-parameters, read from and written to Hugging Face's `config.json`.

use serde::{Deserialize, Serialize};

use crate::config::{
    checked_product, checked_sum, json_kind, require_positive, require_positive_finite, shown_json,
};
use crate::{ModelDims, ModelError};

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

/// GPT-2's `<|endoftext|>`, which Hugging Face takes as the default
/// beginning- and end-of-sequence token.
const GPT2_END_OF_TEXT: usize = 50256;

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

    /// MLP width F (`n_inner`, or 4 D). Saturates instead of overflowing;
    /// [`validate`](Self::validate) refuses a config where 4 D overflows.
    pub fn d_mlp(&self) -> usize {
        self.n_inner
            .unwrap_or_else(|| self.n_embd.saturating_mul(4))
    }

    /// Head width d (0 when `n_head` is 0, which
    /// [`validate`](Self::validate) refuses).
    pub fn d_head(&self) -> usize {
        self.n_embd.checked_div(self.n_head).unwrap_or(0)
    }

    /// The sizes site shapes are written in.
    pub fn dims(&self) -> ModelDims {
        ModelDims {
            n_layer: self.n_layer,
            d_model: self.n_embd,
            n_head: self.n_head,
            n_kv_head: self.n_head,
            d_head: self.d_head(),
            d_mlp: self.d_mlp(),
            vocab_size: self.vocab_size,
            n_ctx: self.n_positions,
        }
    }

    /// Checks the numbers make a model: every size positive, the epsilon a
    /// finite positive number, and every size the model computes from them
    /// (3 D, 4 D, V·D, positions·D, the weights of a layer and of the
    /// model, and their bytes) representable without overflow. Each error
    /// names the field and its value.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.sizes().map(|_| ())
    }

    /// The sizes the model is built with, computed with checked arithmetic
    /// (see [`validate`](Self::validate)).
    pub fn sizes(&self) -> Result<Gpt2Sizes, ModelError> {
        for (field, value) in [
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_positions", self.n_positions),
            ("vocab_size", self.vocab_size),
        ] {
            require_positive(field, value)?;
        }
        if let Some(f) = self.n_inner {
            require_positive("n_inner", f)?;
        }
        require_positive_finite("layer_norm_epsilon", self.layer_norm_epsilon)?;
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(ModelError::BadConfig(format!(
                "n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd, self.n_head
            )));
        }
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast"
        ) {
            return Err(ModelError::BadConfig(format!(
                "activation_function `{}` is not supported; GPT-2 uses the tanh GELU `gelu_new`",
                self.activation_function
            )));
        }
        let d = self.n_embd;
        let d_field = ("n_embd", d);
        let qkv = checked_product(
            "the attention's q, k, v width 3 · n_embd",
            &[("3", 3), d_field],
        )?;
        let d_mlp = match self.n_inner {
            Some(f) => f,
            None => checked_product(
                "the MLP width 4 · n_embd (n_inner is null)",
                &[("4", 4), d_field],
            )?,
        };
        let f_field = ("the MLP width", d_mlp);
        let wte = checked_product(
            "the token embedding vocab_size · n_embd",
            &[("vocab_size", self.vocab_size), d_field],
        )?;
        let wpe = checked_product(
            "the position embedding n_positions · n_embd",
            &[("n_positions", self.n_positions), d_field],
        )?;
        let c_attn = checked_product("c_attn n_embd · 3 n_embd", &[d_field, ("3 · n_embd", qkv)])?;
        let c_proj = checked_product("c_proj n_embd · n_embd", &[d_field, d_field])?;
        let c_fc = checked_product("c_fc n_embd · the MLP width", &[d_field, f_field])?;
        let per_layer = checked_sum(
            "the weights of one layer",
            &[
                4 * d as u128, // two norms
                c_attn as u128,
                qkv as u128,
                c_proj as u128,
                d as u128,
                2 * c_fc as u128, // c_fc and the MLP's c_proj
                d_mlp as u128,
                d as u128,
            ],
        )?;
        let blocks = checked_product(
            "the weights of all layers n_layer · (weights of one layer)",
            &[
                ("n_layer", self.n_layer),
                ("weights of one layer", per_layer),
            ],
        )?;
        let unembed = if self.tie_word_embeddings { 0 } else { wte };
        let parameters = checked_sum(
            "the model's weights",
            &[
                wte as u128,
                wpe as u128,
                2 * d as u128,
                blocks as u128,
                unembed as u128,
            ],
        )?;
        // Rust allocations are limited to isize::MAX bytes.
        if (parameters as u128) * 4 > isize::MAX as u128 {
            return Err(ModelError::BadConfig(format!(
                "the model's {parameters} f32 weights would take {} bytes, more than this \
                 machine can address",
                parameters as u128 * 4
            )));
        }
        Ok(Gpt2Sizes {
            d_model: d,
            d_mlp,
            d_head: d / self.n_head,
            qkv,
            per_layer,
            parameters,
        })
    }

    /// Parses `config.json` text. Each field is checked for its type
    /// first, so an error names the field and the value found
    /// (`n_layer must be a non-negative integer, not "two"`); errors say
    /// what is wrong, not where the text came from
    /// ([`crate::checkpoint::load_config`] adds the path).
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let bad = |why: String| ModelError::BadConfig(why);
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let Some(map) = value.as_object() else {
            return Err(bad(format!("not a JSON object but {}", json_kind(&value))));
        };
        fn integer(v: &serde_json::Value) -> bool {
            v.as_u64().is_some_and(|n| usize::try_from(n).is_ok())
        }
        for field in ["n_embd", "n_layer", "n_head", "n_positions", "vocab_size"] {
            match map.get(field) {
                None => return Err(bad(format!("missing field `{field}`"))),
                Some(v) if !integer(v) => {
                    return Err(bad(format!(
                        "{field} must be a non-negative integer, not {}",
                        shown_json(v)
                    )));
                }
                Some(_) => {}
            }
        }
        // The optional fields: each, when present, of the type it must have.
        type HasType = fn(&serde_json::Value) -> bool;
        let optional: [(&str, HasType, &str); 4] = [
            (
                "n_inner",
                |v| v.is_null() || integer(v),
                "null or a non-negative integer",
            ),
            (
                "layer_norm_epsilon",
                serde_json::Value::is_number,
                "a number",
            ),
            (
                "tie_word_embeddings",
                serde_json::Value::is_boolean,
                "true or false",
            ),
            (
                "activation_function",
                serde_json::Value::is_string,
                "a string",
            ),
        ];
        for (field, has_type, expected) in optional {
            if let Some(v) = map.get(field)
                && !has_type(v)
            {
                return Err(bad(format!(
                    "{field} must be {expected}, not {}",
                    shown_json(v)
                )));
            }
        }
        // Variants of the architecture this model does not implement, each
        // accepted only at GPT-2's value: another would change the outputs
        // without a word.
        let variants = [
            (
                "scale_attn_weights",
                true,
                "attention logits are divided by √d",
            ),
            (
                "scale_attn_by_inverse_layer_idx",
                false,
                "attention logits are not divided by the layer's index",
            ),
            (
                "add_cross_attention",
                false,
                "blocks have no cross-attention",
            ),
        ];
        for (field, supported, why) in variants {
            if let Some(v) = map.get(field)
                && *v != serde_json::Value::Bool(supported)
            {
                return Err(bad(format!(
                    "{field} = {} is not supported: this GPT-2 implements only {supported} \
                     ({why})",
                    shown_json(v)
                )));
            }
        }
        let config: Gpt2Config = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
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
        // Hugging Face defaults both to GPT-2's end-of-text token, 50256, and
        // warns when that lies outside a smaller vocabulary: say there is none.
        let end_of_text = (self.vocab_size > GPT2_END_OF_TEXT).then_some(GPT2_END_OF_TEXT);
        map.insert("bos_token_id".into(), serde_json::json!(end_of_text));
        map.insert("eos_token_id".into(), serde_json::json!(end_of_text));
        // This model has no dropout; Hugging Face's default is 0.1 at all
        // three places, which a model trained from these files in `train()`
        // mode would otherwise apply.
        for field in ["attn_pdrop", "embd_pdrop", "resid_pdrop"] {
            map.insert(field.into(), serde_json::json!(0.0));
        }
        serde_json::to_string_pretty(&value).expect("json")
    }
}

/// The sizes a valid [`Gpt2Config`] gives, from [`Gpt2Config::sizes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gpt2Sizes {
    /// D.
    pub d_model: usize,
    /// F.
    pub d_mlp: usize,
    /// d = D / H.
    pub d_head: usize,
    /// 3 D, the fused q, k, v projection's width.
    pub qkv: usize,
    /// Weights (elements) of one block.
    pub per_layer: usize,
    /// Weights (elements) of the whole model.
    pub parameters: usize,
}
