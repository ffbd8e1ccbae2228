//! One experiment, written once against [`HookedModel`], run on a GPT-2 and
//! on a Llama-family checkpoint: the derive's promise that any model with a
//! hook tree gets the same tools.
//!
//! ```text
//! cargo run --release --example any_model                      # bundled GPT-2 + the Llama fixture
//! cargo run --release --example any_model -- path/to/llama-dir # any llama / qwen2 / mistral folder
//! ```
//!
//! The experiment ([`head_report`]) runs rows of random tokens holding a run
//! repeated twice and, through hooks only (string paths that both families'
//! trees have, so nothing in it names a model type):
//! - records `attn.qk_probs` at every layer and scores each head's induction
//!   attention (from a token in the repeat to the token after its earlier
//!   occurrence);
//! - zeroes each head's slice of `attn.v_out` in turn and measures how much
//!   the loss on the repeat rises;
//! - checks that every hook it appended fired (`require_all_fired`).
//!
//! The bundled GPT-2 was trained on such rows, so the repeat is predictable
//! and its heads matter (the induction head 1.0, induction 0.908, and the
//! previous-token head 0.0 it reads each raise the repeat loss by about 4.6
//! nats when ablated, layer 0's second head by 1.0; head 1.1 is switched
//! off); the Llama fixture has random weights, so its
//! numbers only show that the same code runs (its loss is about ln V on both
//! copies).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn_hooks::experiments::{Ablate, induction_scores};
use burn_hooks::model::backend::Cpu;
use burn_hooks::model::sample::SplitMix64;
use burn_hooks::model::{Gpt2, HookedModel, Llama, ModelError};
use burn_hooks::train::RepeatedBatch;
use burn_hooks::{FwdStage, Hook, HookTree, Hooks, Record, Recorder};

/// What [`head_report`] finds for one head.
struct HeadRow {
    layer: usize,
    head: usize,
    induction: f32,
    loss_rise: f32,
}

/// Loss on the predictable part of the repeat (the second copy after its
/// first token), the mean over rows.
fn repeat_loss<B: Backend, M: HookedModel<B>>(
    model: &M,
    rows: &RepeatedBatch,
    hooks: &M::Hooks,
) -> Result<f32, ModelError> {
    let logits = model.forward(&rows.batch, hooks)?;
    Ok(rows.copy_losses(logits).1)
}

/// The experiment, generic over the model: induction attention and the loss
/// rise when each head is ablated, sorted by the rise.
fn head_report<B: Backend, M: HookedModel<B>>(
    model: &M,
    rows: &RepeatedBatch,
) -> Result<(f32, Vec<HeadRow>), Box<dyn Error>> {
    let dims = model.dims();
    let probs = Recorder::<B>::new();
    let mut hooks = M::Hooks::default();
    hooks.append_to_path("attn.qk_probs.fwd", Record::into(&probs))?;
    let clean = repeat_loss(model, rows, &hooks)?;
    hooks.require_all_fired()?;

    let mut table = Vec::new();
    for layer in 0..dims.n_layer {
        let p = probs
            .get::<4>("attn.qk_probs", Some(layer))
            .ok_or("attn.qk_probs was not recorded")?;
        let induction = induction_scores(&p, rows);
        for (head, &score) in induction.iter().enumerate() {
            let zero_head = Ablate {
                ranges: [0..usize::MAX, 0..usize::MAX, head..head + 1, 0..usize::MAX],
                value: 0.0,
            };
            let mut ablated = M::Hooks::default();
            ablated.append_typed_to_path::<4>(
                "attn.v_out.fwd",
                Hooks::at_layers(layer).with(Arc::new(zero_head) as Hook<_>),
            )?;
            let loss = repeat_loss(model, rows, &ablated)?;
            ablated.require_all_fired()?;
            table.push(HeadRow {
                layer,
                head,
                induction: score,
                loss_rise: loss - clean,
            });
        }
    }
    table.sort_by(|a, b| b.loss_rise.total_cmp(&a.loss_rise));
    Ok((clean, table))
}

/// Runs [`head_report`] on `model` and prints its top rows.
fn report<B: Backend, M: HookedModel<B>>(name: &str, model: &M) -> Result<(), Box<dyn Error>> {
    let dims = model.dims();
    let len = dims.n_ctx.min(32);
    let rows = RepeatedBatch::random(&mut SplitMix64(7), 8, len, len / 4, dims.vocab_size)?;
    let (clean, table) = head_report(model, &rows)?;
    println!(
        "{name} ({}: {} layers, {} heads, vocabulary {}): repeat loss {clean:.3} nats \
         (ln V = {:.2})",
        model.family(),
        dims.n_layer,
        dims.n_head,
        dims.vocab_size,
        (dims.vocab_size as f32).ln()
    );
    println!("  layer head  induction  loss rise when ablated");
    for row in table.iter().take(4) {
        println!(
            "  {:>5} {:>4}  {:>9.3}  {:>+10.3}",
            row.layer, row.head, row.induction, row.loss_rise
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    burn_hooks::model::alloc::retain_freed_memory();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let llama_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tests/fixtures/llama/llama"));
    let device = Default::default();

    let gpt2 = Gpt2::<Cpu>::load(root.join("checkpoints/induction-2l"), &device)?;
    report("bundled GPT-2", &gpt2)?;
    let llama = Llama::<Cpu>::load(&llama_dir, &device)?;
    report(&llama_dir.display().to_string(), &llama)?;
    // Both trees also take the same rank-generic hooks everywhere.
    let mut everything = <Llama<Cpu> as HookedModel<Cpu>>::Hooks::default();
    let all = Recorder::<Cpu>::new();
    everything.append_all(FwdStage::Fwd, Record::into(&all));
    let rows = RepeatedBatch::random(&mut SplitMix64(1), 1, 8, 2, llama.dims().vocab_size)?;
    llama.forward(&rows.batch, &everything)?;
    println!(
        "recording every site of the Llama: {} tensors",
        all.keys().len()
    );
    Ok(())
}
