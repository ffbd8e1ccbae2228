//! A sparse autoencoder as a Burn module, loadable from safetensors, and its
//! splice into the model through `AutoencoderHooks`.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use hooks_core::{AutoencoderHooks, HookError, HookTree, Hooks};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

use hooks_model::ModelError;
use hooks_model::finite::check_finite;
use hooks_model::weights::describe_safetensors_error;

/// The latent non-linearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    /// `relu(pre)`.
    #[default]
    Relu,
    /// Keep the `k` largest pre-activations of each vector (after ReLU),
    /// zero the rest.
    TopK(usize),
}

/// `latents = act((x - pre_bias) W_enc + latent_bias)`,
/// `reconstruction = latents W_dec + pre_bias`.
#[derive(Module, Debug)]
pub struct SparseAutoencoder<B: Backend> {
    /// Subtracted before encoding, added after decoding `[D]`.
    pub pre_bias: Param<Tensor<B, 1>>,
    /// `[D, L]`.
    pub encoder: Param<Tensor<B, 2>>,
    /// `[L]`.
    pub latent_bias: Param<Tensor<B, 1>>,
    /// `[L, D]`.
    pub decoder: Param<Tensor<B, 2>>,
    /// The non-linearity.
    #[module(skip)]
    pub activation: Activation,
}

/// Where an autoencoder can be spliced, per layer (the reference's choices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaeSite {
    /// `mlp.post_act` (width F).
    MlpPostAct,
    /// `resid.torso.delta_mlp` (width D).
    DeltaMlp,
    /// `resid.torso.delta_attn` (width D).
    DeltaAttn,
    /// `resid.torso.post_attn`, the residual after attention (width D;
    /// OpenAI's `resid_post_attn`).
    PostAttn,
    /// `resid.torso.post_mlp`, the residual after the MLP (width D;
    /// OpenAI's `resid_post_mlp`).
    PostMlp,
}

impl SaeSite {
    /// The site's path in the hook tree.
    pub fn path(self) -> &'static str {
        match self {
            SaeSite::MlpPostAct => "mlp.post_act",
            SaeSite::DeltaMlp => "resid.torso.delta_mlp",
            SaeSite::DeltaAttn => "resid.torso.delta_attn",
            SaeSite::PostAttn => "resid.torso.post_attn",
            SaeSite::PostMlp => "resid.torso.post_mlp",
        }
    }
}

impl<B: Backend> SparseAutoencoder<B> {
    /// A random autoencoder of width `d` with `n_latents` latents.
    pub fn init(d: usize, n_latents: usize, activation: Activation, device: &B::Device) -> Self {
        let scale = 1.0 / (d as f64).sqrt();
        let encoder = Tensor::random([d, n_latents], Distribution::Normal(0.0, scale), device);
        SparseAutoencoder {
            pre_bias: Param::from_tensor(Tensor::zeros([d], device)),
            decoder: Param::from_tensor(Tensor::from_data(
                encoder.clone().transpose().into_data(),
                device,
            )),
            encoder: Param::from_tensor(encoder),
            latent_bias: Param::from_tensor(Tensor::zeros([n_latents], device)),
            activation,
        }
    }

    /// Input width D.
    pub fn d(&self) -> usize {
        self.encoder.val().dims()[0]
    }

    /// Number of latents L.
    pub fn n_latents(&self) -> usize {
        self.encoder.val().dims()[1]
    }

    /// `[.., D]` → latents `[.., L]`.
    pub fn encode<const R: usize>(&self, x: Tensor<B, R>) -> Tensor<B, R> {
        let pre = (x - self.pre_bias.val().unsqueeze::<R>())
            .matmul(self.encoder.val().unsqueeze::<R>())
            + self.latent_bias.val().unsqueeze::<R>();
        let pre = relu(pre);
        match self.activation {
            Activation::Relu => pre,
            Activation::TopK(k) => {
                let k = k.clamp(1, self.n_latents());
                // The threshold needs no gradient (the mask is a comparison),
                // and Burn's autodiff backend has no `topk`: sort a detached copy.
                let kth = pre
                    .clone()
                    .detach()
                    .sort_descending(R - 1)
                    .narrow(R - 1, k - 1, 1);
                let keep = pre.clone().greater_equal(kth).float();
                pre * keep
            }
        }
    }

    /// Latents `[.., L]` → reconstruction `[.., D]`.
    pub fn decode<const R: usize>(&self, latents: Tensor<B, R>) -> Tensor<B, R> {
        latents.matmul(self.decoder.val().unsqueeze::<R>()) + self.pre_bias.val().unsqueeze::<R>()
    }

    /// This autoencoder as a splice with its own `latents`, `reconstruction`
    /// and `error` sites; add hooks to them, then [`splice_sae`].
    pub fn autoencoder_hooks(&self, add_error: bool) -> AutoencoderHooks<B, 3> {
        let (enc, dec) = (self.clone(), self.clone());
        AutoencoderHooks::new(move |x| enc.encode(x), move |l| dec.decode(l), add_error)
    }

