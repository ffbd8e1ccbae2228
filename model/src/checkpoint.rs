//! Hugging Face GPT-2 checkpoints: `config.json` + `model.safetensors`.
//!
//! Keys are accepted with or without the `transformer.` prefix; `lm_head.weight`
//! is used when present, else the unembedding is tied to `wte`; old
//! `attn.bias` / `attn.masked_bias` buffers are ignored. Every problem is a
//! [`ModelError`] naming the file and key, checked before any tensor is built.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::Dtype;

use crate::error::shown;
use crate::files::write_atomic;
use crate::finite::{check_finite, f32_le};
use crate::layers::{Attention, Block, Mlp, Norm};
use crate::weights::{SafetensorsFile, write_safetensors_to};
use crate::{Gpt2, Gpt2Config, ModelError};

/// The file names inside a checkpoint folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file inside a checkpoint folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// How [`Gpt2::load_with`] treats what it reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Accept weights holding NaN or infinite values (refused by default
    /// with [`ModelError::NonFiniteWeight`], naming the key and the first
    /// bad element): for studying how such values spread.
    pub allow_non_finite: bool,
}

impl LoadOptions {
    /// The defaults: every check on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`allow_non_finite`](Self::allow_non_finite).
    pub fn allow_non_finite(mut self, allow: bool) -> Self {
        self.allow_non_finite = allow;
        self
    }
}

/// Reads `config.json` from a checkpoint folder; errors name the file once.
pub fn load_config(dir: impl AsRef<Path>) -> Result<Gpt2Config, ModelError> {
    let path = dir.as_ref().join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    Gpt2Config::from_json(&text).map_err(|e| match e {
        ModelError::BadConfig(why) => ModelError::BadConfig(format!("{}: {why}", shown(&path))),
        other => other,
    })
}

/// The weights of a GPT-2 file, found under either key layout.
struct Weights<'a> {
    file: &'a SafetensorsFile,
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
            .find(|k| self.file.entry(k).is_some())
    }

    /// Checks `key` is there with `shape` and dtype F32 (and, unless
    /// allowed, only finite values), without copying it; returns the name
    /// it is stored under.
    fn check(
        &self,
        key: &str,
        shape: &[usize],
        options: LoadOptions,
    ) -> Result<String, ModelError> {
        let path = self.file.path();
        let found = self.find(key).ok_or_else(|| ModelError::MissingKey {
            path: path.to_path_buf(),
            key: key.to_string(),
            also_tried: Self::names(key)[1..].to_vec(),
        })?;
        let entry = self.file.entry(&found).expect("found above");
        if entry.shape != shape {
            return Err(ModelError::WrongShape {
                path: path.to_path_buf(),
                key: found,
                expected: shape.to_vec(),
                found: entry.shape.clone(),
            });
        }
        if entry.dtype != Dtype::F32 {
            return Err(ModelError::WrongDtype {
                key: found,
                path: path.to_path_buf(),
                dtype: format!("{:?}", entry.dtype),
            });
        }
        if !options.allow_non_finite {
            let data = self.file.data(&found).expect("found above");
            check_finite(path, &found, f32_le(data))?;
        }
        Ok(found)
    }
}

/// Every weight of a GPT-2 with `config`, without prefix, and its shape;
/// `lm_head.weight` is optional and not listed.
fn expected_weights(config: &Gpt2Config) -> Vec<(String, Vec<usize>)> {
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
    file: &'d SafetensorsFile,
    device: &'d B::Device,
    eps: f64,
}

impl<B: Backend> Take<'_, B> {
    fn tensor<const D: usize>(&self, key: &str, shape: [usize; D]) -> Tensor<B, D> {
        let found = Weights { file: self.file }
            .find(key)
            .expect("every key was checked");
        let data = self.file.data(&found).expect("every key was checked");
        tensor(f32_le(data).collect(), shape, self.device)
    }

    fn norm(&self, prefix: &str, d: usize) -> Norm<B> {
        Norm {
            weight: Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [d])),
            bias: Param::from_tensor(self.tensor(&format!("{prefix}.bias"), [d])),
            eps: self.eps,
        }
    }

    fn linear(&self, prefix: &str, d_in: usize, d_out: usize) -> Linear<B> {
        Linear {
            weight: Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [d_in, d_out])),
            bias: Some(Param::from_tensor(
                self.tensor(&format!("{prefix}.bias"), [d_out]),
            )),
        }
    }
}

