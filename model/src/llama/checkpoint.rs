//! Hugging Face Llama-family checkpoints: `config.json` and the weights, one
//! `model.safetensors` or shards listed by `model.safetensors.index.json`,
//! stored as F32, BF16 or F16 and converted to f32 as they load.
//!
//! Keys are transformers' (`model.embed_tokens.weight`,
//! `model.layers.N.self_attn.q_proj.weight`, …, `model.norm.weight`,
//! `lm_head.weight`). Loading streams through [`WeightFiles`] as GPT-2's
//! loader does ([`crate::checkpoint`]): every header, key, shape and dtype
//! is checked before any tensor's data is read, then tensors are read one at
//! a time, converted, checked for NaN and infinity (unless allowed) and
//! built. Linear weights are stored `[out, in]` and transposed as they are
//! read into Burn's `[in, out]`.

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::layers::{LlamaAttention, LlamaBlock, LlamaMlp, RmsNorm};
use super::{Llama, LlamaConfig};
use crate::ModelError;
use crate::checkpoint::{CONFIG_FILE, LoadOptions, save_folder};
use crate::error::shown;
use crate::weights::{WeightFiles, transpose_f32};

/// Reads a Llama-family `config.json` from a checkpoint folder; errors name
/// the file.
pub fn load_config(dir: impl AsRef<Path>) -> Result<LlamaConfig, ModelError> {
    let path = dir.as_ref().join(CONFIG_FILE);
    let text = crate::inputs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    LlamaConfig::from_json(&text).map_err(|e| match e {
        ModelError::BadConfig(why) => ModelError::BadConfig(format!("{}: {why}", shown(&path))),
        other => other,
    })
}

/// The prefix of block `i`'s keys.
fn layer_prefix(i: usize) -> String {
    format!("model.layers.{i}")
}

/// A linear layer of a block: its key (without `.weight`), `[in, out]`
/// sizes as the model holds them, and whether the config gives it a bias.
struct LinearKey {
    name: &'static str,
    d_in: usize,
    d_out: usize,
    bias: bool,
}

fn block_linears(config: &LlamaConfig) -> [LinearKey; 7] {
    let (d, f) = (config.hidden_size, config.intermediate_size);
    let q = config.num_attention_heads * config.head_dim;
    let kv = config.num_key_value_heads * config.head_dim;
    let linear = |name, d_in, d_out, bias| LinearKey {
        name,
        d_in,
        d_out,
        bias,
    };
    [
        linear("self_attn.q_proj", d, q, config.qkv_bias()),
        linear("self_attn.k_proj", d, kv, config.qkv_bias()),
        linear("self_attn.v_proj", d, kv, config.qkv_bias()),
        linear("self_attn.o_proj", q, d, config.o_bias()),
        linear("mlp.gate_proj", d, f, config.mlp_has_bias()),
        linear("mlp.up_proj", d, f, config.mlp_has_bias()),
        linear("mlp.down_proj", f, d, config.mlp_has_bias()),
    ]
}

/// Every weight of a model with `config` and its shape as stored (linear
/// weights `[out, in]`), in the layout the loader reads; `lm_head.weight` is
/// not listed (required only when the embeddings are not tied).
pub fn expected_weights(config: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (d, v) = (config.hidden_size, config.vocab_size);
    let mut out = vec![
        ("model.embed_tokens.weight".to_string(), vec![v, d]),
        ("model.norm.weight".to_string(), vec![d]),
    ];
    for i in 0..config.num_hidden_layers {
        let p = layer_prefix(i);
        out.push((format!("{p}.input_layernorm.weight"), vec![d]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![d]));
        for l in block_linears(config) {
            out.push((format!("{p}.{}.weight", l.name), vec![l.d_out, l.d_in]));
            if l.bias {
                out.push((format!("{p}.{}.bias", l.name), vec![l.d_out]));
            }
        }
    }
    out
}

fn tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Builds modules from the checked weights, one tensor at a time.
struct Take<'d, B: Backend> {
    files: &'d WeightFiles,
    device: &'d B::Device,
    config: &'d LlamaConfig,
    check_finite: bool,
}

