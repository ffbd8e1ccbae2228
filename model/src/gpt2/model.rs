//! The GPT-2 model: embeddings, blocks, final norm, unembedding, calling the
//! hook tree at every site.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::module::embedding;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use hooks_core::{Ctx, HookFaults};

use super::TransformerHooks;
use super::layers::{Attention, Block, LN_F, Mlp, Norm};
use crate::batch::{Layout, TokenBatch};
use crate::kv_cache::LayerCache;
use crate::ops::{call, matmul_rows};
use crate::{Gpt2Config, HookedModel, KvCache, ModelDims, ModelError, NonFiniteSite};

/// GPT-2, as the reference model computes it.
///
/// Hooks stay out of the module: `forward` borrows a [`TransformerHooks`], so
/// one model serves many experiments at once.
#[derive(Module, Debug)]
pub struct Gpt2<B: Backend> {
    /// Token embedding `[V, D]`.
    pub wte: Param<Tensor<B, 2>>,
    /// Position embedding `[n_positions, D]`.
    pub wpe: Param<Tensor<B, 2>>,
    /// The blocks.
    pub blocks: Vec<Block<B>>,
    /// Final norm.
    pub ln_f: Norm<B>,
    /// Unembedding `[D, V]` (Hugging Face's `lm_head.weight`, transposed). A
    /// parameter of its own, as in the reference, even when the checkpoint
    /// ties it to `wte`.
    pub unembed: Param<Tensor<B, 2>>,
    /// Hyper-parameters.
    #[module(skip)]
    pub config: Gpt2Config,
}

