//! Hooks that prove they fired: each appended hook counts its calls and the
//! layers it ran at; `require_all_fired` names every hook that never ran.

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn_ndarray::NdArray;
use hooks_core::{Ctx, FwdStage, HookCalls, HookError, HookTree, Hooks, Stage, Zero, named};

use crate::common::{Inputs, TinyHooks, forward};

type B = NdArray;

/// A 3-block "model": every block's sites at layers 0, 1 and 2.
fn run(hooks: &TinyHooks<B>) {
    let x = Inputs::<B>::ones();
    for layer in 0..3 {
        forward(hooks, layer, &x);
    }
}

fn calls(hooks: &TinyHooks<B>) -> Vec<(String, String, u64, Vec<usize>)> {
    hooks
        .hook_calls()
        .into_iter()
        .map(|h| {
            (
                format!("{}.{}", h.site, h.stage.name()),
                h.hook,
                h.calls,
                h.layers,
            )
        })
        .collect()
}

fn pass<const D: usize>(name: &'static str) -> impl hooks_core::IntoHook<Tensor<B, D>> {
    named(name, |x: Tensor<B, D>, _: &Ctx| x)
}

#[test]
fn every_hook_counts_its_calls_and_layers_and_groups_show_their_hooks() {
    let mut hooks = TinyHooks::<B>::default();
    hooks.attn.q.fwd.append(pass::<4>("q probe"));
    hooks
        .mlp
        .post_act
        .fwd
        .append(Hooks::at_layers([1]).with(pass::<3>("ablate at 1")));
    hooks
        .mlp
        .post_act
        .fwd2
        .append(Hooks::at_layers([20]).with(pass::<3>("ablate at 20")));
    hooks.logits.fwd.append(Zero);
    run(&hooks);

    assert_eq!(
        calls(&hooks),
        [
            (
                "mlp.post_act.fwd".into(),
                "AtLayers([1]) › ablate at 1".into(),
                1,
                vec![1]
            ),
            (
                "mlp.post_act.fwd2".into(),
                "AtLayers([20]) › ablate at 20".into(),
                0,
                vec![]
            ),
            ("attn.q.fwd".into(), "q probe".into(), 3, vec![0, 1, 2]),
            ("logits.fwd".into(), "Zero".into(), 3, vec![]),
        ]
    );
}

#[test]
fn strict_mode_names_each_hook_that_never_ran() {
    let mut hooks = TinyHooks::<B>::default();
    hooks.attn.q.fwd.append(pass::<4>("q probe"));
    hooks
        .mlp
        .post_act
        .fwd
        .append(Hooks::at_layers([20]).with(pass::<3>("ablate")));
    assert!(hooks.require_all_fired().is_err(), "nothing ran yet");
    run(&hooks);

    let err = hooks.require_all_fired().unwrap_err();
    assert_eq!(
        err.to_string(),
        "1 hook never ran: `AtLayers([20]) › ablate` on `mlp.post_act.fwd`"
    );
    let HookError::NeverFired { hooks: never } = err else {
        panic!("expected NeverFired");
    };
    assert_eq!(
        never,
        [HookCalls {
            site: "mlp.post_act".into(),
            stage: Stage::Fwd,
            hook: "AtLayers([20]) › ablate".into(),
            calls: 0,
            layers: vec![],
        }]
    );
}

#[test]
fn counts_reset_and_an_empty_tree_reports_nothing() {
    let empty = TinyHooks::<B>::default();
    run(&empty);
    assert!(empty.hook_calls().is_empty());
    empty.require_all_fired().unwrap();

    let mut hooks = TinyHooks::<B>::default();
    hooks.append_all(FwdStage::Fwd, Zero);
    run(&hooks);
    assert!(hooks.hook_calls().iter().all(|h| h.calls > 0));
    hooks.require_all_fired().unwrap();
    hooks.reset_hook_calls();
    assert!(hooks.hook_calls().iter().all(|h| h.calls == 0));
    assert_eq!(hooks.hook_calls().len(), 8, "one per site");
}

#[test]
fn a_gradient_hook_fires_in_the_backward_pass() {
    type Ad = Autodiff<NdArray>;
    let mut hooks = TinyHooks::<Ad>::default();
    hooks
        .resid
        .post_emb
        .append_bwd(named("grad probe", |g: Tensor<NdArray, 3>, _: &Ctx| g));
    let x = Inputs::<Ad>::ones().require_grad();
    let out = forward(&hooks, 0, &x);
    let err = hooks.require_all_fired().unwrap_err();
    assert!(
        err.to_string()
            .contains("`grad probe` on `resid.post_emb.bwd`"),
        "{err}"
    );
    let _ = out.sum().backward();
    hooks.require_all_fired().unwrap();
}
