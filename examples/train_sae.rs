//! Training a TopK sparse autoencoder inside a Burn loop, on activations
//! the hooked model produces live, and splicing it back into the model.
//!
//! ```text
//! cargo run --release --example train_sae
//! ```
//!
//! 1. runs the bundled induction model through hooks on rows of its task
//!    and records layer 0's `mlp.post_act` (width 256) into a shuffling
//!    buffer: the model feeds the optimiser step by step, nothing is cached
//!    on disk;
//! 2. trains a TopK autoencoder (1024 latents, k = 16) with OpenAI's recipe
//!    in a loop of our own around `SaeTrainer::step` (`train_sae` is the
//!    same loop in one call), printing the metrics every 50 steps;
//! 3. measures it on held-out rows, then splices it at the site: with the
//!    error term the logits do not move; without it the loss rises, by far
//!    less than replacing the site with its mean does (the fraction of the
//!    loss recovered), and a latent's activity can be read from the splice.
//!
//! Output of one run (release build, 2 shared cores; seeded, so the numbers
//! repeat on this backend):
//!
//! ```text
//! training on `mlp.post_act` at layer 0 (width 256)
//! step 50/400  mse 0.00062  fve 0.6294  L0 16.0  dead 0/1024
//! step 100/400  mse 0.00023  fve 0.8622  L0 16.0  dead 0/1024
//! step 150/400  mse 0.00018  fve 0.8940  L0 16.0  dead 6/1024  aux 1.000
//! step 200/400  mse 0.00016  fve 0.9051  L0 16.0  dead 16/1024  aux 1.001
//! step 250/400  mse 0.00015  fve 0.9111  L0 16.0  dead 21/1024  aux 1.000
//! step 300/400  mse 0.00014  fve 0.9151  L0 16.0  dead 17/1024  aux 1.001
//! step 350/400  mse 0.00014  fve 0.9194  L0 16.0  dead 21/1024  aux 1.000
//! step 400/400  mse 0.00013  fve 0.9217  L0 16.0  dead 34/1024  aux 0.999
//! 400 steps of 2048 tokens in 62.7 s (6.4 steps/s, 412 forward passes of the model)
//! held out (4096 tokens): fve 0.9220, mse 1.308e-4, L0 16.00, latents that never fired 532
//! with the error term:    max |logit change| 2.86e-5; latent 802 fires on 1474 of 4096 tokens
//! without the error term: loss 3.5398 -> 3.5442 (mean-ablated: 3.6776); fraction of the loss recovered 0.968 at fve 0.922
//! ```
//!
//! (`aux` ≈ 1: the dead latents' pre-activations are negative, so they
//! predict nothing of the residual yet; the AuxK gradient reaches them only
//! once one turns positive. 532 latents never fire on these 4096 held-out
//! tokens; all but the 34 dead ones fired within the last 200,000 training
//! tokens.)

use std::error::Error;
use std::sync::{Arc, Mutex};

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use burn_hooks::experiments::{SaeSite, splice_sae};
use burn_hooks::model::backend::Cpu;
use burn_hooks::model::sample::SplitMix64;
use burn_hooks::model::{Gpt2, TransformerHooks};
use burn_hooks::sae_training::{
    ActivationSource, LiveSource, MetricsWindow, SaeTrainConfig, SaeTrainer, ShuffleBuffer,
    evaluate, mean, repeated_runs,
};
use burn_hooks::train::{RepeatedBatch, next_token_loss};
use burn_hooks::{Ctx, Hooks, Record, Recorder};

const LAYER: usize = 0;
const SITE: &str = "mlp.post_act";

