//! The forward pass with and without hooks, on the Flex CPU backend, random
//! weights: the cases of `examples/bench_forward.rs` (which
//! `bench/compare_pytorch.py` runs against TransformerLens) at criterion's
//! budgets.
//!
//! - `forward/tiny_1x16`: 2 layers, width 64, 4 heads, vocabulary 512, 1 × 16
//!   tokens: `forward_unhooked` (site calls compiled out), `forward` with an
//!   empty tree, recording every site, and forward + backward of
//!   `logits.sum()` on `CpuAutodiff` without hooks and with a pass-through
//!   gradient hook at every site;
//! - `forward/small_1x128`: GPT-2 small's shape, 1 × 128 tokens, the three
//!   forward variants only (`sample_size(10)`).
//!
//! - `forward/ops_small_1x128`: diagnostics for BENCHMARKS.md's optimisation
//!   notes, at GPT-2 small's shapes: the model's `gelu_tanh` against two
//!   rewrites (`x*x*x` instead of `powi_scalar(3)`, and the sigmoid form),
//!   and the attention softmax over the key axis of the `[B,S,K,H]` site
//!   layout (how the model took it before) against the same softmax on the
//!   contiguous `[B,H,S,K]` tensor (how it takes it now).
//!
//! Like the `hooks` tool, the bench first asks glibc to keep freed memory
//! for reuse (`hooks_model::alloc`).
//!
//! `cargo bench -p hooks-model --bench forward -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use criterion::{Criterion, criterion_group};
use hooks_core::{AnyRankHook, Ctx, FwdStage, HookTree, Record, Recorder};
use hooks_model::backend::{Cpu, CpuAutodiff};
use hooks_model::{Gpt2, Gpt2Config, TokenBatch, TransformerHooks};

/// A gradient hook that counts its calls and passes the gradient on unchanged.
struct CountGrad(Arc<AtomicUsize>);

impl<B: Backend> AnyRankHook<B> for CountGrad {
    fn call<const D: usize>(&self, g: Tensor<B, D>, _: &Ctx<'_>) -> Tensor<B, D> {
        self.0.fetch_add(1, Ordering::Relaxed);
        g
    }
}

fn tokens(batch: usize, len: usize, vocab: usize) -> TokenBatch {
    let rows = (0..batch)
        .map(|b| {
            (0..len)
                .map(|t| ((b * 7919 + t * 104729) % vocab) as u32)
                .collect()
        })
        .collect();
    TokenBatch::new(rows).expect("equal rows")
}

/// Reading one value waits for the whole computation.
fn sync<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatElem {
    t.flatten::<1>(0, D - 1).slice(0..1).into_scalar()
}

fn forward_variants(
    c: &mut Criterion,
    name: &str,
    config: &Gpt2Config,
    input: &TokenBatch,
    sample_size: usize,
) {
    let device = Default::default();
    let model = Gpt2::<Cpu>::init(config, &device).expect("a valid config");
    let empty = TransformerHooks::<Cpu>::default();
    let recorder = Recorder::new();
    let mut recording = TransformerHooks::<Cpu>::default();
    recording.append_all(FwdStage::Fwd, Record::into(&recorder));

    let mut group = c.benchmark_group(format!("forward/{name}"));
    group.sample_size(sample_size);
    group.bench_function("forward_unhooked", |b| {
        b.iter(|| black_box(sync(model.forward_unhooked(input).unwrap())))
    });
    group.bench_function("forward, empty tree", |b| {
        b.iter(|| black_box(sync(model.forward(input, &empty).unwrap())))
    });
    group.bench_function("forward, recording every site", |b| {
        b.iter(|| {
            let v = sync(model.forward(input, &recording).unwrap());
            recorder.clear();
            black_box(v)
        })
    });
    group.finish();
}

