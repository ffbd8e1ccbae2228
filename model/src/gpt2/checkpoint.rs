//! Hugging Face GPT-2 checkpoints: `config.json` and the weights, one
//! `model.safetensors` or shards (`model-00001-of-00004.safetensors`, …)
//! listed by `model.safetensors.index.json`, stored as F32, BF16 or F16 and
//! converted to f32 as they load (the model computes in f32).
//!
//! Keys are accepted with or without the `transformer.` prefix; as in
//! transformers, the unembedding is `wte` when `tie_word_embeddings` (GPT-2's
//! default; a stored `lm_head.weight` is then only shape-checked, not read),
//! and `lm_head.weight`, required, when not; old
//! `attn.bias` / `attn.masked_bias` buffers are ignored (never read). Every
//! problem is a [`ModelError`] naming the file and key.
//!
//! Loading streams ([`WeightFiles`], which any model family can use): every
//! header (and the index) is read and every key, shape and dtype checked
//! against the config before any tensor's data is read or any layer is
//! allocated; then tensors are read one at a time, converted, checked for
//! NaN and infinity, and built, so peak memory stays near one f32 copy of
//! the model (BENCHMARKS.md, "Loading memory"). A folder holding both
//! `model.safetensors` and an index is refused ([`WeightFiles`] says why).
//! [`Gpt2::save`] writes one f32 `model.safetensors`.

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::checkpoint::{CONFIG_FILE, LoadOptions, save_folder};
use crate::error::shown;
use crate::gpt2::layers::{Attention, Block, Mlp, Norm};
use crate::weights::{WeightFiles, transpose_f32};
use crate::{Gpt2, Gpt2Config, ModelError};

/// Reads `config.json` from a checkpoint folder; errors name the file once.
pub fn load_config(dir: impl AsRef<Path>) -> Result<Gpt2Config, ModelError> {
    let path = dir.as_ref().join(CONFIG_FILE);
    let text = crate::inputs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    Gpt2Config::from_json(&text).map_err(|e| match e {
        ModelError::BadConfig(why) => ModelError::BadConfig(format!("{}: {why}", shown(&path))),
        other => other,
    })
}

/// The weights of a GPT-2 checkpoint, found under either key layout.
struct Weights<'a> {
    files: &'a WeightFiles,
}

impl Weights<'_> {
    /// The names a weight may be stored under: as is, or with the
    /// `transformer.` prefix some GPT-2 checkpoints put on every key.
    fn names(key: &str) -> [String; 2] {
        [key.to_string(), format!("transformer.{key}")]
    }

    fn find(&self, key: &str) -> Option<String> {
        Self::names(key)
            .into_iter()
            .find(|k| self.files.entry(k).is_some())
    }

    /// Checks from the headers that `key` is there with `shape` and a float
    /// dtype, reading no data; returns the name it is stored under.
    fn check(&self, key: &str, shape: &[usize]) -> Result<String, ModelError> {
        let found = self.find(key).ok_or_else(|| ModelError::MissingKey {
            path: self.files.source().to_path_buf(),
            key: key.to_string(),
            also_tried: Self::names(key)[1..].to_vec(),
        })?;
        self.files.check(&found, shape)?;
        Ok(found)
    }
}