impl<B: Backend> Gpt2<B> {
    /// Loads a checkpoint folder in the Hugging Face layout, with the
    /// default [`LoadOptions`] (non-finite weights refused).
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self, ModelError> {
        Self::load_with(dir, device, LoadOptions::default())
    }

    /// Loads a checkpoint folder in the Hugging Face layout.
    ///
    /// Everything is checked before any tensor is built: the config (sizes
    /// with checked arithmetic), the file's header, the number of layers the
    /// file holds against `n_layer`, then every weight's presence, shape,
    /// dtype and (unless `options` allow it) finiteness.
    pub fn load_with(
        dir: impl AsRef<Path>,
        device: &B::Device,
        options: LoadOptions,
    ) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let config = load_config(dir)?;
        let file = SafetensorsFile::read(dir.join(WEIGHTS_FILE))?;
        check_layers(&file, &config)?;

        // Check every weight before building any tensor.
        let w = Weights { file: &file };
        for (key, shape) in expected_weights(&config) {
            w.check(&key, &shape, options)?;
        }
        let (d, f, v, p) = (
            config.n_embd,
            config.d_mlp(),
            config.vocab_size,
            config.n_positions,
        );
        let has_lm_head = w.find("lm_head.weight").is_some();
        if has_lm_head {
            w.check("lm_head.weight", &[v, d], options)?;
        }

        let take = Take {
            file: &file,
            device,
            eps: config.layer_norm_epsilon,
        };
        let wte: Tensor<B, 2> = take.tensor("wte.weight", [v, d]);
        let wpe = take.tensor("wpe.weight", [p, d]);
        let ln_f = take.norm("ln_f", d);
        let blocks = (0..config.n_layer)
            .map(|i| Block {
                ln_1: take.norm(&format!("h.{i}.ln_1"), d),
                attn: Attention {
                    c_attn: take.linear(&format!("h.{i}.attn.c_attn"), d, 3 * d),
                    c_proj: take.linear(&format!("h.{i}.attn.c_proj"), d, d),
                    n_head: config.n_head,
                },
                ln_2: take.norm(&format!("h.{i}.ln_2"), d),
                mlp: Mlp {
                    c_fc: take.linear(&format!("h.{i}.mlp.c_fc"), d, f),
                    c_proj: take.linear(&format!("h.{i}.mlp.c_proj"), f, d),
                },
            })
            .collect();
        let unembed = if has_lm_head {
            take.tensor::<2>("lm_head.weight", [v, d]).transpose()
        } else {
            wte.clone().transpose()
        };
        Ok(Gpt2 {
            wte: Param::from_tensor(wte),
            wpe: Param::from_tensor(wpe),
            blocks,
            ln_f,
            // A contiguous copy: the transposed view would slow every matmul.
            unembed: Param::from_tensor(Tensor::from_data(unembed.into_data(), device)),
            config,
        })
    }

    /// Saves in the Hugging Face layout (keys without prefix). The
    /// unembedding is written as `lm_head.weight` and the config says
    /// `tie_word_embeddings: false`, since the model keeps it as its own
    /// parameter (training may have moved it away from `wte`).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), ModelError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
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

        let path = dir.join(WEIGHTS_FILE);
        let metadata = BTreeMap::new();
        write_atomic(&path, |w| write_safetensors_to(w, &entries, &metadata))?;
        let mut config = self.config.clone();
        config.tie_word_embeddings = false;
        let cpath = dir.join(CONFIG_FILE);
        let json = config.to_json();
        write_atomic(&cpath, |w| w.write_all(json.as_bytes())).map(|_| ())
    }
}

/// The layers the file holds (`h.<i>.` keys, with or without the
/// `transformer.` prefix) against `n_layer`, before anything is read per
/// layer: more layers than the config says, or fewer, is a
/// [`ModelError::ConfigMismatch`]. (A config claiming 10⁸ layers fails here,
/// not after allocating for each.)
fn check_layers(file: &SafetensorsFile, config: &Gpt2Config) -> Result<(), ModelError> {
    let layers: BTreeSet<usize> = file
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
        path: file.path().to_path_buf(),
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
