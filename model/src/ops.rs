//! What the families' forward passes share: calling a site (or compiling
//! the call out), attention sites on the `[B,H,S,K]` compute layout, the
//! additive mask, and linear layers over rows.

use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use hooks_core::{Ctx, Site};

/// Calls `site` with its full `path` in the context (what `Record` keys,
/// patches and fault messages name), or — in the `HOOKED = false`
/// instantiation used to measure what hooks cost — compiles to nothing. An
/// empty site is skipped before the context is touched.
#[inline(always)]
pub(crate) fn call<const HOOKED: bool, B: Backend, const D: usize>(
    site: &Site<B, D>,
    x: Tensor<B, D>,
    ctx: &Ctx<'_>,
    path: &'static str,
) -> Tensor<B, D> {
    if HOOKED && !site.is_empty() {
        site.call(x, &ctx.with_site(path))
    } else {
        x
    }
}

/// `x·W + b` for `x` `[B,S,I]` seen as `B·S` rows: one 2-D matrix product,
/// whose backward computes `dW` as one product over all rows and `dx`
/// against a transposed view of `W`. (`Linear::forward` multiplies by the
/// weight broadcast to `[1,I,O]`; its backward copies `Wᵀ` on every call,
/// which was a tenth of a GPT-2-small training step on Flex.) A reshape
/// costs nothing when `x` is contiguous, as the block's activations are.
///
/// On Flex, a product with few rows is split over the output columns
/// instead, with the bias written first (`crate::fused`).
pub fn linear_rows<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let bias = layer.bias.as_ref().map(|bias| bias.val());
    match crate::fused::linear(x, layer.weight.val(), bias) {
        Ok(y) => y,
        Err((x, w, bias)) => add_bias(matmul_all_rows(x, w), bias),
    }
}

fn add_bias<B: Backend>(y: Tensor<B, 3>, bias: Option<Tensor<B, 1>>) -> Tensor<B, 3> {
    match bias {
        Some(bias) => y + bias.unsqueeze::<3>(),
        None => y,
    }
}

/// `x·w` for `x` `[B,S,I]` and `w` `[I,O]`, as one `[B·S, I] × [I, O]`
/// product (see [`linear_rows`] for why not a `[1,I,O]` broadcast). On
/// `Autodiff<Flex>` its backward multiplies in the orientation the CPU
/// kernels are fast at (`crate::autodiff_matmul`).
pub fn matmul_rows<B: Backend>(x: Tensor<B, 3>, w: Tensor<B, 2>) -> Tensor<B, 3> {
    match crate::fused::linear(x, w, None) {
        Ok(y) => y,
        Err((x, w, _)) => matmul_all_rows(x, w),
    }
}

/// [`matmul_rows`] as one product over all rows, where `crate::fused` does
/// not split it.
fn matmul_all_rows<B: Backend>(x: Tensor<B, 3>, w: Tensor<B, 2>) -> Tensor<B, 3> {
    let [b, s, i] = x.dims();
    let o = w.dims()[1];
    crate::autodiff_matmul::matmul_2d(x.reshape([b * s, i]), w).reshape([b, s, o])
}

/// `x·W + b` with the weight broadcast over the batch, for an `x` that is a
/// strided view (reshaping it to rows would copy it); the backward still
/// reads `Wᵀ` as a view.
pub fn linear_batched<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let bias = layer.bias.as_ref().map(|bias| bias.val());
    match crate::fused::linear(x, layer.weight.val(), bias) {
        Ok(y) => y,
        Err((x, w, bias)) => add_bias(x.matmul(w.unsqueeze::<3>()), bias),
    }
}

/// Calls an attention site (full path `path`) on a `[B,H,S,K]` tensor (or
/// `[B,H,S,1]`), which its hooks see as `[B,S,K,H]` (`[B,S,1,H]`); an empty
/// site is skipped without touching the layout.
#[inline(always)]
pub(crate) fn call_keys_last<const HOOKED: bool, B: Backend>(
    site: &Site<B, 4>,
    x: Tensor<B, 4>,
    ctx: &Ctx<'_>,
    path: &'static str,
) -> Tensor<B, 4> {
    if !HOOKED || site.is_empty() {
        return x;
    }
    site.call(x.permute([0, 2, 3, 1]), &ctx.with_site(path))
        .permute([0, 3, 1, 2])
}

/// Adds the `[B or 1, 1, S, K]` additive mask to `[B,H,S,K]` logits. A mask
/// shared by every row is added to the logits seen as `[B·H, S·K]`, which
/// the CPU backend does in place with SIMD; a per-row mask (padded batches)
/// is broadcast over the heads.
pub(crate) fn add_mask<B: Backend>(logits: Tensor<B, 4>, mask: &Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, s, k] = logits.dims();
    if mask.dims()[0] == 1 {
        (logits.reshape([b * h, s * k]) + mask.clone().reshape([1, s * k])).reshape([b, h, s, k])
    } else {
        logits + mask.clone()
    }
}
