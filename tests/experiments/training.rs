//! Hooks during training (`train_step` with AdamW on `Autodiff<NdArray>`):
//! gradient hooks freeze what they cut off, steering changes the loss,
//! statistics hooks fire once per step, and 50 steps with every site
//! recorded keep memory and graph nodes bounded.

use crate::common;

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::backend::Autodiff;
use burn::optim::AdamWConfig;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use burn_hooks::experiments::add_at;
use burn_hooks::train::{RepeatedBatch, next_token_loss, train_step};
use common::{host, max_abs_diff};
use hooks_core::{Ctx, FwdStage, HookTree, Record, Recorder, Value, path};
use hooks_model::backend::NdArray;
use hooks_model::sample::SplitMix64;
use hooks_model::{Gpt2, Gpt2Config, TokenBatch, TransformerHooks};

type AD = Autodiff<NdArray>;

const VOCAB: usize = 11;
const LEN: usize = 8;

/// A 2-layer model, D 16, 2 heads, 8 positions, vocabulary 11.
fn tiny() -> Gpt2<AD> {
    Gpt2::init(&Gpt2Config::new(2, 16, 2, LEN, VOCAB), &Default::default()).unwrap()
}

/// `n` batches of 4 repeated rows, the same for every run.
fn batches(n: usize) -> Vec<TokenBatch> {
    let mut rng = SplitMix64(7);
    (0..n)
        .map(|_| {
            RepeatedBatch::random(&mut rng, 4, LEN, 2, VOCAB)
                .unwrap()
                .batch
        })
        .collect()
}

#[test]
fn zeroing_the_embedding_gradient_freezes_the_embeddings() {
    let mut model = tiny();
    let (wte, wpe) = (host(model.wte.val()), host(model.wpe.val()));
    let (c_attn, unembed) = (
        host(model.blocks[0].attn.c_attn.weight.val()),
        host(model.unembed.val()),
    );
    let mut hooks = TransformerHooks::<AD>::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    hooks
        .resid
        .post_emb
        .append_bwd(move |g: Tensor<NdArray, 3>, _: &Ctx<'_>| {
            c.fetch_add(1, Ordering::Relaxed);
            g.zeros_like()
        });
    // No weight decay: AdamW would otherwise shrink every weight, gradient or not.
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    for batch in batches(3) {
        let (next, loss) = train_step(model, &mut optim, &batch, &hooks, 1e-2).unwrap();
        assert!(loss.is_finite());
        model = next;
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        3,
        "one gradient call per step"
    );
    assert_eq!(host(model.wte.val()), wte, "wte unchanged");
    assert_eq!(host(model.wpe.val()), wpe, "wpe unchanged");
    assert!(max_abs_diff(&host(model.blocks[0].attn.c_attn.weight.val()), &c_attn) > 1e-3);
    assert!(max_abs_diff(&host(model.unembed.val()), &unembed) > 1e-3);

    // Without the hook the same steps move the embeddings.
    let mut free = tiny();
    let wte = host(free.wte.val());
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    for batch in batches(3) {
        free = train_step(free, &mut optim, &batch, &TransformerHooks::default(), 1e-2)
            .unwrap()
            .0;
    }
    assert!(max_abs_diff(&host(free.wte.val()), &wte) > 1e-3);
}

#[test]
fn a_steering_vector_during_training_changes_the_losses() {
    let start = tiny();
    let post_attn = path!(TransformerHooks<AD>: resid.torso.post_attn);
    let mut steered = TransformerHooks::<AD>::default();
    let vector: Vec<f32> = (0..16)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    add_at(
        &mut steered,
        &post_attn,
        Some(0),
        Tensor::from_data(TensorData::new(vector, [16]), &Default::default()),
    );

    let run = |hooks: &TransformerHooks<AD>| {
        let mut model = start.clone();
        let mut optim = AdamWConfig::new().init();
        let mut losses = Vec::new();
        for batch in batches(4) {
            let (next, loss) = train_step(model, &mut optim, &batch, hooks, 1e-2).unwrap();
            model = next;
            losses.push(loss);
        }
        (model, losses)
    };
    let (_, plain) = run(&TransformerHooks::default());
    let (_, plain_again) = run(&TransformerHooks::default());
    assert_eq!(plain, plain_again, "training is deterministic");
    let (model, with_vector) = run(&steered);
    for (step, (a, b)) in plain.iter().zip(&with_vector).enumerate() {
        assert!((a - b).abs() > 1e-4, "step {step}: {a} vs {b}");
    }

    // The hook is still installed after the steps, and still steers.
    assert_eq!(steered.resid.torso.post_attn.fwd.len(), 1);
    assert_eq!(steered.render().matches("AddVector").count(), 1);
    let batch = &batches(1)[0];
    let steered_logits = host(model.forward(batch, &steered).unwrap());
    let unsteered = host(model.forward(batch, &TransformerHooks::default()).unwrap());
    assert!(max_abs_diff(&steered_logits, &unsteered) > 1e-3);
}

