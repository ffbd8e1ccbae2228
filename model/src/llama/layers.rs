//! The blocks of a Llama-family model, written out so that every site of
//! [`LlamaHooks`] is called at its point of the computation, with its path.
//!
//! Linear layers keep Burn's `[in, out]` weights (Hugging Face's, which are
//! `[out, in]`, are transposed as they load) and run as one 2-D product
//! over all rows ([`linear_rows`]).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;

use crate::kv_cache::LayerCache;
use hooks_core::{Bindings, Ctx, Value};

use super::hooks::{
    LN_ATTN, LN_MLP, LlamaAttentionHooks, LlamaHooks, LlamaMlpHooks, NormPaths, RmsNormHooks,
};
use super::rope::RopeTables;
use crate::ops::{add_mask, call, call_keys_last, linear_batched, linear_rows};

/// RMS norm, `x / sqrt(mean(x²) + ε) · weight`, as transformers'
/// `LlamaRMSNorm` (Qwen2's and Mistral's are the same): `scale` and
/// `post_scale` are called in between. The computation is the same with or
/// without hooks (Burn has no fused RMS norm to switch to; on Flex each
/// step is one pass, `crate::fused`); empty sites cost a length check each.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Weight `[D]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Epsilon inside the square root.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Normalises over the last dimension, calling the two norm sites
    /// under `paths`.
    pub(crate) fn forward<const HOOKED: bool>(
        &self,
        x: Tensor<B, 3>,
        hooks: &RmsNormHooks<B>,
        ctx: &Ctx<'_>,
        paths: NormPaths,
    ) -> Tensor<B, 3> {
        // Each step one pass on Flex (`crate::fused`), else the operations.
        let scale = crate::fused::rms_rows(x.clone(), self.eps)
            .unwrap_or_else(|x| (x.square().mean_dim(2) + self.eps).sqrt());
        let scale = call::<HOOKED, B, 3>(&hooks.scale, scale, ctx, paths.scale);
        // A division, not a multiplication by a reciprocal: NdArray's
        // `recip` is a hardware estimate (see the tests' `recip_rel_error`).
        let x = crate::fused::div_rows(x, scale).unwrap_or_else(|(x, scale)| x / scale);
        let x = call::<HOOKED, B, 3>(&hooks.post_scale, x, ctx, paths.post_scale);
        crate::fused::affine_rows(x, self.weight.val(), None)
            .unwrap_or_else(|x| x * self.weight.val().unsqueeze::<3>())
    }
}

/// Causal self-attention with grouped-query heads and RoPE.
#[derive(Module, Debug)]
pub struct LlamaAttention<B: Backend> {
    /// `[D, H·d]`.
    pub q_proj: Linear<B>,
    /// `[D, Hkv·d]`.
    pub k_proj: Linear<B>,
    /// `[D, Hkv·d]`.
    pub v_proj: Linear<B>,
    /// `[H·d, D]`.
    pub o_proj: Linear<B>,
    /// Query heads H.
    pub n_head: usize,
    /// Key/value heads Hkv.
    pub n_kv_head: usize,
    /// Head width d.
    pub head_dim: usize,
}

impl<B: Backend> LlamaAttention<B> {
    /// `x` `[B,S,D]` → `delta_attn` `[B,S,D]`; `rope` holds the queries'
    /// rotations (with d^-1/4), `mask` is `[B or 1, 1, S, K]` additive.
    /// With a cache, the new keys and values are appended to it.
    pub(crate) fn forward<const HOOKED: bool>(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        mask: &Tensor<B, 4>,
        hooks: &LlamaAttentionHooks<B>,
        ctx: &Ctx<'_>,
        cache: Option<&mut Option<LayerCache<B>>>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (h, h_kv, d) = (self.n_head, self.n_kv_head, self.head_dim);
        let group = h / h_kv;

        let q = rope.rotate(linear_rows(&self.q_proj, x.clone()).reshape([b, s, h, d]));
        let mut k = rope.rotate(linear_rows(&self.k_proj, x.clone()).reshape([b, s, h_kv, d]));
        let mut v = linear_rows(&self.v_proj, x).reshape([b, s, h_kv, d]);
        if let Some(cache) = cache {
            if let Some(old) = cache.take() {
                k = Tensor::cat(vec![old.k, k], 1);
                v = Tensor::cat(vec![old.v, v], 1);
            }
            *cache = Some(LayerCache {
                k: k.clone(),
                v: v.clone(),
            });
        }
        let q = call::<HOOKED, B, 4>(&hooks.q, q, ctx, "attn.q");
        let k = call::<HOOKED, B, 4>(&hooks.k, k, ctx, "attn.k");
        let v = call::<HOOKED, B, 4>(&hooks.v, v, ctx, "attn.v");
        let keys = k.dims()[1];

        // Grouped-query attention without copying keys or values per query
        // head (transformers' `repeat_kv`): the G = H / Hkv query heads that
        // share kv head j are heads j·G .. j·G + G - 1, so q [B,S,H,d] is
        // the view [B,Hkv,G,S,d] (no copy) and each kv head [B,Hkv,1,d,K]
        // is broadcast over its group; the [B,Hkv,G,S,K] product is
        // [B,H,S,K] as it lies in memory. Hooks see the sites' [B,S,K,H]
        // layout as a permuted view.
        let q5: Tensor<B, 5> = q.reshape([b, s, h_kv, group, d]).permute([0, 2, 3, 1, 4]);
        let k5: Tensor<B, 5> = k.permute([0, 2, 3, 1]).unsqueeze_dim(2);
        let logits = q5.matmul(k5).reshape([b, h, s, keys]);
        let logits = add_mask(logits, mask);
        let logits = call_keys_last::<HOOKED, B>(&hooks.qk_logits, logits, ctx, "attn.qk_logits");
        // One pass on Flex (`crate::fused`), else Burn's.
        let probs = crate::fused::softmax_last(logits).unwrap_or_else(|logits| softmax(logits, 3));
        let probs = call_keys_last::<HOOKED, B>(&hooks.qk_probs, probs, ctx, "attn.qk_probs");

        // probs·v computed transposed, as GPT-2's: v [B,Hkv,1,d,K] times
        // probs seen as [B,Hkv,G,K,S] gives [B,Hkv,G,d,S] = [B,H·d,S], so
        // merging heads is a reshape and the output projection reads
        // [B,S,H·d] as a strided view, with no copy. v_out's hooks see the
        // [B,S,H,d] site layout as a view.
        let v5: Tensor<B, 5> = v.permute([0, 2, 3, 1]).unsqueeze_dim(2);
        let probs5 = probs.reshape([b, h_kv, group, s, keys]).swap_dims(3, 4);
        let out_t = v5.matmul(probs5);
        let merged_t = if !HOOKED || hooks.v_out.is_empty() {
            out_t.reshape([b, h * d, s])
        } else {
            let out = out_t.reshape([b, h, d, s]).permute([0, 3, 1, 2]);
            let out = hooks.v_out.call(out, &ctx.with_site("attn.v_out"));
            out.permute([0, 2, 3, 1]).reshape([b, h * d, s])
        };
        linear_batched(&self.o_proj, merged_t.swap_dims(1, 2))
    }
}

