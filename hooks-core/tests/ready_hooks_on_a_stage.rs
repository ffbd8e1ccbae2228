//! The ready hooks go on one typed stage directly, like a closure
//! (`hooks.attn.q.fwd.append(Zero)`), a user's rank-generic hook through
//! `for_rank`, and gradient hooks name their tensor `GradTensor<B, D>`.
//! `Record` on a stage is told its key; without one it reports a fault.

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_ndarray::NdArray;
use hooks_core::{
    AnyRankHook, Ctx, Detach, GradTensor, HookFaults, HookTree, Record, Recorder, Scale, Site, Zero,
};

use crate::common::TinyHooks;

type Ad = Autodiff<NdArray>;

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn q_input<B: Backend>() -> Tensor<B, 4> {
    Tensor::from_data(
        TensorData::new(vec![1.0f32, -2.0, 3.0, -4.0], [1, 2, 1, 2]),
        &Default::default(),
    )
}

#[test]
fn zero_and_scale_go_on_a_typed_stage() {
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.attn.q.fwd.append(Scale(3.0));
    hooks.attn.q.fwd2.append(Zero);
    assert!(!hooks.is_empty());

    let mut only_scale = TinyHooks::<NdArray>::default();
    only_scale.attn.q.fwd.append(Scale(3.0));
    let scaled = only_scale.attn.q.call(q_input(), &Ctx::root());
    assert_eq!(values(scaled), [3.0, -6.0, 9.0, -12.0]);

    let zeroed = hooks.attn.q.call(q_input(), &Ctx::root());
    assert_eq!(values(zeroed), [0.0; 4]);
}

/// A user's rank-generic hook: clamps to ±limit.
struct Clamp(f32);

impl<B: Backend> AnyRankHook<B> for Clamp {
    fn call<const D: usize>(&self, x: Tensor<B, D>, _: &Ctx<'_>) -> Tensor<B, D> {
        x.clamp(-self.0, self.0)
    }
}

#[test]
fn a_users_rank_generic_hook_goes_on_a_typed_stage_with_for_rank() {
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.attn.q.fwd.append(Clamp(2.5).for_rank());
    let y = hooks.attn.q.call(q_input(), &Ctx::root());
    assert_eq!(values(y), [1.0, -2.0, 2.5, -2.5]);
}

#[test]
fn scale_on_the_gradient_stage_and_grad_tensor_in_a_closure() {
    let mut site = Site::<Ad, 1>::default();
    site.append_bwd(Scale(0.5))
        .append_bwd(|g: GradTensor<Ad, 1>, _: &Ctx| g + 1.0);
    let x = Tensor::<Ad, 1>::from_floats([1.0, 2.0, 3.0], &Default::default()).require_grad();
    let grads = (site.call(x.clone(), &Ctx::root()) * 4.0).sum().backward();
    // d/dx of 4·x is 4; halved, then plus one.
    assert_eq!(values(x.grad(&grads).unwrap()), [3.0, 3.0, 3.0]);
}

#[test]
fn detach_on_a_typed_stage_stops_the_gradient() {
    let mut site = Site::<Ad, 1>::default();
    site.fwd.append(Detach);
    let x = Tensor::<Ad, 1>::from_floats([1.0, 2.0], &Default::default()).require_grad();
    let y = site.call(x.clone(), &Ctx::root()) * 2.0 + x.clone();
    let grads = y.sum().backward();
    // Only the path around the site carries gradient.
    assert_eq!(values(x.grad(&grads).unwrap()), [1.0, 1.0]);
}

#[test]
fn record_on_a_stage_records_under_the_key_it_is_given() {
    let rec = Recorder::<NdArray>::new();
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.attn.q.fwd.append(Record::into(&rec).under("attn.q"));
    hooks.attn.q.call(q_input(), &Ctx::at_layer(2));
    assert_eq!(rec.keys(), ["layers.2.attn.q"]);
    let t = rec.get::<4>("attn.q", Some(2)).unwrap();
    assert_eq!(values(t), [1.0, -2.0, 3.0, -4.0]);
}

#[test]
fn record_on_a_stage_without_a_key_is_a_fault_not_a_silent_key() {
    let rec = Recorder::<NdArray>::new();
    let mut site = Site::<NdArray, 4>::default();
    site.fwd.append(Record::into(&rec));
    let mut faults = HookFaults::new();
    let root = Ctx::root();
    let y = site.call(q_input(), &root.with_faults(&faults));
    assert_eq!(values(y), [1.0, -2.0, 3.0, -4.0], "the value passes on");
    assert!(rec.keys().is_empty());
    let fault = faults.take().expect("a fault was reported");
    assert!(fault.message.contains("under("), "{}", fault.message);
}