#[test]
fn activation_statistics_are_gathered_once_per_step() {
    let mut model = tiny();
    let stats = Arc::new(Mutex::new(Vec::<f32>::new()));
    let s = stats.clone();
    let mut hooks = TransformerHooks::<AD>::default();
    hooks
        .resid
        .torso
        .post_mlp
        .fwd
        .append(move |x: Tensor<AD, 3>, ctx: &Ctx<'_>| {
            if ctx.layer() == Some(1) {
                s.lock()
                    .unwrap()
                    .push(x.clone().mean().into_scalar().elem::<f32>());
            }
            x
        });
    let data = batches(5);
    // What the statistic should be at step 0: the mean of the initial model's
    // layer-1 `post_mlp` on the first batch.
    let recorder = Recorder::new();
    let mut probe = TransformerHooks::<AD>::default();
    probe
        .append_to_path("resid.torso.post_mlp.fwd", Record::into(&recorder))
        .unwrap();
    model.forward(&data[0], &probe).unwrap();
    let expected_first = recorder
        .get::<3>("resid.torso.post_mlp", Some(1))
        .unwrap()
        .mean()
        .into_scalar()
        .elem::<f32>();

    let mut optim = AdamWConfig::new().init();
    for (step, batch) in data.iter().enumerate() {
        model = train_step(model, &mut optim, batch, &hooks, 1e-2)
            .unwrap()
            .0;
        assert_eq!(stats.lock().unwrap().len(), step + 1);
    }
    let stats = stats.lock().unwrap();
    assert_eq!(stats.len(), 5);
    assert_eq!(stats[0], expected_first);
    assert!(stats.iter().all(|m| m.is_finite()));
    assert!(
        stats.windows(2).any(|w| w[0] != w[1]),
        "the model changes: {stats:?}"
    );
}

#[test]
fn fifty_steps_with_every_site_recorded_stay_bounded() {
    let mut model = tiny();
    let mut hooks = TransformerHooks::<AD>::default();
    let n_sites = hooks.sites().len();
    assert_eq!(n_sites, 27);
    let recorder = Recorder::new();
    hooks.append_all(FwdStage::Fwd, Record::into(&recorder));

    // A gradient hook that counts its calls, and a value bound on its stage:
    // every forward pass snapshots the binding into the graph node of the
    // gradient op, so the value's strong count is the number of live nodes.
    let counter = Arc::new(AtomicUsize::new(0));
    let c = counter.clone();
    hooks
        .resid
        .post_emb
        .append_bwd(move |g: Tensor<NdArray, 3>, _: &Ctx<'_>| {
            c.fetch_add(1, Ordering::Relaxed);
            g
        });
    let probe: Arc<dyn Any + Send + Sync> = Arc::new(());
    hooks
        .resid
        .post_emb
        .bwd
        .bind(
            "probe",
            Value::Any {
                name: "probe".into(),
                value: probe.clone(),
            },
        )
        .unwrap();
    let baseline = Arc::strong_count(&probe);
    let counter_refs = Arc::strong_count(&counter);

    let mut optim = AdamWConfig::new().init();
    let mut rng = SplitMix64(99);
    let mut losses = Vec::new();
    for step in 0..50 {
        let batch = RepeatedBatch::random(&mut rng, 4, LEN, 2, VOCAB)
            .unwrap()
            .batch;
        let (next, loss) = train_step(model, &mut optim, &batch, &hooks, 1e-2).unwrap();
        model = next;
        losses.push(loss);
        // 21 sites per block x 2 blocks + 6 outside (the softmax denominator
        // is called because it is hooked): one tensor each, replaced per step.
        assert_eq!(recorder.len(), 21 * 2 + 6, "step {step}");
        assert_eq!(counter.load(Ordering::Relaxed), step + 1, "step {step}");
        assert_eq!(Arc::strong_count(&counter), counter_refs, "step {step}");
        assert_eq!(
            Arc::strong_count(&probe),
            baseline,
            "step {step}: a graph node of an earlier step is still alive"
        );
    }
    assert!(losses.iter().all(|l| l.is_finite()));
    // A forward pass without backward holds exactly one node, freed with it.
    let batch = &batches(1)[0];
    let logits = model.forward(batch, &hooks).unwrap();
    let loss = next_token_loss(logits, batch, 0);
    assert_eq!(Arc::strong_count(&probe), baseline + 1);
    loss.backward();
    assert_eq!(Arc::strong_count(&probe), baseline);
}