impl<B: Backend> Gpt2<B> {
    /// A randomly initialised model with GPT-2's (and Hugging Face's) init:
    /// normal(0, 0.02) weights, the two output projections of each block
    /// (`attn.c_proj`, `mlp.c_proj`) at 0.02 / sqrt(2 · n_layer) so the
    /// residual stream's variance does not grow with depth, zero biases, unit
    /// norm weights, and an unembedding drawn on its own unless the config
    /// ties it to `wte` (a copy of `wte` makes an untied model start out
    /// predicting the current token, which on copying tasks slows the
    /// circuits down that training is meant to find).
    pub fn init(config: &Gpt2Config, device: &B::Device) -> Result<Self, ModelError> {
        config.validate()?;
        let d = config.n_embd;
        let normal = |shape: [usize; 2], std: f64| {
            Param::from_tensor(Tensor::random(
                shape,
                Distribution::Normal(0.0, std),
                device,
            ))
        };
        let projection_std = 0.02 / (2.0 * config.n_layer as f64).sqrt();
        let linear = |d_in: usize, d_out: usize, std: f64| {
            let mut l: Linear<B> = LinearConfig::new(d_in, d_out).init(device);
            l.weight = normal([d_in, d_out], std);
            l.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
            l
        };
        let norm = || Norm {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            bias: Param::from_tensor(Tensor::zeros([d], device)),
            eps: config.layer_norm_epsilon,
        };
        let blocks = (0..config.n_layer)
            .map(|_| Block {
                ln_1: norm(),
                attn: Attention {
                    c_attn: linear(d, 3 * d, 0.02),
                    c_proj: linear(d, d, projection_std),
                    n_head: config.n_head,
                },
                ln_2: norm(),
                mlp: Mlp {
                    c_fc: linear(d, config.d_mlp(), 0.02),
                    c_proj: linear(config.d_mlp(), d, projection_std),
                },
            })
            .collect();
        let wte = normal([config.vocab_size, d], 0.02);
        let unembed = if config.tie_word_embeddings {
            // A leaf of its own (a transposed view of `wte` is not a leaf, and
            // on an autodiff backend `Param::from_tensor` panics on a non-leaf).
            Param::from_tensor(Tensor::from_data(wte.val().transpose().into_data(), device))
        } else {
            normal([d, config.vocab_size], 0.02)
        };
        Ok(Gpt2 {
            wte,
            wpe: normal([config.n_positions, d], 0.02),
            blocks,
            ln_f: norm(),
            unembed,
            config: config.clone(),
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.wte.val().device()
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
        hooks: &TransformerHooks<B>,
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
        hooks: &TransformerHooks<B>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        batch.check(&self.dims(), 0)?;
        let layout = Layout::of(batch);
        self.run_hooked(batch, &layout, hooks, None, None)
    }

    /// Logits for new tokens after the ones in `cache`, which is extended.
    /// The rows must continue the cached rows (same batch size).
    pub fn forward_cached(
        &self,
        batch: &TokenBatch,
        cache: &mut KvCache<B>,
        hooks: &TransformerHooks<B>,
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
        hooks: &TransformerHooks<B>,
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
        let hooks = TransformerHooks::default();
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
    /// reported during it (the logits are then meaningless: the failing hook
    /// passed its input on).
    fn run_hooked(
        &self,
        batch: &TokenBatch,
        layout: &Layout,
        hooks: &TransformerHooks<B>,
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
    /// Hooks that fail report into `faults`.
    fn run<const HOOKED: bool>(
        &self,
        tokens: Tensor<B, 2, Int>,
        layout: &Layout,
        hooks: &TransformerHooks<B>,
        faults: &HookFaults,
        mut cache: Option<&mut Vec<Option<LayerCache<B>>>>,
        blocks: Option<usize>,
    ) -> Tensor<B, 3> {
        let device = self.device();
        let (b, s, k) = (layout.batch, layout.queries, layout.keys);
        let positions = Tensor::<B, 2, Int>::from_data(
            TensorData::new(layout.positions.clone(), [b, s]),
            &device,
        );
        let mask = Tensor::<B, 4>::from_data(
            TensorData::new(layout.mask.clone(), [layout.mask_rows, 1, s, k]),
            &device,
        );

        let root = Ctx::root().with_faults(faults);
        let x = embedding(self.wte.val(), tokens) + embedding(self.wpe.val(), positions);
        let mut x = call::<HOOKED, B, 3>(&hooks.resid.post_emb, x, &root, "resid.post_emb");
        for (layer, block) in self
            .blocks
            .iter()
            .enumerate()
            .take(blocks.unwrap_or(usize::MAX))
        {
            let ctx = Ctx::at_layer(layer).with_faults(faults);
            let layer_cache = cache.as_mut().map(|c| &mut c[layer]);
            x = block.forward::<HOOKED>(x, &mask, hooks, &ctx, layer_cache);
        }
        if blocks.is_some() {
            return x;
        }
        let x = self
            .ln_f
            .forward::<HOOKED>(x, &hooks.resid.ln_f, &root, &LN_F);
        let x = call::<HOOKED, B, 3>(&hooks.resid.post_ln_f, x, &root, "resid.post_ln_f");
        // As rows: one matrix product, and in the backward one product for
        // the unembedding's gradient (a broadcast [1,D,V] weight would
        // make a [B,D,V] gradient per row of the batch and then sum it).
        let logits = matmul_rows(x, self.unembed.val());
        call::<HOOKED, B, 3>(&hooks.logits, logits, &root, "logits")
    }
}

impl<B: Backend> HookedModel<B> for Gpt2<B> {
    type Hooks = TransformerHooks<B>;
    type Config = Gpt2Config;
    type Cache = KvCache<B>;

    fn family(&self) -> &'static str {
        "gpt2"
    }

    fn config(&self) -> &Gpt2Config {
        &self.config
    }

    fn dims(&self) -> ModelDims {
        Gpt2::dims(self)
    }

    fn device(&self) -> B::Device {
        Gpt2::device(self)
    }

    fn forward(
        &self,
        batch: &TokenBatch,
        hooks: &TransformerHooks<B>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        Gpt2::forward(self, batch, hooks)
    }

    fn forward_blocks(
        &self,
        batch: &TokenBatch,
        hooks: &TransformerHooks<B>,
        blocks: usize,
    ) -> Result<Tensor<B, 3>, ModelError> {
        Gpt2::forward_blocks(self, batch, hooks, blocks)
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
        hooks: &TransformerHooks<B>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        Gpt2::forward_cached(self, batch, cache, hooks)
    }
}
