//! Hugging Face GPT-2 checkpoints: `config.json` + `model.safetensors`.
//!
//! Keys are accepted with or without the `transformer.` prefix; `lm_head.weight`
//! is used when present, else the unembedding is tied to `wte`; old
//! `attn.bias` / `attn.masked_bias` buffers are ignored. Every problem is a
//! [`ModelError`] naming the file and key, checked before any tensor is built.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::layers::{Attention, Block, Mlp, Norm};
use crate::{Gpt2, Gpt2Config, ModelError};

/// The file names inside a checkpoint folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file inside a checkpoint folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Reads `config.json` from a checkpoint folder.
pub fn load_config(dir: impl AsRef<Path>) -> Result<Gpt2Config, ModelError> {
    let path = dir.as_ref().join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    Gpt2Config::from_json(&text).map_err(|e| match e {
        ModelError::BadConfig(why) => ModelError::BadConfig(format!("{}: {why}", path.display())),
        other => other,
    })
}

struct Weights<'a> {
    tensors: SafeTensors<'a>,
    path: PathBuf,
}

impl Weights<'_> {
    /// The names a weight may be stored under: as is, or with the
    /// `transformer.` prefix some GPT-2 checkpoints put on every key.
    fn names(key: &str) -> [String; 2] {
        [key.to_string(), format!("transformer.{key}")]
    }

    fn find(&self, key: &str) -> Option<(String, TensorView<'_>)> {
        Self::names(key)
            .into_iter()
            .find_map(|k| self.tensors.tensor(&k).ok().map(|t| (k, t)))
    }

    fn has(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    /// The values of `key`, checked to have `shape` and dtype F32.
    fn get(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let (found_key, view) = self.find(key).ok_or_else(|| ModelError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
            also_tried: Self::names(key)[1..].to_vec(),
        })?;
        if view.shape() != shape {
            return Err(ModelError::WrongShape {
                path: self.path.clone(),
                key: found_key,
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        if view.dtype() != Dtype::F32 {
            return Err(ModelError::WrongDtype {
                key: found_key,
                path: self.path.clone(),
                dtype: format!("{:?}", view.dtype()),
            });
        }
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

fn tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Builds modules from the checked values, consuming them.
struct Take<'d, B: Backend> {
    values: BTreeMap<String, Vec<f32>>,
    device: &'d B::Device,
    eps: f64,
}

impl<B: Backend> Take<'_, B> {
    fn tensor<const D: usize>(&mut self, key: &str, shape: [usize; D]) -> Tensor<B, D> {
        let values = self
            .values
            .remove(key)
            .expect("every key was read and checked");
        tensor(values, shape, self.device)
    }

    fn norm(&mut self, prefix: &str, d: usize) -> Norm<B> {
        Norm {
            weight: Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [d])),
            bias: Param::from_tensor(self.tensor(&format!("{prefix}.bias"), [d])),
            eps: self.eps,
        }
    }

    fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize) -> Linear<B> {
        Linear {
            weight: Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [d_in, d_out])),
            bias: Some(Param::from_tensor(
                self.tensor(&format!("{prefix}.bias"), [d_out]),
            )),
        }
    }
}

