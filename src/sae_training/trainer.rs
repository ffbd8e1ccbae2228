//! One optimiser step of OpenAI's recipe on a batch of activations: the
//! loss (MSE, the L1 penalty for ReLU, AuxK on the dead latents), Adam, the
//! decoder's gradient with each row's parallel component projected out,
//! and the decoder rows renormalised to unit norm after the step.

use burn::module::Param;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::tensor::activation::relu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::experiments::SparseAutoencoder;

use super::config::{SaeKind, SaeTrainConfig};
use super::dead::DeadLatents;
use super::error::SaeTrainError;
use super::init::{init_sae, unit_rows};
use super::select::{kth_largest_rows, scan_topk};

/// What one step measured on its batch (before the update).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepStats {
    /// The step (0-based).
    pub step: usize,
    /// Tokens in the batch.
    pub tokens: usize,
    /// The learning rate used.
    pub lr: f64,
    /// The total loss.
    pub loss: f64,
    /// Mean over tokens and dimensions of (x − x̂)².
    pub mse: f64,
    /// The AuxK loss (0 when no latent is dead).
    pub aux_loss: f64,
    /// Mean over tokens of Σ_i z_i (the L1 norm of the latents).
    pub l1: f64,
    /// Σ (x − x̂)² over the batch.
    pub sq_err: f64,
    /// Σ (x − mean_batch(x))² over the batch.
    pub sq_dev: f64,
    /// Non-zero latents, summed over the batch's tokens.
    pub active: u64,
    /// Latents dead after this batch.
    pub dead: usize,
    /// Dead latents the auxiliary loss used in this step.
    pub aux_latents: usize,
}

impl StepStats {
    /// Fraction of variance explained, `1 − Σ(x − x̂)² / Σ(x − x̄)²`.
    pub fn fve(&self) -> f64 {
        1.0 - self.sq_err / self.sq_dev
    }

    /// Mean non-zero latents per token.
    pub fn l0(&self) -> f64 {
        self.active as f64 / self.tokens.max(1) as f64
    }
}

/// `g` with each row's component along the matching (unit) row of `dec`
/// removed: `g_j − (g_j · d_j) d_j`. A step along it keeps the rows' norms
/// to first order, so Adam does not spend its updates growing them.
pub fn project_out_parallel<B: Backend>(g: Tensor<B, 2>, dec: Tensor<B, 2>) -> Tensor<B, 2> {
    let along = (g.clone() * dec.clone()).sum_dim(1);
    g - dec * along
}

/// An autoencoder's parameters moved onto an autodiff backend, with the
/// same parameter ids (replicas made from one autoencoder match up in
/// Burn's collective gradient all-reduce).
pub fn to_autodiff<B: AutodiffBackend>(
    sae: &SparseAutoencoder<B::InnerBackend>,
) -> SparseAutoencoder<B> {
    fn param<B: AutodiffBackend, const D: usize>(
        p: &Param<Tensor<B::InnerBackend, D>>,
    ) -> Param<Tensor<B, D>> {
        Param::initialized(p.id, Tensor::from_inner(p.val()).require_grad())
    }
    SparseAutoencoder {
        pre_bias: param(&sae.pre_bias),
        encoder: param(&sae.encoder),
        latent_bias: param(&sae.latent_bias),
        decoder: param(&sae.decoder),
        activation: sae.activation,
    }
}

/// Trains one autoencoder step by step: [`step`](Self::step) takes a batch
/// of activations from anywhere (a model run through hooks, a store, a
/// user's own loop) and updates the autoencoder in place.
///
/// ```
/// use burn::backend::Autodiff;
/// use burn::tensor::{Distribution, Tensor};
/// use burn_flex::Flex;
/// use burn_hooks::sae_training::{SaeTrainConfig, SaeTrainer};
///
/// type B = Autodiff<Flex>;
/// let device = Default::default();
/// let config = SaeTrainConfig { lr: 1e-3, ..SaeTrainConfig::topk(64, 4) };
/// let sample = vec![0.5f32; 16 * 100];
/// let mut trainer = SaeTrainer::<B>::new(&config, 16, &sample, &device)?;
/// for _ in 0..3 {
///     let x = Tensor::<B, 2>::random([256, 16], Distribution::Normal(0.0, 1.0), &device);
///     let stats = trainer.step(x)?;
///     assert!(stats.l0() <= 4.0);
/// }
/// let sae = trainer.sae(); // a SparseAutoencoder on the inner backend
/// assert_eq!((sae.d(), sae.n_latents()), (16, 64));
/// # Ok::<(), burn_hooks::sae_training::SaeTrainError>(())
/// ```
pub struct SaeTrainer<B: AutodiffBackend> {
    sae: Option<SparseAutoencoder<B>>,
    optim: OptimizerAdaptor<Adam, SparseAutoencoder<B>, B>,
    config: SaeTrainConfig,
    dead: DeadLatents,
    step: usize,
    tokens: u64,
    width: usize,
    aux_k: usize,
    device: B::Device,
}

