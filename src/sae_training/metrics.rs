//! The numbers a run reports every N steps, and an evaluation of any
//! autoencoder on held-out activations.
//!
//! - **MSE**: mean over tokens and dimensions of `(x − x̂)²`.
//! - **FVE** (fraction of variance explained): `1 − Σ(x − x̂)² / Σ(x − x̄)²`,
//!   x̄ the mean activation (per batch during training, over the data in
//!   [`evaluate`]); 1 is perfect, 0 is no better than always answering x̄.
//! - **L0**: mean number of non-zero latents per token (≤ k for TopK).
//! - **dead**: latents that have not fired for `dead_after_tokens` tokens.

use std::fmt;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::experiments::SparseAutoencoder;

use super::trainer::{StepStats, host};

/// One report: averages over the steps since the previous one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SaeMetrics {
    /// Steps done.
    pub step: usize,
    /// Steps the run will take.
    pub steps: usize,
    /// Tokens trained on so far.
    pub tokens: u64,
    /// The learning rate of the last step.
    pub lr: f64,
    /// Mean total loss.
    pub loss: f64,
    /// Mean squared error.
    pub mse: f64,
    /// Fraction of variance explained over the window's tokens.
    pub fve: f64,
    /// Mean non-zero latents per token.
    pub l0: f64,
    /// Mean L1 norm of the latents per token.
    pub l1: f64,
    /// Mean auxiliary loss (over the steps that had dead latents; 0 if none).
    pub aux_loss: f64,
    /// Dead latents at the end of the window.
    pub dead: usize,
    /// Latents in the autoencoder.
    pub n_latents: usize,
}

impl fmt::Display for SaeMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {}/{}  mse {:.5}  fve {:.4}  L0 {:.1}  dead {}/{}",
            self.step, self.steps, self.mse, self.fve, self.l0, self.dead, self.n_latents
        )?;
        if self.aux_loss > 0.0 {
            write!(f, "  aux {:.3}", self.aux_loss)?;
        }
        if self.l1 > 0.0 {
            write!(f, "  l1 {:.3}", self.l1)?;
        }
        Ok(())
    }
}

/// Accumulates [`StepStats`] between reports.
#[derive(Clone, Debug, Default)]
pub struct MetricsWindow {
    steps: usize,
    tokens: u64,
    loss: f64,
    mse: f64,
    l1: f64,
    aux: f64,
    aux_steps: usize,
    sq_err: f64,
    sq_dev: f64,
    active: u64,
    last: StepStats,
}

impl MetricsWindow {
    /// Adds one step.
    pub fn add(&mut self, s: &StepStats) {
        self.steps += 1;
        self.tokens += s.tokens as u64;
        self.loss += s.loss;
        self.mse += s.mse;
        self.l1 += s.l1;
        if s.aux_latents > 0 {
            self.aux += s.aux_loss;
            self.aux_steps += 1;
        }
        self.sq_err += s.sq_err;
        self.sq_dev += s.sq_dev;
        self.active += s.active;
        self.last = s.clone();
    }

    /// Whether no step was added since the last report.
    pub fn is_empty(&self) -> bool {
        self.steps == 0
    }

    /// The report for the steps added, and a fresh window.
    pub fn take(&mut self, steps: usize, tokens: u64, n_latents: usize) -> SaeMetrics {
        let w = std::mem::take(self);
        let per = w.steps.max(1) as f64;
        SaeMetrics {
            step: w.last.step + 1,
            steps,
            tokens,
            lr: w.last.lr,
            loss: w.loss / per,
            mse: w.mse / per,
            fve: 1.0 - w.sq_err / w.sq_dev,
            l0: w.active as f64 / w.tokens.max(1) as f64,
            l1: w.l1 / per,
            aux_loss: if w.aux_steps > 0 {
                w.aux / w.aux_steps as f64
            } else {
                0.0
            },
            dead: w.last.dead,
            n_latents,
        }
    }
}

/// An autoencoder's quality on activations it did not train on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Tokens evaluated.
    pub tokens: usize,
    /// Mean squared error.
    pub mse: f64,
    /// Fraction of variance explained (x̄ over all the tokens).
    pub fve: f64,
    /// Mean non-zero latents per token.
    pub l0: f64,
    /// Latents that fired on none of the tokens.
    pub never_fired: usize,
}

/// Runs `sae`'s own `encode`/`decode` (what a splice runs) over `data`
/// (row-major tokens of width `sae.d()`), 4096 tokens at a time.
pub fn evaluate<B: Backend>(sae: &SparseAutoencoder<B>, data: &[f32]) -> Evaluation {
    let d = sae.d();
    let l = sae.n_latents();
    let n = data.len() / d;
    let device = sae.encoder.val().device();
    let mean = super::init::mean(data, d);
    let (mut sq_err, mut sq_dev, mut active) = (0f64, 0f64, 0u64);
    let mut fired = vec![false; l];
    for chunk in data[..n * d].chunks(4096 * d) {
        let rows = chunk.len() / d;
        let x = Tensor::<B, 2>::from_data(TensorData::new(chunk.to_vec(), [rows, d]), &device);
        let z = sae.encode(x.clone());
        let on = z.clone().greater_elem(0.0).float();
        let per_latent = host(on.sum_dim(0));
        for (f, &c) in fired.iter_mut().zip(&per_latent) {
            *f |= c > 0.0;
        }
        active += per_latent.iter().map(|&c| c as u64).sum::<u64>();
        let err = host((sae.decode(z) - x).powf_scalar(2.0).sum());
        sq_err += f64::from(err[0]);
        for row in chunk.chunks_exact(d) {
            sq_dev += row
                .iter()
                .zip(&mean)
                .map(|(&v, &m)| f64::from(v - m).powi(2))
                .sum::<f64>();
        }
    }
    Evaluation {
        tokens: n,
        mse: sq_err / (n * d).max(1) as f64,
        fve: 1.0 - sq_err / sq_dev,
        l0: active as f64 / n.max(1) as f64,
        never_fired: fired.iter().filter(|f| !**f).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_averages_and_pools_variance() {
        let mut w = MetricsWindow::default();
        let s = |step, mse, sq_err, sq_dev, active| StepStats {
            step,
            tokens: 10,
            mse,
            loss: mse,
            sq_err,
            sq_dev,
            active,
            dead: step,
            ..StepStats::default()
        };
        w.add(&s(0, 1.0, 10.0, 100.0, 30));
        w.add(&s(1, 3.0, 30.0, 50.0, 50));
        let m = w.take(10, 20, 64);
        assert!(w.is_empty());
        assert_eq!((m.step, m.steps, m.tokens, m.dead), (2, 10, 20, 1));
        assert_eq!(m.mse, 2.0);
        // Pooled, 1 − 40/150, not the mean of the steps' 0.9 and 0.4.
        assert!((m.fve - (1.0 - 40.0 / 150.0)).abs() < 1e-12);
        assert_eq!(m.l0, 4.0);
        assert_eq!(m.aux_loss, 0.0);
        assert!(
            m.to_string()
                .starts_with("step 2/10  mse 2.00000  fve 0.7333  L0 4.0  dead 1/64")
        );
    }
}
