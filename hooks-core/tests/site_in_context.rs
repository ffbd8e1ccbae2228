//! The site's path travels in the `Ctx` of every call: a caller that names
//! the site (`ctx.with_site`, what models do) tells every hook on it, however
//! the hook was added; `append_all`'s path fills in only where the caller
//! named none; gradient hooks and an autoencoder's own sites see a path too.

use std::sync::{Arc, Mutex};

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_ndarray::NdArray;
use hooks_core::{
    AnyRankHook, AutoencoderHooks, Ctx, FwdStage, GradTensor, HookTree, Record, Recorder, Site,
};

use crate::common::TinyHooks;

type Ad = Autodiff<NdArray>;
type Sites = Arc<Mutex<Vec<Option<String>>>>;

/// Notes the site each call names.
struct NoteSite(Sites);

impl<B: Backend> AnyRankHook<B> for NoteSite {
    fn call<const D: usize>(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        self.0.lock().unwrap().push(ctx.site().map(str::to_string));
        x
    }
}

fn ones<B: Backend, const D: usize>(shape: [usize; D]) -> Tensor<B, D> {
    Tensor::ones(shape, &Default::default())
}

#[test]
fn the_callers_path_reaches_a_hook_added_to_the_field() {
    let seen = Sites::default();
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks
        .attn
        .q
        .fwd
        .append(NoteSite(seen.clone()).for_rank::<4>());
    // Direct call with no path: the hook cannot know.
    hooks.attn.q.call(ones([1, 1, 1, 1]), &Ctx::at_layer(0));
    // Named by the caller.
    hooks
        .attn
        .q
        .call(ones([1, 1, 1, 1]), &Ctx::at_layer(0).with_site("attn.q"));
    assert_eq!(*seen.lock().unwrap(), [None, Some("attn.q".to_string())]);
}

#[test]
fn the_callers_path_wins_over_the_one_append_all_knew() {
    // A sub-tree's `append_all` knows `post_attn`; the model calling it
    // names the full path.
    let seen = Sites::default();
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks
        .resid
        .torso
        .append_all(FwdStage::Fwd, NoteSite(seen.clone()));
    let site = &hooks.resid.torso.post_attn;
    site.call(ones([1, 1, 1]), &Ctx::root());
    site.call(
        ones([1, 1, 1]),
        &Ctx::root().with_site("resid.torso.post_attn"),
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Some("post_attn".to_string()),
            Some("resid.torso.post_attn".to_string())
        ]
    );
}

#[test]
fn a_record_on_a_field_records_under_the_named_site() {
    let rec = Recorder::<NdArray>::new();
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.mlp.pre_act.fwd.append(Record::into(&rec));
    hooks
        .mlp
        .pre_act
        .call(ones([1, 2, 3]), &Ctx::at_layer(2).with_site("mlp.pre_act"));
    assert_eq!(rec.keys(), ["layers.2.mlp.pre_act"]);
    // `under` still overrides the site.
    let mut site = Site::<NdArray, 3>::default();
    site.fwd.append(Record::into(&rec).under("mine"));
    site.call(ones([1, 1, 1]), &Ctx::root().with_site("logits"));
    assert!(rec.keys().contains(&"mine".to_string()));
}

#[test]
fn bindings_keep_the_site_and_the_site_keeps_bindings() {
    let mut bound = hooks_core::Bindings::new();
    bound.bind("k", 1i64).unwrap();
    let root = Ctx::at_layer(4);
    let a = root.with_site("attn.q");
    let a = a.with_bindings(&bound);
    let b = root.with_bindings(&bound);
    let b = b.with_site("attn.q");
    for ctx in [a, b] {
        assert_eq!(ctx.site(), Some("attn.q"));
        assert_eq!(ctx.layer(), Some(4));
        assert!(ctx.get("k").is_some());
    }
    // A snapshot (what gradient hooks get) keeps it.
    assert_eq!(a.snapshot().ctx().site(), Some("attn.q"));
    assert_eq!(Ctx::root().snapshot().ctx().site(), None);
}

#[test]
fn a_gradient_hook_sees_the_forward_calls_site() {
    let seen = Sites::default();
    let mut site = Site::<Ad, 1>::default();
    let s = seen.clone();
    site.append_bwd(move |g: GradTensor<Ad, 1>, ctx: &Ctx| {
        s.lock().unwrap().push(ctx.site().map(str::to_string));
        g
    });
    let x = ones::<Ad, 1>([3]).require_grad();
    let y = site.call(x.clone(), &Ctx::at_layer(1).with_site("resid.post_emb"));
    let _ = y.sum().backward();
    assert_eq!(*seen.lock().unwrap(), [Some("resid.post_emb".to_string())]);
}

#[test]
fn an_autoencoders_sites_are_named_by_their_own_paths() {
    let seen = Sites::default();
    let mut sae = AutoencoderHooks::<NdArray, 1>::new(|x| x * 2.0, |l| l * 0.5, true);
    sae.append_all(FwdStage::Fwd, NoteSite(seen.clone()));
    let mut site = Site::<NdArray, 1>::default();
    site.fwd2.append(sae);
    site.call(
        ones([2]),
        &Ctx::at_layer(0).with_site("resid.torso.post_mlp"),
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["latents", "reconstruction", "error"].map(|s| Some(s.to_string()))
    );
}
