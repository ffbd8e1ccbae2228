//! Training GPT-2 with hooks in a Burn loop: the next-token loss, the
//! synthetic induction task the bundled model was trained on, and one
//! optimiser step that runs the forward pass through a hook tree (steering
//! vectors, gradient hooks and recorders all work during training).

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use crate::sample::SplitMix64;
use crate::{Gpt2, ModelError, TokenBatch, TransformerHooks};

/// Mean next-token cross-entropy over the predictions made at positions
/// `from..S-1` (the prediction at position p is of token p+1).
pub fn next_token_loss<B: Backend>(logits: Tensor<B, 3>, batch: &TokenBatch, from: usize) -> Tensor<B, 1> {
    let [b, s, v] = logits.dims();
    assert!(from < s - 1, "no prediction to score: from = {from}, length = {s}");
    let n = s - 1 - from;
    let preds = logits.slice([0..b, from..s - 1, 0..v]).reshape([b * n, v]);
    let targets: Vec<i64> = batch
        .rows()
        .iter()
        .flat_map(|r| r[from + 1..].iter().map(|&t| i64::from(t)))
        .collect();
    let device = preds.device();
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [b * n, 1]), &device);
    let picked = log_softmax(preds, 1).gather(1, targets);
    picked.mean().neg()
}

/// Per-example mean loss on positions `from..S-1`, as `[B]` values on the host.
pub fn next_token_loss_per_position<B: Backend>(logits: Tensor<B, 3>, batch: &TokenBatch) -> Vec<Vec<f32>> {
    let [b, s, v] = logits.dims();
    let logp: Vec<f32> = log_softmax(logits, 2).into_data().to_vec().expect("f32");
    (0..b)
        .map(|row| {
            (0..s - 1)
                .map(|p| -logp[(row * s + p) * v + batch.rows()[row][p + 1] as usize])
                .collect()
        })
        .collect()
}

/// A batch of the induction task: each row is a random prefix, then a random
/// run `x` of `period` tokens, then `x` again. Periods differ between rows,
/// so a model cannot predict the repeat from positions alone: it has to find
/// the earlier occurrence of the current token and copy what followed it,
/// which is what induction heads do.
#[derive(Clone, Debug)]
pub struct RepeatedBatch {
    /// The tokens, `[rows, len]`.
    pub batch: TokenBatch,
    /// The period `L` of each row: the copies are `len-2L..len-L` and `len-L..len`.
    pub periods: Vec<usize>,
}

impl RepeatedBatch {
    /// `rows` rows of length `len`, periods drawn from `min_period..=len/2`.
    pub fn random(
        rng: &mut SplitMix64,
        rows: usize,
        len: usize,
        min_period: usize,
        vocab: usize,
    ) -> Result<Self, ModelError> {
        if min_period == 0 || 2 * min_period > len {
            return Err(ModelError::BadBatch(format!(
                "period {min_period} does not fit twice in {len} tokens"
            )));
        }
        let mut tokens = Vec::with_capacity(rows);
        let mut periods = Vec::with_capacity(rows);
        for _ in 0..rows {
            let span = len / 2 - min_period + 1;
            let period = min_period + (rng.next_u64() % span as u64) as usize;
            let prefix = len - 2 * period;
            let mut row: Vec<u32> = (0..prefix + period)
                .map(|_| (rng.next_u64() % vocab as u64) as u32)
                .collect();
            row.extend_from_within(prefix..prefix + period);
            tokens.push(row);
            periods.push(period);
        }
        Ok(RepeatedBatch {
            batch: TokenBatch::new(tokens)?,
            periods,
        })
    }

    /// Positions whose next token lies in the first copy (unpredictable).
    pub fn first_copy_predictions(&self, row: usize) -> std::ops::Range<usize> {
        let (len, l) = (self.batch.len(), self.periods[row]);
        (len - 2 * l).saturating_sub(1)..len - l - 1
    }

    /// Positions whose next token lies in the second copy, after its first
    /// token (predictable by induction).
    pub fn repeat_predictions(&self, row: usize) -> std::ops::Range<usize> {
        let (len, l) = (self.batch.len(), self.periods[row]);
        len - l..len - 1
    }

    /// Mean next-token loss on the first copy and on the repeat.
    pub fn copy_losses<B: Backend>(&self, logits: Tensor<B, 3>) -> (f32, f32) {
        let losses = next_token_loss_per_position(logits, &self.batch);
        let mean = |pick: &dyn Fn(usize) -> std::ops::Range<usize>| {
            let (sum, n) = losses.iter().enumerate().fold((0f32, 0usize), |(sum, n), (row, l)| {
                let r = pick(row);
                (sum + l[r.clone()].iter().sum::<f32>(), n + r.len())
            });
            sum / n as f32
        };
        (
            mean(&|row| self.first_copy_predictions(row)),
            mean(&|row| self.repeat_predictions(row)),
        )
    }
}

/// One optimiser step on the next-token loss, with the forward pass run
/// through `hooks`. Returns the updated model and the loss.
pub fn train_step<B, O>(
    model: Gpt2<B>,
    optim: &mut O,
    batch: &TokenBatch,
    hooks: &TransformerHooks<B>,
    lr: f64,
) -> Result<(Gpt2<B>, f32), ModelError>
where
    B: AutodiffBackend,
    O: Optimizer<Gpt2<B>, B>,
    Gpt2<B>: AutodiffModule<B>,
{
    let logits = model.forward(batch, hooks)?;
    let loss = next_token_loss(logits, batch, 0);
    let value = loss.clone().into_scalar().elem::<f32>();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    Ok((optim.step(lr, model, grads), value))
}
