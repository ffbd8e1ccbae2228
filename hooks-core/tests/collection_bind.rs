//! `bind` / `unbind` on a derived tree reach every stage of every site.

use crate::common;

use burn_ndarray::NdArray;
use common::{Inputs, Probe, SITES, TinyHooks, forward};
use hooks_core::{FwdStage, HookError, HookTree, Value};

#[test]
fn bind_reaches_every_site() {
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.bind("k", 7).unwrap();
    let probe = Probe::default();
    hooks.append_all(FwdStage::Fwd, probe.clone());

    forward(&hooks, 0, &Inputs::ones());

    let seen = probe.seen();
    assert_eq!(seen.len(), SITES.len());
    for s in &seen {
        assert_eq!(
            s.bound,
            [("k".to_string(), Value::Int(7))],
            "at {:?}",
            s.site
        );
    }
}

#[test]
fn bind_reaches_all_three_stages() {
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.bind("k", "v").unwrap();
    let site = &hooks.resid.torso.post_mlp;
    for b in [
        site.fwd.bindings(),
        site.bwd.bindings(),
        site.fwd2.bindings(),
    ] {
        assert_eq!(b.get("k"), Some(&Value::from("v")));
    }
}

#[test]
fn unbind_reaches_every_site() {
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.bind("k", 7).unwrap().bind("keep", true).unwrap();
    hooks.unbind("k").unwrap();
    let probe = Probe::default();
    hooks.append_all(FwdStage::Fwd2, probe.clone());

    forward(&hooks, 0, &Inputs::ones());

    let seen = probe.seen();
    assert_eq!(seen.len(), SITES.len());
    for s in &seen {
        assert_eq!(s.bound, [("keep".to_string(), Value::Bool(true))]);
    }
}

#[test]
fn a_conflicting_bind_changes_nothing() {
    let mut hooks = TinyHooks::<NdArray>::default();
    // One stage of one site already has the key...
    hooks.attn.qk_probs.fwd2.bind("k", 1).unwrap();
    let before = hooks.render();

    // ...so binding it on the whole tree fails, naming the key and the site
    // (by its string name: `probs` is the renamed `qk_probs`).
    let err = hooks.bind("k", 2).err().unwrap();
    assert_eq!(
        err,
        HookError::AlreadyBound {
            key: "k".into(),
            site: Some("attn.probs".into())
        }
    );
    assert_eq!(err.to_string(), "key `k` is already bound at `attn.probs`");

    // No other site was touched.
    assert_eq!(hooks.render(), before);
    assert_eq!(hooks.mlp.pre_act.fwd.bindings().get("k"), None);
    assert_eq!(hooks.attn.qk_probs.fwd.bindings().get("k"), None);
    assert_eq!(
        hooks.attn.qk_probs.fwd2.bindings().get("k"),
        Some(&Value::Int(1))
    );
}

#[test]
fn an_unbind_of_a_missing_key_changes_nothing() {
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.bind("k", 1).unwrap();
    // Remove it from one site by hand: now the tree-wide unbind must fail.
    hooks.logits.fwd.unbind("k").unwrap();
    let err = hooks.unbind("k").err().unwrap();
    assert_eq!(err.to_string(), "key `k` is not bound at `logits`");
    assert_eq!(
        hooks.mlp.pre_act.fwd.bindings().get("k"),
        Some(&Value::Int(1))
    );
}

#[test]
fn bound_values_and_the_layer_together() {
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.bind("run", "ablation-1").unwrap();
    let probe = Probe::default();
    hooks.append_all(FwdStage::Fwd, probe.clone());

    forward(&hooks, 4, &Inputs::ones());

    let by_site: Vec<(String, Option<usize>)> = probe
        .seen()
        .into_iter()
        .map(|s| (s.site.unwrap(), s.layer))
        .collect();
    assert_eq!(
        by_site,
        [
            ("resid.post_emb".to_string(), None),
            ("attn.q".to_string(), Some(4)),
            ("attn.probs".to_string(), Some(4)),
            ("resid.torso.post_attn".to_string(), Some(4)),
            ("mlp.pre_act".to_string(), Some(4)),
            ("mlp.post_act".to_string(), Some(4)),
            ("resid.torso.post_mlp".to_string(), Some(4)),
            ("logits".to_string(), None),
        ]
    );
}
