//! Llama-family hyper-parameters (`model_type` "llama", "qwen2",
//! "mistral"), read from and written to Hugging Face's `config.json`.
//!
//! Both of transformers' RoPE styles are read: 4.x's `rope_theta` with
//! `rope_scaling`, and 5.x's `rope_parameters`. Each field is checked for
//! its type as it is read, and the whole with checked arithmetic, so every
//! error names the field and the value found.

use serde_json::{Map, Value, json};

use super::rope::{RopeConfig, RopeScaling, SUPPORTED_ROPE_TYPES};
use crate::config::{checked_product, checked_sum, require_positive, require_positive_finite};
use crate::{ModelDims, ModelError};

/// The families this module runs, by `model_type`.
const MODEL_TYPES: [&str; 3] = ["llama", "qwen2", "mistral"];

/// Qwen2's default `max_window_layers`: the layers below it attend fully.
const QWEN2_MAX_WINDOW_LAYERS: usize = 28;

/// A `bos_token_id` / `eos_token_id`: one id or a list (Llama 3 instruct
/// models end on any of several), kept as the file gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenIds {
    /// A single id.
    One(u64),
    /// A list of ids.
    Many(Vec<u64>),
}

impl TokenIds {
    /// The ids, one or many.
    pub fn ids(&self) -> &[u64] {
        match self {
            TokenIds::One(id) => std::slice::from_ref(id),
            TokenIds::Many(ids) => ids,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            TokenIds::One(id) => json!(id),
            TokenIds::Many(ids) => json!(ids),
        }
    }
}

/// Which attention a layer has in Qwen2's `layer_types`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerType {
    /// `"full_attention"`: every earlier key.
    Full,
    /// `"sliding_attention"`: only the last `sliding_window` keys.
    Sliding,
}

impl LayerType {
    fn name(self) -> &'static str {
        match self {
            LayerType::Full => "full_attention",
            LayerType::Sliding => "sliding_attention",
        }
    }
}

/// The fields of a Llama-family `config.json` the model needs, under
/// transformers' names.
///
/// Biases follow each family's modelling code, not the config alone: Llama
/// has them where `attention_bias` (q, k, v, o) and `mlp_bias` say, Qwen2
/// always on q, k, v and never on o or the MLP, Mistral nowhere.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// `"llama"`, `"qwen2"` or `"mistral"` ([`validate`](Self::validate)
    /// refuses others).
    pub model_type: String,
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Residual width D.
    pub hidden_size: usize,
    /// MLP width F.
    pub intermediate_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Query heads H.
    pub num_attention_heads: usize,
    /// Key/value heads Hkv (H divided by the group size of grouped-query
    /// attention).
    pub num_key_value_heads: usize,
    /// Head width d (may differ from D / H).
    pub head_dim: usize,
    /// Epsilon of the RMS norms.
    pub rms_norm_eps: f64,
    /// The context window.
    pub max_position_embeddings: usize,
    /// Whether the unembedding is the token embedding.
    pub tie_word_embeddings: bool,
    /// Llama only: biases on q, k, v and o.
    pub attention_bias: bool,
    /// Llama only: biases on the MLP's three projections.
    pub mlp_bias: bool,
    /// The MLP's activation: `silu` (or its other name `swish`).
    pub hidden_act: String,
    /// RoPE's base and rescaling.
    pub rope: RopeConfig,
    /// Beginning-of-sequence id(s), as the file gives them.
    pub bos_token_id: Option<TokenIds>,
    /// End-of-sequence id(s), as the file gives them.
    pub eos_token_id: Option<TokenIds>,
    /// Mistral, Qwen2: attention only to the last `sliding_window` keys
    /// (for Qwen2 only with `use_sliding_window`).
    pub sliding_window: Option<usize>,
    /// Qwen2: whether `sliding_window` applies at all.
    pub use_sliding_window: bool,
    /// Qwen2: layers below this attend fully, the others through the
    /// window (28 when absent); ignored when `layer_types` is given.
    pub max_window_layers: Option<usize>,
    /// Qwen2: each layer's attention, when the file lists them.
    pub layer_types: Option<Vec<LayerType>>,
}