fn main() -> Result<(), Box<dyn Error>> {
    let device = Default::default();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/induction-2l");
    let model = Gpt2::<Cpu>::load(&dir, &device)?;
    let c = model.config.clone();

    // 1. The model, run live: 32 rows of 64 tokens per forward pass.
    let rows = repeated_runs(c.vocab_size, 32, c.n_positions, 6, 1);
    let source = LiveSource::new(model.clone(), SITE, Some(LAYER), rows)?;
    let d = source.width();
    println!("training on {} (width {d})", source.describe());

    // 2. The loop.
    let config = SaeTrainConfig {
        steps: 400,
        batch_size: 2048,
        lr: 2e-3,
        decay_steps: 100,
        buffer_tokens: 32_768,
        init_sample_tokens: 16_384,
        dead_after_tokens: 200_000,
        ..SaeTrainConfig::topk(1024, 16)
    };
    let mut buffer = ShuffleBuffer::new(source, config.buffer_tokens, config.seed);
    let mut sample = Vec::new();
    buffer.peek_sample(config.init_sample_tokens, &mut sample)?;
    let mut trainer = SaeTrainer::<Autodiff<Cpu>>::new(&config, d, &sample, &device)?;
    let mut window = MetricsWindow::default();
    let mut batch = Vec::new();
    let started = std::time::Instant::now();
    for step in 1..=config.steps {
        let n = buffer.next_batch(config.batch_size, &mut batch)?;
        let x = Tensor::from_data(TensorData::new(batch.clone(), [n, d]), &device);
        window.add(&trainer.step(x)?);
        if step % 50 == 0 {
            println!(
                "{}",
                window.take(config.steps, trainer.tokens_seen(), config.n_latents)
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} steps of {} tokens in {seconds:.1} s ({:.1} steps/s, {} forward passes of the model)",
        config.steps,
        config.batch_size,
        config.steps as f64 / seconds,
        buffer.source().forward_passes()
    );
    let sae = trainer.sae();

    // 3. Held out: other rows, through the autoencoder's own encode/decode.
    let task = RepeatedBatch::random(&mut SplitMix64(5), 64, c.n_positions, 6, c.vocab_size)?;
    let recorder = Recorder::<Cpu>::new();
    let mut clean_hooks = TransformerHooks::default();
    clean_hooks
        .mlp
        .post_act
        .fwd
        .append(Record::into(&recorder).at_layers(Some(vec![LAYER])));
    let loss = |hooks: &TransformerHooks<Cpu>| -> Result<f32, Box<dyn Error>> {
        let logits = model.forward(&task.batch, hooks)?;
        Ok(next_token_loss(logits, &task.batch, 0).into_scalar())
    };
    let clean = loss(&clean_hooks)?;
    let x: Tensor<Cpu, 3> = recorder.get(SITE, Some(LAYER)).expect("recorded");
    let x: Vec<f32> = x.into_data().to_vec()?;
    let eval = evaluate(&sae, &x);
    println!(
        "held out ({} tokens): fve {:.4}, mse {:.3e}, L0 {:.2}, latents that never fired {}",
        eval.tokens, eval.fve, eval.mse, eval.l0, eval.never_fired
    );

    // With the error term: the model is unchanged, the latents readable.
    let plain = model.forward(&task.batch, &TransformerHooks::default())?;
    let mut ae = sae.autoencoder_hooks(true);
    // A hook on the splice's latents: how many tokens each latent fires on.
    let fired = Arc::new(Mutex::new(vec![0usize; sae.n_latents()]));
    let counts = fired.clone();
    ae.latents.fwd.append(move |z: Tensor<Cpu, 3>, _: &Ctx| {
        let [b, s, l] = z.dims();
        let on: Vec<f32> = z
            .clone()
            .greater_elem(0.0)
            .float()
            .reshape([b * s, l])
            .sum_dim(0)
            .into_data()
            .to_vec()
            .expect("f32");
        for (c, n) in counts.lock().expect("counts").iter_mut().zip(on) {
            *c += n as usize;
        }
        z
    });
    let mut with_error = TransformerHooks::default();
    splice_sae(&mut with_error, SaeSite::MlpPostAct, LAYER, ae)?;
    let spliced = model.forward(&task.batch, &with_error)?;
    let moved: f32 = (spliced - plain).abs().max().into_scalar();
    let fired = fired.lock().expect("counts").clone();
    let (top, count) = fired
        .iter()
        .enumerate()
        .max_by_key(|(_, c)| **c)
        .expect("latents");
    println!(
        "with the error term:    max |logit change| {moved:.2e}; latent {top} fires on {count} of {} tokens",
        eval.tokens
    );

    // Without it: the site becomes the reconstruction.
    let mut without = TransformerHooks::default();
    splice_sae(
        &mut without,
        SaeSite::MlpPostAct,
        LAYER,
        sae.autoencoder_hooks(false),
    )?;
    let spliced = loss(&without)?;
    // The reference point: the site replaced by its mean (FVE 0).
    let m = Tensor::<Cpu, 1>::from_floats(mean(&x, d).as_slice(), &device);
    let mut mean_ablated = TransformerHooks::default();
    mean_ablated
        .mlp
        .post_act
        .fwd2
        .append(
            Hooks::at_layers(LAYER).with(move |x: Tensor<Cpu, 3>, _: &Ctx| {
                let [b, s, _] = x.dims();
                m.clone().unsqueeze::<3>().expand([b as i64, s as i64, -1])
            }),
        );
    let ablated = loss(&mean_ablated)?;
    println!(
        "without the error term: loss {clean:.4} -> {spliced:.4} (mean-ablated: {ablated:.4}); \
         fraction of the loss recovered {:.3} at fve {:.3}",
        1.0 - (spliced - clean) / (ablated - clean),
        eval.fve
    );
    Ok(())
}