/// Every weight of a GPT-2 with `config`, without prefix, and its shape, in
/// the Hugging Face layout the loader reads; `lm_head.weight` is optional and
/// not listed.
pub fn expected_weights(config: &Gpt2Config) -> Vec<(String, Vec<usize>)> {
    let (d, f, v, p) = (
        config.n_embd,
        config.d_mlp(),
        config.vocab_size,
        config.n_positions,
    );
    let mut out = vec![
        ("wte.weight".to_string(), vec![v, d]),
        ("wpe.weight".to_string(), vec![p, d]),
        ("ln_f.weight".to_string(), vec![d]),
        ("ln_f.bias".to_string(), vec![d]),
    ];
    for i in 0..config.n_layer {
        for (name, shape) in [
            ("ln_1.weight", vec![d]),
            ("ln_1.bias", vec![d]),
            ("attn.c_attn.weight", vec![d, 3 * d]),
            ("attn.c_attn.bias", vec![3 * d]),
            ("attn.c_proj.weight", vec![d, d]),
            ("attn.c_proj.bias", vec![d]),
            ("ln_2.weight", vec![d]),
            ("ln_2.bias", vec![d]),
            ("mlp.c_fc.weight", vec![d, f]),
            ("mlp.c_fc.bias", vec![f]),
            ("mlp.c_proj.weight", vec![f, d]),
            ("mlp.c_proj.bias", vec![d]),
        ] {
            out.push((format!("h.{i}.{name}"), shape));
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
    weights: Weights<'d>,
    device: &'d B::Device,
    eps: f64,
    check_finite: bool,
}

impl<B: Backend> Take<'_, B> {
    fn stored(&self, key: &str) -> String {
        self.weights.find(key).expect("every key was checked")
    }

    fn values(&self, key: &str) -> Result<Vec<f32>, ModelError> {
        self.weights
            .files
            .read_f32(&self.stored(key), self.check_finite)
    }

    fn tensor<const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
    ) -> Result<Tensor<B, D>, ModelError> {
        Ok(tensor(self.values(key)?, shape, self.device))
    }

    fn norm(&self, prefix: &str, d: usize) -> Result<Norm<B>, ModelError> {
        Ok(Norm {
            weight: Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [d])?),
            bias: Param::from_tensor(self.tensor(&format!("{prefix}.bias"), [d])?),
            eps: self.eps,
        })
    }

    fn linear(&self, prefix: &str, d_in: usize, d_out: usize) -> Result<Linear<B>, ModelError> {
        Ok(Linear {
            weight: Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [d_in, d_out])?),
            bias: Some(Param::from_tensor(
                self.tensor(&format!("{prefix}.bias"), [d_out])?,
            )),
        })
    }

    fn block(&self, i: usize, config: &Gpt2Config) -> Result<Block<B>, ModelError> {
        let (d, f) = (config.n_embd, config.d_mlp());
        Ok(Block {
            ln_1: self.norm(&format!("h.{i}.ln_1"), d)?,
            attn: Attention {
                c_attn: self.linear(&format!("h.{i}.attn.c_attn"), d, 3 * d)?,
                c_proj: self.linear(&format!("h.{i}.attn.c_proj"), d, d)?,
                n_head: config.n_head,
            },
            ln_2: self.norm(&format!("h.{i}.ln_2"), d)?,
            mlp: Mlp {
                c_fc: self.linear(&format!("h.{i}.mlp.c_fc"), d, f)?,
                c_proj: self.linear(&format!("h.{i}.mlp.c_proj"), f, d)?,
            },
        })
    }
}

impl<B: Backend> Gpt2<B> {
    /// Loads a checkpoint folder in the Hugging Face layout, with the
    /// default [`LoadOptions`] (non-finite weights refused).
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self, ModelError> {
        Self::load_with(dir, device, LoadOptions::default())
    }

    /// Loads a checkpoint folder in the Hugging Face layout: one
    /// `model.safetensors` or shards with `model.safetensors.index.json`,
    /// weights in F32, BF16 or F16 (converted to f32, exactly).
    ///
    /// Everything the headers can tell is checked before any tensor's data
    /// is read: the config (sizes with checked arithmetic), every file's
    /// header and, for shards, the index against them ([`WeightFiles::open`]),
    /// the number of layers the files hold against `n_layer`, then every
    /// weight's presence, shape and dtype. Then each weight is read (one
    /// tensor's bytes at a time), converted, checked for NaN and infinity
    /// (unless `options` allow them: [`ModelError::NonFiniteWeight`] names
    /// the first, and what was built so far is dropped) and built.
    pub fn load_with(
        dir: impl AsRef<Path>,
        device: &B::Device,
        options: LoadOptions,
    ) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let config = load_config(dir)?;
        let files = WeightFiles::open(dir)?;
        check_layers(&files, &config)?;

        // Check every weight before reading any.
        let weights = Weights { files: &files };
        for (key, shape) in expected_weights(&config) {
            weights.check(&key, &shape)?;
        }
        let (d, v, p) = (config.n_embd, config.vocab_size, config.n_positions);
        let has_lm_head = weights.find("lm_head.weight").is_some();
        if has_lm_head || !config.tie_word_embeddings {
            weights.check("lm_head.weight", &[v, d])?;
        }

