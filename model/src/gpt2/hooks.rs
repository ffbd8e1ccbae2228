//! The reference's hook tree (`TransformerHooks` in `seed_hooks.py`), with the
//! same names and nesting, declared with our own derive.
//!
//! Shapes (B batch, S query positions, K key positions, D model width,
//! H heads, d head width, F MLP width, V vocabulary) are in the field docs
//! and, for tools, in each site's `#[hooks(shape = "...")]`; `per_layer`
//! marks the nodes whose sites are called inside the blocks. `hooks sites`
//! reads both off the schema ([`hooks_core::HookTree::sites`]);
//! `../shared/spec/SITES.md` has where the model calls each one.

use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, Site};

/// Every hook site of the GPT-2 model.
#[derive(HookCollection, Clone, Default)]
pub struct TransformerHooks<B: Backend> {
    /// MLP sites (inside blocks).
    #[hooks(per_layer)]
    pub mlp: MlpHooks<B>,
    /// Attention sites (inside blocks).
    #[hooks(per_layer)]
    pub attn: AttentionHooks<B>,
    /// Residual-stream sites.
    pub resid: ResidualStreamHooks<B>,
    /// Unembedding output `[B,S,V]` (no layer).
    #[hooks(shape = "B,S,V")]
    pub logits: Site<B, 3>,
}

/// Sites of the MLP.
#[derive(HookCollection, Clone, Default)]
pub struct MlpHooks<B: Backend> {
    /// First projection, before GELU `[B,S,F]`.
    #[hooks(shape = "B,S,F")]
    pub pre_act: Site<B, 3>,
    /// After GELU `[B,S,F]`. Hooks find the output projection bound as
    /// `out_layer` (a `burn::nn::Linear<B>`, read it with `Value::downcast_ref`).
    #[hooks(shape = "B,S,F")]
    pub post_act: Site<B, 3>,
}

/// Sites of attention.
#[derive(HookCollection, Clone, Default)]
pub struct AttentionHooks<B: Backend> {
    /// Queries `[B,S,H,d]`, multiplied by d^-1/4.
    #[hooks(shape = "B,S,H,d")]
    pub q: Site<B, 4>,
    /// Keys `[B,K,H,d]` (cached ones included), multiplied by d^-1/4.
    #[hooks(shape = "B,K,H,d")]
    pub k: Site<B, 4>,
    /// Values `[B,K,H,d]` (cached ones included).
    #[hooks(shape = "B,K,H,d")]
    pub v: Site<B, 4>,
    /// Masked attention logits, laid out query, key, head: `[B,S,K,H]`.
    #[hooks(shape = "B,S,K,H")]
    pub qk_logits: Site<B, 4>,
    /// Softmax denominator `[B,S,1,H]`, only called when it has hooks. The
    /// softmax is then written out as numerator / hooked denominator.
    #[hooks(shape = "B,S,1,H")]
    pub qk_softmax_denominator: Site<B, 4>,
    /// Attention probabilities `[B,S,K,H]`.
    #[hooks(shape = "B,S,K,H")]
    pub qk_probs: Site<B, 4>,
    /// Sum over keys of probabilities times values, before the heads merge `[B,S,H,d]`.
    #[hooks(shape = "B,S,H,d")]
    pub v_out: Site<B, 4>,
}

/// Sites inside a norm.
#[derive(HookCollection, Clone, Default)]
pub struct NormalizationHooks<B: Backend> {
    /// `x - mean(x)` `[B,S,D]`.
    #[hooks(shape = "B,S,D")]
    pub post_mean_subtraction: Site<B, 3>,
    /// `sqrt(mean(x^2) + eps)` `[B,S,1]`.
    #[hooks(shape = "B,S,1")]
    pub scale: Site<B, 3>,
    /// `x / scale` `[B,S,D]`, before the affine weight and bias.
    #[hooks(shape = "B,S,D")]
    pub post_scale: Site<B, 3>,
}

/// Residual-stream sites inside each block.
#[derive(HookCollection, Clone, Default)]
pub struct ResidualStreamTorsoHooks<B: Backend> {
    /// Output of ln_1 `[B,S,D]`.
    #[hooks(shape = "B,S,D")]
    pub post_ln_attn: Site<B, 3>,
    /// Inside ln_1.
    pub ln_attn: NormalizationHooks<B>,
    /// Attention block output `[B,S,D]`.
    #[hooks(shape = "B,S,D")]
    pub delta_attn: Site<B, 3>,
    /// Residual after adding `delta_attn` `[B,S,D]`.
    #[hooks(shape = "B,S,D")]
    pub post_attn: Site<B, 3>,
    /// Inside ln_2.
    pub ln_mlp: NormalizationHooks<B>,
    /// Output of ln_2 `[B,S,D]`.
    #[hooks(shape = "B,S,D")]
    pub post_ln_mlp: Site<B, 3>,
    /// MLP block output `[B,S,D]`.
    #[hooks(shape = "B,S,D")]
    pub delta_mlp: Site<B, 3>,
    /// Residual after adding `delta_mlp` `[B,S,D]`.
    #[hooks(shape = "B,S,D")]
    pub post_mlp: Site<B, 3>,
}

/// Residual-stream sites.
#[derive(HookCollection, Clone, Default)]
pub struct ResidualStreamHooks<B: Backend> {
    /// Token plus position embedding `[B,S,D]` (no layer).
    #[hooks(shape = "B,S,D")]
    pub post_emb: Site<B, 3>,
    /// Inside each block (layer in the context).
    #[hooks(per_layer)]
    pub torso: ResidualStreamTorsoHooks<B>,
    /// Inside the final norm (no layer).
    pub ln_f: NormalizationHooks<B>,
    /// Output of the final norm `[B,S,D]` (no layer).
    #[hooks(shape = "B,S,D")]
    pub post_ln_f: Site<B, 3>,
}
