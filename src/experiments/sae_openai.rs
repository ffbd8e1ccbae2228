//! OpenAI's sparse autoencoders (github.com/openai/sparse_autoencoder, the
//! reference system's own), read from the PyTorch `state_dict` files its
//! `Autoencoder.state_dict` writes, through Burn's PyTorch reader
//! (`burn-store`), and spliced at the sites they were trained on.
//!
//! What a file holds and what the reference does with it
//! (`sparse_autoencoder/model.py`):
//!
//! - `pre_bias` [D], `encoder.weight` [L, D], `latent_bias` [L],
//!   `decoder.weight` [D, L] (PyTorch `Linear` layouts); a tied autoencoder
//!   holds `decoder.linear.weight`, the encoder itself, instead;
//! - buffers `stats_last_nonzero` [L] (forward passes since each latent last
//!   fired: dead latents have large counts), `latents_activation_frequency`
//!   and `latents_mean_square` [L];
//! - `activation`, the class name: `ReLU` (the default when absent), `TopK`
//!   with `activation_state_dict = {k, postact_fn}` (its `state_dict` also
//!   writes `activation.k` and `activation.postact_fn` at the top level), or
//!   `Identity`;
//! - `Autoencoder.from_state_dict` turns on `normalize` exactly when the
//!   activation is `TopK` (the flag is not in the file): the input is
//!   layer-normed, `(x - mean) / (std + 1e-5)` with the unbiased standard
//!   deviation, before encoding, and the reconstruction is scaled back,
//!   `decode(latents) * std + mean`. [`OpenAiSae`] does the same.
//!
//! The location and layer are not in the file but in OpenAI's paths,
//! `{location}[_v4|_v5_32k|_v5_128k]/autoencoders/{layer}.pt`: read from the
//! path when it has that shape ([`OpenAiLocation::from_path`]).
//!
//! Refused, with an error naming the problem (never a panic): a file that is
//! not a zip archive written by `torch.save` (PyTorch ≥ 1.6; the legacy
//! format is named as such), a pickle Burn's reader cannot read or whose root
//! is not a dict, missing or misshapen weights, weights of a non-float dtype,
//! NaN or infinite values, tensors the layout does not have (a `decoder.bias`
//! would change the computation), an activation other than `ReLU` and `TopK`
//! (`Identity`, dense latents, included; the reference itself silently falls
//! back to ReLU for unknown names), a TopK `k` outside `1..=L` or written
//! twice with two values, a TopK `postact_fn` other than `ReLU`, data entries
//! that fail their checksum or hold fewer bytes than the tensors need.
//!
//! One limit of Burn's reader (0.21): it reads tensors as contiguous from
//! their storage offset and ignores strides, so a `state_dict` holding a
//! non-contiguous view (a transposed tensor saved without `.contiguous()`)
//! would read wrong. The reference's `state_dict` holds module parameters
//! and buffers, which are contiguous.

use std::collections::HashMap;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_store::TensorSnapshot;
use burn_store::pytorch::PytorchReader;
use burn_store::pytorch::lazy_data::LazyDataSource;
use burn_store::pytorch::reader::PickleValue;
use hooks_core::{AutoencoderHooks, InputDecoder};

use hooks_model::finite::check_finite;
use hooks_model::{ModelDims, ModelError};

use super::sae::{Activation, SaeSite, SparseAutoencoder};

/// The `eps` of the reference's `LN`, added to the standard deviation.
pub const OPENAI_LN_EPS: f64 = 1e-5;