/// The family, from a validated `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Llama,
    Qwen2,
    Mistral,
}

impl LlamaConfig {
    /// A config for tests and experiments: `model_type` ("llama", "qwen2" or
    /// "mistral"), `n_layer` blocks of width `d_model`, `n_head` query and
    /// `n_kv_head` key/value heads of width `d_model / n_head`, MLP width
    /// `d_mlp`, `vocab` tokens; 2048 positions, ε = 1e-5, θ = 10000 without
    /// rescaling, no biases beyond the family's own, untied, no window.
    pub fn new(
        model_type: &str,
        n_layer: usize,
        d_model: usize,
        n_head: usize,
        n_kv_head: usize,
        d_mlp: usize,
        vocab: usize,
    ) -> Self {
        LlamaConfig {
            model_type: model_type.to_string(),
            vocab_size: vocab,
            hidden_size: d_model,
            intermediate_size: d_mlp,
            num_hidden_layers: n_layer,
            num_attention_heads: n_head,
            num_key_value_heads: n_kv_head,
            head_dim: d_model.checked_div(n_head).unwrap_or(0),
            rms_norm_eps: 1e-5,
            max_position_embeddings: 2048,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            hidden_act: "silu".to_string(),
            rope: RopeConfig::default(),
            bos_token_id: None,
            eos_token_id: None,
            sliding_window: None,
            use_sliding_window: false,
            max_window_layers: None,
            layer_types: None,
        }
    }

    /// The family's name, as `config.json`'s `model_type` says it.
    pub fn model_type(&self) -> &str {
        &self.model_type
    }

