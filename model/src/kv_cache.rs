//! The KV cache every family samples with: per layer, the keys and values of
//! earlier positions, and which cached positions are padding (for the
//! positions and mask of the next call, by the rules of [`Layout`]).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::batch::Layout;
use crate::{HookedModel, ModelError, TokenBatch};

/// Cached keys and values of one layer, `[B,K,Hkv,d]`, as they were before
/// the `k`/`v` hooks (hooks then see, and may change, the whole cached
/// length). Keys are as the family's `attn.k` site computes them (GPT-2:
/// times d^-1/4; Llama: rotated, times d^-1/4).
#[derive(Clone, Debug)]
pub struct LayerCache<B: Backend> {
    /// Keys.
    pub k: Tensor<B, 4>,
    /// Values.
    pub v: Tensor<B, 4>,
}

/// Keys and values of earlier positions, per layer, for sampling.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    pub(crate) layers: Vec<Option<LayerCache<B>>>,
    pad: Vec<Vec<bool>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `model` (one slot per layer).
    pub fn new<M: HookedModel<B>>(model: &M) -> Self {
        KvCache {
            layers: vec![None; model.dims().n_layer],
            pad: Vec::new(),
        }
    }

    /// How many positions are cached.
    pub fn len(&self) -> usize {
        self.pad.first().map_or(0, Vec::len)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `batch`'s pad mask to the cached one and returns the layout
    /// of the new queries over every key; the rows must continue the cached
    /// ones (same batch size). The caller checks the batch first.
    pub(crate) fn extend(&mut self, batch: &TokenBatch) -> Result<Layout, ModelError> {
        if !self.pad.is_empty() && self.pad.len() != batch.batch_size() {
            return Err(ModelError::BadBatch(format!(
                "the cache holds {} rows but the new tokens have {}",
                self.pad.len(),
                batch.batch_size()
            )));
        }
        let new_pad = pad_rows(batch);
        if self.pad.is_empty() {
            self.pad = new_pad;
        } else {
            for (row, new) in self.pad.iter_mut().zip(new_pad) {
                row.extend(new);
            }
        }
        Ok(Layout::new(&self.pad, batch.len()))
    }
}

/// The pad mask of `batch`, all `false` when it has none.
pub(crate) fn pad_rows(batch: &TokenBatch) -> Vec<Vec<bool>> {
    match batch.pad_mask() {
        Some(p) => p.to_vec(),
        None => vec![vec![false; batch.len()]; batch.batch_size()],
    }
}
