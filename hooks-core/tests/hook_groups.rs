//! The reference's `WrapperHooks`, `ConditionalHooks` and `AtLayers`: all
//! constructors of `Hooks`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::Tensor;
use burn_ndarray::NdArray;
use hooks_core::{Ctx, Hook, Hooks, IntoHook, Site, Value};

fn values(t: Tensor<NdArray, 1>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn wrapping_passes_every_appended_hook_through_the_wrapper() {
    // A wrapper that runs each hook twice (the reference wraps gradient
    // hooks into autograd functions the same way).
    let wrapped = Arc::new(AtomicUsize::new(0));
    let mut h: Hooks<i64> = {
        let wrapped = wrapped.clone();
        Hooks::wrapping(move |hook: Hook<i64>| {
            wrapped.fetch_add(1, Ordering::SeqCst);
            (move |x: i64, ctx: &Ctx| hook.call(hook.call(x, ctx), ctx)).into_hook()
        })
    };
    h.append(|x: i64, _: &Ctx| x + 1)
        .append(|x: i64, _: &Ctx| x * 3);
    assert_eq!(wrapped.load(Ordering::SeqCst), 2);
    // ((0 + 1 + 1) * 3) * 3
    assert_eq!(h.call(0, &Ctx::root()), 18);
    // Wrapping happens at append time, not at each call.
    h.call(0, &Ctx::root());
    assert_eq!(wrapped.load(Ordering::SeqCst), 2);
}

#[test]
fn conditional_on_the_value() {
    let mut h = Hooks::conditional(|x: &i64, _: &Ctx| *x > 0);
    h.append(|x: i64, _: &Ctx| x * 100);
    assert_eq!(h.call(2, &Ctx::root()), 200);
    assert_eq!(h.call(-2, &Ctx::root()), -2);
}

#[test]
fn conditional_on_the_context() {
    let mut h = Hooks::conditional(|_: &Tensor<NdArray, 1>, ctx: &Ctx| {
        ctx.get("ablate") == Some(&Value::Bool(true))
    });
    h.append(|x: Tensor<NdArray, 1>, _: &Ctx| x.zeros_like());
    let x = || Tensor::<NdArray, 1>::from_floats([1.0, 2.0], &Default::default());

    assert_eq!(values(h.call(x(), &Ctx::root())), [1.0, 2.0]);
    h.bind("ablate", true).unwrap();
    assert_eq!(values(h.call(x(), &Ctx::root())), [0.0, 0.0]);
}

#[test]
fn at_one_layer() {
    let mut h = Hooks::at_layers(2);
    h.append(|x: i64, _: &Ctx| -x);
    let got: Vec<i64> = (0..4).map(|l| h.call(1, &Ctx::at_layer(l))).collect();
    assert_eq!(got, [1, 1, -1, 1]);
}

#[test]
fn at_several_layers() {
    let mut h = Hooks::at_layers([1, 3]);
    h.append(|x: i64, _: &Ctx| -x);
    let got: Vec<i64> = (0..5).map(|l| h.call(1, &Ctx::at_layer(l))).collect();
    assert_eq!(got, [1, -1, 1, -1, 1]);
    // A vector works too.
    let h = Hooks::at_layers(vec![0]).with(|x: i64, _: &Ctx| x + 1);
    assert_eq!(h.call(1, &Ctx::at_layer(0)), 2);
}

#[test]
fn a_site_with_no_layer_does_not_match() {
    // Embedding, final norm and logits are called with `Ctx::root()`: a
    // layer filter never fires there (the reference raises a TypeError).
    let calls = Arc::new(AtomicUsize::new(0));
    let mut h = Hooks::at_layers([0, 1, 2]);
    {
        let calls = calls.clone();
        h.append(move |x: i64, _: &Ctx| {
            calls.fetch_add(1, Ordering::SeqCst);
            x
        });
    }
    h.call(1, &Ctx::root());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    h.call(1, &Ctx::at_layer(1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_layer_group_on_a_site() {
    let mut site = Site::<NdArray, 1>::default();
    site.fwd
        .append(Hooks::at_layers(1).with(|x: Tensor<NdArray, 1>, _: &Ctx| x * 0.0));
    let x = || Tensor::<NdArray, 1>::from_floats([5.0], &Default::default());
    let out: Vec<Vec<f32>> = [Ctx::root(), Ctx::at_layer(0), Ctx::at_layer(1)]
        .iter()
        .map(|ctx| values(site.call(x(), ctx)))
        .collect();
    assert_eq!(out, [vec![5.0], vec![5.0], vec![0.0]]);
}

#[test]
fn conditions_see_the_groups_own_bindings() {
    // The bound `layer` of the reference's per-layer deep copies.
    let mut h = Hooks::at_layers(3);
    h.bind("layer", 3).unwrap();
    h.append(|x: i64, _: &Ctx| x * 2);
    assert_eq!(h.call(5, &Ctx::root()), 10);
}