/// The gated MLP: `down_proj(silu(gate_proj(x)) · up_proj(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp<B: Backend> {
    /// `[D, F]`.
    pub gate_proj: Linear<B>,
    /// `[D, F]`.
    pub up_proj: Linear<B>,
    /// `[F, D]`.
    pub down_proj: Linear<B>,
}

impl<B: Backend> LlamaMlp<B> {
    /// `x` `[B,S,D]` → `delta_mlp` `[B,S,D]`.
    pub(crate) fn forward<const HOOKED: bool>(
        &self,
        x: Tensor<B, 3>,
        hooks: &LlamaMlpHooks<B>,
        ctx: &Ctx<'_>,
    ) -> Tensor<B, 3> {
        let gate = linear_rows(&self.gate_proj, x.clone());
        let gate = call::<HOOKED, B, 3>(&hooks.pre_act, gate, ctx, "mlp.pre_act");
        let up = call::<HOOKED, B, 3>(&hooks.up, linear_rows(&self.up_proj, x), ctx, "mlp.up");
        // One fused pass on Flex (`crate::fused`), else the two operations.
        let post = match crate::fused::silu_mul(gate, up) {
            Ok(post) => post,
            Err((gate, up)) => silu(gate) * up,
        };
        let post = if !HOOKED || hooks.post_act.is_empty() {
            post
        } else {
            let mut extra = Bindings::new();
            extra
                .bind("out_layer", Value::any("Linear", self.down_proj.clone()))
                .expect("a fresh binding set");
            hooks
                .post_act
                .call(post, &ctx.with_bindings(&extra).with_site("mlp.post_act"))
        };
        linear_rows(&self.down_proj, post)
    }
}

/// A pre-norm block: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct LlamaBlock<B: Backend> {
    /// RMS norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Attention.
    pub self_attn: LlamaAttention<B>,
    /// RMS norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// MLP.
    pub mlp: LlamaMlp<B>,
}

impl<B: Backend> LlamaBlock<B> {
    /// One block; `ctx` carries its layer, `mask` is the one for its
    /// attention (with or without a sliding window).
    pub(crate) fn forward<const HOOKED: bool>(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        mask: &Tensor<B, 4>,
        hooks: &LlamaHooks<B>,
        ctx: &Ctx<'_>,
        cache: Option<&mut Option<LayerCache<B>>>,
    ) -> Tensor<B, 3> {
        let torso = &hooks.resid.torso;
        let h = self
            .input_layernorm
            .forward::<HOOKED>(x.clone(), &torso.ln_attn, ctx, LN_ATTN);
        let h = call::<HOOKED, B, 3>(&torso.post_ln_attn, h, ctx, "resid.torso.post_ln_attn");
        let delta = self
            .self_attn
            .forward::<HOOKED>(h, rope, mask, &hooks.attn, ctx, cache);
        let delta = call::<HOOKED, B, 3>(&torso.delta_attn, delta, ctx, "resid.torso.delta_attn");
        let x = call::<HOOKED, B, 3>(&torso.post_attn, x + delta, ctx, "resid.torso.post_attn");

        let h =
            self.post_attention_layernorm
                .forward::<HOOKED>(x.clone(), &torso.ln_mlp, ctx, LN_MLP);
        let h = call::<HOOKED, B, 3>(&torso.post_ln_mlp, h, ctx, "resid.torso.post_ln_mlp");
        let delta = self.mlp.forward::<HOOKED>(h, &hooks.mlp, ctx);
        let delta = call::<HOOKED, B, 3>(&torso.delta_mlp, delta, ctx, "resid.torso.delta_mlp");
        call::<HOOKED, B, 3>(&torso.post_mlp, x + delta, ctx, "resid.torso.post_mlp")
    }
}