/// The places OpenAI trained its GPT-2 small autoencoders on, by the names
/// its paths use (`sparse_autoencoder/paths.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpenAiLocation {
    /// `mlp_post_act`: the MLP's hidden activations (TransformerLens
    /// `mlp.hook_post`), our `mlp.post_act`.
    MlpPostAct,
    /// `resid_delta_attn`: the attention block's output (`hook_attn_out`),
    /// our `resid.torso.delta_attn`.
    ResidDeltaAttn,
    /// `resid_post_attn`: the residual stream after attention
    /// (`hook_resid_mid`), our `resid.torso.post_attn`.
    ResidPostAttn,
    /// `resid_delta_mlp`: the MLP block's output (`hook_mlp_out`), our
    /// `resid.torso.delta_mlp`.
    ResidDeltaMlp,
    /// `resid_post_mlp`: the residual stream after the MLP
    /// (`hook_resid_post`), our `resid.torso.post_mlp`.
    ResidPostMlp,
}

impl OpenAiLocation {
    /// Every location.
    pub const ALL: [OpenAiLocation; 5] = [
        OpenAiLocation::MlpPostAct,
        OpenAiLocation::ResidDeltaAttn,
        OpenAiLocation::ResidPostAttn,
        OpenAiLocation::ResidDeltaMlp,
        OpenAiLocation::ResidPostMlp,
    ];

    /// OpenAI's name: `resid_delta_mlp`, ...
    pub fn name(self) -> &'static str {
        match self {
            OpenAiLocation::MlpPostAct => "mlp_post_act",
            OpenAiLocation::ResidDeltaAttn => "resid_delta_attn",
            OpenAiLocation::ResidPostAttn => "resid_post_attn",
            OpenAiLocation::ResidDeltaMlp => "resid_delta_mlp",
            OpenAiLocation::ResidPostMlp => "resid_post_mlp",
        }
    }

    /// The location OpenAI calls `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Our site for it.
    pub fn site(self) -> SaeSite {
        match self {
            OpenAiLocation::MlpPostAct => SaeSite::MlpPostAct,
            OpenAiLocation::ResidDeltaAttn => SaeSite::DeltaAttn,
            OpenAiLocation::ResidPostAttn => SaeSite::PostAttn,
            OpenAiLocation::ResidDeltaMlp => SaeSite::DeltaMlp,
            OpenAiLocation::ResidPostMlp => SaeSite::PostMlp,
        }
    }

    /// The location and layer of a path in OpenAI's layout,
    /// `…/{location}[_{version}]/autoencoders/{layer}.pt`
    /// (`resid_delta_mlp_v5_32k/autoencoders/6.pt`); `None` for other paths.
    pub fn from_path(path: &Path) -> Option<(OpenAiLocation, usize)> {
        let folder = path.parent()?;
        if folder.file_name()? != "autoencoders" {
            return None;
        }
        let release = folder.parent()?.file_name()?.to_str()?;
        let location = Self::ALL.into_iter().find(|l| {
            release == l.name()
                || release
                    .strip_prefix(l.name())
                    .is_some_and(|rest| rest.starts_with('_'))
        })?;
        let layer = path.file_stem()?.to_str()?.parse().ok()?;
        Some((location, layer))
    }
}

/// What an OpenAI file says besides the weights.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAiSaeInfo {
    /// The file read.
    pub path: PathBuf,
    /// Where it was trained, from the path ([`OpenAiLocation::from_path`]);
    /// set it for files kept elsewhere.
    pub location: Option<OpenAiLocation>,
    /// Its layer, from the path.
    pub layer: Option<usize>,
    /// Whether the decoder is the encoder's transpose (`decoder.linear.weight`).
    pub tied: bool,
    /// Forward passes since each latent last fired (`stats_last_nonzero`).
    pub stats_last_nonzero: Option<Vec<i64>>,
    /// `latents_activation_frequency`, when the file has it.
    pub latents_activation_frequency: Option<Vec<f32>>,
    /// `latents_mean_square`, when the file has it.
    pub latents_mean_square: Option<Vec<f32>>,
}

impl OpenAiSaeInfo {
    /// Our site for the location, when known.
    pub fn site(&self) -> Option<SaeSite> {
        self.location.map(OpenAiLocation::site)
    }

