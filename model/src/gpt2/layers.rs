//! The blocks of GPT-2, written out so that every hook site can be called at
//! the point the reference calls it (SITES.md).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;

use crate::kv_cache::LayerCache;
use crate::ops::{add_mask, call, call_keys_last, linear_batched, linear_rows};
use burn::tensor::{Tensor, TensorPrimitive};
use hooks_core::{Bindings, Ctx, HookTree, Value};

use super::hooks::{AttentionHooks, MlpHooks, NormalizationHooks, TransformerHooks};

/// The full paths of one norm's three sites: the model's tree mounts
/// [`NormalizationHooks`] three times, and each call names its own.
#[derive(Clone, Copy, Debug)]
pub struct NormPaths {
    /// `….post_mean_subtraction`.
    pub post_mean_subtraction: &'static str,
    /// `….scale`.
    pub scale: &'static str,
    /// `….post_scale`.
    pub post_scale: &'static str,
}

macro_rules! norm_paths {
    ($prefix:literal) => {
        NormPaths {
            post_mean_subtraction: concat!($prefix, ".post_mean_subtraction"),
            scale: concat!($prefix, ".scale"),
            post_scale: concat!($prefix, ".post_scale"),
        }
    };
}

/// `ln_1`'s sites.
pub const LN_ATTN: NormPaths = norm_paths!("resid.torso.ln_attn");
/// `ln_2`'s sites.
pub const LN_MLP: NormPaths = norm_paths!("resid.torso.ln_mlp");
/// `ln_f`'s sites.
pub const LN_F: NormPaths = norm_paths!("resid.ln_f");

/// Layer norm, written out when any of its three sites has hooks:
/// `x - mean` → `post_mean_subtraction`, `sqrt(mean(x²) + eps)` → `scale`,
/// `x / scale` → `post_scale`, then the affine weight and bias. With no hooks
/// there, the backend's fused layer norm computes the same function.
#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    /// Affine weight `[D]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Affine bias `[D]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Epsilon inside the square root.
    pub eps: f64,
}

impl<B: Backend> Norm<B> {
    /// Normalises over the last dimension, calling the three norm sites
    /// under `paths`.
    pub fn forward<const HOOKED: bool>(
        &self,
        x: Tensor<B, 3>,
        hooks: &NormalizationHooks<B>,
        ctx: &Ctx<'_>,
        paths: &NormPaths,
    ) -> Tensor<B, 3> {
        if !HOOKED || HookTree::is_empty(hooks) {
            // Nothing to see in between: the backend's fused layer norm
            // (one row-parallel pass on Flex instead of nine operations).
            let fused = B::layer_norm(
                x.into_primitive().tensor(),
                self.weight.val().into_primitive().tensor(),
                Some(self.bias.val().into_primitive().tensor()),
                self.eps,
            );
            return Tensor::from_primitive(TensorPrimitive::Float(fused));
        }
        // Each step one pass on Flex (`crate::fused`), else the operations.
        let centered = crate::fused::center_rows(x).unwrap_or_else(|x| {
            let mean = x.clone().mean_dim(2);
            x - mean
        });
        let x = call::<HOOKED, B, 3>(
            &hooks.post_mean_subtraction,
            centered,
            ctx,
            paths.post_mean_subtraction,
        );
        let scale = crate::fused::rms_rows(x.clone(), self.eps)
            .unwrap_or_else(|x| (x.square().mean_dim(2) + self.eps).sqrt());
        let scale = call::<HOOKED, B, 3>(&hooks.scale, scale, ctx, paths.scale);
        let x = crate::fused::div_rows(x, scale).unwrap_or_else(|(x, scale)| x / scale);
        let x = call::<HOOKED, B, 3>(&hooks.post_scale, x, ctx, paths.post_scale);
        crate::fused::affine_rows(x, self.weight.val(), Some(self.bias.val())).unwrap_or_else(|x| {
            x * self.weight.val().unsqueeze::<3>() + self.bias.val().unsqueeze::<3>()
        })
    }
}