    /// Loads `pre_bias` [D], `encoder.weight` [L, D] (PyTorch `Linear`
    /// layout, as OpenAI's sparse_autoencoder saves it), `latent_bias` [L],
    /// `decoder.weight` [D, L]; the file's metadata key `activation` is
    /// `relu` (default) or `topk:<k>`.
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let bytes = hooks_model::inputs::read(path).map_err(|e| ModelError::io(path, e))?;
        let bad = |reason: String| ModelError::BadSafetensors {
            path: path.to_path_buf(),
            reason,
        };
        let (_, meta) =
            SafeTensors::read_metadata(&bytes).map_err(|e| bad(describe_safetensors_error(&e)))?;
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| bad(describe_safetensors_error(&e)))?;
        let get = |key: &str| -> Result<(Vec<usize>, Vec<f32>), ModelError> {
            let view = st.tensor(key).map_err(|_| ModelError::MissingKey {
                path: path.to_path_buf(),
                key: key.to_string(),
                also_tried: Vec::new(),
            })?;
            if view.dtype() != Dtype::F32 {
                return Err(ModelError::WrongDtype {
                    key: key.into(),
                    path: path.to_path_buf(),
                    dtype: format!("{:?}", view.dtype()),
                    expected: "F32",
                });
            }
            let v: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            check_finite(path, key, v.iter().copied())?;
            Ok((view.shape().to_vec(), v))
        };
        let (enc_shape, enc) = get("encoder.weight")?;
        let [l, d] = enc_shape[..] else {
            return Err(ModelError::WrongShape {
                path: path.to_path_buf(),
                key: "encoder.weight".into(),
                expected: vec![0, 0],
                found: enc_shape,
            });
        };
        let check = |key: &str, shape: Vec<usize>, expected: Vec<usize>| {
            if shape == expected {
                Ok(())
            } else {
                Err(ModelError::WrongShape {
                    path: path.to_path_buf(),
                    key: key.into(),
                    expected,
                    found: shape,
                })
            }
        };
        let (s, pre_bias) = get("pre_bias")?;
        check("pre_bias", s, vec![d])?;
        let (s, latent_bias) = get("latent_bias")?;
        check("latent_bias", s, vec![l])?;
        let (s, dec) = get("decoder.weight")?;
        check("decoder.weight", s, vec![d, l])?;
        let activation = match meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("activation"))
            .map(String::as_str)
        {
            None | Some("relu") => Activation::Relu,
            Some(other) => match other.strip_prefix("topk:").and_then(|k| k.parse().ok()) {
                Some(k) => Activation::TopK(k),
                None => {
                    return Err(bad(format!(
                        "unknown activation `{other}` (expected `relu` or `topk:<k>`)"
                    )));
                }
            },
        };
        let t2 = |v: Vec<f32>, shape: [usize; 2]| {
            Tensor::<B, 2>::from_data(TensorData::new(v, shape), device)
        };
        let t1 = |v: Vec<f32>, n: usize| Tensor::<B, 1>::from_data(TensorData::new(v, [n]), device);
        Ok(SparseAutoencoder {
            pre_bias: Param::from_tensor(t1(pre_bias, d)),
            encoder: Param::from_tensor(Tensor::from_data(
                t2(enc, [l, d]).transpose().into_data(),
                device,
            )),
            latent_bias: Param::from_tensor(t1(latent_bias, l)),
            decoder: Param::from_tensor(Tensor::from_data(
                t2(dec, [d, l]).transpose().into_data(),
                device,
            )),
            activation,
        })
    }

    /// Saves in the layout [`load`](Self::load) reads.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        self.save_with_metadata(path, std::collections::HashMap::new())
    }

    /// [`save`](Self::save) with more string metadata in the header (what
    /// it was trained on, how); `activation` is always the autoencoder's.
    pub fn save_with_metadata(
        &self,
        path: impl AsRef<Path>,
        mut metadata: std::collections::HashMap<String, String>,
    ) -> Result<(), ModelError> {
        let to = |t: TensorData| t.convert::<f32>();
        let entries = vec![
            ("pre_bias".to_string(), to(self.pre_bias.val().into_data())),
            (
                "encoder.weight".to_string(),
                to(self.encoder.val().transpose().into_data()),
            ),
            (
                "latent_bias".to_string(),
                to(self.latent_bias.val().into_data()),
            ),
            (
                "decoder.weight".to_string(),
                to(self.decoder.val().transpose().into_data()),
            ),
        ];
        let activation = match self.activation {
            Activation::Relu => "relu".to_string(),
            Activation::TopK(k) => format!("topk:{k}"),
        };
        metadata.insert("activation".to_string(), activation);
        crate::experiments::export::write_safetensors_with_metadata(&entries, Some(metadata), path)
    }
}

/// Splices `ae` into `hooks` at `site` of `layer`, in the `fwd2` stage (so
/// the site's gradient hooks see the unspliced value's gradient). Any family
/// whose tree has the site (GPT-2's and the Llama family's do) takes it; a
/// tree without it is an error naming the path.
pub fn splice_sae<T: HookTree>(
    hooks: &mut T,
    site: SaeSite,
    layer: usize,
    ae: AutoencoderHooks<T::Backend, 3>,
) -> Result<(), HookError> {
    hooks.append_typed_to_path::<3>(
        &format!("{}.fwd2", site.path()),
        Hooks::at_layers(layer).with(ae),
    )?;
    Ok(())
}
