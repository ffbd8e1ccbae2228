//! Gradient hooks (`Site::bwd`) on `Autodiff<NdArray>`: the reference's
//! `grad_hook_wrapper`, as a custom autodiff op.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn_ndarray::NdArray;
use hooks_core::{Ctx, Site, Value};

type Ad = Autodiff<NdArray>;
type Grad = Tensor<NdArray, 1>;

fn values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn leaf(v: [f32; 3]) -> Tensor<Ad, 1> {
    Tensor::<Ad, 1>::from_floats(v, &Default::default()).require_grad()
}

#[test]
fn a_gradient_hook_sees_and_replaces_the_gradient() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut site = Site::<Ad, 1>::default();
    {
        let seen = seen.clone();
        site.append_bwd(move |g: Grad, _: &Ctx| {
            seen.lock().unwrap().push(values(g.clone()));
            g * 2.0
        });
    }

    let x = leaf([1.0, 2.0, 3.0]);
    let y = site.call(x.clone(), &Ctx::root());
    let grads = (y * 3.0).sum().backward();

    assert_eq!(*seen.lock().unwrap(), [vec![3.0, 3.0, 3.0]]);
    assert_eq!(values(x.grad(&grads).unwrap()), [6.0, 6.0, 6.0]);
}

#[test]
fn gradient_hooks_run_in_append_order() {
    let mut site = Site::<Ad, 1>::default();
    site.append_bwd(|g: Grad, _: &Ctx| g + 1.0)
        .append_bwd(|g: Grad, _: &Ctx| g * 10.0);
    let x = leaf([0.0, 0.0, 0.0]);
    let grads = site.call(x.clone(), &Ctx::root()).sum().backward();
    // (1 + 1) * 10: append order, like the forward stages. (The reference
    // wraps each hook in its own autograd function, so there the last
    // appended gradient hook runs first; see `grad.rs`.)
    assert_eq!(values(x.grad(&grads).unwrap()), [20.0, 20.0, 20.0]);
}

#[test]
fn zeroing_the_gradient_mid_graph() {
    let mut site = Site::<Ad, 1>::default();
    let x = leaf([1.0, 2.0, 3.0]);

    // Without the hook: loss = (2x)^2, d/dx = 8x.
    let a = x.clone() * 2.0;
    let b = site.call(a, &Ctx::root());
    let grads = (b.clone() * b).sum().backward();
    assert_eq!(values(x.grad(&grads).unwrap()), [8.0, 16.0, 24.0]);

    site.append_bwd(|g: Grad, _: &Ctx| g.zeros_like());
    let a = x.clone() * 2.0;
    let b = site.call(a, &Ctx::root());
    let grads = (b.clone() * b).sum().backward();
    assert_eq!(values(x.grad(&grads).unwrap()), [0.0, 0.0, 0.0]);
}

#[test]
fn zeroing_one_branch_keeps_the_other() {
    let mut site = Site::<Ad, 1>::default();
    site.append_bwd(|g: Grad, _: &Ctx| g.zeros_like());

    let x = leaf([1.0, 2.0, 3.0]);
    // Branch 1 goes through the site (contributes 2 per element); branch 2
    // does not (contributes 3 per element).
    let through = site.call(x.clone() * 2.0, &Ctx::root());
    let around = x.clone() * 3.0;
    let grads = (through + around).sum().backward();
    assert_eq!(values(x.grad(&grads).unwrap()), [3.0, 3.0, 3.0]);
}

#[test]
fn a_value_used_twice_calls_the_hook_once_with_the_summed_gradient() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut site = Site::<Ad, 1>::default();
    {
        let (calls, seen) = (calls.clone(), seen.clone());
        site.append_bwd(move |g: Grad, _: &Ctx| {
            calls.fetch_add(1, Ordering::SeqCst);
            seen.lock().unwrap().push(values(g.clone()));
            g
        });
    }

    let x = leaf([1.0, 2.0, 3.0]);
    let y = site.call(x.clone(), &Ctx::root());
    let grads = (y.clone() * 2.0 + y * 5.0).sum().backward();

    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(*seen.lock().unwrap(), [vec![7.0, 7.0, 7.0]]);
    assert_eq!(values(x.grad(&grads).unwrap()), [7.0, 7.0, 7.0]);
}

