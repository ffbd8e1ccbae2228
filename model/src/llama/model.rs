//! The Llama-family model: token embedding, blocks, final RMS norm,
//! unembedding, calling [`LlamaHooks`] at every site.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::module::embedding;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use hooks_core::{Ctx, HookFaults};

use super::LlamaConfig;
use super::hooks::{LN_F, LlamaHooks};
use super::layers::{LlamaAttention, LlamaBlock, LlamaMlp, RmsNorm};
use super::rope::RopeTables;
use crate::batch::{Layout, TokenBatch};
use crate::kv_cache::{KvCache, LayerCache};
use crate::ops::{call, matmul_rows};
use crate::{HookedModel, ModelDims, ModelError, NonFiniteSite};

/// A Llama-family model (Llama 3, Qwen2, Mistral) as Hugging Face
/// `transformers` computes it.
///
/// Hooks stay out of the module: `forward` borrows a [`LlamaHooks`], so one
/// model serves many experiments at once. Padded batches follow GPT-2's
/// rules ([`TokenBatch`]): RoPE's position of a token is the number of real
/// tokens before it, and pads see only pads.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// Token embedding `[V, D]` (`model.embed_tokens.weight`).
    pub embed_tokens: Param<Tensor<B, 2>>,
    /// The blocks (`model.layers.N`).
    pub layers: Vec<LlamaBlock<B>>,
    /// Final RMS norm (`model.norm`).
    pub norm: RmsNorm<B>,
    /// Unembedding `[D, V]` (`lm_head.weight` transposed). A parameter of
    /// its own even when the config ties it to `embed_tokens` (then a copy).
    pub unembed: Param<Tensor<B, 2>>,
    /// Hyper-parameters.
    #[module(skip)]
    pub config: LlamaConfig,
}