impl<B: Backend> Take<'_, B> {
    fn vector(&self, key: &str, n: usize) -> Result<Tensor<B, 1>, ModelError> {
        Ok(tensor(
            self.files.read_f32(key, self.check_finite)?,
            [n],
            self.device,
        ))
    }

    fn norm(&self, key: &str) -> Result<RmsNorm<B>, ModelError> {
        Ok(RmsNorm {
            weight: Param::from_tensor(self.vector(key, self.config.hidden_size)?),
            eps: self.config.rms_norm_eps,
        })
    }

    /// A linear layer, its `[out, in]` weight transposed as it is read.
    fn linear(&self, prefix: &str, l: &LinearKey) -> Result<Linear<B>, ModelError> {
        let key = format!("{prefix}.{}.weight", l.name);
        let weight = self.files.read_f32_transposed(&key, self.check_finite)?;
        let bias = if l.bias {
            let key = format!("{prefix}.{}.bias", l.name);
            Some(Param::from_tensor(self.vector(&key, l.d_out)?))
        } else {
            None
        };
        Ok(Linear {
            weight: Param::from_tensor(tensor(weight, [l.d_in, l.d_out], self.device)),
            bias,
        })
    }

    fn block(&self, i: usize) -> Result<LlamaBlock<B>, ModelError> {
        let p = layer_prefix(i);
        let [q, k, v, o, gate, up, down] = block_linears(self.config);
        Ok(LlamaBlock {
            input_layernorm: self.norm(&format!("{p}.input_layernorm.weight"))?,
            self_attn: LlamaAttention {
                q_proj: self.linear(&p, &q)?,
                k_proj: self.linear(&p, &k)?,
                v_proj: self.linear(&p, &v)?,
                o_proj: self.linear(&p, &o)?,
                n_head: self.config.num_attention_heads,
                n_kv_head: self.config.num_key_value_heads,
                head_dim: self.config.head_dim,
            },
            post_attention_layernorm: self.norm(&format!("{p}.post_attention_layernorm.weight"))?,
            mlp: LlamaMlp {
                gate_proj: self.linear(&p, &gate)?,
                up_proj: self.linear(&p, &up)?,
                down_proj: self.linear(&p, &down)?,
            },
        })
    }
}

impl<B: Backend> Llama<B> {
    /// Loads a checkpoint folder in the Hugging Face layout, with the
    /// default [`LoadOptions`] (non-finite weights refused).
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self, ModelError> {
        Self::load_with(dir, device, LoadOptions::default())
    }

    /// Loads a checkpoint folder in the Hugging Face layout: one
    /// `model.safetensors` or shards with `model.safetensors.index.json`,
    /// weights in F32, BF16 or F16 (converted to f32, exactly).
    ///
    /// Checked before any tensor's data is read: the config, every file's
    /// header (and the index against the shards), the layers the files
    /// hold against `num_hidden_layers`, every weight's presence, shape and
    /// dtype, and no bias the config does not give the model (a Qwen2
    /// checkpoint labelled `llama` would otherwise lose its biases
    /// silently). `lm_head.weight` is required unless `tie_word_embeddings`;
    /// when tied, the embedding is used (and a stored `lm_head.weight`, only
    /// shape-checked, is not read). Then each weight is read, converted and
    /// checked for NaN and infinity unless `options` allow them.
    pub fn load_with(
        dir: impl AsRef<Path>,
        device: &B::Device,
        options: LoadOptions,
    ) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let config = load_config(dir)?;
        let files = WeightFiles::open(dir)?;
        check_layers(&files, &config)?;
        for (key, shape) in expected_weights(&config) {
            files.check(&key, &shape)?;
        }
        check_no_unexpected_biases(&files, &config)?;
        let (d, v) = (config.hidden_size, config.vocab_size);
        let lm_head = "lm_head.weight";
        let has_lm_head = files.entry(lm_head).is_some();
        if has_lm_head {
            files.check(lm_head, &[v, d])?;
        } else if !config.tie_word_embeddings {
            return Err(ModelError::MissingKey {
                path: files.source().to_path_buf(),
                key: lm_head.to_string(),
                also_tried: Vec::new(),
            });
        }