    /// The family as a `'static` name (the model type, once validated).
    pub(crate) fn family_name(&self) -> &'static str {
        match self.family() {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Mistral => "mistral",
        }
    }

    fn family(&self) -> Family {
        match self.model_type.as_str() {
            "qwen2" => Family::Qwen2,
            "mistral" => Family::Mistral,
            _ => Family::Llama,
        }
    }

    /// Whether q, k and v have biases.
    pub fn qkv_bias(&self) -> bool {
        match self.family() {
            Family::Llama => self.attention_bias,
            Family::Qwen2 => true,
            Family::Mistral => false,
        }
    }

    /// Whether the attention's output projection has a bias.
    pub fn o_bias(&self) -> bool {
        self.family() == Family::Llama && self.attention_bias
    }

    /// Whether the MLP's projections have biases.
    pub fn mlp_has_bias(&self) -> bool {
        self.family() == Family::Llama && self.mlp_bias
    }

    /// The sliding window of block `layer`, as transformers applies it: a
    /// query sees a key iff it is at most `window - 1` positions before it
    /// (positions in the row, pads counted). Mistral: every layer when
    /// `sliding_window` is set; Qwen2: with `use_sliding_window`, the layers
    /// `layer_types` marks, or else those from `max_window_layers` on;
    /// Llama: none.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        let window = match self.family() {
            Family::Llama => None,
            Family::Mistral => self.sliding_window,
            Family::Qwen2 => self.sliding_window.filter(|_| self.use_sliding_window),
        }?;
        let sliding = match (self.family(), &self.layer_types) {
            (Family::Qwen2, Some(types)) => types.get(layer) == Some(&LayerType::Sliding),
            (Family::Qwen2, None) => {
                layer >= self.max_window_layers.unwrap_or(QWEN2_MAX_WINDOW_LAYERS)
            }
            _ => true,
        };
        sliding.then_some(window)
    }

    /// The sizes site shapes are written in (`n_ctx` is
    /// `max_position_embeddings`, `d_head` is `head_dim`).
    pub fn dims(&self) -> ModelDims {
        ModelDims {
            n_layer: self.num_hidden_layers,
            d_model: self.hidden_size,
            n_head: self.num_attention_heads,
            n_kv_head: self.num_key_value_heads,
            d_head: self.head_dim,
            d_mlp: self.intermediate_size,
            vocab_size: self.vocab_size,
            n_ctx: self.max_position_embeddings,
        }
    }

    /// Checks the numbers make a model: a known `model_type`, every size
    /// positive, `num_attention_heads` a multiple of `num_key_value_heads`,
    /// `head_dim` even (RoPE rotates halves), ε and θ finite and positive,
    /// Llama 3 parameters that make a band, the activation SiLU, and every
    /// weight count the model allocates (and its bytes) representable
    /// without overflow. Each error names the field and its value.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.parameters().map(|_| ())
    }

    /// The number of weights (elements) of the model, computed with
    /// checked arithmetic after the checks of [`validate`](Self::validate).
    pub fn parameters(&self) -> Result<usize, ModelError> {
        let bad = |why: String| Err(ModelError::BadConfig(why));
        if !MODEL_TYPES.contains(&self.model_type.as_str()) {
            return bad(format!(
                "model_type `{}` is not a Llama-family model; supported: \"llama\", \"qwen2\", \
                 \"mistral\"",
                self.model_type
            ));
        }
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            require_positive(field, value)?;
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim ({}) must be even: RoPE rotates a head's first half against its second \
                 (head_dim is config.json's, or hidden_size {} / num_attention_heads {} rounded \
                 down when it gives none)",
                self.head_dim, self.hidden_size, self.num_attention_heads
            ));
        }
        require_positive_finite("rms_norm_eps", self.rms_norm_eps)?;
        if !matches!(self.hidden_act.as_str(), "silu" | "swish") {
            return bad(format!(
                "hidden_act `{}` is not supported; Llama-family models use `silu`",
                self.hidden_act
            ));
        }
        self.validate_rope()?;
        if let Some(w) = self.sliding_window {
            require_positive("sliding_window", w)?;
        }
        if let Some(types) = &self.layer_types {
            if types.len() != self.num_hidden_layers {
                return bad(format!(
                    "layer_types lists {} layers but num_hidden_layers is {}",
                    types.len(),
                    self.num_hidden_layers
                ));
            }
            let window = self.sliding_window.filter(|_| self.use_sliding_window);
            if self.family() == Family::Qwen2
                && window.is_none()
                && let Some(i) = types.iter().position(|t| *t == LayerType::Sliding)
            {
                let window = match self.sliding_window {
                    Some(w) => w.to_string(),
                    None => "not set".into(),
                };
                return bad(format!(
                    "layer_types marks layer {i} \"sliding_attention\" but no window applies \
                     (use_sliding_window is {}, sliding_window is {window})",
                    self.use_sliding_window
                ));
            }
        }
        self.count_parameters()
    }

    fn validate_rope(&self) -> Result<(), ModelError> {
        require_positive_finite("rope_theta", self.rope.theta)?;
        if let RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } = self.rope.scaling
        {
            require_positive_finite("rope_scaling.factor", factor)?;
            require_positive_finite("rope_scaling.low_freq_factor", low_freq_factor)?;
            require_positive_finite("rope_scaling.high_freq_factor", high_freq_factor)?;
            require_positive(
                "rope_scaling.original_max_position_embeddings",
                original_max_position_embeddings,
            )?;
            if high_freq_factor <= low_freq_factor {
                return Err(ModelError::BadConfig(format!(
                    "rope_scaling.high_freq_factor ({high_freq_factor}) must be greater than \
                     low_freq_factor ({low_freq_factor}): llama3 interpolates between them"
                )));
            }
        }
        Ok(())
    }

    fn count_parameters(&self) -> Result<usize, ModelError> {
        let d = ("hidden_size", self.hidden_size);
        let f = ("intermediate_size", self.intermediate_size);
        let q_width = checked_product(
            "the query width num_attention_heads · head_dim",
            &[
                ("num_attention_heads", self.num_attention_heads),
                ("head_dim", self.head_dim),
            ],
        )?;
        let kv_width = checked_product(
            "the key/value width num_key_value_heads · head_dim",
            &[
                ("num_key_value_heads", self.num_key_value_heads),
                ("head_dim", self.head_dim),
            ],
        )?;
        let q = checked_product("q_proj", &[d, ("the query width", q_width)])?;
        let kv = checked_product("k_proj", &[d, ("the key/value width", kv_width)])?;
        let mlp = checked_product("gate_proj", &[d, f])?;
        let embed = checked_product(
            "embed_tokens vocab_size · hidden_size",
            &[("vocab_size", self.vocab_size), d],
        )?;
        let bias = |on: bool, n: usize| if on { n as u128 } else { 0 };
        let per_layer = checked_sum(
            "the weights of one layer",
            &[
                2 * self.hidden_size as u128, // two norms
                2 * q as u128,                // q_proj, o_proj
                2 * kv as u128,               // k_proj, v_proj
                3 * mlp as u128,              // gate, up, down
                bias(self.qkv_bias(), q_width) + 2 * bias(self.qkv_bias(), kv_width),
                bias(self.o_bias(), self.hidden_size),
                2 * bias(self.mlp_has_bias(), self.intermediate_size),
                bias(self.mlp_has_bias(), self.hidden_size),
            ],
        )?;
        let blocks = checked_product(
            "the weights of all layers num_hidden_layers · (weights of one layer)",
            &[
                ("num_hidden_layers", self.num_hidden_layers),
                ("weights of one layer", per_layer),
            ],
        )?;
        // The model keeps the unembedding as a parameter of its own, tied or not.
        let parameters = checked_sum(
            "the model's weights",
            &[2 * embed as u128, self.hidden_size as u128, blocks as u128],
        )?;
        // Rust allocations are limited to isize::MAX bytes.
        if (parameters as u128) * 4 > isize::MAX as u128 {
            return Err(ModelError::BadConfig(format!(
                "the model's {parameters} f32 weights would take {} bytes, more than this \
                 machine can address",
                parameters as u128 * 4
            )));
        }
        Ok(parameters)
    }

    /// Parses `config.json` text (either RoPE style). Errors say what is
    /// wrong, not where the text came from (the loader adds the path).
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ModelError::BadConfig(format!("not valid JSON: {e}")))?;
        let Some(map) = value.as_object() else {
            return Err(ModelError::BadConfig(format!(
                "not a JSON object but {}",
                shown_json(&value)
            )));
        };
        let fields = Fields(map);
        let model_type = fields.string("model_type", None)?;
        if !MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(ModelError::BadConfig(format!(
                "model_type `{model_type}` is not a Llama-family model; supported: \"llama\", \
                 \"qwen2\", \"mistral\""
            )));
        }
        let hidden_size = fields.usize("hidden_size")?;
        let num_attention_heads = fields.usize("num_attention_heads")?;
        let head_dim = match fields.opt_usize("head_dim")? {
            Some(d) => d,
            None => hidden_size.checked_div(num_attention_heads).unwrap_or(0),
        };
        let config = LlamaConfig {
            vocab_size: fields.usize("vocab_size")?,
            hidden_size,
            intermediate_size: fields.usize("intermediate_size")?,
            num_hidden_layers: fields.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: fields
                .opt_usize("num_key_value_heads")?
                .unwrap_or(num_attention_heads),
            head_dim,
            rms_norm_eps: fields.f64("rms_norm_eps", 1e-6)?,
            max_position_embeddings: fields.usize("max_position_embeddings")?,
            tie_word_embeddings: fields.bool("tie_word_embeddings", false)?,
            attention_bias: fields.bool("attention_bias", false)?,
            mlp_bias: fields.bool("mlp_bias", false)?,
            hidden_act: fields.string("hidden_act", Some("silu"))?,
            rope: read_rope(&fields)?,
            bos_token_id: fields.token_ids("bos_token_id")?,
            eos_token_id: fields.token_ids("eos_token_id")?,
            sliding_window: fields.opt_usize("sliding_window")?,
            use_sliding_window: fields.bool("use_sliding_window", false)?,
            max_window_layers: fields.opt_usize("max_window_layers")?,
            layer_types: fields.layer_types()?,
            model_type,
        };
        if let Some(v) = map.get("partial_rotary_factor")
            && v.as_f64() != Some(1.0)
        {
            return Err(ModelError::BadConfig(format!(
                "partial_rotary_factor {} is not supported (RoPE over the whole head only)",
                shown_json(v)
            )));
        }
        config.validate()?;
        Ok(config)
    }

    /// `config.json` text that transformers 4.x and 5.x both load: RoPE is
    /// written in both styles (`rope_theta` with `rope_scaling`, and
    /// `rope_parameters`), which say the same.
    pub fn to_json(&self) -> String {
        let mut map = Map::new();
        let architecture = match self.family() {
            Family::Llama => "LlamaForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Mistral => "MistralForCausalLM",
        };
        map.insert("architectures".into(), json!([architecture]));
        map.insert("model_type".into(), json!(self.model_type));
        for (key, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            map.insert(key.into(), json!(value));
        }
        map.insert("rms_norm_eps".into(), json!(self.rms_norm_eps));
        map.insert(
            "tie_word_embeddings".into(),
            json!(self.tie_word_embeddings),
        );
        map.insert("hidden_act".into(), json!(self.hidden_act));
        let ids = |t: &Option<TokenIds>| t.as_ref().map_or(Value::Null, TokenIds::to_json);
        map.insert("bos_token_id".into(), ids(&self.bos_token_id));
        map.insert("eos_token_id".into(), ids(&self.eos_token_id));
        map.insert("rope_theta".into(), json!(self.rope.theta));
        let mut params = rope_scaling_fields(&self.rope.scaling);
        map.insert(
            "rope_scaling".into(),
            match self.rope.scaling {
                RopeScaling::Default => Value::Null,
                RopeScaling::Llama3 { .. } => Value::Object(params.clone()),
            },
        );
        params.insert("rope_type".into(), json!(self.rope.scaling.rope_type()));
        params.insert("rope_theta".into(), json!(self.rope.theta));
        map.insert("rope_parameters".into(), Value::Object(params));
        match self.family() {
            Family::Llama => {
                map.insert("attention_bias".into(), json!(self.attention_bias));
                map.insert("mlp_bias".into(), json!(self.mlp_bias));
            }
            Family::Mistral => {
                map.insert("sliding_window".into(), json!(self.sliding_window));
            }
            Family::Qwen2 => {
                map.insert("sliding_window".into(), json!(self.sliding_window));
                map.insert("use_sliding_window".into(), json!(self.use_sliding_window));
                if let Some(layers) = self.max_window_layers {
                    map.insert("max_window_layers".into(), json!(layers));
                }
                if let Some(types) = &self.layer_types {
                    let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
                    map.insert("layer_types".into(), json!(names));
                }
            }
        }
        serde_json::to_string_pretty(&Value::Object(map)).expect("json")
    }
}