impl<B: Backend> Llama<B> {
    /// A randomly initialised model (transformers' init: normal(0, 0.02)
    /// weights, zero biases, unit norm weights; a tied unembedding is a
    /// copy of the embedding).
    pub fn init(config: &LlamaConfig, device: &B::Device) -> Result<Self, ModelError> {
        config.validate()?;
        let (d, f, v) = (
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
        );
        let (h, h_kv, d_head) = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        );
        let normal = |shape: [usize; 2]| {
            Param::from_tensor(Tensor::random(
                shape,
                Distribution::Normal(0.0, 0.02),
                device,
            ))
        };
        let linear = |d_in: usize, d_out: usize, bias: bool| Linear {
            weight: normal([d_in, d_out]),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
        };
        let norm = || RmsNorm {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            eps: config.rms_norm_eps,
        };
        let layers = (0..config.num_hidden_layers)
            .map(|_| LlamaBlock {
                input_layernorm: norm(),
                self_attn: LlamaAttention {
                    q_proj: linear(d, h * d_head, config.qkv_bias()),
                    k_proj: linear(d, h_kv * d_head, config.qkv_bias()),
                    v_proj: linear(d, h_kv * d_head, config.qkv_bias()),
                    o_proj: linear(h * d_head, d, config.o_bias()),
                    n_head: h,
                    n_kv_head: h_kv,
                    head_dim: d_head,
                },
                post_attention_layernorm: norm(),
                mlp: LlamaMlp {
                    gate_proj: linear(d, f, config.mlp_has_bias()),
                    up_proj: linear(d, f, config.mlp_has_bias()),
                    down_proj: linear(f, d, config.mlp_has_bias()),
                },
            })
            .collect();
        let embed_tokens = normal([v, d]);
        let unembed = if config.tie_word_embeddings {
            // A leaf of its own (a transposed view is not a leaf, and on an
            // autodiff backend `Param::from_tensor` panics on a non-leaf).
            Param::from_tensor(Tensor::from_data(
                embed_tokens.val().transpose().into_data(),
                device,
            ))
        } else {
            normal([d, v])
        };
        Ok(Llama {
            embed_tokens,
            layers,
            norm: norm(),
            unembed,
            config: config.clone(),
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.embed_tokens.val().device()
    }

    /// The sizes site shapes are written in.
    pub fn dims(&self) -> ModelDims {
        self.config.dims()
    }

    /// Runs `batch` with `hooks` plus a check at every site and returns the
    /// first site whose value holds a NaN or an infinity
    /// ([`HookedModel::first_non_finite`]).
    pub fn first_non_finite(
        &self,
        batch: &TokenBatch,
        hooks: &LlamaHooks<B>,
    ) -> Result<Option<NonFiniteSite>, ModelError> {
        HookedModel::first_non_finite(self, batch, hooks)
    }

    /// Logits `[B,S,V]` for a batch, calling `hooks` at every site.
    ///
    /// Token ids and lengths are checked first: a bad batch is an error
    /// before any tensor work.
    pub fn forward(
        &self,
        batch: &TokenBatch,
        hooks: &LlamaHooks<B>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        batch.check(&self.dims(), 0)?;
        let layout = Layout::of(batch);
        self.run_hooked(batch, &layout, hooks, None, None)
    }

    /// Logits for new tokens after the ones in `cache`, which is extended.
    /// The rows must continue the cached rows (same batch size); `attn.k`
    /// and `attn.v` see the whole cached length.
    pub fn forward_cached(
        &self,
        batch: &TokenBatch,
        cache: &mut KvCache<B>,
        hooks: &LlamaHooks<B>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        batch.check(&self.dims(), cache.len())?;
        let layout = cache.extend(batch)?;
        self.run_hooked(batch, &layout, hooks, Some(&mut cache.layers), None)
    }

    /// The embedding and the first `blocks` blocks (at most all of them),
    /// calling their sites; returns the residual stream after them
    /// `[B,S,D]`. The final norm and the unembedding, and their sites, are
    /// skipped: what a store or probe of early layers needs.
    pub fn forward_blocks(
        &self,
        batch: &TokenBatch,
        hooks: &LlamaHooks<B>,
        blocks: usize,
    ) -> Result<Tensor<B, 3>, ModelError> {
        batch.check(&self.dims(), 0)?;
        let layout = Layout::of(batch);
        self.run_hooked(batch, &layout, hooks, None, Some(blocks))
    }

    /// The same forward pass with every site call compiled out: the
    /// baseline that benchmarks compare an empty hook tree against.
    #[doc(hidden)]
    pub fn forward_unhooked(&self, batch: &TokenBatch) -> Result<Tensor<B, 3>, ModelError> {
        batch.check(&self.dims(), 0)?;
        let layout = Layout::of(batch);
        let hooks = LlamaHooks::default();
        let faults = HookFaults::new();
        Ok(self.run::<false>(
            batch.tokens_tensor(&self.device()),
            &layout,
            &hooks,
            &faults,
            None,
            None,
        ))
    }

    /// The hooked forward pass on checked inputs, or the first fault a hook
    /// reported during it.
    fn run_hooked(
        &self,
        batch: &TokenBatch,
        layout: &Layout,
        hooks: &LlamaHooks<B>,
        cache: Option<&mut Vec<Option<LayerCache<B>>>>,
        blocks: Option<usize>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        let mut faults = HookFaults::new();
        let tokens = batch.tokens_tensor(&self.device());
        let logits = self.run::<true>(tokens, layout, hooks, &faults, cache, blocks);
        match faults.take() {
            Some(fault) => Err(fault.into()),
            None => Ok(logits),
        }
    }

    /// The forward pass on checked inputs; `HOOKED = false` skips every site.
    fn run<const HOOKED: bool>(
        &self,
        tokens: Tensor<B, 2, Int>,
        layout: &Layout,
        hooks: &LlamaHooks<B>,
        faults: &HookFaults,
        mut cache: Option<&mut Vec<Option<LayerCache<B>>>>,
        blocks: Option<usize>,
    ) -> Tensor<B, 3> {
        let device = self.device();
        let (b, s, k) = (layout.batch, layout.queries, layout.keys);
        let mask_shape = [layout.mask_rows, 1, s, k];
        let mask =
            Tensor::<B, 4>::from_data(TensorData::new(layout.mask.clone(), mask_shape), &device);
        // The sliding-window mask, when some layer has a window that the
        // keys reach beyond (every layer shares one window size).
        let windowed = (0..self.config.num_hidden_layers)
            .find_map(|l| self.config.layer_window(l))
            .filter(|&w| k > w)
            .map(|w| {
                Tensor::<B, 4>::from_data(
                    TensorData::new(window_mask(layout, w), mask_shape),
                    &device,
                )
            });
        let d = self.config.head_dim;
        // d^-1/4 on both q and k, folded into the rotation.
        let rope = RopeTables::new(
            &self.config.rope,
            d,
            &layout.positions,
            [b, s],
            (d as f64).powf(-0.25),
            &[
                self.config.num_attention_heads,
                self.config.num_key_value_heads,
            ],
            &device,
        );

        let root = Ctx::root().with_faults(faults);
        let x = embedding(self.embed_tokens.val(), tokens);
        let mut x = call::<HOOKED, B, 3>(&hooks.resid.post_emb, x, &root, "resid.post_emb");
        for (layer, block) in self
            .layers
            .iter()
            .enumerate()
            .take(blocks.unwrap_or(usize::MAX))
        {
            let ctx = Ctx::at_layer(layer).with_faults(faults);
            let layer_cache = cache.as_mut().map(|c| &mut c[layer]);
            let mask = match (self.config.layer_window(layer), &windowed) {
                (Some(_), Some(windowed)) => windowed,
                _ => &mask,
            };
            x = block.forward::<HOOKED>(x, &rope, mask, hooks, &ctx, layer_cache);
        }
        if blocks.is_some() {
            return x;
        }
        let x = self
            .norm
            .forward::<HOOKED>(x, &hooks.resid.ln_f, &root, LN_F);
        let x = call::<HOOKED, B, 3>(&hooks.resid.post_ln_f, x, &root, "resid.post_ln_f");
        let logits = matmul_rows(x, self.unembed.val());
        call::<HOOKED, B, 3>(&hooks.logits, logits, &root, "logits")
    }
}

/// `layout`'s mask with keys `window` or more positions before the query
/// masked too (transformers' sliding window: a key at row position `j` is
/// visible from `i` iff `j > i - window`, positions counted in the row,
/// pads included). The key at the query's own position stays visible, so
/// no query loses every key.
fn window_mask(layout: &Layout, window: usize) -> Vec<f32> {
    let (s, k) = (layout.queries, layout.keys);
    let offset = k - s;
    let mut mask = layout.mask.clone();
    for (i, value) in mask.iter_mut().enumerate() {
        let query = offset + (i / k) % s;
        let key = i % k;
        if key + window <= query {
            *value = f32::NEG_INFINITY;
        }
    }
    mask
}

impl<B: Backend> HookedModel<B> for Llama<B> {
    type Hooks = LlamaHooks<B>;
    type Config = LlamaConfig;
    type Cache = KvCache<B>;

    fn family(&self) -> &'static str {
        self.config.family_name()
    }

    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn dims(&self) -> ModelDims {
        Llama::dims(self)
    }

    fn device(&self) -> B::Device {
        Llama::device(self)
    }

    fn forward(
        &self,
        batch: &TokenBatch,
        hooks: &LlamaHooks<B>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        Llama::forward(self, batch, hooks)
    }

    fn forward_blocks(
        &self,
        batch: &TokenBatch,
        hooks: &LlamaHooks<B>,
        blocks: usize,
    ) -> Result<Tensor<B, 3>, ModelError> {
        Llama::forward_blocks(self, batch, hooks, blocks)
    }

    fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self)
    }

    fn cache_len(cache: &KvCache<B>) -> usize {
        cache.len()
    }

    fn forward_cached(
        &self,
        batch: &TokenBatch,
        cache: &mut KvCache<B>,
        hooks: &LlamaHooks<B>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        Llama::forward_cached(self, batch, cache, hooks)
    }
}