    /// The latents that have not fired for more than `threshold` forward
    /// passes (the reference's training: `stats_last_nonzero >
    /// dead_steps_threshold`); `None` without the buffer.
    pub fn dead_latents(&self, threshold: i64) -> Option<Vec<usize>> {
        self.stats_last_nonzero
            .as_ref()
            .map(|stats| (0..stats.len()).filter(|&j| stats[j] > threshold).collect())
    }
}

/// A layer-normed input's mean and standard deviation `[.., 1]`, what the
/// reconstruction is scaled back by (the reference's `info`).
#[derive(Clone, Debug)]
pub struct InputNorm<B: Backend, const R: usize> {
    /// The mean over the last axis.
    pub mean: Tensor<B, R>,
    /// The unbiased standard deviation of the centred input.
    pub std: Tensor<B, R>,
}

/// One of OpenAI's autoencoders: the weights as a [`SparseAutoencoder`],
/// whether inputs are layer-normed (TopK files), and the file's other facts.
#[derive(Clone, Debug)]
pub struct OpenAiSae<B: Backend> {
    /// The weights and the activation (`Relu` or `TopK(k)`). Its own
    /// `encode` / `decode` / `autoencoder_hooks` do not layer-norm: use
    /// this type's.
    pub sae: SparseAutoencoder<B>,
    /// Layer-norm the input and scale the reconstruction back (the
    /// reference's `normalize`: on for TopK files).
    pub normalize: bool,
    /// Location, layer, tying and buffers.
    pub info: OpenAiSaeInfo,
}

