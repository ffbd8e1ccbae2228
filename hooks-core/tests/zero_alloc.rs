//! Zero-cost sanity (not timing): calling sites with no hooks allocates
//! nothing. A counting global allocator counts this thread's allocations
//! while the calls run.

use crate::common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use burn::tensor::Tensor;
use burn_ndarray::NdArray;
use common::TinyHooks;
use hooks_core::{Ctx, HookTree, Site};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are
// const-initialised thread-locals of `Cell`s, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread by `f`.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (usize, R) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let r = f();
    COUNTING.with(|on| on.set(false));
    (ALLOCATIONS.with(Cell::get), r)
}

#[test]
fn the_counter_counts() {
    let (n, v) = allocations_in(|| vec![1u8; 16]);
    assert_eq!(n, 1);
    drop(v);
}

#[test]
fn a_site_with_a_hook_is_seen_to_allocate() {
    // The control: the counter sees tensor work done inside a hook.
    let mut site = Site::<NdArray, 3>::default();
    site.fwd.append(|x: Tensor<NdArray, 3>, _: &Ctx| x + 1.0);
    let x = Tensor::<NdArray, 3>::ones([1, 4, 8], &Default::default());
    let (n, _) = allocations_in(|| site.call(x, &Ctx::root()));
    assert!(n > 0);
}

#[test]
fn an_empty_site_allocates_nothing() {
    let site = Site::<NdArray, 3>::default();
    let x = Tensor::<NdArray, 3>::ones([1, 4, 8], &Default::default());
    let ctx = Ctx::at_layer(0);
    let (n, x) = allocations_in(|| {
        let mut x = x;
        for _ in 0..1000 {
            x = site.call(x, &ctx);
        }
        x
    });
    assert_eq!(n, 0);
    assert_eq!(x.dims(), [1, 4, 8]);
}

#[test]
fn an_empty_tree_allocates_nothing() {
    // Bindings alone do not make a site non-empty: still no allocation.
    let mut hooks = TinyHooks::<NdArray>::default();
    HookTree::bind(&mut hooks, "layer", 0).unwrap();
    let device = Default::default();
    let (x3, x4, x2) = (
        Tensor::<NdArray, 3>::ones([1, 2, 4], &device),
        Tensor::<NdArray, 4>::ones([1, 2, 2, 2], &device),
        Tensor::<NdArray, 2>::ones([2, 4], &device),
    );
    let (n, _) = allocations_in(|| {
        let (mut x3, mut x4, mut x2) = (x3, x4, x2);
        for layer in 0..100 {
            let ctx = Ctx::at_layer(layer);
            x3 = hooks.resid.post_emb.call(x3, &Ctx::root());
            x4 = hooks.attn.q.call(x4, &ctx);
            x4 = hooks.attn.qk_probs.call(x4, &ctx);
            x3 = hooks.resid.torso.post_attn.call(x3, &ctx);
            x3 = hooks.mlp.pre_act.call(x3, &ctx);
            x3 = hooks.mlp.post_act.call(x3, &ctx);
            x3 = hooks.resid.torso.post_mlp.call(x3, &ctx);
            x2 = hooks.logits.call(x2, &Ctx::root());
        }
        (x3, x4, x2)
    });
    assert_eq!(n, 0);
}

#[test]
fn naming_the_site_allocates_nothing() {
    // What a model does at every call: `ctx.with_site(path)` copies the
    // context; a hook reading `ctx.site()` gets a borrowed `&'static str`.
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.attn.q.fwd.append(|x: Tensor<NdArray, 4>, ctx: &Ctx| {
        assert_eq!(ctx.site(), Some("attn.q"));
        x
    });
    let device = Default::default();
    let (x3, x4) = (
        Tensor::<NdArray, 3>::ones([1, 2, 4], &device),
        Tensor::<NdArray, 4>::ones([1, 2, 2, 2], &device),
    );
    let (n, _) = allocations_in(|| {
        let (mut x3, mut x4) = (x3, x4);
        for layer in 0..100 {
            let ctx = Ctx::at_layer(layer);
            x3 = hooks
                .resid
                .post_emb
                .call(x3, &Ctx::root().with_site("resid.post_emb"));
            x4 = hooks.attn.q.call(x4, &ctx.with_site("attn.q"));
            x3 = hooks
                .resid
                .torso
                .post_mlp
                .call(x3, &ctx.with_site("resid.torso.post_mlp"));
        }
        (x3, x4)
    });
    assert_eq!(n, 0);
    assert_eq!(hooks.hook_calls()[0].calls, 100);
}