impl<B: Backend> Gpt2<B> {
    /// Loads a checkpoint folder in the Hugging Face layout.
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let config = load_config(dir)?;
        let path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::BadSafetensors {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let w = Weights { tensors, path };
        check_layers(&w, &config)?;

        let (d, f, v, p) = (
            config.n_embd,
            config.d_mlp(),
            config.vocab_size,
            config.n_positions,
        );
        // Read and check every weight before building any tensor.
        let mut values: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        let mut read = |key: String, shape: &[usize]| -> Result<(), ModelError> {
            let vals = w.get(&key, shape)?;
            values.insert(key, vals);
            Ok(())
        };
        read("wte.weight".into(), &[v, d])?;
        read("wpe.weight".into(), &[p, d])?;
        read("ln_f.weight".into(), &[d])?;
        read("ln_f.bias".into(), &[d])?;
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
                read(format!("h.{i}.{name}"), &shape)?;
            }
        }
        let lm_head = if w.has("lm_head.weight") {
            Some(w.get("lm_head.weight", &[v, d])?)
        } else {
            None
        };

        let mut take = Take {
            values,
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
        let unembed = match lm_head {
            Some(values) => tensor::<B, 2>(values, [v, d], device).transpose(),
            None => wte.clone().transpose(),
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
        let mut entries: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut put = |key: String, shape: Vec<usize>, data: TensorData| {
            entries.push((key, shape, f32_bytes(data)));
        };
        let mat = |t: Tensor<B, 2>| (t.dims().to_vec(), t.into_data());
        let vec1 = |t: Tensor<B, 1>| (t.dims().to_vec(), t.into_data());
        let (s, d) = mat(self.wte.val());
        put("wte.weight".into(), s, d);
        let (s, d) = mat(self.wpe.val());
        put("wpe.weight".into(), s, d);
        let (s, d) = mat(self.unembed.val().transpose());
        put("lm_head.weight".into(), s, d);
        for (i, b) in self.blocks.iter().enumerate() {
            let linears = [
                ("attn.c_attn", &b.attn.c_attn),
                ("attn.c_proj", &b.attn.c_proj),
                ("mlp.c_fc", &b.mlp.c_fc),
                ("mlp.c_proj", &b.mlp.c_proj),
            ];
            for (name, l) in linears {
                let (s, d) = mat(l.weight.val());
                put(format!("h.{i}.{name}.weight"), s, d);
                if let Some(bias) = &l.bias {
                    let (s, d) = vec1(bias.val());
                    put(format!("h.{i}.{name}.bias"), s, d);
                }
            }
            for (name, n) in [("ln_1", &b.ln_1), ("ln_2", &b.ln_2)] {
                let (s, d) = vec1(n.weight.val());
                put(format!("h.{i}.{name}.weight"), s, d);
                let (s, d) = vec1(n.bias.val());
                put(format!("h.{i}.{name}.bias"), s, d);
            }
        }
        let (s, d) = vec1(self.ln_f.weight.val());
        put("ln_f.weight".into(), s, d);
        let (s, d) = vec1(self.ln_f.bias.val());
        put("ln_f.bias".into(), s, d);

        let views: Vec<(String, TensorView<'_>)> = entries
            .iter()
            .map(|(k, shape, bytes)| {
                let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("sizes match");
                (k.clone(), view)
            })
            .collect();
        let path = dir.join(WEIGHTS_FILE);
        safetensors::serialize_to_file(views, &None, &path).map_err(|e| ModelError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut config = self.config.clone();
        config.tie_word_embeddings = false;
        let cpath = dir.join(CONFIG_FILE);
        std::fs::write(&cpath, config.to_json()).map_err(|e| ModelError::io(&cpath, e))
    }
}

fn f32_bytes(data: TensorData) -> Vec<u8> {
    data.to_vec::<f32>()
        .expect("model weights are f32")
        .into_iter()
        .flat_map(f32::to_le_bytes)
        .collect()
}

/// Layers in the file beyond `n_layer` mean config and weights disagree.
fn check_layers(w: &Weights<'_>, config: &Gpt2Config) -> Result<(), ModelError> {
    let max_layer = w
        .tensors
        .names()
        .into_iter()
        .filter_map(|k| {
            let k = k.strip_prefix("transformer.").unwrap_or(k);
            k.strip_prefix("h.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max();
    match max_layer {
        Some(m) if m >= config.n_layer => Err(ModelError::ConfigMismatch {
            path: w.path.clone(),
            reason: format!(
                "weights hold {} layers (up to h.{m}) but config.json says n_layer = {}",
                m + 1,
                config.n_layer
            ),
        }),
        _ => Ok(()),
    }
}