/// The fields of a rescaling other than `rope_type` and `rope_theta`
/// (4.x's `rope_scaling` object, with `rope_type`).
fn rope_scaling_fields(scaling: &RopeScaling) -> Map<String, Value> {
    let mut map = Map::new();
    if let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    } = *scaling
    {
        map.insert("rope_type".into(), json!("llama3"));
        map.insert("factor".into(), json!(factor));
        map.insert("low_freq_factor".into(), json!(low_freq_factor));
        map.insert("high_freq_factor".into(), json!(high_freq_factor));
        map.insert(
            "original_max_position_embeddings".into(),
            json!(original_max_position_embeddings),
        );
    }
    map
}

/// RoPE from either style: 5.x's `rope_parameters` when present (then any
/// 4.x `rope_theta` / `rope_scaling` beside it must say the same), else
/// 4.x's `rope_theta` (10000 when absent) and `rope_scaling` (null, or an
/// object with `rope_type` or the older `type`).
fn read_rope(fields: &Fields<'_>) -> Result<RopeConfig, ModelError> {
    let legacy_theta = fields.opt_f64("rope_theta")?;
    let legacy_scaling = match fields.0.get("rope_scaling") {
        None | Some(Value::Null) => None,
        Some(Value::Object(obj)) => Some(read_scaling("rope_scaling", obj, false)?),
        Some(v) => {
            return Err(ModelError::BadConfig(format!(
                "rope_scaling must be null or an object, not {}",
                shown_json(v)
            )));
        }
    };
    let legacy = RopeConfig {
        theta: legacy_theta.unwrap_or(RopeConfig::default().theta),
        scaling: legacy_scaling.unwrap_or(RopeScaling::Default),
    };
    let params = match fields.0.get("rope_parameters") {
        None | Some(Value::Null) => return Ok(legacy),
        Some(Value::Object(obj)) => obj,
        Some(v) => {
            return Err(ModelError::BadConfig(format!(
                "rope_parameters must be null or an object, not {}",
                shown_json(v)
            )));
        }
    };
    let theta = match params.get("rope_theta") {
        None | Some(Value::Null) => legacy.theta,
        Some(v) => v.as_f64().ok_or_else(|| {
            ModelError::BadConfig(format!(
                "rope_parameters.rope_theta must be a number, not {}",
                shown_json(v)
            ))
        })?,
    };
    let rope = RopeConfig {
        theta,
        scaling: read_scaling("rope_parameters", params, true)?,
    };
    let theta_disagrees = legacy_theta.is_some_and(|t| t != rope.theta);
    let scaling_disagrees = legacy_scaling.is_some_and(|s| s != rope.scaling);
    if theta_disagrees || scaling_disagrees {
        return Err(ModelError::BadConfig(format!(
            "rope_parameters ({} rope, θ = {}) and rope_theta / rope_scaling ({} rope, θ = {}) \
             disagree; give one of them",
            rope.scaling.rope_type(),
            rope.theta,
            legacy.scaling.rope_type(),
            legacy.theta
        )));
    }
    Ok(rope)
}

