//! Activation patching on the bundled induction model: which activations
//! carry the information that makes the repeat predictable?
//!
//! ```text
//! cargo run --release --example patching
//! ```
//! The clean rows are a random prefix, a run `x`, then `x` again; in the
//! corrupted rows the first copy of `x` is replaced by other random tokens,
//! so induction has nothing to copy from. The metric is the mean
//! log-probability of the correct token on the repeat. For each site and
//! layer, the corrupted run is repeated with that one activation taken from
//! the clean run; `restored` is the fraction of the clean − corrupted gap
//! closed (1 = all of it). Output with the bundled checkpoint (the numbers
//! change if it is retrained):
//!
//! ```text
//! clean -0.184  corrupted -4.880
//! site                     layer    metric  restored
//! resid.post_emb               -    -0.184     1.000
//! resid.torso.delta_attn       0    -7.800    -0.622
//! resid.torso.delta_attn       1    -0.184     1.000
//! resid.torso.post_attn        0    -0.184     1.000
//! resid.torso.post_attn        1    -0.184     1.000
//! resid.torso.delta_mlp        0    -4.891    -0.002
//! resid.torso.delta_mlp        1    -1.179     0.788
//! resid.post_ln_f              -    -0.184     1.000
//! ```
//! Any whole residual stream restores everything (it is all the later
//! layers see). Layer 1's attention output (the induction head's) restores
//! all of the gap on its own; layer 0's (the previous-token head's) makes it
//! worse: patched alone, it writes the clean run's previous tokens next to
//! the corrupted run's own tokens, so the induction head finds matches that
//! point at the wrong tokens. Layer 1's MLP output restores most of the gap
//! (0.79): after the induction head, it carries much of the copy to the
//! logits; layer 0's carries nothing of it.

use std::error::Error;

use burn::tensor::Tensor;
use burn_hooks::experiments::patching_table;
use burn_hooks::model::backend::Cpu;
use burn_hooks::model::sample::SplitMix64;
use burn_hooks::model::{Gpt2, TokenBatch};
use burn_hooks::train::RepeatedBatch;

fn main() -> Result<(), Box<dyn Error>> {
    let checkpoint =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/induction-2l");
    let model = Gpt2::<Cpu>::load(checkpoint, &Default::default())?;
    let c = &model.config;
    let mut rng = SplitMix64(5);
    let clean = RepeatedBatch::random(&mut rng, 16, c.n_positions, 6, c.vocab_size)?;

    // Corrupt the first copy of each row.
    let rows = clean
        .batch
        .rows()
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut row = row.clone();
            for t in &mut row[clean.first_copy(i)] {
                *t = (rng.next_u64() % c.vocab_size as u64) as u32;
            }
            row
        })
        .collect();
    let corrupted = TokenBatch::new(rows)?;

    // Mean log-probability of the correct token on the repeat (the second
    // copy is the same in both batches, so are its targets).
    let metric = |logits: Tensor<Cpu, 3>| -clean.copy_losses(logits).1;
    let sites = [
        "resid.post_emb",
        "resid.torso.delta_attn",
        "resid.torso.post_attn",
        "resid.torso.delta_mlp",
        "resid.post_ln_f",
    ];
    let (table, clean_m, corrupted_m) =
        patching_table(&model, &clean.batch, &corrupted, &sites, metric)?;

    println!("clean {clean_m:.3}  corrupted {corrupted_m:.3}");
    println!(
        "{:<24} {:>5} {:>9} {:>9}",
        "site", "layer", "metric", "restored"
    );
    for row in table {
        let layer = row.layer.map_or("-".to_string(), |l| l.to_string());
        println!(
            "{:<24} {layer:>5} {:>9.3} {:>9.3}",
            row.site, row.metric, row.restored
        );
    }
    Ok(())
}