fn grad_variants(c: &mut Criterion, name: &str, config: &Gpt2Config, input: &TokenBatch) {
    let device = Default::default();
    let model = Gpt2::<CpuAutodiff>::init(config, &device).expect("a valid config");
    let calls = Arc::new(AtomicUsize::new(0));
    let empty = TransformerHooks::<CpuAutodiff>::default();
    let mut hooked = TransformerHooks::<CpuAutodiff>::default();
    hooked.append_all_grad(CountGrad(calls.clone()));

    let mut group = c.benchmark_group(format!("forward/{name}"));
    for (label, hooks) in [
        ("forward + backward, no hooks", &empty),
        ("forward + backward, gradient hook at every site", &hooked),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| {
                let grads = model.forward(input, hooks).unwrap().sum().backward();
                black_box(sync(
                    model.wte.val().grad(&grads).expect("wte has a gradient"),
                ))
            })
        });
    }
    group.finish();
    assert!(calls.load(Ordering::Relaxed) > 0, "the gradient hooks ran");
}

/// `gelu_tanh` with `x*x*x` instead of `powi_scalar(3)` (Flex computes an
/// integer power of 3 with a scalar `powf` per element).
fn gelu_tanh_cube<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube * 0.044715) * SQRT_2_OVER_PI;
    x * (inner.tanh() + 1.0) * 0.5
}

/// The same function as `x * sigmoid(2 z)`, since `(1 + tanh z) / 2 = sigmoid(2 z)`.
fn gelu_sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4;
    let cube = x.clone() * x.clone() * x.clone();
    let z = (x.clone() + cube * 0.044715) * TWO_SQRT_2_OVER_PI;
    x * burn::tensor::activation::sigmoid(z)
}

fn ops(c: &mut Criterion) {
    let device = Default::default();
    let (b, s, h, d_mlp) = (1, 128, 12, 3072);
    let mut group = c.benchmark_group("forward/ops_small_1x128");
    group.sample_size(20);

    let x = Tensor::<Cpu, 3>::random(
        [b, s, d_mlp],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let reference = hooks_model::gpt2::layers::gelu_tanh(x.clone());
    for (name, f) in [
        (
            "gelu_tanh (model)",
            hooks_model::gpt2::layers::gelu_tanh::<Cpu, 3> as fn(Tensor<Cpu, 3>) -> Tensor<Cpu, 3>,
        ),
        ("gelu_tanh, x*x*x", gelu_tanh_cube::<Cpu, 3>),
        ("gelu_tanh, sigmoid form", gelu_sigmoid::<Cpu, 3>),
    ] {
        let diff = (f(x.clone()) - reference.clone()).abs().max().into_scalar();
        assert!(
            diff < 1e-4,
            "{name} differs from the model's gelu_tanh by {diff}"
        );
        group.bench_function(format!("{name} [1,128,3072]"), |bench| {
            bench.iter(|| black_box(sync(f(x.clone()))))
        });
    }

    // Attention logits [B,H,S,K], then the softmax as the model took it
    // before attention moved to [B,H,S,K] (over K in the [B,S,K,H] site
    // layout) and as it takes it now (over the last axis).
    let logits = Tensor::<Cpu, 4>::random(
        [b, h, s, s],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    group.bench_function("softmax over K of [B,S,K,H] (old layout)", |bench| {
        bench.iter(|| {
            let probs = burn::tensor::activation::softmax(logits.clone().permute([0, 2, 3, 1]), 2);
            black_box(sync(probs.permute([0, 3, 1, 2]).matmul(logits.clone())))
        })
    });
    group.bench_function("softmax over last axis of [B,H,S,K] (model)", |bench| {
        bench.iter(|| {
            let probs = burn::tensor::activation::softmax(logits.clone(), 3);
            black_box(sync(probs.matmul(logits.clone())))
        })
    });
    group.finish();
}

fn tiny(c: &mut Criterion) {
    let config = Gpt2Config::new(2, 64, 4, 64, 512);
    let input = tokens(1, 16, config.vocab_size);
    forward_variants(c, "tiny_1x16", &config, &input, 100);
    grad_variants(c, "tiny_1x16", &config, &input);
}

fn small(c: &mut Criterion) {
    let config = Gpt2Config::gpt2_small();
    let input = tokens(1, 128, config.vocab_size);
    forward_variants(c, "small_1x128", &config, &input, 10);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = tiny, small, ops
}

/// criterion's `criterion_main!`, after asking glibc to keep freed memory
/// as the `hooks` tool does (`hooks_model::alloc`).
fn main() {
    hooks_model::alloc::retain_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
