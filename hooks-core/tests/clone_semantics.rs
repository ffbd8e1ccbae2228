//! Cloning a hook tree (the reference's `deepcopy`, done per layer there):
//! hook *lists* are copied, hook *functions* are shared.
//!
//! A clone owns its lists and bindings, so appending, clearing or binding on
//! one side never shows on the other. The hooks already appended are `Arc`s:
//! both trees call the very same closure, so state it captured (a counter, a
//! recorder) is shared. Python's `deepcopy` also shares plain functions (and
//! so their closures), but copies callable objects such as a nested
//! `AtLayers` group or a stateful hook class; here every appended hook,
//! groups included, is shared. A hook that must not be shared should be
//! appended after cloning.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn_ndarray::NdArray;
use common::{Inputs, TinyHooks, forward, scalar, values};
use hooks_core::{Ctx, FwdStage, HookTree, Scale, Site, Value};

type Ad = Autodiff<NdArray>;

#[test]
fn a_clone_has_its_own_hook_lists() {
    let mut a = TinyHooks::<NdArray>::default();
    a.append_to_path("logits.fwd", Scale(2.0)).unwrap();
    let mut b = a.clone();

    b.append_all(FwdStage::Fwd, Scale(0.0));
    assert_eq!(a.logits.fwd.len(), 1);
    assert_eq!(b.logits.fwd.len(), 2);
    assert_eq!(scalar(forward(&a, 0, &Inputs::ones())), 56.0 + 16.0);
    assert_eq!(scalar(forward(&b, 0, &Inputs::ones())), 0.0);

    a.logits.fwd.clear();
    assert_eq!(b.logits.fwd.len(), 2);
}

#[test]
fn a_clone_has_its_own_bindings() {
    let mut a = TinyHooks::<NdArray>::default();
    let mut b = a.clone();
    b.bind("layer", 3).unwrap();
    assert_eq!(a.mlp.pre_act.fwd.bindings().get("layer"), None);
    // So `a` can bind the same key to another value.
    a.bind("layer", 4).unwrap();
    assert_eq!(
        b.mlp.pre_act.fwd.bindings().get("layer"),
        Some(&Value::Int(3))
    );
}

#[test]
fn a_clone_shares_the_hook_functions_appended_before_it() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut a = Site::<NdArray, 1>::default();
    {
        let calls = calls.clone();
        a.fwd.append(move |x: Tensor<NdArray, 1>, _: &Ctx| {
            calls.fetch_add(1, Ordering::SeqCst);
            x
        });
    }
    let b = a.clone();
    let x = || Tensor::<NdArray, 1>::from_floats([1.0], &Default::default());
    a.call(x(), &Ctx::root());
    b.call(x(), &Ctx::root());
    b.call(x(), &Ctx::root());
    // One closure, one counter: three calls.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(Arc::ptr_eq(&a.fwd.hooks()[0], &b.fwd.hooks()[0]));
}

#[test]
fn gradient_hook_lists_are_independent_too() {
    let mut a = Site::<Ad, 1>::default();
    a.append_bwd(|g: Tensor<NdArray, 1>, _: &Ctx| g * 2.0);
    let mut b = a.clone();
    b.append_bwd(|g: Tensor<NdArray, 1>, _: &Ctx| g * 5.0);
    assert_eq!((a.bwd.len(), b.bwd.len()), (1, 2));

    let grad_through = |site: &Site<Ad, 1>| {
        let x = Tensor::<Ad, 1>::from_floats([1.0], &Default::default()).require_grad();
        let grads = site.call(x.clone(), &Ctx::root()).sum().backward();
        values(x.grad(&grads).unwrap())
    };
    assert_eq!(grad_through(&a), [2.0]);
    assert_eq!(grad_through(&b), [10.0]);

    // Clearing the original leaves the clone's list alone.
    a.bwd.clear();
    assert_eq!(grad_through(&a), [1.0]);
    assert_eq!(grad_through(&b), [10.0]);
}
