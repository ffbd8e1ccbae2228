//! Induction scores: how much each head attends from a token in the
//! repeated run to the token right after its earlier occurrence.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::train::RepeatedBatch;

/// For `probs` `[B,S,K,H]` of a [`RepeatedBatch`], the mean over rows and
/// over queries `q` in the second copy of `probs[b, q, q - L + 1, h]` (`L` the
/// row's period), one score per head. A perfect induction head scores 1.
pub fn induction_scores<B: Backend>(probs: &Tensor<B, 4>, batch: &RepeatedBatch) -> Vec<f32> {
    repeat_attention(probs, batch, 1)
}

/// Like [`induction_scores`], but for attention to the earlier occurrence of
/// the *same* token (`q - L`): what a duplicate-token head does.
pub fn duplicate_token_scores<B: Backend>(probs: &Tensor<B, 4>, batch: &RepeatedBatch) -> Vec<f32> {
    repeat_attention(probs, batch, 0)
}

/// Mean attention from each second-copy query `q` to key `q - L + shift`.
fn repeat_attention<B: Backend>(
    probs: &Tensor<B, 4>,
    batch: &RepeatedBatch,
    shift: usize,
) -> Vec<f32> {
    let [b, s, k, h] = probs.dims();
    assert_eq!(
        [b, s],
        [batch.batch.batch_size(), batch.batch.len()],
        "probabilities of another batch"
    );
    let values: Vec<f32> = probs
        .clone()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32");
    let mut scores = vec![0f32; h];
    let mut n = 0usize;
    for (row, &period) in batch.periods.iter().enumerate() {
        for q in batch.second_copy(row) {
            let key = q - period + shift;
            for (head, score) in scores.iter_mut().enumerate() {
                *score += values[((row * s + q) * k + key) * h + head];
            }
            n += 1;
        }
    }
    scores.iter_mut().for_each(|x| *x /= n as f32);
    scores
}