#[test]
fn across_layers_gradient_hooks_fire_in_reverse_layer_order() {
    let layers = Arc::new(Mutex::new(Vec::new()));
    let mut site = Site::<Ad, 1>::default();
    {
        let layers = layers.clone();
        site.append_bwd(move |g: Grad, ctx: &Ctx| {
            layers.lock().unwrap().push(ctx.layer().unwrap());
            g
        });
    }

    let x = leaf([1.0, 2.0, 3.0]);
    let mut h = x.clone();
    for i in 0..3 {
        // One "block": some computation, then the block's site.
        h = site.call(h * 2.0, &Ctx::at_layer(i));
    }
    let grads = h.sum().backward();

    assert_eq!(*layers.lock().unwrap(), [2, 1, 0]);
    assert_eq!(values(x.grad(&grads).unwrap()), [8.0, 8.0, 8.0]);
}

#[test]
fn the_gradient_hook_gets_the_forward_calls_context() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut site = Site::<Ad, 1>::default();
    site.bwd.bind("k", "v").unwrap();
    {
        let seen = seen.clone();
        site.append_bwd(move |g: Grad, ctx: &Ctx| {
            seen.lock().unwrap().push((
                ctx.layer(),
                ctx.get("k").cloned(),
                ctx.get("extra").cloned(),
            ));
            g
        });
    }

    let x = leaf([1.0, 2.0, 3.0]);
    // The model adds its own value on top of the layer.
    let mut extra = hooks_core::Bindings::new();
    extra.bind("extra", 42).unwrap();
    let layer = Ctx::at_layer(5);
    let y = site.call(x, &layer.with_bindings(&extra));
    // The forward call's context is gone by now; the hook sees a snapshot.
    drop(extra);
    let _ = y.sum().backward();

    assert_eq!(
        *seen.lock().unwrap(),
        [(Some(5), Some(Value::from("v")), Some(Value::Int(42)))]
    );
}

#[test]
fn gradient_hooks_see_the_gradient_of_the_value_after_fwd() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut site = Site::<Ad, 1>::default();
    site.fwd.append(|x: Tensor<Ad, 1>, _: &Ctx| x * 2.0);
    {
        let seen = seen.clone();
        site.append_bwd(move |g: Grad, _: &Ctx| {
            seen.lock().unwrap().push(values(g.clone()));
            g
        });
    }

    let x = leaf([1.0, 2.0, 3.0]);
    let y = site.call(x.clone(), &Ctx::root());
    let grads = (y * 3.0).sum().backward();

    // d loss / d (2x) = 3: the hook sees the gradient of the post-fwd value...
    assert_eq!(*seen.lock().unwrap(), [vec![3.0, 3.0, 3.0]]);
    // ...while the gradient w.r.t. x is doubled by the fwd hook.
    assert_eq!(values(x.grad(&grads).unwrap()), [6.0, 6.0, 6.0]);
}

#[test]
fn a_site_with_only_gradient_hooks_keeps_the_forward_value() {
    let mut site = Site::<Ad, 1>::default();
    site.append_bwd(|g: Grad, _: &Ctx| g * 0.5);
    let x = leaf([1.0, -2.0, 3.0]);
    let y = site.call(x.clone(), &Ctx::root());
    assert_eq!(values(y.clone()), [1.0, -2.0, 3.0]);
    let grads = y.sum().backward();
    assert_eq!(values(x.grad(&grads).unwrap()), [0.5, 0.5, 0.5]);
}

#[test]
fn a_layer_group_in_the_gradient_stage() {
    let mut site = Site::<Ad, 1>::default();
    site.append_bwd(hooks_core::Hooks::at_layers(1).with(|g: Grad, _: &Ctx| g * 10.0));

    let x = leaf([1.0, 1.0, 1.0]);
    let mut h = x.clone();
    for i in 0..3 {
        h = site.call(h, &Ctx::at_layer(i));
    }
    let grads = h.sum().backward();
    // Only the layer-1 call scales the gradient (the layer is read from the
    // forward call's context, during the backward pass).
    assert_eq!(values(x.grad(&grads).unwrap()), [10.0, 10.0, 10.0]);
}