impl<B: AutodiffBackend> SaeTrainer<B> {
    /// A new autoencoder for activations of width `d`, initialised from
    /// `sample` (row-major whole tokens; see [`init_sae`]).
    pub fn new(
        config: &SaeTrainConfig,
        d: usize,
        sample: &[f32],
        device: &B::Device,
    ) -> Result<Self, SaeTrainError> {
        config.validate(d)?;
        if !sample.len().is_multiple_of(d) {
            return Err(SaeTrainError::Config(format!(
                "the initialisation sample has {} values, not whole tokens of width {d}",
                sample.len()
            )));
        }
        let sae = init_sae::<B::InnerBackend>(config, d, sample, device);
        Self::from_sae(config, &sae)
    }

    /// Continues training `sae` (its activation is replaced by the
    /// config's kind; the optimiser starts fresh).
    pub fn from_sae(
        config: &SaeTrainConfig,
        sae: &SparseAutoencoder<B::InnerBackend>,
    ) -> Result<Self, SaeTrainError> {
        let d = sae.d();
        config.validate(d)?;
        if sae.n_latents() != config.n_latents {
            return Err(SaeTrainError::Config(format!(
                "the autoencoder has {} latents and the config {}",
                sae.n_latents(),
                config.n_latents
            )));
        }
        let mut sae = to_autodiff::<B>(sae);
        sae.activation = config.kind.activation();
        let device = sae.encoder.val().device();
        let optim = AdamConfig::new()
            .with_beta_1(config.beta_1)
            .with_beta_2(config.beta_2)
            .with_epsilon(config.epsilon)
            .with_weight_decay(None::<WeightDecayConfig>)
            .with_grad_clipping(
                config
                    .grad_clip_norm
                    .map(burn::grad_clipping::GradientClippingConfig::Norm),
            )
            .init();
        Ok(SaeTrainer {
            sae: Some(sae),
            optim,
            config: config.clone(),
            dead: DeadLatents::new(config.n_latents),
            step: 0,
            tokens: 0,
            width: d,
            aux_k: config.aux_k_for(d),
            device,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SaeTrainConfig {
        &self.config
    }

    /// Steps taken.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Tokens trained on.
    pub fn tokens_seen(&self) -> u64 {
        self.tokens
    }

    /// The dead-latent tracker.
    pub fn dead_latents(&self) -> &DeadLatents {
        &self.dead
    }

    /// Latents dead now (not fired for `dead_after_tokens` tokens).
    pub fn dead_count(&self) -> usize {
        self.dead.count(self.config.dead_after_tokens)
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    fn current(&self) -> &SparseAutoencoder<B> {
        self.sae
            .as_ref()
            .expect("the autoencoder is only taken during a step")
    }

    /// The autoencoder as it is now, on the inner backend (no autodiff).
    pub fn sae(&self) -> SparseAutoencoder<B::InnerBackend> {
        use burn::module::AutodiffModule;
        self.current().valid()
    }

    /// The autoencoder as it is now, on the autodiff backend.
    pub fn sae_autodiff(&self) -> &SparseAutoencoder<B> {
        self.current()
    }

    /// One optimiser step on the batch `x` `[N, D]` (detached first; the
    /// learning rate follows the config's schedule).
    pub fn step(&mut self, x: Tensor<B, 2>) -> Result<StepStats, SaeTrainError> {
        let lr = self.config.lr_at(self.step);
        self.step_with_lr(x, lr)
    }

    /// [`step`](Self::step) with an explicit learning rate.
    pub fn step_with_lr(&mut self, x: Tensor<B, 2>, lr: f64) -> Result<StepStats, SaeTrainError> {
        self.step_synced(x, lr, &mut NoSync)
    }

    /// One step on this replica's share `x` of a batch split over several
    /// replicas: `sync` combines what the replicas measured (before the
    /// update, so a loss gone non-finite on any of them stops all) and their
    /// gradients (before the decoder projection and Adam), so identical
    /// replicas stay identical. [`step`](Self::step) is this with
    /// [`NoSync`].
    pub fn step_synced(
        &mut self,
        x: Tensor<B, 2>,
        lr: f64,
        sync: &mut dyn StepSync<B>,
    ) -> Result<StepStats, SaeTrainError> {
        let [n, d] = x.dims();
        if d != self.width || n == 0 {
            return Err(SaeTrainError::Source(format!(
                "a batch of shape [{n}, {d}] for an autoencoder of width {}",
                self.width
            )));
        }
        let sae = self
            .sae
            .take()
            .expect("the autoencoder is only taken during a step");
        let computed = self
            .loss(&sae, x.detach())
            .and_then(|(loss, stats, fired)| {
                let (stats, fired) = combine(sync, stats, &fired)?;
                Ok((loss, stats, fired))
            });
        let (loss, stats, fired) = match computed {
            Ok(c) if c.1.loss.is_finite() => c,
            Ok(_) => {
                self.sae = Some(sae);
                return Err(SaeTrainError::NonFinite {
                    step: self.step,
                    what: "the loss",
                });
            }
            Err(e) => {
                self.sae = Some(sae);
                return Err(e);
            }
        };
        let grads = loss.backward();
        let grads = GradientsParams::from_grads(grads, &sae);
        let mut grads = match sync.gradients(grads) {
            Ok(g) => g,
            Err(e) => {
                self.sae = Some(sae);
                return Err(e);
            }
        };
        if let Some(g) = grads.remove::<B::InnerBackend, 2>(sae.decoder.id) {
            let g = project_out_parallel(g, sae.decoder.val().inner());
            grads.register(sae.decoder.id, g);
        }
        let mut sae = self.optim.step(lr, sae, grads);
        sae.decoder = sae
            .decoder
            .map(|dec| Tensor::from_inner(unit_rows(dec.inner())).require_grad());
        self.sae = Some(sae);
        self.dead.observe(&fired, stats.tokens as u64);
        self.tokens += stats.tokens as u64;
        let stats = StepStats {
            step: self.step,
            lr,
            dead: self.dead.count(self.config.dead_after_tokens),
            ..stats
        };
        self.step += 1;
        Ok(stats)
    }

    /// The loss of `sae` on `x`, what it measured, and the latents that
    /// fired.
    fn loss(
        &self,
        sae: &SparseAutoencoder<B>,
        x: Tensor<B, 2>,
    ) -> Result<(Tensor<B, 1>, StepStats, Vec<bool>), SaeTrainError> {
        let [n, _] = x.dims();
        let l = self.config.n_latents;
        let device = &self.device;
        let b = sae.pre_bias.val().unsqueeze_dim::<2>(0);
        let pre = (x.clone() - b.clone()).matmul(sae.encoder.val())
            + sae.latent_bias.val().unsqueeze_dim(0);

        let (latents, fired, active, l1) = match self.config.kind {
            SaeKind::TopK { k } => {
                let scan = scan_topk(&host(pre.clone().inner()), l, k);
                let drop = below(pre.clone().inner(), scan.thresholds, device);
                let latents = relu(pre.clone()).mask_fill(drop, 0.0);
                (latents, scan.fired, scan.active, None)
            }
            SaeKind::Relu { l1 } => {
                let latents = relu(pre.clone());
                let on = latents.clone().inner().greater_elem(0.0).float();
                let per_latent = host(on.sum_dim(0));
                let fired = per_latent.iter().map(|&c| c > 0.0).collect();
                let active = per_latent.iter().map(|&c| c as u64).sum();
                let norm = latents.clone().sum_dim(1).mean();
                (latents, fired, active, Some((norm, l1)))
            }
        };
        let recon = latents.matmul(sae.decoder.val()) + b;
        let err = recon.clone() - x.clone();
        let mse = err.clone().powf_scalar(2.0).mean();
        let mut loss = mse.clone();
        let mut l1_value = Tensor::<B::InnerBackend, 1>::zeros([1], device);
        if let Some((norm, coef)) = l1 {
            l1_value = norm.clone().inner();
            loss = loss + norm * coef;
        }

        let centred = x.clone().inner() - x.clone().inner().mean_dim(0);
        let sq_err = err.inner().powf_scalar(2.0).sum();

        // AuxK: the largest pre-activations among the dead latents predict
        // the residual the live ones leave.
        let dead = self.dead.dead(self.config.dead_after_tokens);
        let mut aux_value = Tensor::<B::InnerBackend, 1>::zeros([1], device);
        let mut aux_latents = 0;
        if self.config.aux_coef > 0.0 && !dead.is_empty() {
            let nd = dead.len();
            let k_aux = self.aux_k.min(nd);
            let ids: Vec<i64> = dead.iter().map(|&j| j as i64).collect();
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [nd]), device);
            let pre_dead = pre.select(1, idx.clone());
            let thresholds = kth_largest_rows(&host(pre_dead.clone().inner()), nd, k_aux);
            let drop = below(pre_dead.clone().inner(), thresholds, device);
            let aux_lat = relu(pre_dead).mask_fill(drop, 0.0);
            let residual = (x - recon).detach();
            let predicted = aux_lat.matmul(sae.decoder.val().select(0, idx));
            let scale = (residual.clone() - residual.clone().mean_dim(0))
                .powf_scalar(2.0)
                .mean()
                .clamp_min(1e-30);
            let aux = (predicted - residual).powf_scalar(2.0).mean() / scale;
            aux_value = aux.clone().inner();
            aux_latents = k_aux;
            // OpenAI weighs a normalised AuxK against a normalised
            // reconstruction error; the reconstruction term here is the plain
            // MSE, so AuxK is brought to its scale by the input's variance (a
            // constant of the batch). Without it, on activations of variance
            // 2e-3, AuxK outweighed the MSE 500-fold on the shared pre-bias
            // and pulled the FVE from 0.86 to below 0.6.
            let x_variance = Tensor::<B, 1>::from_inner(centred.clone().powf_scalar(2.0).mean());
            loss = loss + aux * x_variance * self.config.aux_coef;
        }

        let values = host(Tensor::cat(
            vec![
                loss.clone().inner(),
                mse.inner(),
                aux_value,
                l1_value,
                sq_err,
                centred.powf_scalar(2.0).sum(),
            ],
            0,
        ));
        let stats = StepStats {
            tokens: n,
            loss: f64::from(values[0]),
            mse: f64::from(values[1]),
            aux_loss: f64::from(values[2]),
            l1: f64::from(values[3]),
            sq_err: f64::from(values[4]),
            sq_dev: f64::from(values[5]),
            active,
            aux_latents,
            ..StepStats::default()
        };
        Ok((loss, stats, fired))
    }
}

/// How replicas of one autoencoder trained on shares of each batch
/// combine what they computed (see [`SaeTrainer::step_synced`]).
pub trait StepSync<B: AutodiffBackend> {
    /// Sums `values` over the replicas (every replica passes the same
    /// layout and gets the same sums back).
    fn sum(&mut self, values: Vec<f32>) -> Result<Vec<f32>, SaeTrainError>;
    /// The mean of the replicas' gradients.
    fn gradients(&mut self, grads: GradientsParams) -> Result<GradientsParams, SaeTrainError>;
    /// Replicas taking part.
    fn replicas(&self) -> usize;
}

/// One replica: nothing to combine.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSync;

impl<B: AutodiffBackend> StepSync<B> for NoSync {
    fn sum(&mut self, values: Vec<f32>) -> Result<Vec<f32>, SaeTrainError> {
        Ok(values)
    }
    fn gradients(&mut self, grads: GradientsParams) -> Result<GradientsParams, SaeTrainError> {
        Ok(grads)
    }
    fn replicas(&self) -> usize {
        1
    }
}

/// The batch's statistics and fired latents over all replicas: counts and
/// sums add up, the per-replica means (losses, MSE, L1) are averaged (the
/// shares are equal), the FVE pools each share's squared deviations from
/// its own mean.
fn combine<B: AutodiffBackend>(
    sync: &mut dyn StepSync<B>,
    stats: StepStats,
    fired: &[bool],
) -> Result<(StepStats, Vec<bool>), SaeTrainError> {
    let r = sync.replicas();
    if r == 1 {
        return Ok((stats, fired.to_vec()));
    }
    let mut v: Vec<f32> = fired.iter().map(|&f| f32::from(u8::from(f))).collect();
    v.extend([
        stats.loss as f32,
        stats.mse as f32,
        stats.aux_loss as f32,
        stats.l1 as f32,
        stats.sq_err as f32,
        stats.sq_dev as f32,
        stats.active as f32,
        stats.tokens as f32,
    ]);
    let v = sync.sum(v)?;
    let l = fired.len();
    let t = &v[l..];
    let per = r as f64;
    let stats = StepStats {
        loss: f64::from(t[0]) / per,
        mse: f64::from(t[1]) / per,
        aux_loss: f64::from(t[2]) / per,
        l1: f64::from(t[3]) / per,
        sq_err: f64::from(t[4]),
        sq_dev: f64::from(t[5]),
        active: t[6].round() as u64,
        tokens: t[7].round() as usize,
        ..stats
    };
    Ok((stats, v[..l].iter().map(|&c| c > 0.0).collect()))
}

/// A tensor's values on the host, as f32.
pub(crate) fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32")
}

/// Where `pre` `[N, C]` is below its row's threshold, as a mask on the
/// autodiff backend.
fn below<B: AutodiffBackend>(
    pre: Tensor<B::InnerBackend, 2>,
    thresholds: Vec<f32>,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    let n = thresholds.len();
    let t = Tensor::<B::InnerBackend, 2>::from_data(TensorData::new(thresholds, [n, 1]), device);
    Tensor::from_inner(pre.lower(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn_flex::Flex;

    #[test]
    fn projection_removes_the_parallel_part() {
        let device = Default::default();
        let dec = unit_rows(Tensor::<Flex, 2>::from_floats(
            [[3.0, 4.0, 0.0], [0.0, 1.0, 1.0]],
            &device,
        ));
        let g = Tensor::<Flex, 2>::from_floats([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], &device);
        let p = project_out_parallel(g.clone(), dec.clone());
        let dots = host((p.clone() * dec.clone()).sum_dim(1));
        assert!(dots.iter().all(|d| d.abs() < 1e-6), "{dots:?}");
        // What was removed is parallel to the row: g − p = c · d.
        let removed = host(g - p);
        let d = host(dec);
        let c0 = removed[0] / d[0];
        for i in 0..3 {
            assert!((removed[i] - c0 * d[i]).abs() < 1e-6);
        }
    }

    #[test]
    fn a_step_keeps_decoder_rows_unit_norm_and_ids() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        let config = SaeTrainConfig {
            lr: 1e-2,
            ..SaeTrainConfig::topk(32, 3)
        };
        let sample: Vec<f32> = (0..8 * 64).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut t = SaeTrainer::<B>::new(&config, 8, &sample, &device).unwrap();
        let ids = (t.current().encoder.id, t.current().decoder.id);
        let x = Tensor::<B, 2>::from_data(TensorData::new(sample.clone(), [64, 8]), &device);
        let before = host(t.sae().decoder.val());
        let stats = t.step(x).unwrap();
        assert_eq!(stats.tokens, 64);
        assert!(stats.l0() <= 3.0 && stats.l0() > 0.0);
        let after = t.sae().decoder.val();
        let norms = host(after.clone().powf_scalar(2.0).sum_dim(1).sqrt());
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
        assert_ne!(host(after), before, "the step moved the decoder");
        assert_eq!((t.current().encoder.id, t.current().decoder.id), ids);
        assert_eq!(t.steps_done(), 1);
        // A batch of the wrong width is an error, and the trainer survives it.
        let bad = Tensor::<B, 2>::zeros([4, 5], &device);
        assert!(t.step(bad).unwrap_err().to_string().contains("[4, 5]"));
        let x = Tensor::<B, 2>::from_data(TensorData::new(sample, [64, 8]), &device);
        assert!(t.step(x).is_ok());
    }
}
