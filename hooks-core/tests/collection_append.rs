//! `append_all`, `append_all_grad` and `append_to_path` on a derived tree
//! whose sites have ranks 2, 3 and 4.

use crate::common;

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn_ndarray::NdArray;
use common::{Inputs, Probe, SITES, TinyHooks, forward, scalar, values};
use hooks_core::{Ctx, Detach, FwdStage, HookTree, Record, Recorder, Scale, Zero};

type Ad = Autodiff<NdArray>;

/// 8 sites, 8 ones each.
const PLAIN_SUM: f32 = 64.0;

#[test]
fn the_plain_forward() {
    let hooks = TinyHooks::<NdArray>::default();
    assert_eq!(scalar(forward(&hooks, 0, &Inputs::ones())), PLAIN_SUM);
}

#[test]
fn append_all_zero_reaches_every_rank() {
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.append_all(FwdStage::Fwd, Zero);
    assert_eq!(scalar(forward(&hooks, 0, &Inputs::ones())), 0.0);
}

#[test]
fn append_all_scale_reaches_every_rank() {
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.append_all(FwdStage::Fwd2, Scale(2.0));
    assert_eq!(scalar(forward(&hooks, 0, &Inputs::ones())), 2.0 * PLAIN_SUM);
    // Each site has exactly one hook, in fwd2.
    let probe = Probe::default();
    hooks.append_all(FwdStage::Fwd, probe.clone());
    forward(&hooks, 0, &Inputs::ones());
    let ranks: Vec<usize> = probe.seen().iter().map(|s| s.rank).collect();
    assert_eq!(ranks, [3, 4, 4, 3, 3, 3, 3, 2]);
    assert!(
        probe.seen().iter().all(|s| s.sum == 8.0),
        "fwd runs before fwd2"
    );
}

#[test]
fn append_all_record_keys_by_layer_and_path() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let recorder = Recorder::new();
    hooks.append_all(FwdStage::Fwd, Record::into(&recorder));

    forward(&hooks, 1, &Inputs::ones());

    // Keys in call order: blocks under `layers.<i>.`, the rest bare.
    assert_eq!(
        recorder.keys(),
        [
            "resid.post_emb",
            "layers.1.attn.q",
            "layers.1.attn.probs",
            "layers.1.resid.torso.post_attn",
            "layers.1.mlp.pre_act",
            "layers.1.mlp.post_act",
            "layers.1.resid.torso.post_mlp",
            "logits",
        ]
    );
    let probs = recorder.get::<4>("attn.probs", Some(1)).unwrap();
    assert_eq!(probs.dims(), [1, 2, 2, 2]);
    assert_eq!(recorder.get_key("logits").unwrap().shape(), [2, 4]);
    // The wrong rank is None, not a panic.
    assert!(recorder.get::<3>("logits", None).is_none());

    // A second pass at another layer adds keys; the same layer replaces.
    forward(&hooks, 2, &Inputs::ones());
    forward(&hooks, 2, &Inputs::ones());
    assert_eq!(recorder.len(), 2 + 6 * 2);
}

#[test]
fn append_all_detach_reaches_every_rank() {
    let mut hooks = TinyHooks::<Ad>::default();
    hooks.append_all(FwdStage::Fwd, Detach);

    let x = Inputs::<Ad>::ones().require_grad();
    let loss = forward(&hooks, 0, &x);
    assert_eq!(scalar(loss.clone()), PLAIN_SUM, "the values are unchanged");
    let grads = loss.backward();

    // No gradient reaches any input. (Burn's `detach` keeps the
    // `require_grad` flag, making the value a new leaf, so the check is on
    // the gradient, not on `is_require_grad`.)
    assert!(x.x3.grad(&grads).is_none());
    assert!(x.x4.grad(&grads).is_none());
    assert!(x.x2.grad(&grads).is_none());
}

#[test]
fn detach_at_one_site_cuts_only_that_path() {
    let mut hooks = TinyHooks::<Ad>::default();
    hooks.append_to_path("logits.fwd", Detach).unwrap();
    hooks.append_to_path("attn.q.fwd", Detach).unwrap();

    let x = Inputs::<Ad>::ones().require_grad();
    let grads = forward(&hooks, 0, &x).backward();
    assert!(x.x2.grad(&grads).is_none());
    assert_eq!(
        values(x.x4.grad(&grads).unwrap()),
        [1.0; 8],
        "attn.probs still counts"
    );
    assert_eq!(values(x.x3.grad(&grads).unwrap()), [5.0; 8]);
}

