//! Attribution of one prediction to attention heads by activation × gradient.
//!
//! ```text
//! cargo run --release --example attribution
//! ```
//! On the bundled induction model, takes one repeated sequence and the
//! logit of the correct token at the last prediction of the repeat. The
//! gradient of that logit is recorded at `attn.v_out` (each head's output,
//! before the heads are merged); per head, Σ activation × gradient is the
//! first-order estimate of how much the logit would drop without that head.
//! Output with the bundled checkpoint (the numbers change if it is retrained):
//!
//! ```text
//! predicting token 61 at position 48 (logit 9.143, probability 0.980)
//! act × grad per head (attn.v_out):
//!           head 0  head 1
//! layer 0:  -4.304   1.852
//! layer 1:   1.006   0.000
//! ```

use std::error::Error;

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn_hooks::experiments::{CacheSpec, act_times_grad};
use burn_hooks::model::backend::CpuAutodiff;
use burn_hooks::model::sample::SplitMix64;
use burn_hooks::model::{Gpt2, TransformerHooks};
use burn_hooks::train::RepeatedBatch;

fn main() -> Result<(), Box<dyn Error>> {
    let checkpoint =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/induction-2l");
    let model = Gpt2::<CpuAutodiff>::load(checkpoint, &Default::default())?;
    let c = model.config.clone();
    let task = RepeatedBatch::random(&mut SplitMix64(3), 1, c.n_positions, 6, c.vocab_size)?;
    let row = &task.batch.rows()[0];
    // The prediction made at the second-to-last position: the last token.
    let pos = task.second_copy(0).end - 2;
    let target = row[pos + 1] as usize;

    let logits = model.forward(&task.batch, &TransformerHooks::default())?;
    let probs = softmax(
        logits.clone().slice([0..1, pos..pos + 1, 0..c.vocab_size]),
        2,
    );
    let logit = logits
        .slice([0..1, pos..pos + 1, target..target + 1])
        .into_scalar();
    let p = probs.slice([0..1, 0..1, target..target + 1]).into_scalar();
    println!("predicting token {target} at position {pos} (logit {logit:.3}, probability {p:.3})");

    let metric = move |logits: Tensor<CpuAutodiff, 3>| {
        logits
            .slice([0..1, pos..pos + 1, target..target + 1])
            .reshape([1])
    };
    let spec = CacheSpec::new().glob("attn.v_out");
    let rows = act_times_grad(
        &model,
        &task.batch,
        TransformerHooks::default(),
        &spec,
        metric,
    )?;

    println!("act × grad per head (attn.v_out):");
    print!("        ");
    (0..c.n_head).for_each(|h| print!("  head {h}"));
    println!();
    for layer in 0..c.n_layer {
        let a = rows
            .iter()
            .find(|a| a.key == format!("layers.{layer}.attn.v_out"))
            .expect("every layer reaches the logit");
        // act_x_grad is [1, S, H, d] row-major: sum over positions and d per head.
        let d_head = c.d_head();
        let mut per_head = vec![0f32; c.n_head];
        for (i, x) in a.act_x_grad.iter().enumerate() {
            per_head[(i / d_head) % c.n_head] += x;
        }
        print!("layer {layer}:");
        per_head.iter().for_each(|x| print!(" {x:7.3}"));
        println!();
    }
    Ok(())
}
