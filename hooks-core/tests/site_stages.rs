//! `Site`: the reference's `FwdBwdHooks`, three stages called in the order
//! `fwd`, `bwd`, `fwd2`.
//!
//! A gradient hook on a backend without autodiff is a compile error, never a
//! silent no-op: `Site::append_bwd` and `GradHooks::append` exist only where
//! `B: AutodiffBackend`. So
//!
//! ```compile_fail
//! use burn_ndarray::NdArray;
//! use hooks_core::{Ctx, Site};
//! Site::<NdArray, 1>::default().append_bwd(|g, _: &Ctx| g);
//! ```
//!
//! does not compile (the trybuild case `tests/ui/grad_hook_on_ndarray.rs` at
//! the workspace root pins the message).

use std::sync::{Arc, Mutex};

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn_ndarray::NdArray;
use hooks_core::{Ctx, Site};

type Ad = Autodiff<NdArray>;

fn values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn forward_stages_run_fwd_then_fwd2() {
    let mut site = Site::<NdArray, 1>::default();
    // Appended in the "wrong" order on purpose: the stage decides, not the
    // order of the calls.
    site.append_fwd2(|x: Tensor<NdArray, 1>, _: &Ctx| x * 10.0);
    site.append_fwd(|x: Tensor<NdArray, 1>, _: &Ctx| x + 1.0);
    let x = Tensor::from_floats([1.0, 2.0], &Default::default());
    // (x + 1) * 10, not x * 10 + 1.
    assert_eq!(values(site.call(x, &Ctx::root())), [20.0, 30.0]);
}

#[test]
fn the_gradient_stage_sits_between_fwd_and_fwd2() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut site = Site::<Ad, 1>::default();
    {
        let o = order.clone();
        site.fwd.append(move |x: Tensor<Ad, 1>, _: &Ctx| {
            o.lock().unwrap().push("fwd");
            x + 1.0
        });
    }
    {
        let o = order.clone();
        site.append_bwd(move |g: Tensor<NdArray, 1>, _: &Ctx| {
            o.lock().unwrap().push("bwd");
            // The gradient of the value as `fwd2` received it: fwd2
            // multiplies by 10, so the sum loss sends back 10.
            assert_eq!(values(g.clone()), [10.0, 10.0]);
            g
        });
    }
    {
        let o = order.clone();
        site.fwd2.append(move |x: Tensor<Ad, 1>, _: &Ctx| {
            o.lock().unwrap().push("fwd2");
            x * 10.0
        });
    }

    let x = Tensor::<Ad, 1>::from_floats([1.0, 2.0], &Default::default()).require_grad();
    let y = site.call(x.clone(), &Ctx::root());
    assert_eq!(values(y.clone()), [20.0, 30.0]);
    assert_eq!(*order.lock().unwrap(), ["fwd", "fwd2"]);

    let grads = y.sum().backward();
    assert_eq!(*order.lock().unwrap(), ["fwd", "fwd2", "bwd"]);
    assert_eq!(values(x.grad(&grads).unwrap()), [10.0, 10.0]);
}

#[test]
fn is_empty_looks_at_every_stage() {
    let mut site = Site::<Ad, 2>::default();
    assert!(site.is_empty());
    site.append_bwd(|g: Tensor<NdArray, 2>, _: &Ctx| g);
    assert!(!site.is_empty());
    assert!(site.fwd.is_empty() && site.fwd2.is_empty());
    assert_eq!(site.bwd.len(), 1);
}

#[test]
fn an_empty_site_returns_its_input() {
    let site = Site::<NdArray, 2>::default();
    let x = Tensor::<NdArray, 2>::from_floats([[1.0, -2.0]], &Default::default());
    assert_eq!(values(site.call(x, &Ctx::at_layer(0))), [1.0, -2.0]);
}

#[test]
fn gradient_hooks_do_nothing_in_the_forward_pass() {
    let mut site = Site::<Ad, 1>::default();
    site.append_bwd(|g: Tensor<NdArray, 1>, _: &Ctx| g * 100.0);
    let x = Tensor::<Ad, 1>::from_floats([3.0, 4.0], &Default::default());
    // Not requiring grad: the stage is an identity (and attaches nothing).
    let y = site.call(x, &Ctx::root());
    assert_eq!(values(y), [3.0, 4.0]);
}
