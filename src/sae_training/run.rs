//! A whole run: a shuffling buffer over a source, the initialisation
//! sample, `steps` optimiser steps and a report every `metrics_every`
//! steps, handed to a callback (the `hooks` tool draws its progress bar
//! from it; the library draws nothing).

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use crate::experiments::SparseAutoencoder;

use super::config::SaeTrainConfig;
use super::error::SaeTrainError;
use super::metrics::{MetricsWindow, SaeMetrics};
use super::source::{ActivationSource, ShuffleBuffer};
use super::trainer::{SaeTrainer, StepStats};

/// What a run tells its observer as it goes.
#[derive(Clone, Copy, Debug)]
pub enum TrainEvent<'a> {
    /// A step was taken (for progress bars).
    Step(&'a StepStats),
    /// A report: averages since the previous one.
    Report(&'a SaeMetrics),
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct TrainedSae<B: burn::tensor::backend::Backend> {
    /// The autoencoder (save it with [`SparseAutoencoder::save`], splice it
    /// with [`splice_sae`](crate::experiments::splice_sae)).
    pub sae: SparseAutoencoder<B>,
    /// Every report, in order.
    pub metrics: Vec<SaeMetrics>,
    /// Steps taken (fewer than asked when the source ran out).
    pub steps: usize,
    /// Tokens trained on.
    pub tokens: u64,
    /// Whether the source ran out before the last step.
    pub source_exhausted: bool,
    /// Tokens since each latent last fired, at the end.
    pub tokens_since_fired: Vec<u64>,
}

impl<B: burn::tensor::backend::Backend> TrainedSae<B> {
    /// The last report.
    pub fn last(&self) -> Option<&SaeMetrics> {
        self.metrics.last()
    }
}

/// Trains an autoencoder on `source` for `config.steps` steps of
/// `config.batch_size` tokens, calling `on_metrics` every
/// `config.metrics_every` steps and after the last one. Stops early, with
/// what it has, when the source runs out (`source_exhausted`).
///
/// ```
/// use burn::backend::Autodiff;
/// use burn_flex::Flex;
/// use burn_hooks::sae_training::{MemorySource, SaeTrainConfig, train_sae};
///
/// // 2000 tokens of width 8 on 4 directions.
/// let data: Vec<f32> = (0..2000 * 8).map(|i| ((i / 8) % 4 == i % 8 % 4) as u8 as f32).collect();
/// let config = SaeTrainConfig {
///     steps: 20,
///     batch_size: 256,
///     buffer_tokens: 1024,
///     init_sample_tokens: 512,
///     metrics_every: 10,
///     lr: 1e-2,
///     ..SaeTrainConfig::topk(16, 2)
/// };
/// let mut reports = Vec::new();
/// let run = train_sae::<Autodiff<Flex>, _>(
///     &config,
///     MemorySource::new(data, 8)?,
///     &Default::default(),
///     |m| reports.push(m.to_string()),
/// )?;
/// assert_eq!((run.steps, reports.len()), (20, 2));
/// assert!(run.last().unwrap().l0 <= 2.0);
/// # Ok::<(), burn_hooks::sae_training::SaeTrainError>(())
/// ```
pub fn train_sae<B: AutodiffBackend, S: ActivationSource>(
    config: &SaeTrainConfig,
    source: S,
    device: &B::Device,
    mut on_metrics: impl FnMut(&SaeMetrics),
) -> Result<TrainedSae<B::InnerBackend>, SaeTrainError> {
    train_sae_observed::<B, S>(config, source, device, &mut |e| {
        if let TrainEvent::Report(m) = e {
            on_metrics(m)
        }
    })
}

/// [`train_sae`] telling `observe` about every step as well as every report.
pub fn train_sae_observed<B: AutodiffBackend, S: ActivationSource>(
    config: &SaeTrainConfig,
    source: S,
    device: &B::Device,
    observe: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<TrainedSae<B::InnerBackend>, SaeTrainError> {
    let d = source.width();
    config.validate(d)?;
    let (mut buffer, sample) = start_buffer(config, source)?;
    let mut trainer = SaeTrainer::<B>::new(config, d, &sample, device)?;
    drop(sample);
    let (metrics, exhausted) = run_steps(&mut trainer, &mut buffer, observe)?;
    Ok(TrainedSae {
        sae: trainer.sae(),
        metrics,
        steps: trainer.steps_done(),
        tokens: trainer.tokens_seen(),
        source_exhausted: exhausted,
        tokens_since_fired: trainer.dead_latents().tokens_since_fired().to_vec(),
    })
}

/// The shuffling buffer over `source`, filled, and the initialisation
/// sample peeked from it; an error when it holds less than one batch.
pub(super) fn start_buffer<S: ActivationSource>(
    config: &SaeTrainConfig,
    source: S,
) -> Result<(ShuffleBuffer<S>, Vec<f32>), SaeTrainError> {
    let capacity = config.buffer_tokens.max(config.init_sample_tokens);
    let mut buffer = ShuffleBuffer::new(source, capacity, config.seed);
    let mut sample = Vec::new();
    let got = buffer.peek_sample(config.init_sample_tokens, &mut sample)?;
    if buffer.len() < config.batch_size {
        return Err(SaeTrainError::TooFewTokens {
            got: buffer.len(),
            needed: config.batch_size.max(got),
        });
    }
    Ok((buffer, sample))
}

/// The steps left of `trainer`'s config, on batches from `buffer`.
pub fn run_steps<B: AutodiffBackend, S: ActivationSource>(
    trainer: &mut SaeTrainer<B>,
    buffer: &mut ShuffleBuffer<S>,
    observe: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<(Vec<SaeMetrics>, bool), SaeTrainError> {
    let config = trainer.config().clone();
    let d = buffer.width();
    let device = trainer.device().clone();
    let mut window = MetricsWindow::default();
    let mut reports = Vec::new();
    let mut batch = Vec::new();
    let mut exhausted = false;
    while trainer.steps_done() < config.steps {
        let n = buffer.next_batch(config.batch_size, &mut batch)?;
        if n < config.batch_size {
            exhausted = true;
            break;
        }
        let x =
            Tensor::<B, 2>::from_data(TensorData::new(std::mem::take(&mut batch), [n, d]), &device);
        let stats = trainer.step(x)?;
        observe(TrainEvent::Step(&stats));
        window.add(&stats);
        let done = trainer.steps_done();
        if done.is_multiple_of(config.metrics_every) || done == config.steps {
            let m = window.take(config.steps, trainer.tokens_seen(), config.n_latents);
            observe(TrainEvent::Report(&m));
            reports.push(m);
        }
    }
    if !window.is_empty() {
        let m = window.take(config.steps, trainer.tokens_seen(), config.n_latents);
        observe(TrainEvent::Report(&m));
        reports.push(m);
    }
    Ok((reports, exhausted))
}
