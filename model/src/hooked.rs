//! The interface every model family implements, so that experiments, the
//! `hooks` tool and users' own code run on any of them.

use std::fmt::Debug;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use hooks_core::HookTree;

use crate::{ModelError, NonFiniteSite, TokenBatch};

/// The sizes every family has, under the letters that site shapes use
/// (`"B,S,H,d"`): what turns a site's symbolic shape into numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelDims {
    /// Number of blocks (layers).
    pub n_layer: usize,
    /// `D`: the residual stream's width.
    pub d_model: usize,
    /// `H`: query heads.
    pub n_head: usize,
    /// `Hkv`: key/value heads (`H` without grouped-query attention).
    pub n_kv_head: usize,
    /// `d`: one head's width.
    pub d_head: usize,
    /// `F`: the MLP's hidden width.
    pub d_mlp: usize,
    /// `V`: the vocabulary.
    pub vocab_size: usize,
    /// The context window: positions a row (cache included) may have.
    pub n_ctx: usize,
}

impl ModelDims {
    /// The size a shape letter stands for, `None` for the batch-dependent
    /// ones (`B`, `S`, `K`) and unknown letters.
    pub fn size_of(&self, letter: &str) -> Option<usize> {
        Some(match letter {
            "D" => self.d_model,
            "H" => self.n_head,
            "Hkv" => self.n_kv_head,
            "d" => self.d_head,
            "F" => self.d_mlp,
            "V" => self.vocab_size,
            "1" => 1,
            _ => return None,
        })
    }
}

/// A transformer whose forward pass calls a derived hook tree at every site.
///
/// Sites called inside blocks see their layer in the context
/// ([`Ctx::layer`](hooks_core::Ctx::layer)), the others none; every call
/// carries the site's path ([`Ctx::site`](hooks_core::Ctx::site)). Token
/// batches are checked against [`ModelDims::vocab_size`] and
/// [`ModelDims::n_ctx`] before any tensor work.
///
/// ```
/// use burn::tensor::ElementConversion;
/// use burn_flex::Flex;
/// use hooks_model::{Gpt2, Gpt2Config, HookedModel, ModelError, TokenBatch};
///
/// /// Works the same on GPT-2 and on a Llama.
/// fn mean_logit<B: burn::tensor::backend::Backend, M: HookedModel<B>>(
///     model: &M,
///     tokens: Vec<u32>,
/// ) -> Result<f32, ModelError> {
///     let logits = model.forward(&TokenBatch::single(tokens)?, &M::Hooks::default())?;
///     Ok(logits.mean().into_scalar().elem())
/// }
///
/// let model = Gpt2::<Flex>::init(&Gpt2Config::new(2, 16, 2, 8, 11), &Default::default())?;
/// assert_eq!(model.dims().n_layer, 2);
/// assert!(mean_logit(&model, vec![1, 2, 3])?.is_finite());
/// # Ok::<(), ModelError>(())
/// ```
pub trait HookedModel<B: Backend>: Sized {
    /// The family's hook tree.
    type Hooks: HookTree<Backend = B> + Default;
    /// Its hyper-parameters (`config.json`).
    type Config: Clone + Debug;
    /// Keys and values of earlier positions, for sampling.
    type Cache;

    /// The family's name, as `config.json`'s `model_type` says it.
    fn family(&self) -> &'static str;

    /// The hyper-parameters.
    fn config(&self) -> &Self::Config;

    /// The sizes site shapes are written in.
    fn dims(&self) -> ModelDims;

    /// The device the weights live on.
    fn device(&self) -> B::Device;

    /// Logits `[B,S,V]` for a batch, calling `hooks` at every site; the
    /// first fault a hook reported, or a bad batch, is an error.
    fn forward(&self, batch: &TokenBatch, hooks: &Self::Hooks) -> Result<Tensor<B, 3>, ModelError>;

    /// The embedding and the first `blocks` blocks (at most all of them),
    /// calling their sites, and the residual stream after them `[B,S,D]`:
    /// the final norm, the unembedding and their sites are skipped
    /// (TransformerLens's `stop_at_layer`), for work that needs only the
    /// early layers.
    fn forward_blocks(
        &self,
        batch: &TokenBatch,
        hooks: &Self::Hooks,
        blocks: usize,
    ) -> Result<Tensor<B, 3>, ModelError>;

    /// An empty KV cache.
    fn new_cache(&self) -> Self::Cache;

    /// How many positions `cache` holds.
    fn cache_len(cache: &Self::Cache) -> usize;

    /// Logits for new tokens after the ones in `cache`, which is extended.
    /// The rows continue the cached rows (same batch size); `attn.k` and
    /// `attn.v` see the whole cached length.
    fn forward_cached(
        &self,
        batch: &TokenBatch,
        cache: &mut Self::Cache,
        hooks: &Self::Hooks,
    ) -> Result<Tensor<B, 3>, ModelError>;

    /// Runs `batch` with `hooks` plus a check at every site (last, on the
    /// `fwd2` stage) and returns the first site in forward order whose
    /// value holds a NaN or an infinity (`-inf` in `attn.qk_logits` is the
    /// mask and does not count). A diagnostic: it copies every site's value
    /// to the host.
    fn first_non_finite(
        &self,
        batch: &TokenBatch,
        hooks: &Self::Hooks,
    ) -> Result<Option<NonFiniteSite>, ModelError> {
        crate::finite::first_non_finite_site(batch, hooks, |b, h| self.forward(b, h))
    }
}