        let take = Take::<B> {
            files: &files,
            device,
            config: &config,
            check_finite: !options.allow_non_finite,
        };
        let embed_values = files.read_f32("model.embed_tokens.weight", take.check_finite)?;
        // The unembedding `[D, V]`, a contiguous copy (a transposed view
        // would slow every matmul), transposed on the host as it is read.
        let tied = config
            .tie_word_embeddings
            .then(|| transpose_f32(&embed_values, v, d));
        let embed_tokens: Tensor<B, 2> = tensor(embed_values, [v, d], device);
        let layers = (0..config.num_hidden_layers)
            .map(|i| take.block(i))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = take.norm("model.norm.weight")?;
        let unembed = match tied {
            Some(values) => values,
            None => files.read_f32_transposed(lm_head, take.check_finite)?,
        };
        Ok(Llama {
            embed_tokens: Param::from_tensor(embed_tokens),
            layers,
            norm,
            unembed: Param::from_tensor(tensor(unembed, [d, v], device)),
            config,
        })
    }

    /// Saves in the Hugging Face layout: `config.json` (which transformers
    /// 4.x and 5.x load) and one f32 `model.safetensors`. The unembedding is
    /// written as `lm_head.weight` and the config says
    /// `tie_word_embeddings: false`, since the model keeps it as its own
    /// parameter (training may have moved it away from the embedding).
    ///
    /// A folder holding a sharded checkpoint is refused with
    /// [`ModelError::BadCheckpoint`] (a `model.safetensors` beside it would
    /// make the folder ambiguous).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), ModelError> {
        let mut entries: Vec<(String, TensorData)> = Vec::new();
        let mut put = |key: String, data: TensorData| entries.push((key, data));
        put(
            "model.embed_tokens.weight".into(),
            self.embed_tokens.val().into_data(),
        );
        put(
            "lm_head.weight".into(),
            self.unembed.val().transpose().into_data(),
        );
        put(
            "model.norm.weight".into(),
            self.norm.weight.val().into_data(),
        );
        for (i, block) in self.layers.iter().enumerate() {
            let p = layer_prefix(i);
            let a = &block.self_attn;
            let m = &block.mlp;
            let linears = [
                ("self_attn.q_proj", &a.q_proj),
                ("self_attn.k_proj", &a.k_proj),
                ("self_attn.v_proj", &a.v_proj),
                ("self_attn.o_proj", &a.o_proj),
                ("mlp.gate_proj", &m.gate_proj),
                ("mlp.up_proj", &m.up_proj),
                ("mlp.down_proj", &m.down_proj),
            ];
            for (name, l) in linears {
                put(
                    format!("{p}.{name}.weight"),
                    l.weight.val().transpose().into_data(),
                );
                if let Some(bias) = &l.bias {
                    put(format!("{p}.{name}.bias"), bias.val().into_data());
                }
            }
            for (name, n) in [
                ("input_layernorm", &block.input_layernorm),
                ("post_attention_layernorm", &block.post_attention_layernorm),
            ] {
                put(format!("{p}.{name}.weight"), n.weight.val().into_data());
            }
        }
        let mut config = self.config.clone();
        config.tie_word_embeddings = false;
        save_folder(dir.as_ref(), &entries, &config.to_json())
    }
}

/// Bias keys the files hold that the config gives no bias: refused as a
/// [`ModelError::ConfigMismatch`] naming the key and the config's flag.
fn check_no_unexpected_biases(files: &WeightFiles, config: &LlamaConfig) -> Result<(), ModelError> {
    for i in 0..config.num_hidden_layers {
        let p = layer_prefix(i);
        for l in block_linears(config).iter().filter(|l| !l.bias) {
            let key = format!("{p}.{}.bias", l.name);
            if files.entry(&key).is_some() {
                let why = match (config.model_type(), l.name.starts_with("mlp.")) {
                    ("llama", true) => "mlp_bias is false".to_string(),
                    ("llama", false) => "attention_bias is false".to_string(),
                    (family, _) => format!("{family} has no bias there"),
                };
                return Err(ModelError::ConfigMismatch {
                    path: files.file_of(&key).unwrap_or(files.source()).to_path_buf(),
                    reason: format!(
                        "weights hold `{key}` but the config gives {} no bias ({why})",
                        l.name
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The layers the files hold (`model.layers.<i>.` keys) against
/// `num_hidden_layers`, before anything is read per layer: more or fewer is
/// a [`ModelError::ConfigMismatch`].
fn check_layers(files: &WeightFiles, config: &LlamaConfig) -> Result<(), ModelError> {
    let n = config.num_hidden_layers;
    let layers: BTreeSet<usize> = files
        .names()
        .filter_map(|k| {
            k.strip_prefix("model.layers.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .collect();
    let mismatch = |reason: String| ModelError::ConfigMismatch {
        path: files.source().to_path_buf(),
        reason,
    };
    match layers.last() {
        Some(&m) if m >= n => Err(mismatch(format!(
            "weights hold {} layers (up to model.layers.{m}) but config.json says \
             num_hidden_layers = {n}",
            m + 1
        ))),
        None => Err(mismatch(format!(
            "weights hold no layers (no `model.layers.<i>.` keys) but config.json says \
             num_hidden_layers = {n}"
        ))),
        Some(&m) if layers.len() < n => {
            let first_missing = (0..).find(|i| !layers.contains(i)).unwrap_or(0);
            Err(mismatch(format!(
                "weights hold {} layers (up to model.layers.{m}, without \
                 model.layers.{first_missing}) but config.json says num_hidden_layers = {n}",
                layers.len()
            )))
        }
        _ => Ok(()),
    }
}
