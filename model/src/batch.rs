//! Token batches, checked on the host before any tensor work, and the
//! positions and attention masks the reference derives from a pad mask.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::{ModelDims, ModelError};

/// A batch of equal-length token rows with an optional pad mask
/// (`true` = pad). Checked against a config by [`TokenBatch::check`].
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    rows: Vec<Vec<u32>>,
    pad: Option<Vec<Vec<bool>>>,
}

impl TokenBatch {
    /// Rows without padding; all rows must have the same, non-zero length.
    pub fn new(rows: Vec<Vec<u32>>) -> Result<Self, ModelError> {
        let len = rows.first().map(Vec::len).unwrap_or(0);
        if rows.is_empty() || len == 0 {
            return Err(ModelError::BadBatch(
                "a batch needs at least one non-empty row".into(),
            ));
        }
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != len) {
            return Err(ModelError::BadBatch(format!(
                "row {i} has {} tokens but row 0 has {len}; rows of a batch must have equal lengths \
                 (pad them and pass a pad mask)",
                r.len()
            )));
        }
        Ok(TokenBatch { rows, pad: None })
    }

    /// One row.
    pub fn single(row: Vec<u32>) -> Result<Self, ModelError> {
        Self::new(vec![row])
    }

    /// Adds a pad mask (`true` = pad) of the same shape as the tokens. A row
    /// made only of padding is refused.
    pub fn with_pad_mask(mut self, pad: Vec<Vec<bool>>) -> Result<Self, ModelError> {
        if pad.len() != self.rows.len() || pad.iter().any(|p| p.len() != self.len()) {
            return Err(ModelError::BadBatch(format!(
                "pad mask must have the tokens' shape [{}, {}]",
                self.rows.len(),
                self.len()
            )));
        }
        if let Some(i) = pad.iter().position(|p| p.iter().all(|&x| x)) {
            return Err(ModelError::BadBatch(format!("row {i} is all padding")));
        }
        self.pad = Some(pad);
        Ok(self)
    }

    /// Left-pads rows of different lengths with `pad_token` and masks the pads.
    pub fn left_padded(rows: Vec<Vec<u32>>, pad_token: u32) -> Result<Self, ModelError> {
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut tokens = Vec::new();
        let mut pad = Vec::new();
        for r in rows {
            let n = len - r.len();
            pad.push((0..len).map(|i| i < n).collect());
            let mut row = vec![pad_token; n];
            row.extend(r);
            tokens.push(row);
        }
        Self::new(tokens)?.with_pad_mask(pad)
    }

    /// Batch size.
    pub fn batch_size(&self) -> usize {
        self.rows.len()
    }

    /// Row length.
    pub fn len(&self) -> usize {
        self.rows[0].len()
    }

    /// Whether rows are empty (never: construction refuses it).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The token rows.
    pub fn rows(&self) -> &[Vec<u32>] {
        &self.rows
    }

    /// The pad mask, if any.
    pub fn pad_mask(&self) -> Option<&[Vec<bool>]> {
        self.pad.as_deref()
    }

    /// Whether position `p` of row `b` is padding.
    pub fn is_pad(&self, b: usize, p: usize) -> bool {
        self.pad.as_ref().is_some_and(|m| m[b][p])
    }

    /// Checks ids against the vocabulary and length against the context window
    /// (`already` tokens are cached from earlier steps).
    pub fn check(&self, dims: &ModelDims, already: usize) -> Result<(), ModelError> {
        for (row, r) in self.rows.iter().enumerate() {
            if already + r.len() > dims.n_ctx {
                return Err(ModelError::TooLong {
                    row,
                    len: already + r.len(),
                    n_positions: dims.n_ctx,
                });
            }
            if let Some((position, &token)) = r
                .iter()
                .enumerate()
                .find(|(_, t)| **t as usize >= dims.vocab_size)
            {
                return Err(ModelError::TokenOutOfRange {
                    token,
                    row,
                    position,
                    vocab_size: dims.vocab_size,
                });
            }
        }
        Ok(())
    }

    /// The tokens as a `[B,S]` tensor.
    pub fn tokens_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2, Int> {
        let data: Vec<i64> = self.rows.iter().flatten().map(|&t| i64::from(t)).collect();
        Tensor::from_data(
            TensorData::new(data, [self.batch_size(), self.len()]),
            device,
        )
    }
}

/// Positions and mask for one forward call, on the host: the reference's rules.
pub(crate) struct Layout {
    /// `[B,S]` position ids: the count of non-pad tokens before each token
    /// (pads take the position of the last real token, or 0).
    pub positions: Vec<i64>,
    /// `[R,1,S,K]` additive mask: 0 where a query may see a key, -inf where
    /// not; `R` is `mask_rows`.
    pub mask: Vec<f32>,
    /// 1 when every row has the same mask (no pads, or the same pads), else B.
    pub mask_rows: usize,
    pub batch: usize,
    pub queries: usize,
    pub keys: usize,
}

impl Layout {
    /// The layout of `batch` on its own (no cached positions).
    pub fn of(batch: &TokenBatch) -> Self {
        Layout::new(&crate::kv_cache::pad_rows(batch), batch.len())
    }

    /// `pad_all` is the pad mask over every key position (cached then new);
    /// the queries are the last `queries` positions.
    pub fn new(pad_all: &[Vec<bool>], queries: usize) -> Self {
        let batch = pad_all.len();
        let keys = pad_all[0].len();
        let offset = keys - queries;
        let mut positions = Vec::with_capacity(batch * queries);
        let mut mask = Vec::with_capacity(batch * queries * keys);
        for row in pad_all {
            let mut count = 0i64;
            let mut row_pos = Vec::with_capacity(keys);
            for &p in row {
                if !p {
                    count += 1;
                }
                row_pos.push((count - 1).max(0));
            }
            positions.extend_from_slice(&row_pos[offset..]);
            for q in offset..keys {
                for (k, &pad_k) in row.iter().enumerate() {
                    // causal, and a pad key only for pad queries (XOR rule), so no row is empty
                    let visible = k <= q && pad_k == row[q];
                    mask.push(if visible { 0.0 } else { f32::NEG_INFINITY });
                }
            }
        }
        // Rows without pads share one mask: keep one copy, which the
        // attention adds to every row and head in a single pass.
        let row = queries * keys;
        let mask_rows = if row > 0 && mask.chunks(row).all(|m| m == &mask[..row]) {
            mask.truncate(row);
            1
        } else {
            batch
        };
        Layout {
            positions,
            mask,
            mask_rows,
            batch,
            queries,
            keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Layout;

    #[test]
    fn rows_without_pads_share_one_mask() {
        let layout = Layout::new(&[vec![false; 3], vec![false; 3]], 3);
        assert_eq!(layout.mask_rows, 1);
        let inf = f32::NEG_INFINITY;
        assert_eq!(
            layout.mask,
            vec![0.0, inf, inf, 0.0, 0.0, inf, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn padded_rows_keep_their_own_masks() {
        let layout = Layout::new(&[vec![false; 2], vec![true, false]], 2);
        assert_eq!(layout.mask_rows, 2);
        let inf = f32::NEG_INFINITY;
        // Row 1: the pad query sees only itself, the real query only itself.
        assert_eq!(layout.mask, vec![0.0, inf, 0.0, 0.0, 0.0, inf, inf, 0.0]);
    }
}
