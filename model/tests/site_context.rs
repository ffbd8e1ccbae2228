//! Every call names its site: for any [`HookedModel`], each site of its tree
//! (the string paths of `sites()`) gets a hook appended directly to its
//! stage, told nothing about where it is, that notes `ctx.site()` and
//! `ctx.layer()`; after a forward pass, a KV-cached forward and a pass with
//! only that one site hooked (so the model's fast paths for empty sites,
//! such as the fused norm and the unhooked softmax, are taken around it),
//! every site was called, always with its own path, with a layer exactly
//! when the schema says it is `per_layer`, at every layer. So `Record` keys,
//! `PatchFrom` lookups and fault messages name the site however the hook
//! was added.

use std::sync::{Arc, Mutex, PoisonError};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_flex::Flex;
use hooks_core::{AnyRankHook, Ctx, HookTree, Record, Recorder, SiteInfo};
use hooks_model::{
    Gpt2, Gpt2Config, HookedModel, Llama, LlamaConfig, ModelError, TokenBatch, TransformerHooks,
};

/// One call as the hook saw it: the site it was appended to, what the
/// context said.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    appended_to: String,
    site: Option<String>,
    layer: Option<usize>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Notes every call; appended with `for_rank`, so it is given no path.
struct Note {
    appended_to: String,
    log: Log,
}

impl<B: Backend> AnyRankHook<B> for Note {
    fn call<const D: usize>(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Seen {
                appended_to: self.appended_to.clone(),
                site: ctx.site().map(str::to_string),
                layer: ctx.layer(),
            });
        x
    }
}