/// `2√(2/π)`, the factor inside the sigmoid of GPT-2's GELU.
pub(crate) const GELU_SCALE: f64 = 2.0 * 0.797_884_560_802_865_4;
/// The cubic coefficient of GPT-2's GELU.
pub(crate) const GELU_CUBIC: f64 = 0.044715;

/// GPT-2's GELU, the tanh approximation
/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, computed as the equal
/// `x · sigmoid(2 √(2/π) (x + 0.044715 x³))` with `x·x·x`: on Flex this is
/// about six times faster than `tanh` and `powi` (see BENCHMARKS.md), and
/// on Flex in one fused pass (`crate::fused`).
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let x = match crate::fused::gelu_tanh(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube * GELU_CUBIC) * GELU_SCALE;
    x * sigmoid(inner)
}

/// Causal self-attention with GPT-2's fused `c_attn` (columns q|k|v).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[D, 3D]` projection to queries, keys and values.
    pub c_attn: Linear<B>,
    /// `[D, D]` output projection.
    pub c_proj: Linear<B>,
    /// Number of heads.
    pub n_head: usize,
}

impl<B: Backend> Attention<B> {
    /// `x` `[B,S,D]` → `delta_attn` `[B,S,D]`; `mask` is `[B or 1, 1, S, K]`
    /// additive. With a cache, new keys/values are appended to it.
    pub fn forward<const HOOKED: bool>(
        &self,
        x: Tensor<B, 3>,
        mask: &Tensor<B, 4>,
        hooks: &AttentionHooks<B>,
        ctx: &Ctx<'_>,
        cache: Option<&mut Option<LayerCache<B>>>,
    ) -> Tensor<B, 3> {
        let [b, s, d_model] = x.dims();
        let h = self.n_head;
        let d = d_model / h;
        // d^-1/4 on both q and k: their product carries the usual 1/sqrt(d).
        let qk_scale = (d as f64).powf(-0.25);

        let qkv = linear_rows(&self.c_attn, x);
        let split = |i: usize| {
            qkv.clone()
                .slice([0..b, 0..s, i * d_model..(i + 1) * d_model])
                .reshape([b, s, h, d])
        };
        let q = split(0) * qk_scale;
        let mut k = split(1) * qk_scale;
        let mut v = split(2);
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

        // Attention is computed in the contiguous [B,H,S,K] layout, where the
        // mask add, the softmax over keys (the last axis) and the products
        // with v are single passes. Hooks see the sites' [B,S,K,H] layout
        // (and [B,S,1,H] for the denominator): a permuted view, handed over
        // only when the site has hooks and permuted back afterwards, so a
        // hook that returns its input costs no copy.
        let logits = add_mask(
            q.permute([0, 2, 1, 3]).matmul(k.permute([0, 2, 3, 1])),
            mask,
        );
        let logits = call_keys_last::<HOOKED, B>(&hooks.qk_logits, logits, ctx, "attn.qk_logits");

        let probs = if !HOOKED || hooks.qk_softmax_denominator.is_empty() {
            // One pass on Flex (`crate::fused`), else Burn's.
            crate::fused::softmax_last(logits).unwrap_or_else(|logits| softmax(logits, 3))
        } else {
            let max = logits.clone().max_dim(3).detach();
            let numerator = crate::fused::exp(logits - max).unwrap_or_else(Tensor::exp);
            let denominator = call_keys_last::<HOOKED, B>(
                &hooks.qk_softmax_denominator,
                numerator.clone().sum_dim(3),
                ctx,
                "attn.qk_softmax_denominator",
            );
            numerator / denominator
        };
        let probs = call_keys_last::<HOOKED, B>(&hooks.qk_probs, probs, ctx, "attn.qk_probs");

        // probs·v computed transposed, [B,H,d,K] x [B,H,K,S] -> [B,H,d,S]:
        // merging heads is then a reshape to [B,D,S], and the output
        // projection reads [B,S,D] as a strided view of it, with no copy.
        // v_out's hooks see the [B,S,H,d] site layout as a view.
        let out_t = v.permute([0, 2, 3, 1]).matmul(probs.swap_dims(2, 3));
        let merged_t = if !HOOKED || hooks.v_out.is_empty() {
            out_t.reshape([b, d_model, s])
        } else {
            let v_out = hooks
                .v_out
                .call(out_t.permute([0, 3, 1, 2]), &ctx.with_site("attn.v_out"));
            v_out.permute([0, 2, 3, 1]).reshape([b, d_model, s])
        };
        linear_batched(&self.c_proj, merged_t.swap_dims(1, 2))
    }
}

