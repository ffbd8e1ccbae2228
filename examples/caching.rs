//! Caching activations and their gradients, then saving them for numpy.
//!
//! ```text
//! cargo run --release --example caching [-- OUT_FILE]
//! ```
//! Records the attention probabilities `attn.qk_probs` of layer 1 of the
//! bundled model (`checkpoints/induction-2l/`) and the gradient of the
//! next-token loss flowing into them, writes both to `cache.safetensors`
//! (or OUT_FILE; read it in Python with `safetensors.numpy.load_file`) and
//! prints what the file holds. Output with the bundled checkpoint (the loss
//! and the gradient sum change if it is retrained):
//!
//! ```text
//! loss 3.534
//! wrote cache.safetensors:
//!   layers.1.attn.qk_probs       [8, 64, 64, 2]  sum 1023.980
//!   layers.1.attn.qk_probs.grad  [8, 64, 64, 2]  sum -0.344
//! ```
//! (probabilities sum to 1 per query and head: 8 rows x 64 queries x 2 heads
//! = 1024.)

use std::error::Error;

use burn::tensor::ElementConversion;
use burn_hooks::experiments::{ActivationCache, CacheSpec, read_safetensors};
use burn_hooks::model::backend::CpuAutodiff;
use burn_hooks::model::sample::SplitMix64;
use burn_hooks::model::{Gpt2, TransformerHooks};
use burn_hooks::path;
use burn_hooks::train::{RepeatedBatch, next_token_loss};

fn main() -> Result<(), Box<dyn Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "cache.safetensors".to_string());
    let checkpoint =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/induction-2l");
    let model = Gpt2::<CpuAutodiff>::load(checkpoint, &Default::default())?;
    let c = &model.config;
    let task = RepeatedBatch::random(&mut SplitMix64(1), 8, c.n_positions, 6, c.vocab_size)?;

    // What to cache: a typed path (a typo would not compile) at layer 1 only.
    let probs = path!(TransformerHooks<CpuAutodiff>: attn.qk_probs);
    let mut hooks = TransformerHooks::default();
    let cache = ActivationCache::install_with_grads(
        &mut hooks,
        &CacheSpec::new().site(&probs).layers([1]),
    )?;

    // Forward and backward as usual; the hooks record along the way.
    let logits = model.forward(&task.batch, &hooks)?;
    let loss = next_token_loss(logits, &task.batch, 0);
    println!("loss {:.3}", loss.clone().into_scalar().elem::<f32>());
    loss.backward();

    cache.save(&out)?;
    println!("wrote {out}:");
    for (key, shape, values) in read_safetensors(&out)? {
        let sum: f32 = values.iter().sum();
        println!("  {key:<28} {shape:?}  sum {sum:.3}");
    }
    Ok(())
}
