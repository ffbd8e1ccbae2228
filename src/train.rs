//! Training GPT-2 with hooks in a Burn loop: the next-token loss, the
//! synthetic induction task the bundled model was trained on, and one
//! optimiser step that runs the forward pass through a hook tree (steering
//! vectors, gradient hooks and recorders all work during training).

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use hooks_model::sample::SplitMix64;
use hooks_model::{HookedModel, ModelError, TokenBatch};

/// Mean next-token cross-entropy over the predictions made at positions
/// `from..S-1` (the prediction at position p is of token p+1).
pub fn next_token_loss<B: Backend>(
    logits: Tensor<B, 3>,
    batch: &TokenBatch,
    from: usize,
) -> Tensor<B, 1> {
    let [b, s, v] = logits.dims();
    assert!(
        from < s - 1,
        "no prediction to score: from = {from}, length = {s}"
    );
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
pub fn next_token_loss_per_position<B: Backend>(
    logits: Tensor<B, 3>,
    batch: &TokenBatch,
) -> Vec<Vec<f32>> {
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

/// A batch of the induction task: each row is random tokens, a random run `x`
/// of `period` tokens, `x` again, and random tokens, at a random place in the
/// row. Periods and places differ between rows, so a model cannot predict the
/// repeat from positions alone: it has to find the earlier occurrence of the
/// current token and copy what followed it, which is what induction heads do.
#[derive(Clone, Debug)]
pub struct RepeatedBatch {
    /// The tokens, `[rows, len]`.
    pub batch: TokenBatch,
    /// The period `L` of each row.
    pub periods: Vec<usize>,
    /// Where each row's first copy starts; the second starts `L` later.
    pub starts: Vec<usize>,
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
        let mut draw = |n: u64| (rng.next_u64() % n) as usize;
        let (mut tokens, mut periods, mut starts) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rows {
            let period = min_period + draw((len / 2 - min_period + 1) as u64);
            let start = draw((len - 2 * period + 1) as u64);
            let mut row: Vec<u32> = (0..len).map(|_| draw(vocab as u64) as u32).collect();
            row.copy_within(start..start + period, start + period);
            tokens.push(row);
            periods.push(period);
            starts.push(start);
        }
        Ok(RepeatedBatch {
            batch: TokenBatch::new(tokens)?,
            periods,
            starts,
        })
    }

    /// Positions of row `row`'s first copy.
    pub fn first_copy(&self, row: usize) -> std::ops::Range<usize> {
        self.starts[row]..self.starts[row] + self.periods[row]
    }

    /// Positions of row `row`'s second copy.
    pub fn second_copy(&self, row: usize) -> std::ops::Range<usize> {
        let r = self.first_copy(row);
        r.end..r.end + self.periods[row]
    }

    /// Positions whose next token lies in the first copy (unpredictable).
    pub fn first_copy_predictions(&self, row: usize) -> std::ops::Range<usize> {
        let r = self.first_copy(row);
        r.start.saturating_sub(1)..r.end - 1
    }

    /// Positions whose next token lies in the second copy, after its first
    /// token (predictable by induction).
    pub fn repeat_predictions(&self, row: usize) -> std::ops::Range<usize> {
        let r = self.second_copy(row);
        r.start..r.end - 1
    }

    /// Mean next-token loss on the first copy and on the repeat.
    pub fn copy_losses<B: Backend>(&self, logits: Tensor<B, 3>) -> (f32, f32) {
        let losses = next_token_loss_per_position(logits, &self.batch);
        let mean = |pick: &dyn Fn(usize) -> std::ops::Range<usize>| {
            let (sum, n) = losses
                .iter()
                .enumerate()
                .fold((0f32, 0usize), |(sum, n), (row, l)| {
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
pub fn train_step<B, M, O>(
    model: M,
    optim: &mut O,
    batch: &TokenBatch,
    hooks: &M::Hooks,
    lr: f64,
) -> Result<(M, f32), ModelError>
where
    B: AutodiffBackend,
    M: HookedModel<B> + AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let logits = model.forward(batch, hooks)?;
    let loss = next_token_loss(logits, batch, 0);
    let value = loss.clone().into_scalar().elem::<f32>();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    Ok((optim.step(lr, model, grads), value))
}
