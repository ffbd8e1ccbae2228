//! Training a sparse autoencoder on recorded activations and splicing it
//! back into the model.
//!
//! ```text
//! cargo run --release --example sae
//! ```
//! 1. records `resid.torso.delta_mlp` (the MLP's output) at layer 1 of the
//!    bundled induction model over a few thousand positions;
//! 2. trains a randomly initialised ReLU autoencoder with 4·D latents on them
//!    for 200 AdamW steps (reconstruction MSE + a small L1 penalty);
//! 3. splices it at that site with the error term added back: the logits are
//!    unchanged (the latents could now be read, ablated, differentiated);
//! 4. splices it without the error term: the MLP output is replaced by its
//!    reconstruction, and the loss moves by the reconstruction's cost.
//!
//! Output of one run with the bundled checkpoint (the autoencoder starts
//! from random weights, so the numbers vary from run to run):
//!
//! ```text
//! recorded 16384 activations of width 64
//! step   0  mse 1222.4072  l1 1969.635  fraction of variance unexplained 7.471
//! step  50  mse 3.1908  l1 847.292  fraction of variance unexplained 0.020
//! step 100  mse 3.9066  l1 634.476  fraction of variance unexplained 0.024
//! step 150  mse 3.4253  l1 527.594  fraction of variance unexplained 0.021
//! step 199  mse 2.7496  l1 415.137  fraction of variance unexplained 0.017
//! latents: 256, active per position 33.3, never active 0
//! with the error term:    max |logit change| 0.0000019
//! without the error term: loss 3.563 -> 3.613 (repeat 0.179 -> 0.424)
//! ```

use std::error::Error;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{ElementConversion, Tensor};
use burn_hooks::experiments::{
    Activation, ActivationCache, CacheSpec, SaeSite, SparseAutoencoder, splice_sae,
};
use burn_hooks::model::backend::{Cpu, CpuAutodiff};
use burn_hooks::model::sample::SplitMix64;
use burn_hooks::model::{Gpt2, TransformerHooks};
use burn_hooks::path;
use burn_hooks::train::{RepeatedBatch, next_token_loss};

const LAYER: usize = 1;
const STEPS: usize = 200;
const MINIBATCH: usize = 512;
const L1: f32 = 1e-1;

fn scalar<B: burn::tensor::backend::Backend>(t: Tensor<B, 1>) -> f32 {
    t.into_scalar().elem()
}

fn main() -> Result<(), Box<dyn Error>> {
    let device = Default::default();
    let checkpoint =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/induction-2l");
    let model = Gpt2::<Cpu>::load(checkpoint, &device)?;
    let c = model.config.clone();
    let d = c.n_embd;

    // 1. Record the site over 8 batches of 32 rows.
    let site = path!(TransformerHooks<Cpu>: resid.torso.delta_mlp);
    let mut hooks = TransformerHooks::default();
    let cache =
        ActivationCache::install(&mut hooks, &CacheSpec::new().site(&site).layers([LAYER]))?;
    let mut rng = SplitMix64(11);
    let mut recorded = Vec::new();
    for _ in 0..8 {
        let task = RepeatedBatch::random(&mut rng, 32, c.n_positions, 6, c.vocab_size)?;
        model.forward(&task.batch, &hooks)?;
        let x = cache.at(&site, Some(LAYER)).expect("recorded");
        let [b, s, _] = x.dims();
        recorded.push(x.reshape([b * s, d]));
    }
    let data = Tensor::<CpuAutodiff, 2>::from_data(Tensor::cat(recorded, 0).into_data(), &device);
    let n = data.dims()[0];
    let variance = scalar(
        (data.clone() - data.clone().mean_dim(0))
            .powf_scalar(2.0)
            .mean(),
    );
    println!("recorded {n} activations of width {d}");

    // 2. Train the autoencoder (a Burn module like any other).
    let mut sae = SparseAutoencoder::<CpuAutodiff>::init(d, 4 * d, Activation::Relu, &device);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    for step in 0..STEPS {
        let start = (step * MINIBATCH) % n;
        let x = data.clone().slice([start..start + MINIBATCH, 0..d]);
        let latents = sae.encode(x.clone());
        let mse = (sae.decode(latents.clone()) - x).powf_scalar(2.0).mean();
        let l1 = latents.abs().sum_dim(1).mean();
        let loss = mse.clone() + l1.clone() * L1;
        if step % 50 == 0 || step == STEPS - 1 {
            let mse = scalar(mse.clone());
            println!(
                "step {step:>3}  mse {mse:.4}  l1 {:.3}  fraction of variance unexplained {:.3}",
                scalar(l1.clone()),
                mse / variance
            );
        }
        let grads = GradientsParams::from_grads(loss.backward(), &sae);
        sae = optim.step(3e-3, sae, grads);
    }
    let sae: SparseAutoencoder<Cpu> = sae.valid();

    // Sparsity on all recorded positions.
    let latents = sae.encode(data.inner());
    let active = latents.clone().greater_elem(0.0).float();
    let per_position = scalar(active.clone().sum_dim(1).mean());
    let never = active
        .sum_dim(0)
        .equal_elem(0.0)
        .int()
        .sum()
        .into_scalar()
        .elem::<i64>();
    println!(
        "latents: {}, active per position {per_position:.1}, never active {never}",
        sae.n_latents()
    );

    // 3. and 4. Splice it into the model.
    let test = RepeatedBatch::random(&mut SplitMix64(7), 64, c.n_positions, 6, c.vocab_size)?;
    let run = |hooks: &TransformerHooks<Cpu>| -> Result<_, Box<dyn Error>> {
        let logits = model.forward(&test.batch, hooks)?;
        let loss = scalar(next_token_loss(logits.clone(), &test.batch, 0));
        Ok((logits.clone(), loss, test.copy_losses(logits).1))
    };
    let (plain, plain_loss, plain_repeat) = run(&TransformerHooks::default())?;

    let mut with_error = TransformerHooks::default();
    splice_sae(
        &mut with_error,
        SaeSite::DeltaMlp,
        LAYER,
        sae.autoencoder_hooks(true),
    )?;
    let (logits, _, _) = run(&with_error)?;
    let change = scalar((logits - plain).abs().max().reshape([1]));
    println!("with the error term:    max |logit change| {change:.7}");

    let mut without = TransformerHooks::default();
    splice_sae(
        &mut without,
        SaeSite::DeltaMlp,
        LAYER,
        sae.autoencoder_hooks(false),
    )?;
    let (_, loss, repeat) = run(&without)?;
    println!(
        "without the error term: loss {plain_loss:.3} -> {loss:.3} (repeat {plain_repeat:.3} -> {repeat:.3})"
    );
    Ok(())
}
