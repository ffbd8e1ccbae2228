//! Trains the small model bundled in `checkpoints/induction-2l/`: a 2-layer
//! GPT-2 on rows of random tokens holding a random run repeated twice (at a
//! random place, with a random period), where induction heads form.
//!
//! ```text
//! cargo run --release --example train_induction -- [STEPS] [OUT_DIR]
//! ```
//! Defaults: 6000 steps, `checkpoints/induction-2l`. Seeded, so a rerun on the
//! same machine reproduces the checkpoint.

use std::error::Error;

use burn::module::AutodiffModule;
use burn::optim::AdamWConfig;
use burn_hooks::model::backend::CpuAutodiff;
use burn_hooks::model::sample::SplitMix64;
use burn_hooks::model::{Gpt2, Gpt2Config, TransformerHooks};
use burn_hooks::train::{RepeatedBatch, train_step};
use indicatif::{ProgressBar, ProgressStyle};

/// Sequence length; each row repeats a run of `MIN_PERIOD..=LEN/2` tokens.
const LEN: usize = 32;
const MIN_PERIOD: usize = 6;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(6000);
    let out = args
        .next()
        .unwrap_or_else(|| "checkpoints/induction-2l".to_string());

    let mut config = Gpt2Config::new(2, 64, 4, LEN, 128);
    config.tie_word_embeddings = false;
    let device = Default::default();
    let mut model = Gpt2::<CpuAutodiff>::init(&config, &device)?;
    let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
    let hooks = TransformerHooks::default();
    let mut rng = SplitMix64(2024);

    let bar = ProgressBar::new(steps as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} steps  loss {msg}  ({eta} left)",
    )?);
    for step in 0..steps {
        let batch = RepeatedBatch::random(&mut rng, 32, LEN, MIN_PERIOD, config.vocab_size)?.batch;
        // warm-up then constant learning rate
        let lr = 1e-3 * ((step + 1) as f64 / 100.0).min(1.0);
        let (next, loss) = train_step(model, &mut optim, &batch, &hooks, lr)?;
        model = next;
        bar.set_message(format!("{loss:.3}"));
        bar.inc(1);
    }
    bar.finish();

    // Loss on fresh sequences: the first copy is unpredictable (ln 128 ≈
    // 4.85); the repeat is copied by induction.
    let model = model.valid();
    model.save(&out)?;
    println!("saved to {out}/");
    let test = RepeatedBatch::random(&mut SplitMix64(7), 64, LEN, MIN_PERIOD, config.vocab_size)?;
    let (first, repeat) =
        test.copy_losses(model.forward(&test.batch, &TransformerHooks::default())?);
    println!("loss on the first copy: {first:.3}");
    println!("loss on the repeat:     {repeat:.3}");
    Ok(())
}
