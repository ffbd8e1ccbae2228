//! A small copy of the reference's hook tree (`TransformerHooks`), and a
//! "model" that calls every site of it once, as the real model does.
//!
//! Shared by several test files; each uses part of it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use hooks_core::{AnyRankHook, Ctx, HookCollection, Site, Value};

/// `MLPHooks`.
#[derive(HookCollection, Clone, Default)]
pub struct MlpHooks<B: Backend> {
    pub pre_act: Site<B, 3>,
    pub post_act: Site<B, 3>,
}

/// `AttentionHooks`, smaller, with a renamed site and a skipped field.
#[derive(HookCollection, Clone, Default)]
pub struct AttentionHooks<B: Backend> {
    pub q: Site<B, 4>,
    #[hooks(rename = "probs")]
    pub qk_probs: Site<B, 4>,
    /// Not part of the tree: a note the model keeps next to the hooks.
    #[hooks(skip)]
    pub note: String,
}

/// `ResidualStreamTorsoHooks`, smaller.
#[derive(HookCollection, Clone, Default)]
pub struct TorsoHooks<B: Backend> {
    pub post_attn: Site<B, 3>,
    pub post_mlp: Site<B, 3>,
}

/// `ResidualStreamHooks`, smaller.
#[derive(HookCollection, Clone, Default)]
pub struct ResidHooks<B: Backend> {
    pub post_emb: Site<B, 3>,
    pub torso: TorsoHooks<B>,
}

/// `TransformerHooks`, smaller: ranks 3 (residual), 4 (attention) and 2
/// (last-token logits).
#[derive(HookCollection, Clone, Default)]
pub struct TinyHooks<B: Backend> {
    pub mlp: MlpHooks<B>,
    pub attn: AttentionHooks<B>,
    pub resid: ResidHooks<B>,
    pub logits: Site<B, 2>,
}

/// Every site path of [`TinyHooks`], in declaration order, with its rank.
pub const SITES: [(&str, usize); 8] = [
    ("mlp.pre_act", 3),
    ("mlp.post_act", 3),
    ("attn.q", 4),
    ("attn.probs", 4),
    ("resid.post_emb", 3),
    ("resid.torso.post_attn", 3),
    ("resid.torso.post_mlp", 3),
    ("logits", 2),
];

/// The inputs of [`forward`]: eight elements each.
pub struct Inputs<B: Backend> {
    pub x3: Tensor<B, 3>,
    pub x4: Tensor<B, 4>,
    pub x2: Tensor<B, 2>,
}

impl<B: Backend> Inputs<B> {
    /// All ones: [1, 2, 4], [1, 2, 2, 2] and [2, 4].
    pub fn ones() -> Self {
        let device = Default::default();
        Inputs {
            x3: Tensor::ones([1, 2, 4], &device),
            x4: Tensor::ones([1, 2, 2, 2], &device),
            x2: Tensor::ones([2, 4], &device),
        }
    }

    /// Marks every input as requiring a gradient (autodiff backends).
    pub fn require_grad(self) -> Self {
        Inputs {
            x3: self.x3.require_grad(),
            x4: self.x4.require_grad(),
            x2: self.x2.require_grad(),
        }
    }
}

/// Calls every site once, as the model would: the embedding and logits
/// outside any block (`Ctx::root()`), the rest inside block `layer`.
/// Returns the sum of every site's output.
pub fn forward<B: Backend>(h: &TinyHooks<B>, layer: usize, x: &Inputs<B>) -> Tensor<B, 1> {
    let root = Ctx::root();
    let block = Ctx::at_layer(layer);
    let outs = [
        h.resid.post_emb.call(x.x3.clone(), &root).sum(),
        h.attn.q.call(x.x4.clone(), &block).sum(),
        h.attn.qk_probs.call(x.x4.clone(), &block).sum(),
        h.resid.torso.post_attn.call(x.x3.clone(), &block).sum(),
        h.mlp.pre_act.call(x.x3.clone(), &block).sum(),
        h.mlp.post_act.call(x.x3.clone(), &block).sum(),
        h.resid.torso.post_mlp.call(x.x3.clone(), &block).sum(),
        h.logits.call(x.x2.clone(), &root).sum(),
    ];
    outs.into_iter().reduce(|a, b| a + b).unwrap()
}

/// The single value of a one-element tensor.
pub fn scalar<B: Backend>(t: Tensor<B, 1>) -> f32 {
    t.into_scalar().elem::<f32>()
}

/// The values of a tensor, flattened.
pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// What a [`Probe`] saw at one call.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub site: Option<String>,
    pub layer: Option<usize>,
    pub bound: Vec<(String, Value)>,
    pub rank: usize,
    pub sum: f32,
}

/// A read-only rank-generic hook that logs every call.
#[derive(Clone, Default)]
pub struct Probe(pub Arc<Mutex<Vec<Seen>>>);

impl Probe {
    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    pub fn sites(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .map(|s| s.site.unwrap_or_default())
            .collect()
    }
}

impl<B: Backend> AnyRankHook<B> for Probe {
    fn call<const D: usize>(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        let seen = Seen {
            site: ctx.site().map(str::to_string),
            layer: ctx.layer(),
            bound: ctx
                .bindings()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            rank: D,
            sum: x.clone().sum().into_scalar().elem::<f32>(),
        };
        self.0.lock().unwrap().push(seen);
        x
    }
}