#[test]
fn append_all_grad_reaches_every_rank() {
    let mut hooks = TinyHooks::<Ad>::default();
    hooks.append_all_grad(Scale(3.0));
    let probe = Probe::default();
    hooks.append_all_grad(probe.clone());

    let x = Inputs::<Ad>::ones().require_grad();
    let grads = forward(&hooks, 0, &x).backward();

    // Five rank-3 sites share x3, two rank-4 sites share x4, one rank-2 site.
    assert_eq!(values(x.x3.grad(&grads).unwrap()), [15.0; 8]);
    assert_eq!(values(x.x4.grad(&grads).unwrap()), [6.0; 8]);
    assert_eq!(values(x.x2.grad(&grads).unwrap()), [3.0; 8]);

    // The probe ran after Scale at each site (sum of 8 threes), in the
    // backward pass, with the site's path and rank.
    let mut seen: Vec<(String, usize, f32)> = probe
        .seen()
        .into_iter()
        .map(|s| (s.site.unwrap(), s.rank, s.sum))
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected: Vec<(String, usize, f32)> = SITES
        .iter()
        .map(|(p, r)| (p.to_string(), *r, 24.0))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen, expected);
}

#[test]
fn recording_gradients_at_every_site() {
    let mut hooks = TinyHooks::<Ad>::default();
    let grads_at = Recorder::<NdArray>::new();
    hooks.append_all_grad(Record::into(&grads_at));
    hooks
        .mlp
        .post_act
        .fwd
        .append(|x: Tensor<Ad, 3>, _: &Ctx| x * 4.0);

    let x = Inputs::<Ad>::ones().require_grad();
    let _ = forward(&hooks, 2, &x).backward();

    // Independent branches: the backward pass visits them in graph order,
    // so compare as sets.
    let mut keys = grads_at.keys();
    keys.sort();
    assert_eq!(
        keys,
        [
            "layers.2.attn.probs",
            "layers.2.attn.q",
            "layers.2.mlp.post_act",
            "layers.2.mlp.pre_act",
            "layers.2.resid.torso.post_attn",
            "layers.2.resid.torso.post_mlp",
            "logits",
            "resid.post_emb",
        ]
    );
    // The gradient of the sum loss w.r.t. each site's (post-fwd) value is 1.
    let g = grads_at.get::<3>("mlp.post_act", Some(2)).unwrap();
    assert_eq!(values(g), [1.0; 8]);
}

#[test]
fn append_to_path_reaches_one_site() {
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks
        .append_to_path("resid.torso.post_mlp.fwd", Scale(10.0))
        .unwrap();
    assert_eq!(hooks.resid.torso.post_mlp.fwd.len(), 1);
    assert!(hooks.resid.torso.post_attn.is_empty() && hooks.mlp.post_act.is_empty());
    // 7 plain sites + one scaled by 10.
    assert_eq!(scalar(forward(&hooks, 0, &Inputs::ones())), 56.0 + 80.0);
}

#[test]
fn append_to_path_fwd2_and_renamed_sites() {
    let mut hooks = TinyHooks::<NdArray>::default();
    // `probs` is the string name of field `qk_probs`.
    hooks.append_to_path("attn.probs.fwd2", Zero).unwrap();
    assert_eq!(hooks.attn.qk_probs.fwd2.len(), 1);
    assert_eq!(scalar(forward(&hooks, 0, &Inputs::ones())), 56.0);
}

#[test]
fn append_to_path_tells_the_hook_its_site() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let probe = Probe::default();
    hooks
        .append_to_path("mlp.post_act.fwd", probe.clone())
        .unwrap();
    forward(&hooks, 3, &Inputs::ones());
    assert_eq!(probe.sites(), ["mlp.post_act"]);
}

#[test]
fn append_grad_to_path_on_autodiff() {
    let mut hooks = TinyHooks::<Ad>::default();
    hooks.append_grad_to_path("logits.bwd", Zero).unwrap();
    let x = Inputs::<Ad>::ones().require_grad();
    let grads = forward(&hooks, 0, &x).backward();
    assert_eq!(values(x.x2.grad(&grads).unwrap()), [0.0; 8]);
    assert_eq!(values(x.x3.grad(&grads).unwrap()), [5.0; 8]);
}

#[test]
fn append_typed_to_path_takes_a_closure_of_the_right_rank() {
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks
        .append_typed_to_path::<4>("attn.q.fwd", |x: Tensor<NdArray, 4>, _: &Ctx| x + 1.0)
        .unwrap();
    assert_eq!(scalar(forward(&hooks, 0, &Inputs::ones())), PLAIN_SUM + 8.0);
}