/// The MLP: `c_fc` → GELU → `c_proj`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[D, F]`.
    pub c_fc: Linear<B>,
    /// `[F, D]`.
    pub c_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// `x` `[B,S,D]` → `delta_mlp` `[B,S,D]`.
    pub fn forward<const HOOKED: bool>(
        &self,
        x: Tensor<B, 3>,
        hooks: &MlpHooks<B>,
        ctx: &Ctx<'_>,
    ) -> Tensor<B, 3> {
        let pre = call::<HOOKED, B, 3>(
            &hooks.pre_act,
            linear_rows(&self.c_fc, x),
            ctx,
            "mlp.pre_act",
        );
        let post = gelu_tanh(pre);
        let post = if !HOOKED || hooks.post_act.is_empty() {
            post
        } else {
            // The reference hands post_act hooks the output projection.
            let mut extra = Bindings::new();
            extra
                .bind("out_layer", Value::any("Linear", self.c_proj.clone()))
                .expect("a fresh binding set");
            hooks
                .post_act
                .call(post, &ctx.with_site("mlp.post_act").with_bindings(&extra))
        };
        linear_rows(&self.c_proj, post)
    }
}

/// A pre-LN block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub ln_1: Norm<B>,
    /// Attention.
    pub attn: Attention<B>,
    /// Norm before the MLP.
    pub ln_2: Norm<B>,
    /// MLP.
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    /// One block; `ctx` carries its layer.
    pub fn forward<const HOOKED: bool>(
        &self,
        x: Tensor<B, 3>,
        mask: &Tensor<B, 4>,
        hooks: &TransformerHooks<B>,
        ctx: &Ctx<'_>,
        cache: Option<&mut Option<LayerCache<B>>>,
    ) -> Tensor<B, 3> {
        let torso = &hooks.resid.torso;
        let h = self
            .ln_1
            .forward::<HOOKED>(x.clone(), &torso.ln_attn, ctx, &LN_ATTN);
        let h = call::<HOOKED, B, 3>(&torso.post_ln_attn, h, ctx, "resid.torso.post_ln_attn");
        let delta = self
            .attn
            .forward::<HOOKED>(h, mask, &hooks.attn, ctx, cache);
        let delta = call::<HOOKED, B, 3>(&torso.delta_attn, delta, ctx, "resid.torso.delta_attn");
        let x = call::<HOOKED, B, 3>(&torso.post_attn, x + delta, ctx, "resid.torso.post_attn");

        let h = self
            .ln_2
            .forward::<HOOKED>(x.clone(), &torso.ln_mlp, ctx, &LN_MLP);
        let h = call::<HOOKED, B, 3>(&torso.post_ln_mlp, h, ctx, "resid.torso.post_ln_mlp");
        let delta = self.mlp.forward::<HOOKED>(h, &hooks.mlp, ctx);
        let delta = call::<HOOKED, B, 3>(&torso.delta_mlp, delta, ctx, "resid.torso.delta_mlp");
        call::<HOOKED, B, 3>(&torso.post_mlp, x + delta, ctx, "resid.torso.post_mlp")
    }
}
