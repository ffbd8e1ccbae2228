//! The Llama family's hook tree: GPT-2's names where the computation is the
//! same, RMS norms without a mean-subtraction site, and the gated MLP's
//! extra `up` site.
//!
//! Shapes: B batch, S query positions, K key positions (cached ones
//! included), D model width, H query heads, Hkv key/value heads, d head
//! width, F MLP width, V vocabulary. With grouped-query attention, query
//! head `h` reads key/value head `h / (H / Hkv)` (transformers'
//! `repeat_kv`). The shapes are also in each site's
//! `#[hooks(shape = "...")]` and `per_layer` marks the nodes whose sites are
//! called inside the blocks, for tools reading the schema
//! ([`hooks_core::HookTree::sites`]). Every site is called with its full
//! dotted path in the context ([`Ctx::site`](hooks_core::Ctx::site)); sites
//! inside blocks also with their layer.

use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, Site};

/// Every hook site of a Llama-family model.
#[derive(HookCollection, Clone, Default)]
pub struct LlamaHooks<B: Backend> {
    /// MLP sites (inside blocks).
    #[hooks(per_layer)]
    pub mlp: LlamaMlpHooks<B>,
    /// Attention sites (inside blocks).
    #[hooks(per_layer)]
    pub attn: LlamaAttentionHooks<B>,
    /// Residual-stream sites.
    pub resid: LlamaResidualStreamHooks<B>,
    /// Unembedding output `[B,S,V]` (no layer).
    #[hooks(shape = "B,S,V")]
    pub logits: Site<B, 3>,
}

/// Sites of the gated MLP, `down(silu(gate(x)) · up(x))`.
#[derive(HookCollection, Clone, Default)]
pub struct LlamaMlpHooks<B: Backend> {
    /// `gate_proj` output, before SiLU `[B,S,F]`.
    #[hooks(shape = "B,S,F")]
    pub pre_act: Site<B, 3>,
    /// `up_proj` output `[B,S,F]`.
    #[hooks(shape = "B,S,F")]
    pub up: Site<B, 3>,
    /// `silu(pre_act) · up`, the input of `down_proj` `[B,S,F]`; hooks find
    /// `down_proj` bound as `out_layer` (a `burn::nn::Linear<B>`, read it
    /// with `Value::downcast_ref`), as GPT-2's `post_act` binds `c_proj`.
    #[hooks(shape = "B,S,F")]
    pub post_act: Site<B, 3>,
}

/// Sites of attention.
#[derive(HookCollection, Clone, Default)]
pub struct LlamaAttentionHooks<B: Backend> {
    /// Queries after RoPE, multiplied by d^-1/4 `[B,S,H,d]`: with `k` so
    /// scaled too, `q·kᵀ` is transformers' `q·kᵀ / sqrt(d)`.
    #[hooks(shape = "B,S,H,d")]
    pub q: Site<B, 4>,
    /// Keys after RoPE (cached ones included), multiplied by d^-1/4
    /// `[B,K,Hkv,d]`.
    #[hooks(shape = "B,K,Hkv,d")]
    pub k: Site<B, 4>,
    /// Values (cached ones included) `[B,K,Hkv,d]`.
    #[hooks(shape = "B,K,Hkv,d")]
    pub v: Site<B, 4>,
    /// Masked attention logits `q·kᵀ`, laid out query, key, head:
    /// `[B,S,K,H]` (`-inf` where masked).
    #[hooks(shape = "B,S,K,H")]
    pub qk_logits: Site<B, 4>,
    /// Attention probabilities, the softmax over keys `[B,S,K,H]`.
    #[hooks(shape = "B,S,K,H")]
    pub qk_probs: Site<B, 4>,
    /// Sum over keys of probabilities times values, the input of `o_proj`
    /// before the heads merge `[B,S,H,d]`.
    #[hooks(shape = "B,S,H,d")]
    pub v_out: Site<B, 4>,
}

/// Sites inside an RMS norm (`x / sqrt(mean(x²) + ε) · weight`; no mean
/// is subtracted, so there is no `post_mean_subtraction`).
#[derive(HookCollection, Clone, Default)]
pub struct RmsNormHooks<B: Backend> {
    /// `sqrt(mean(x²) + ε)` `[B,S,1]`.
    #[hooks(shape = "B,S,1")]
    pub scale: Site<B, 3>,
    /// `x / scale` `[B,S,D]`, before the weight.
    #[hooks(shape = "B,S,D")]
    pub post_scale: Site<B, 3>,
}

/// Residual-stream sites inside each block.
#[derive(HookCollection, Clone, Default)]
pub struct LlamaResidualStreamTorsoHooks<B: Backend> {
    /// Output of `input_layernorm` `[B,S,D]`.
    #[hooks(shape = "B,S,D")]
    pub post_ln_attn: Site<B, 3>,
    /// Inside `input_layernorm`.
    pub ln_attn: RmsNormHooks<B>,
    /// Attention block output `[B,S,D]`.
    #[hooks(shape = "B,S,D")]
    pub delta_attn: Site<B, 3>,
    /// Residual after adding `delta_attn` `[B,S,D]`.
    #[hooks(shape = "B,S,D")]
    pub post_attn: Site<B, 3>,
    /// Inside `post_attention_layernorm`.
    pub ln_mlp: RmsNormHooks<B>,
    /// Output of `post_attention_layernorm` `[B,S,D]`.
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
pub struct LlamaResidualStreamHooks<B: Backend> {
    /// Token embedding `[B,S,D]` (no layer; positions enter through RoPE).
    #[hooks(shape = "B,S,D")]
    pub post_emb: Site<B, 3>,
    /// Inside each block (layer in the context).
    #[hooks(per_layer)]
    pub torso: LlamaResidualStreamTorsoHooks<B>,
    /// Inside the final norm (no layer).
    pub ln_f: RmsNormHooks<B>,
    /// Output of the final norm `[B,S,D]` (no layer).
    #[hooks(shape = "B,S,D")]
    pub post_ln_f: Site<B, 3>,
}

/// The full paths of an RMS norm's two sites.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NormPaths {
    pub scale: &'static str,
    pub post_scale: &'static str,
}

/// `resid.torso.ln_attn`.
pub(crate) const LN_ATTN: NormPaths = NormPaths {
    scale: "resid.torso.ln_attn.scale",
    post_scale: "resid.torso.ln_attn.post_scale",
};

/// `resid.torso.ln_mlp`.
pub(crate) const LN_MLP: NormPaths = NormPaths {
    scale: "resid.torso.ln_mlp.scale",
    post_scale: "resid.torso.ln_mlp.post_scale",
};

/// `resid.ln_f`.
pub(crate) const LN_F: NormPaths = NormPaths {
    scale: "resid.ln_f.scale",
    post_scale: "resid.ln_f.post_scale",
};
