//! The bundled model (`checkpoints/induction-2l/`) holds the induction
//! circuit of Olsson et al. (2022), measured through hooks on the rows it is
//! evaluated on (`RepeatedBatch`): a previous-token head in layer 0, an
//! induction head in layer 1, and a repeat that depends on the induction head.

use burn::tensor::Tensor;
use burn_hooks::experiments::{ActivationCache, CacheSpec, ablate, induction_scores};
use burn_hooks::train::RepeatedBatch;
use hooks_core::path;
use hooks_model::backend::Cpu;
use hooks_model::sample::SplitMix64;
use hooks_model::{Gpt2, TransformerHooks};

type B = Cpu;
const ALL: std::ops::Range<usize> = 0..usize::MAX;

fn model() -> Gpt2<B> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/induction-2l");
    Gpt2::load(dir, &Default::default()).expect("the bundled checkpoint loads")
}

/// Mean attention from each position p ≥ 1 to p − 1, per head, of `probs`
/// `[B,S,K,H]`.
fn previous_token_scores(probs: &Tensor<B, 4>) -> Vec<f32> {
    let [b, s, k, h] = probs.dims();
    let values: Vec<f32> = probs.clone().into_data().to_vec().expect("f32");
    (0..h)
        .map(|head| {
            let sum: f32 = (0..b)
                .flat_map(|row| (1..s).map(move |p| (row, p)))
                .map(|(row, p)| values[((row * s + p) * k + p - 1) * h + head])
                .sum();
            sum / (b * (s - 1)) as f32
        })
        .collect()
}

fn argmax(v: &[f32]) -> (usize, f32) {
    v.iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("one head at least")
}

#[test]
fn bundled_model_has_a_previous_token_head_and_an_induction_head_the_repeat_needs() {
    let model = model();
    let c = model.config.clone();
    let task =
        RepeatedBatch::random(&mut SplitMix64(99), 64, c.n_positions, 6, c.vocab_size).unwrap();
    let probs_path = path!(TransformerHooks<B>: attn.qk_probs);
    let mut hooks = TransformerHooks::<B>::default();
    let cache = ActivationCache::install(&mut hooks, &CacheSpec::new().site(&probs_path)).unwrap();
    let (first, repeat) = task.copy_losses(model.forward(&task.batch, &hooks).unwrap());
    let ln_v = (c.vocab_size as f32).ln();
    // The values of the checkpoint (`check_induction.py` prints the same
    // with transformers): the repeat is copied, the first copy is chance.
    assert!(repeat <= 0.3, "loss on the repeat {repeat}");
    assert!((repeat - 0.206).abs() < 0.01, "loss on the repeat {repeat}");
    assert!(
        (first - 4.887).abs() < 0.01,
        "loss on the first copy {first}"
    );
    assert!(
        (first - ln_v).abs() < 0.25,
        "loss on the first copy {first}, ln V {ln_v}"
    );

    let probs = |layer| cache.at(&probs_path, Some(layer)).expect("recorded");
    let (prev_head, prev) = argmax(&previous_token_scores(&probs(0)));
    assert!(prev >= 0.6, "best previous-token score in layer 0: {prev}");
    assert!((prev - 0.712).abs() < 0.005, "previous-token score {prev}");
    let (ind_layer, ind_head, ind) = (1..c.n_layer)
        .flat_map(|layer| {
            let (head, score) = argmax(&induction_scores(&probs(layer), &task));
            [(layer, head, score)]
        })
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .unwrap();
    assert!(ind >= 0.6, "best induction score in layers ≥ 1: {ind}");
    assert!((ind - 0.883).abs() < 0.005, "induction score {ind}");

    // Zeroing the induction head's slice of attn.v_out [B,S,H,d] breaks the
    // repeat and leaves the first copy where it was.
    let mut ablated = TransformerHooks::<B>::default();
    let v_out = path!(TransformerHooks<B>: attn.v_out);
    ablate(
        &mut ablated,
        &v_out,
        Some(ind_layer),
        [ALL, ALL, ind_head..ind_head + 1, ALL],
        0.0,
    );
    let (first_ab, repeat_ab) = task.copy_losses(model.forward(&task.batch, &ablated).unwrap());
    assert!(
        repeat_ab - repeat >= 3.0,
        "head {ind_layer}.{ind_head} ablated: repeat {repeat} -> {repeat_ab}"
    );
    assert!(
        (repeat_ab - 5.229).abs() < 0.01,
        "ablated repeat {repeat_ab}"
    );
    assert!(
        (first_ab - first).abs() < 0.2,
        "head {ind_layer}.{ind_head} ablated: first copy {first} -> {first_ab}"
    );
    // The heads found are the ones the quickstart names.
    assert_eq!((prev_head, ind_layer, ind_head), (0, 1, 0));
}