impl<B: Backend> SparseAutoencoder<B> {
    /// Reads one of OpenAI's autoencoder files: [`OpenAiSae::load`].
    pub fn load_openai(
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<OpenAiSae<B>, ModelError> {
        OpenAiSae::load(path, device)
    }
}

impl<B: Backend> OpenAiSae<B> {
    /// Reads a `state_dict` written by OpenAI's `Autoencoder.state_dict`
    /// (`torch.save`, PyTorch ≥ 1.6). Weights may be F32, F64, F16 or BF16
    /// (held as f32). See the module documentation for what is checked.
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, ModelError> {
        let file = PtFile::open(path.as_ref())?;
        let path = file.path;
        let bad = |reason: String| ModelError::BadCheckpoint {
            path: path.to_path_buf(),
            reason,
        };

        // The tensors: every one must be part of the layout.
        let mut unexpected: Vec<String> = file
            .tensors
            .keys()
            .filter(|k| !TENSOR_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        if !unexpected.is_empty() {
            unexpected.sort();
            return Err(bad(format!(
                "tensors {} are not part of OpenAI's Autoencoder state_dict (it holds {}); \
                 refusing rather than ignoring weights",
                backticked(&unexpected),
                backticked(TENSOR_KEYS),
            )));
        }

        let tied = file.tensors.contains_key("decoder.linear.weight");
        file.check_storage(tied)?;

        let (enc_shape, encoder) = file.floats("encoder.weight")?;
        let [l, d] = enc_shape[..] else {
            return Err(bad(format!(
                "weight `encoder.weight` has shape {enc_shape:?}; expected two axes, \
                 [latents, inputs] (a PyTorch `Linear` weight)"
            )));
        };
        if l == 0 || d == 0 {
            return Err(bad(format!(
                "weight `encoder.weight` has shape [{l}, {d}]: an autoencoder needs at least one \
                 latent and one input"
            )));
        }
        let (s, pre_bias) = file.floats("pre_bias")?;
        file.check_shape("pre_bias", s, vec![d])?;
        let (s, latent_bias) = file.floats("latent_bias")?;
        file.check_shape("latent_bias", s, vec![l])?;

        // `decoder` [L, D] in our layout: the transpose of `decoder.weight`
        // [D, L], or a tied file's `decoder.linear.weight` [L, D].
        let decoder = match (file.tensors.contains_key("decoder.weight"), tied) {
            (true, true) => {
                return Err(bad(
                    "both `decoder.weight` and `decoder.linear.weight` (tied) are present: \
                     which decoder is meant is ambiguous"
                        .into(),
                ));
            }
            (false, false) => {
                return Err(ModelError::MissingKey {
                    path: path.to_path_buf(),
                    key: "decoder.weight".into(),
                    also_tried: vec!["decoder.linear.weight".into()],
                });
            }
            (true, false) => {
                let (s, dec) = file.floats("decoder.weight")?;
                file.check_shape("decoder.weight", s, vec![d, l])?;
                transpose(&dec, d, l)
            }
            (false, true) => {
                let (s, dec) = file.floats("decoder.linear.weight")?;
                file.check_shape("decoder.linear.weight", s, vec![l, d])?;
                if dec != encoder {
                    return Err(bad(
                        "`decoder.linear.weight` of a tied autoencoder differs from \
                         `encoder.weight` (in the reference they are one tensor)"
                            .into(),
                    ));
                }
                dec
            }
        };

        let stats_last_nonzero = match file.tensors.get("stats_last_nonzero") {
            None => None,
            Some(_) => {
                let (s, v) = file.ints("stats_last_nonzero")?;
                file.check_shape("stats_last_nonzero", s, vec![l])?;
                Some(v)
            }
        };
        let buffer = |key: &str| -> Result<Option<Vec<f32>>, ModelError> {
            if !file.tensors.contains_key(key) {
                return Ok(None);
            }
            let (s, v) = file.floats(key)?;
            file.check_shape(key, s, vec![l])?;
            Ok(Some(v))
        };
        let latents_activation_frequency = buffer("latents_activation_frequency")?;
        let latents_mean_square = buffer("latents_mean_square")?;

        let activation = file.activation(l)?;
        let normalize = matches!(activation, Activation::TopK(_));
        if normalize && d < 2 {
            return Err(bad(format!(
                "a TopK autoencoder layer-norms its input, which needs a width of at least 2 \
                 (the unbiased standard deviation), not {d}"
            )));
        }
        let (location, layer) = match OpenAiLocation::from_path(path) {
            Some((location, layer)) => (Some(location), Some(layer)),
            None => (None, None),
        };
        let t1 = |v: Vec<f32>| {
            let n = v.len();
            Param::from_tensor(Tensor::<B, 1>::from_data(TensorData::new(v, [n]), device))
        };
        let t2 = |v: Vec<f32>, shape: [usize; 2]| {
            Param::from_tensor(Tensor::<B, 2>::from_data(TensorData::new(v, shape), device))
        };
        Ok(OpenAiSae {
            sae: SparseAutoencoder {
                pre_bias: t1(pre_bias),
                encoder: t2(transpose(&encoder, l, d), [d, l]),
                latent_bias: t1(latent_bias),
                decoder: t2(decoder, [l, d]),
                activation,
            },
            normalize,
            info: OpenAiSaeInfo {
                path: path.to_path_buf(),
                location,
                layer,
                tied,
                stats_last_nonzero,
                latents_activation_frequency,
                latents_mean_square,
            },
        })
    }

    /// Input width D.
    pub fn d(&self) -> usize {
        self.sae.d()
    }

    /// Number of latents L.
    pub fn n_latents(&self) -> usize {
        self.sae.n_latents()
    }

    /// TopK's `k`; `None` for ReLU.
    pub fn k(&self) -> Option<usize> {
        match self.sae.activation {
            Activation::TopK(k) => Some(k),
            Activation::Relu => None,
        }
    }

    /// Where it was trained and at which layer, when the path said.
    pub fn placement(&self) -> Option<(SaeSite, usize)> {
        Some((self.info.site()?, self.info.layer?))
    }

    /// `[.., D]` → latents `[.., L]`, and the input's mean and deviation when
    /// it is layer-normed (the reference's `encode`, which returns `info`).
    pub fn encode<const R: usize>(
        &self,
        x: Tensor<B, R>,
    ) -> (Tensor<B, R>, Option<InputNorm<B, R>>) {
        if !self.normalize {
            return (self.sae.encode(x), None);
        }
        let d = x.dims()[R - 1];
        let mean = x.clone().mean_dim(R - 1);
        let centred = x - mean.clone();
        let std = (centred.clone().powi_scalar(2).sum_dim(R - 1) / (d as f64 - 1.0)).sqrt();
        let normed = centred / (std.clone() + OPENAI_LN_EPS);
        (self.sae.encode(normed), Some(InputNorm { mean, std }))
    }

    /// Latents `[.., L]` → reconstruction `[.., D]`, scaled back by `norm`
    /// (what [`encode`](Self::encode) returned for the same input; with
    /// `None` a layer-normed autoencoder's reconstruction stays normed).
    pub fn decode<const R: usize>(
        &self,
        latents: Tensor<B, R>,
        norm: Option<&InputNorm<B, R>>,
    ) -> Tensor<B, R> {
        let out = self.sae.decode(latents);
        match norm {
            Some(n) => out * n.std.clone() + n.mean.clone(),
            None => out,
        }
    }

    /// `(latents, reconstruction)` of `x`.
    pub fn forward<const R: usize>(&self, x: Tensor<B, R>) -> (Tensor<B, R>, Tensor<B, R>) {
        let (latents, norm) = self.encode(x);
        let reconstruction = self.decode(latents.clone(), norm.as_ref());
        (latents, reconstruction)
    }

    /// This autoencoder as a splice with `latents`, `reconstruction` and
    /// `error` sites, layer-norm included: hook them, then
    /// [`splice_sae`](super::splice_sae) at [`placement`](Self::placement).
    pub fn autoencoder_hooks(&self, add_error: bool) -> AutoencoderHooks<B, 3> {
        let this = self.clone();
        AutoencoderHooks::with_input_decoder(
            move |x| {
                let (latents, norm) = this.encode(x);
                let sae = this.clone();
                let decoder: InputDecoder<B, 3> = Box::new(move |l| sae.decode(l, norm.as_ref()));
                (latents, decoder)
            },
            add_error,
        )
    }

    /// Checks that it fits `site` at `layer` of a model with `dims`: the
    /// site's width is D and the layer exists (a GPT-2 small autoencoder,
    /// D 768, does not fit the bundled model, D 64).
    pub fn check_fits(
        &self,
        dims: &ModelDims,
        site: SaeSite,
        layer: usize,
    ) -> Result<(), ModelError> {
        let (width, name) = match site {
            SaeSite::MlpPostAct => (dims.d_mlp, "d_mlp"),
            SaeSite::DeltaMlp | SaeSite::DeltaAttn | SaeSite::PostAttn | SaeSite::PostMlp => {
                (dims.d_model, "d_model")
            }
        };
        let reason = if width != self.d() {
            format!(
                "the autoencoder's width is {}, `{}` has width {width} ({name}) in this model",
                self.d(),
                site.path()
            )
        } else if layer >= dims.n_layer {
            format!(
                "layer {layer} does not exist: the model has {} layers",
                dims.n_layer
            )
        } else {
            return Ok(());
        };
        Err(ModelError::ConfigMismatch {
            path: self.info.path.clone(),
            reason,
        })
    }
}

/// The tensors of the reference's `state_dict`.
const TENSOR_KEYS: &[&str] = &[
    "pre_bias",
    "encoder.weight",
    "latent_bias",
    "decoder.weight",
    "decoder.linear.weight",
    "stats_last_nonzero",
    "latents_activation_frequency",
    "latents_mean_square",
];

/// The float dtypes read (as f32), in words.
const FLOATS_SHOWN: &str = "F32, F64, F16 or BF16";

/// `[r, c]` row-major → `[c, r]`.
fn transpose(v: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    out
}

fn backticked<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(v: &PickleValue) -> String {
    match v {
        PickleValue::None => "None (or an object Burn's reader does not decode)".into(),
        PickleValue::Bool(b) => format!("the bool {b}"),
        PickleValue::Int(i) => format!("the int {i}"),
        PickleValue::Float(f) => format!("the float {f}"),
        PickleValue::String(s) => format!("the string {s:?}"),
        PickleValue::List(l) => format!("a list of {}", l.len()),
        PickleValue::Dict(_) => "a dict".into(),
        PickleValue::Bytes(b) => format!("{} bytes", b.len()),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// A `torch.save` zip archive read by Burn's reader: its tensors and its
/// other values.
struct PtFile<'p> {
    path: &'p Path,
    tensors: HashMap<String, TensorSnapshot>,
    values: HashMap<String, PickleValue>,
    /// The archive's data entries and their sizes in bytes, each read back
    /// whole (so its checksum was checked).
    entries: Vec<(String, usize)>,
}

impl<'p> PtFile<'p> {
    fn open(path: &'p Path) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::BadCheckpoint {
            path: path.to_path_buf(),
            reason,
        };
        let mut head = Vec::with_capacity(9);
        hooks_model::inputs::open(path)
            .and_then(|f| f.take(9).read_to_end(&mut head))
            .map_err(|e| ModelError::io(path, e))?;
        if !head.starts_with(b"PK\x03\x04") {
            return Err(bad(if head.is_empty() {
                "an empty file, not a PyTorch checkpoint".into()
            } else if head.len() == 9 && head[8] == b'{' {
                // A little-endian header length, then the JSON header.
                "a safetensors file, not a PyTorch checkpoint (`SparseAutoencoder::load` reads \
                 autoencoders in safetensors)"
                    .into()
            } else if head.starts_with(&[0x80, 0x02, 0x8a, 0x0a]) {
                "PyTorch's legacy serialization (before 1.6), not the zip archive `torch.save` \
                 writes; re-save it with `torch.save(torch.load(path), path)`"
                    .into()
            } else {
                format!(
                    "not a PyTorch checkpoint: `torch.save` writes a zip archive (starting `PK`), \
                     this file starts with bytes {:02x?}",
                    &head[..head.len().min(4)]
                )
            }));
        }
        // Burn's reader is not written for hostile input: a panic in it is
        // an error here too.
        let guarded = |what: &str, f: &mut dyn FnMut() -> Result<(), String>| match catch_unwind(
            AssertUnwindSafe(f),
        ) {
            Ok(r) => r.map_err(|e| bad(format!("{what}: {e}"))),
            Err(p) => Err(bad(format!(
                "{what}: Burn's PyTorch reader panicked: {}",
                panic_message(p)
            ))),
        };
        let mut entries = Vec::new();
        guarded(
            "not a readable zip archive (truncated or damaged?)",
            &mut || {
                let data = LazyDataSource::from_zip(path).map_err(|e| e.to_string())?;
                for key in data.keys() {
                    let bytes = data
                        .read(&key)
                        .map_err(|e| format!("data entry `{key}` could not be read back: {e}"))?;
                    entries.push((key, bytes.len()));
                }
                Ok(())
            },
        )?;
        let mut tensors = None;
        guarded(
            "not a state_dict Burn's PyTorch reader can read",
            &mut || {
                tensors = Some(
                    PytorchReader::new(path)
                        .map_err(|e| e.to_string())?
                        .into_tensors(),
                );
                Ok(())
            },
        )?;
        let mut values = None;
        guarded(
            "not a state_dict Burn's PyTorch reader can read",
            &mut || match PytorchReader::read_pickle_data(path, None).map_err(|e| e.to_string())? {
                PickleValue::Dict(d) => {
                    values = Some(d);
                    Ok(())
                }
                other => Err(format!("its root is {}, not a dict", describe(&other))),
            },
        )?;
        Ok(PtFile {
            path,
            tensors: tensors.expect("set when Ok"),
            values: values.expect("set when Ok"),
            entries,
        })
    }

    fn bad(&self, reason: String) -> ModelError {
        ModelError::BadCheckpoint {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn wrong_shape(&self, key: &str, expected: Vec<usize>, found: Vec<usize>) -> ModelError {
        ModelError::WrongShape {
            path: self.path.to_path_buf(),
            key: key.into(),
            expected,
            found,
        }
    }

    fn check_shape(
        &self,
        key: &str,
        found: Vec<usize>,
        expected: Vec<usize>,
    ) -> Result<(), ModelError> {
        if found == expected {
            Ok(())
        } else {
            Err(self.wrong_shape(key, expected, found))
        }
    }

    fn snapshot(&self, key: &str) -> Result<&TensorSnapshot, ModelError> {
        self.tensors.get(key).ok_or_else(|| ModelError::MissingKey {
            path: self.path.to_path_buf(),
            key: key.into(),
            also_tried: Vec::new(),
        })
    }

    fn data(&self, key: &str, snap: &TensorSnapshot) -> Result<TensorData, ModelError> {
        let data = snap
            .to_data()
            .map_err(|e| self.bad(format!("tensor `{key}` could not be read: {e}")))?;
        if data.shape.to_vec() != snap.shape.to_vec() {
            return Err(self.bad(format!(
                "tensor `{key}` read with shape {:?}, the pickle says {:?}",
                data.shape.to_vec(),
                snap.shape.to_vec()
            )));
        }
        Ok(data)
    }

    /// A float tensor as f32, checked finite.
    fn floats(&self, key: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        let snap = self.snapshot(key)?;
        if !matches!(
            snap.dtype,
            DType::F32 | DType::F64 | DType::F16 | DType::BF16
        ) {
            return Err(ModelError::WrongDtype {
                key: key.into(),
                path: self.path.to_path_buf(),
                dtype: format!("{:?}", snap.dtype),
                expected: FLOATS_SHOWN,
            });
        }
        let data = self.data(key, snap)?;
        let values: Vec<f32> = data
            .convert::<f32>()
            .to_vec()
            .map_err(|e| self.bad(format!("tensor `{key}`: {e:?}")))?;
        check_finite(self.path, key, values.iter().copied())?;
        Ok((snap.shape.to_vec(), values))
    }

    /// An integer tensor (I64 or I32) as i64.
    fn ints(&self, key: &str) -> Result<(Vec<usize>, Vec<i64>), ModelError> {
        let snap = self.snapshot(key)?;
        if !matches!(snap.dtype, DType::I64 | DType::I32) {
            return Err(ModelError::WrongDtype {
                key: key.into(),
                path: self.path.to_path_buf(),
                dtype: format!("{:?}", snap.dtype),
                expected: "I64 or I32",
            });
        }
        let data = self.data(key, snap)?;
        let values = data
            .convert::<i64>()
            .to_vec()
            .map_err(|e| self.bad(format!("tensor `{key}`: {e:?}")))?;
        Ok((snap.shape.to_vec(), values))
    }

    /// The activation, as `Autoencoder.from_state_dict` reads it (stricter:
    /// unknown names are errors, not ReLU).
    fn activation(&self, n_latents: usize) -> Result<Activation, ModelError> {
        let name = match self.values.get("activation") {
            None => "ReLU",
            Some(PickleValue::String(s)) => s.as_str(),
            Some(other) => {
                return Err(self.bad(format!(
                    "`activation` is {}, expected the activation's class name (`ReLU` or `TopK`)",
                    describe(other)
                )));
            }
        };
        match name {
            "ReLU" => Ok(Activation::Relu),
            "TopK" => {
                let state = match self.values.get("activation_state_dict") {
                    Some(PickleValue::Dict(d)) => Some(d),
                    None => None,
                    Some(other) => {
                        return Err(self.bad(format!(
                            "`activation_state_dict` is {}, expected a dict holding `k`",
                            describe(other)
                        )));
                    }
                };
                let k = match state.and_then(|s| s.get("k")) {
                    Some(PickleValue::Int(k)) => *k,
                    None => {
                        return Err(self.bad(
                            "a TopK autoencoder without `activation_state_dict[\"k\"]`: \
                             how many latents to keep is unknown"
                                .into(),
                        ));
                    }
                    Some(other) => {
                        return Err(self.bad(format!(
                            "TopK's `k` is {}, expected an int",
                            describe(other)
                        )));
                    }
                };
                if let Some(top) = self.values.get("activation.k")
                    && top != &PickleValue::Int(k)
                {
                    return Err(self.bad(format!(
                        "TopK's `k` is {k} in `activation_state_dict` but `activation.k` is {}",
                        describe(top)
                    )));
                }
                if k < 1 || k as u64 > n_latents as u64 {
                    return Err(self.bad(format!(
                        "TopK's `k` is {k}, outside 1..={n_latents} (the number of latents)"
                    )));
                }
                for (where_, value) in [
                    (
                        "activation_state_dict[\"postact_fn\"]",
                        state.and_then(|s| s.get("postact_fn")),
                    ),
                    (
                        "activation.postact_fn",
                        self.values.get("activation.postact_fn"),
                    ),
                ] {
                    match value {
                        None => {}
                        Some(PickleValue::String(s)) if s == "ReLU" => {}
                        Some(PickleValue::String(s)) if s == "Identity" => {
                            return Err(self.bad(format!(
                                "TopK with `{where_}` = \"Identity\" keeps negative latents; \
                                 SparseAutoencoder's TopK applies ReLU to the kept ones"
                            )));
                        }
                        Some(other) => {
                            return Err(self.bad(format!(
                                "`{where_}` is {}, expected \"ReLU\"",
                                describe(other)
                            )));
                        }
                    }
                }
                Ok(Activation::TopK(k as usize))
            }
            "Identity" => Err(self.bad(
                "activation `Identity` (dense latents) is not supported: \
                 SparseAutoencoder's activations are ReLU and TopK"
                    .into(),
            )),
            other => Err(self.bad(format!(
                "unknown activation `{other}` (OpenAI's Autoencoder has `ReLU`, `TopK` and \
                 `Identity`; only `ReLU` and `TopK` are supported)"
            ))),
        }
    }

    /// Burn's reader gives zeros for a storage it cannot read and pads a
    /// short one with zeros, and sizes its buffers by the pickle's shapes:
    /// every tensor must fit in the largest data entry, and together the
    /// entries (each read back whole when opened) must hold at least the
    /// tensors' bytes. Checked before any tensor is read.
    fn check_storage(&self, tied: bool) -> Result<(), ModelError> {
        let have: usize = self.entries.iter().map(|(_, n)| n).sum();
        let largest = self.entries.iter().map(|&(_, n)| n).max().unwrap_or(0);
        let mut keys: Vec<&String> = self.tensors.keys().collect();
        keys.sort();
        let mut need = 0usize;
        for key in keys {
            let snap = &self.tensors[key];
            let bytes = snap
                .shape
                .iter()
                .try_fold(snap.dtype.size(), |n, &s| n.checked_mul(s))
                .filter(|&n| n <= largest)
                .ok_or_else(|| {
                    self.bad(format!(
                        "tensor `{key}` of shape {:?} ({:?}) is larger than any data entry in                          the archive (the largest holds {largest} bytes)",
                        snap.shape.to_vec(),
                        snap.dtype
                    ))
                })?;
            if !(tied && key == "decoder.linear.weight") {
                need += bytes;
            }
        }
        if have < need {
            return Err(self.bad(format!(
                "the archive's data entries hold {have} bytes, its tensors need {need}: \
                 storage is missing or truncated"
            )));
        }
        Ok(())
    }
}
