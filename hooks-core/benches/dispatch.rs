//! What calling a hook site costs, on a small tensor ([1, 4, 8] on NdArray):
//! no hooks, one read-only hook, ten read-only hooks, and a baseline that
//! moves the tensor through the same loop without calling the site.
//!
//! `cargo bench -p hooks-core --bench dispatch -- --warm-up-time 1 --measurement-time 3`
//! (results in BENCHMARKS.md).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::Tensor;
use burn_ndarray::NdArray;
use criterion::{Criterion, criterion_group, criterion_main};
use hooks_core::{Ctx, FwdStage, HookCollection, HookTree, Record, Recorder, Site};

type T3 = Tensor<NdArray, 3>;

fn site_with(n: usize, calls: &Arc<AtomicUsize>) -> Site<NdArray, 3> {
    let mut site = Site::default();
    for _ in 0..n {
        let calls = calls.clone();
        site.fwd.append(move |x: T3, _: &Ctx| {
            calls.fetch_add(1, Ordering::Relaxed);
            x
        });
    }
    site
}

fn dispatch(c: &mut Criterion) {
    let calls = Arc::new(AtomicUsize::new(0));
    let ctx = Ctx::at_layer(0);
    let mut group = c.benchmark_group("site_dispatch");

    // The tensor is moved in and out of the loop state so that no iteration
    // clones, allocates or frees it: what remains is the call itself.
    let mut slot = Some(T3::ones([1, 4, 8], &Default::default()));
    group.bench_function("baseline (no site call)", |b| {
        b.iter(|| {
            let x = slot.take().unwrap();
            slot = Some(black_box(black_box(x)));
        })
    });

    for (label, n) in [
        ("no hooks", 0),
        ("1 read-only hook", 1),
        ("10 read-only hooks", 10),
    ] {
        let site = site_with(n, &calls);
        group.bench_function(label, |b| {
            b.iter(|| {
                let x = slot.take().unwrap();
                slot = Some(black_box(site.call(black_box(x), black_box(&ctx))));
            })
        });
    }

    // What recording costs per site: a `Record` hook appended the way
    // `append_all` does (rank-generic, told its site name), storing into a
    // recorder that is cleared every 48 calls, as a tiny model's forward
    // pass would (2 layers × 24 sites).
    let recorder = Recorder::<NdArray>::new();
    let mut tree = SiteTree::default();
    tree.append_all(FwdStage::Fwd, Record::into(&recorder));
    let mut n = 0usize;
    group.bench_function("Record hook", |b| {
        b.iter(|| {
            let x = slot.take().unwrap();
            slot = Some(black_box(tree.x.call(black_box(x), black_box(&ctx))));
            n += 1;
            if n.is_multiple_of(48) {
                recorder.clear();
            }
        })
    });
    group.finish();
    assert!(calls.load(Ordering::Relaxed) > 0);
    assert!(!recorder.is_empty() || n.is_multiple_of(48));
}

/// A one-site tree, so `append_all` names the site as it does in a model.
#[derive(HookCollection, Clone, Default)]
struct SiteTree {
    x: Site<NdArray, 3>,
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