/// Appends a [`Note`] to the `fwd` stage of `site`, as a hook of the site's
/// rank (what `site.fwd.append(..)` on the field would do).
fn note_at<T: HookTree>(hooks: &mut T, site: &SiteInfo, log: &Log) {
    let note = Note {
        appended_to: site.path.clone(),
        log: log.clone(),
    };
    let path = format!("{}.fwd", site.path);
    let appended = match site.rank {
        1 => hooks.append_typed_to_path::<1>(&path, note.for_rank::<1>()),
        2 => hooks.append_typed_to_path::<2>(&path, note.for_rank::<2>()),
        3 => hooks.append_typed_to_path::<3>(&path, note.for_rank::<3>()),
        4 => hooks.append_typed_to_path::<4>(&path, note.for_rank::<4>()),
        5 => hooks.append_typed_to_path::<5>(&path, note.for_rank::<5>()),
        r => panic!("{}: rank {r} is not covered here", site.path),
    };
    appended.unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// Checks the calls `log` holds against `sites`: each call names the site
/// its hook is on and has a layer exactly when the site is per-layer; each
/// site was called, per-layer ones at every layer `0..n_layer`.
fn check(what: &str, sites: &[SiteInfo], log: &Log, n_layer: usize) {
    let seen = log.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for call in &seen {
        let site = sites
            .iter()
            .find(|s| s.path == call.appended_to)
            .expect("notes are on the tree's sites");
        assert_eq!(
            call.site.as_deref(),
            Some(site.path.as_str()),
            "{what}: a call at `{}` named {:?}",
            site.path,
            call.site
        );
        assert_eq!(
            call.layer.is_some(),
            site.per_layer,
            "{what}: `{}` (per_layer: {}) was called with layer {:?}",
            site.path,
            site.per_layer,
            call.layer
        );
    }
    for site in sites {
        let mut layers: Vec<Option<usize>> = seen
            .iter()
            .filter(|c| c.appended_to == site.path)
            .map(|c| c.layer)
            .collect();
        layers.dedup();
        let expected: Vec<Option<usize>> = if site.per_layer {
            (0..n_layer).map(Some).collect()
        } else {
            vec![None]
        };
        assert_eq!(layers, expected, "{what}: the calls of `{}`", site.path);
    }
}

/// The whole check on `model`, for `tokens` (at least two, the last of which
/// goes through the KV cache).
pub fn every_call_names_its_site<B: Backend, M: HookedModel<B>>(
    model: &M,
    tokens: &[u32],
) -> Result<(), ModelError> {
    let n_layer = model.dims().n_layer;
    let sites = M::Hooks::default().sites();
    assert!(!sites.is_empty());
    let all = |log: &Log| {
        let mut hooks = M::Hooks::default();
        for site in &sites {
            note_at(&mut hooks, site, log);
        }
        hooks
    };

    // Every site hooked (the softmax denominator included: it is called
    // only when it has hooks).
    let log = Log::default();
    model.forward(&TokenBatch::single(tokens.to_vec())?, &all(&log))?;
    check("forward", &sites, &log, n_layer);

    // The cached forward: the prompt, then one more token.
    let (prompt, next) = tokens.split_at(tokens.len() - 1);
    let log = Log::default();
    let hooks = all(&log);
    let mut cache = model.new_cache();
    model.forward_cached(&TokenBatch::single(prompt.to_vec())?, &mut cache, &hooks)?;
    check("cached prompt", &sites, &log, n_layer);
    log.lock().unwrap_or_else(PoisonError::into_inner).clear();
    model.forward_cached(&TokenBatch::single(next.to_vec())?, &mut cache, &hooks)?;
    check("cached next token", &sites, &log, n_layer);

    // The first block only: its sites at layer 0 and the embedding's, no
    // others; the value returned is the residual stream after block 0.
    let log = Log::default();
    let mut hooks = all(&log);
    let recorder = Recorder::<B>::new();
    hooks
        .append_to_path("resid.torso.post_mlp.fwd2", Record::into(&recorder))
        .expect("every family has resid.torso.post_mlp");
    let resid = model.forward_blocks(&TokenBatch::single(tokens.to_vec())?, &hooks, 1)?;
    let seen = log.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let embedding: Vec<&str> = seen
        .iter()
        .filter(|c| c.layer.is_none())
        .map(|c| c.appended_to.as_str())
        .collect();
    assert_eq!(
        embedding,
        ["resid.post_emb"],
        "forward_blocks(1): calls outside the blocks"
    );
    assert!(
        seen.iter().all(|c| c.layer.is_none_or(|l| l == 0)),
        "forward_blocks(1): a call past layer 0"
    );
    let after_block_0 = recorder
        .get::<3>("resid.torso.post_mlp", Some(0))
        .expect("recorded");
    assert_eq!(resid.into_data(), after_block_0.into_data());
    let full = model.forward_blocks(
        &TokenBatch::single(tokens.to_vec())?,
        &M::Hooks::default(),
        usize::MAX,
    )?;
    assert_eq!(
        full.dims()[2],
        model.dims().d_model,
        "forward_blocks(all) stops before the unembedding"
    );

    // One site at a time, every other site empty.
    for site in &sites {
        let log = Log::default();
        let mut hooks = M::Hooks::default();
        note_at(&mut hooks, site, &log);
        model.forward(&TokenBatch::single(tokens.to_vec())?, &hooks)?;
        check(
            &format!("only `{}` hooked", site.path),
            std::slice::from_ref(site),
            &log,
            n_layer,
        );
    }
    Ok(())
}

fn tiny_gpt2() -> Gpt2<Flex> {
    let config = Gpt2Config::new(2, 8, 2, 16, 11);
    Gpt2::init(&config, &Default::default()).expect("a valid config")
}

#[test]
fn every_gpt2_call_names_its_site() -> Result<(), ModelError> {
    every_call_names_its_site(&tiny_gpt2(), &[1, 2, 3, 4])
}

#[test]
fn every_llama_call_names_its_site() -> Result<(), ModelError> {
    // Grouped-query attention (4 query heads over 2), each family's flavour.
    for family in ["llama", "qwen2", "mistral"] {
        let config = LlamaConfig::new(family, 2, 16, 4, 2, 24, 13);
        let model = Llama::<Flex>::init(&config, &Default::default())?;
        every_call_names_its_site(&model, &[1, 2, 3, 4])?;
    }
    Ok(())
}

#[test]
fn gpt2_declares_every_site_per_layer_or_not() {
    let sites = TransformerHooks::<Flex>::default().sites();
    let outside: Vec<&str> = sites
        .iter()
        .filter(|s| !s.per_layer)
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(
        outside,
        [
            "resid.post_emb",
            "resid.ln_f.post_mean_subtraction",
            "resid.ln_f.scale",
            "resid.ln_f.post_scale",
            "resid.post_ln_f",
            "logits"
        ]
    );
    assert!(sites.iter().all(|s| s.dims().count() == s.rank));
}

#[test]
fn a_record_on_a_field_keys_by_the_site() -> Result<(), ModelError> {
    // Appended to the field's stage directly, with no key: the model's
    // context names the site.
    let model = tiny_gpt2();
    let rec = Recorder::<Flex>::new();
    let mut hooks = TransformerHooks::<Flex>::default();
    hooks.attn.q.fwd.append(Record::into(&rec));
    hooks.resid.ln_f.scale.fwd.append(Record::into(&rec));
    hooks
        .resid
        .torso
        .ln_mlp
        .scale
        .fwd
        .append(Record::into(&rec));
    model.forward(&TokenBatch::single(vec![1, 2, 3])?, &hooks)?;
    let mut keys = rec.keys();
    keys.sort();
    assert_eq!(
        keys,
        [
            "layers.0.attn.q",
            "layers.0.resid.torso.ln_mlp.scale",
            "layers.1.attn.q",
            "layers.1.resid.torso.ln_mlp.scale",
            "resid.ln_f.scale",
        ]
    );
    assert_eq!(
        rec.get::<4>("attn.q", Some(1)).map(|t| t.dims()),
        Some([1, 3, 2, 4])
    );
    Ok(())
}

#[test]
fn a_fault_on_a_field_names_the_site_and_layer() -> Result<(), ModelError> {
    let model = tiny_gpt2();
    let mut hooks = TransformerHooks::<Flex>::default();
    hooks
        .attn
        .qk_probs
        .fwd
        .append(|x: Tensor<Flex, 4>, ctx: &Ctx| {
            if ctx.layer() == Some(1) {
                ctx.fail("this head is not here");
            }
            x
        });
    let Err(err) = model.forward(&TokenBatch::single(vec![1, 2])?, &hooks) else {
        panic!("the hook failed, so the forward pass must too");
    };
    assert_eq!(
        err.to_string(),
        "hook failed at `attn.qk_probs` (layer 1): this head is not here"
    );
    Ok(())
}