/// The rescaling an object `field` describes; `type_optional`: a missing
/// `rope_type` means "default" (5.x's `rope_parameters`).
fn read_scaling(
    field: &str,
    obj: &Map<String, Value>,
    type_optional: bool,
) -> Result<RopeScaling, ModelError> {
    let bad = |why: String| ModelError::BadConfig(why);
    let rope_type = match obj.get("rope_type").or_else(|| obj.get("type")) {
        Some(Value::String(t)) => t.as_str(),
        None if type_optional => "default",
        None => {
            return Err(bad(format!(
                "{field} has no `rope_type`; supported: {SUPPORTED_ROPE_TYPES}"
            )));
        }
        Some(v) => {
            return Err(bad(format!(
                "{field}.rope_type must be a string, not {}",
                shown_json(v)
            )));
        }
    };
    if let Some(v) = obj.get("partial_rotary_factor")
        && v.as_f64() != Some(1.0)
    {
        return Err(bad(format!(
            "{field}.partial_rotary_factor {} is not supported (RoPE over the whole head only)",
            shown_json(v)
        )));
    }
    match rope_type {
        "default" => Ok(RopeScaling::Default),
        "llama3" => {
            let number = |key: &str| -> Result<f64, ModelError> {
                match obj.get(key) {
                    None => Err(bad(format!(
                        "{field} of rope_type \"llama3\" needs `{key}`"
                    ))),
                    Some(v) => v.as_f64().ok_or_else(|| {
                        bad(format!(
                            "{field}.{key} must be a number, not {}",
                            shown_json(v)
                        ))
                    }),
                }
            };
            let (factor, low_freq_factor, high_freq_factor) = (
                number("factor")?,
                number("low_freq_factor")?,
                number("high_freq_factor")?,
            );
            let key = "original_max_position_embeddings";
            let original = match obj.get(key) {
                None => {
                    return Err(bad(format!(
                        "{field} of rope_type \"llama3\" needs `{key}`"
                    )));
                }
                Some(v) => as_usize(v).ok_or_else(|| {
                    bad(format!(
                        "{field}.{key} must be a non-negative integer, not {}",
                        shown_json(v)
                    ))
                })?,
            };
            Ok(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: original,
            })
        }
        other => Err(bad(format!(
            "{field}.rope_type `{other}` is not supported; supported: {SUPPORTED_ROPE_TYPES}"
        ))),
    }
}

fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// A config's top-level fields, each read with its type checked.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn bad<T>(field: &str, expected: &str, v: &Value) -> Result<T, ModelError> {
        Err(ModelError::BadConfig(format!(
            "{field} must be {expected}, not {}",
            shown_json(v)
        )))
    }

    /// A required non-negative integer.
    fn usize(&self, field: &str) -> Result<usize, ModelError> {
        match self.0.get(field) {
            None | Some(Value::Null) => {
                Err(ModelError::BadConfig(format!("missing field `{field}`")))
            }
            Some(v) => {
                as_usize(v).map_or_else(|| Self::bad(field, "a non-negative integer", v), Ok)
            }
        }
    }

    /// A non-negative integer, or null / absent.
    fn opt_usize(&self, field: &str) -> Result<Option<usize>, ModelError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => as_usize(v).map_or_else(
                || Self::bad(field, "null or a non-negative integer", v),
                |n| Ok(Some(n)),
            ),
        }
    }

    fn opt_f64(&self, field: &str) -> Result<Option<f64>, ModelError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map_or_else(|| Self::bad(field, "a number", v), |x| Ok(Some(x))),
        }
    }

    fn f64(&self, field: &str, default: f64) -> Result<f64, ModelError> {
        Ok(self.opt_f64(field)?.unwrap_or(default))
    }

    fn bool(&self, field: &str, default: bool) -> Result<bool, ModelError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Self::bad(field, "true or false", v),
        }
    }

    /// A string; required when `default` is `None`.
    fn string(&self, field: &str, default: Option<&str>) -> Result<String, ModelError> {
        match (self.0.get(field), default) {
            (Some(Value::String(s)), _) => Ok(s.clone()),
            (None | Some(Value::Null), Some(d)) => Ok(d.to_string()),
            (None | Some(Value::Null), None) => {
                Err(ModelError::BadConfig(format!("missing field `{field}`")))
            }
            (Some(v), _) => Self::bad(field, "a string", v),
        }
    }

    /// An id, a list of ids, or null / absent.
    fn token_ids(&self, field: &str) -> Result<Option<TokenIds>, ModelError> {
        let expected = "null, a token id or a list of token ids";
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => {
                let ids: Option<Vec<u64>> = items.iter().map(Value::as_u64).collect();
                match ids {
                    Some(ids) => Ok(Some(TokenIds::Many(ids))),
                    None => Self::bad(field, expected, &self.0[field]),
                }
            }
            Some(v) => v.as_u64().map_or_else(
                || Self::bad(field, expected, v),
                |id| Ok(Some(TokenIds::One(id))),
            ),
        }
    }

    /// Qwen2's `layer_types`, a list of `"full_attention"` /
    /// `"sliding_attention"`, or null / absent.
    fn layer_types(&self) -> Result<Option<Vec<LayerType>>, ModelError> {
        let field = "layer_types";
        let expected = "null or a list of \"full_attention\" / \"sliding_attention\"";
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item.as_str() {
                    Some("full_attention") => Ok(LayerType::Full),
                    Some("sliding_attention") => Ok(LayerType::Sliding),
                    _ => Self::bad(field, expected, item),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Self::bad(field, expected, v),
        }
    }
}

/// A JSON value for a message, cut short when long.
fn shown_json(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 60 {
        return text;
    }
    let cut: String = text.chars().take(60).collect();
    format!("{cut}…")
}