        let take = Take {
            weights,
            device,
            eps: config.layer_norm_epsilon,
            check_finite: !options.allow_non_finite,
        };
        let wte_values = take.values("wte.weight")?;
        // The unembedding `[D, V]`, a contiguous copy (a transposed view
        // would slow every matmul), transposed on the host as it is read.
        let tied = config
            .tie_word_embeddings
            .then(|| transpose_f32(&wte_values, v, d));
        let wte: Tensor<B, 2> = tensor(wte_values, [v, d], device);
        let wpe = take.tensor("wpe.weight", [p, d])?;
        let ln_f = take.norm("ln_f", d)?;
        let blocks = (0..config.n_layer)
            .map(|i| take.block(i, &config))
            .collect::<Result<Vec<_>, _>>()?;
        let unembed = match tied {
            Some(values) => values,
            None => files.read_f32_transposed(&take.stored("lm_head.weight"), take.check_finite)?,
        };
        Ok(Gpt2 {
            wte: Param::from_tensor(wte),
            wpe: Param::from_tensor(wpe),
            blocks,
            ln_f,
            unembed: Param::from_tensor(tensor(unembed, [d, v], device)),
            config,
        })
    }

    /// Saves in the Hugging Face layout (keys without prefix). The
    /// unembedding is written as `lm_head.weight` and the config says
    /// `tie_word_embeddings: false`, since the model keeps it as its own
    /// parameter (training may have moved it away from `wte`).
    ///
    /// A folder holding a sharded checkpoint (`model.safetensors.index.json`)
    /// is refused with [`ModelError::BadCheckpoint`]: a `model.safetensors`
    /// beside it would make the folder ambiguous, and it would not load.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), ModelError> {
        let mut entries: Vec<(String, TensorData)> = Vec::new();
        let mut put = |key: String, data: TensorData| entries.push((key, data));
        put("wte.weight".into(), self.wte.val().into_data());
        put("wpe.weight".into(), self.wpe.val().into_data());
        put(
            "lm_head.weight".into(),
            self.unembed.val().transpose().into_data(),
        );
        for (i, b) in self.blocks.iter().enumerate() {
            let linears = [
                ("attn.c_attn", &b.attn.c_attn),
                ("attn.c_proj", &b.attn.c_proj),
                ("mlp.c_fc", &b.mlp.c_fc),
                ("mlp.c_proj", &b.mlp.c_proj),
            ];
            for (name, l) in linears {
                put(format!("h.{i}.{name}.weight"), l.weight.val().into_data());
                if let Some(bias) = &l.bias {
                    put(format!("h.{i}.{name}.bias"), bias.val().into_data());
                }
            }
            for (name, n) in [("ln_1", &b.ln_1), ("ln_2", &b.ln_2)] {
                put(format!("h.{i}.{name}.weight"), n.weight.val().into_data());
                put(format!("h.{i}.{name}.bias"), n.bias.val().into_data());
            }
        }
        put("ln_f.weight".into(), self.ln_f.weight.val().into_data());
        put("ln_f.bias".into(), self.ln_f.bias.val().into_data());

        let mut config = self.config.clone();
        config.tie_word_embeddings = false;
        save_folder(dir.as_ref(), &entries, &config.to_json())
    }
}

/// The layers the file holds (`h.<i>.` keys, with or without the
/// `transformer.` prefix) against `n_layer`, before anything is read per
/// layer: more layers than the config says, or fewer, is a
/// [`ModelError::ConfigMismatch`]. (A config claiming 10⁸ layers fails here,
/// not after allocating for each.)
fn check_layers(files: &WeightFiles, config: &Gpt2Config) -> Result<(), ModelError> {
    let layers: BTreeSet<usize> = files
        .names()
        .filter_map(|k| {
            let k = k.strip_prefix("transformer.").unwrap_or(k);
            k.strip_prefix("h.")?
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
        Some(&m) if m >= config.n_layer => Err(mismatch(format!(
            "weights hold {} layers (up to h.{m}) but config.json says n_layer = {}",
            m + 1,
            config.n_layer
        ))),
        None => Err(mismatch(format!(
            "weights hold no layers (no `h.<i>.` keys) but config.json says n_layer = {}",
            config.n_layer
        ))),
        // Fewer layers than the config says: some index below n_layer is
        // missing (checked here, so n_layer = 10⁸ is never iterated).
        Some(&m) if layers.len() < config.n_layer => {
            let held = if layers.len() == m + 1 {
                format!("{} layers (h.0 to h.{m})", m + 1)
            } else {
                let first_missing = (0..).find(|i| !layers.contains(i)).unwrap_or(0);
                format!(
                    "{} layers (up to h.{m}, without h.{first_missing})",
                    layers.len()
                )
            };
            Err(mismatch(format!(
                "weights hold {held} but config.json says n_layer = {}",
                config.n_layer
            )))
        }
        _ => Ok(()),
    }
}
