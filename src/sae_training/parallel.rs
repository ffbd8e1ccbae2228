//! Data-parallel training over several devices with Burn's own
//! collective operations (`burn::collective`, feature `collective`): one
//! replica of the autoencoder per device, each batch split into equal
//! shares, the replicas' gradients averaged with
//! `GradientsParams::all_reduce` before every step and their statistics and
//! fired latents summed with `all_reduce`, so the replicas stay identical
//! and the run is the single-device run up to float rounding.
//!
//! The devices may repeat: on CPU backends, which have one device, several
//! replicas share it (a test of the path, not a speed-up on one CPU).

use std::sync::mpsc;
use std::thread;

use burn::collective::{
    CollectiveConfig, CollectiveError, PeerId, ReduceOperation, all_reduce, finish_collective,
    register, reset_collective,
};
use burn::module::{Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use crate::experiments::{Activation, SparseAutoencoder};

use super::config::SaeTrainConfig;
use super::error::SaeTrainError;
use super::init::init_sae;
use super::metrics::{MetricsWindow, SaeMetrics};
use super::run::{TrainedSae, start_buffer};
use super::source::ActivationSource;
use super::trainer::{SaeTrainer, StepStats, StepSync, host};

fn collective(e: CollectiveError) -> SaeTrainError {
    SaeTrainError::Source(format!("collective operation failed: {e:?}"))
}

/// One replica's side of the collective.
struct Peer<B: Backend> {
    id: PeerId,
    replicas: usize,
    device: B::Device,
}

impl<B: AutodiffBackend> StepSync<B> for Peer<B::InnerBackend> {
    fn sum(&mut self, values: Vec<f32>) -> Result<Vec<f32>, SaeTrainError> {
        let n = values.len();
        let t = Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(values, [n]), &self.device);
        let summed = all_reduce::<B::InnerBackend>(
            self.id,
            t.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(collective)?;
        Ok(host(Tensor::<B::InnerBackend, 1>::from_primitive(
            TensorPrimitive::Float(summed),
        )))
    }

    fn gradients(&mut self, grads: GradientsParams) -> Result<GradientsParams, SaeTrainError> {
        grads
            .all_reduce::<B::InnerBackend>(self.id, ReduceOperation::Mean)
            .map_err(collective)
    }

    fn replicas(&self) -> usize {
        self.replicas
    }
}

/// An autoencoder's parameters on the host, with their ids, to hand to
/// other threads (replicas must share the ids: the gradient all-reduce
/// pairs parameters by id).
#[derive(Clone)]
struct HostSae {
    ids: [ParamId; 4],
    pre_bias: TensorData,
    encoder: TensorData,
    latent_bias: TensorData,
    decoder: TensorData,
    activation: Activation,
}

impl HostSae {
    fn of<B: Backend>(sae: &SparseAutoencoder<B>) -> Self {
        HostSae {
            ids: [
                sae.pre_bias.id,
                sae.encoder.id,
                sae.latent_bias.id,
                sae.decoder.id,
            ],
            pre_bias: sae.pre_bias.val().into_data(),
            encoder: sae.encoder.val().into_data(),
            latent_bias: sae.latent_bias.val().into_data(),
            decoder: sae.decoder.val().into_data(),
            activation: sae.activation,
        }
    }

    fn on<B: Backend>(&self, device: &B::Device) -> SparseAutoencoder<B> {
        let [p, e, l, d] = self.ids;
        SparseAutoencoder {
            pre_bias: Param::initialized(p, Tensor::from_data(self.pre_bias.clone(), device)),
            encoder: Param::initialized(e, Tensor::from_data(self.encoder.clone(), device)),
            latent_bias: Param::initialized(l, Tensor::from_data(self.latent_bias.clone(), device)),
            decoder: Param::initialized(d, Tensor::from_data(self.decoder.clone(), device)),
            activation: self.activation,
        }
    }
}

/// What the first replica hands back at the end.
type Outcome = (HostSae, Vec<u64>, usize, u64);

/// [`train_sae`](super::train_sae) with one replica per entry of `devices`
/// (entries may repeat). `config.batch_size` must be a multiple of the
/// number of replicas; the source and the shuffling buffer stay on the
/// calling thread, which hands each replica its share of every batch.
pub fn train_sae_data_parallel<B: AutodiffBackend, S: ActivationSource>(
    config: &SaeTrainConfig,
    source: S,
    devices: &[B::Device],
    mut on_metrics: impl FnMut(&SaeMetrics),
) -> Result<TrainedSae<B::InnerBackend>, SaeTrainError> {
    let r = devices.len();
    let d = source.width();
    config.validate(d)?;
    if r == 0 || !config.batch_size.is_multiple_of(r) {
        return Err(SaeTrainError::Config(format!(
            "a batch of {} tokens cannot be split evenly over {r} devices",
            config.batch_size
        )));
    }
    let share = config.batch_size / r;
    let (mut buffer, sample) = start_buffer(config, source)?;
    // One initialisation, copied to every replica.
    let init = HostSae::of(&init_sae::<B::InnerBackend>(
        config,
        d,
        &sample,
        &devices[0],
    ));
    drop(sample);
    reset_collective::<B::InnerBackend>();

    let mut metrics = Vec::new();
    let mut exhausted = false;
    let mut failure = None;
    let outcome = thread::scope(|scope| {
        let (stats_tx, stats_rx) = mpsc::channel::<Result<StepStats, SaeTrainError>>();
        let mut shares = Vec::with_capacity(r);
        let mut replicas = Vec::with_capacity(r);
        for (i, device) in devices.iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel::<Option<Vec<f32>>>(1);
            shares.push(tx);
            let report = stats_tx.clone();
            let init = &init;
            replicas.push(
                scope.spawn(move || -> Result<Option<Outcome>, SaeTrainError> {
                    let id = PeerId(i as u32);
                    register::<B::InnerBackend>(
                        id,
                        device.clone(),
                        CollectiveConfig::default().with_num_devices(r),
                    )
                    .map_err(collective)?;
                    let mut trainer = SaeTrainer::<B>::from_sae(config, &init.on(device))?;
                    let mut peer = Peer::<B::InnerBackend> {
                        id,
                        replicas: r,
                        device: device.clone(),
                    };
                    while let Ok(Some(values)) = rx.recv() {
                        let n = values.len() / d;
                        let x = Tensor::<B, 2>::from_data(TensorData::new(values, [n, d]), device);
                        let lr = config.lr_at(trainer.steps_done());
                        let step = trainer.step_synced(x, lr, &mut peer);
                        let failed = step.is_err();
                        if i == 0 || failed {
                            let _ = report.send(step);
                        }
                        if failed {
                            break;
                        }
                    }
                    let _ = finish_collective::<B::InnerBackend>(id);
                    Ok((i == 0).then(|| {
                        (
                            HostSae::of(&trainer.sae()),
                            trainer.dead_latents().tokens_since_fired().to_vec(),
                            trainer.steps_done(),
                            trainer.tokens_seen(),
                        )
                    }))
                }),
            );
        }
        drop(stats_tx);

        let mut window = MetricsWindow::default();
        let mut batch = Vec::new();
        let mut tokens = 0u64;
        for step in 0..config.steps {
            match buffer.next_batch(config.batch_size, &mut batch) {
                Ok(n) if n == config.batch_size => {}
                Ok(_) => {
                    exhausted = true;
                    break;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            for (tx, part) in shares.iter().zip(batch.chunks(share * d)) {
                let _ = tx.send(Some(part.to_vec()));
            }
            match stats_rx.recv() {
                Ok(Ok(stats)) => {
                    tokens += stats.tokens as u64;
                    window.add(&stats);
                    let done = step + 1;
                    if done.is_multiple_of(config.metrics_every) || done == config.steps {
                        let m = window.take(config.steps, tokens, config.n_latents);
                        on_metrics(&m);
                        metrics.push(m);
                    }
                }
                Ok(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                Err(_) => {
                    failure = Some(SaeTrainError::Source("a replica stopped".into()));
                    break;
                }
            }
        }
        if !window.is_empty() {
            let m = window.take(config.steps, tokens, config.n_latents);
            on_metrics(&m);
            metrics.push(m);
        }
        for tx in &shares {
            let _ = tx.send(None);
        }
        drop(shares);
        let mut first = None;
        for handle in replicas {
            match handle.join() {
                Ok(Ok(Some(o))) => first = Some(o),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    failure.get_or_insert(SaeTrainError::Source("a replica panicked".into()));
                }
            }
        }
        first
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let (sae, tokens_since_fired, steps, tokens) = outcome
        .ok_or_else(|| SaeTrainError::Source("the first replica returned nothing".into()))?;
    Ok(TrainedSae {
        sae: sae.on(&devices[0]),
        metrics,
        steps,
        tokens,
        source_exhausted: exhausted,
        tokens_since_fired,
    })
}
