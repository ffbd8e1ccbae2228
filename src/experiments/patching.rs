//! Clean → corrupted activation patching over a set of sites and layers.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use hooks_core::{FwdStage, HookTree, Record, Recorder};

use crate::experiments::ablate::PatchFrom;
use hooks_model::{HookedModel, ModelError, TokenBatch};

/// One cell of a patching table.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchRow {
    /// The site path.
    pub site: String,
    /// The layer (`None` for sites outside the blocks).
    pub layer: Option<usize>,
    /// The metric on the corrupted run with this site patched from the clean run.
    pub metric: f32,
    /// `(metric - corrupted) / (clean - corrupted)`: 1 = fully restored.
    pub restored: f32,
}

/// Runs `clean` and records every selected site; then, for each site and
/// layer, runs `corrupted` with that one activation replaced by the clean
/// one and evaluates `metric` on the logits. Returns the table and the clean
/// and corrupted metrics. `sites` are globs (`resid.torso.post_attn`,
/// `attn.*`); the batches must have the same shape.
pub fn patching_table<B: Backend, M: HookedModel<B>>(
    model: &M,
    clean: &TokenBatch,
    corrupted: &TokenBatch,
    sites: &[&str],
    metric: impl Fn(Tensor<B, 3>) -> f32,
) -> Result<(Vec<PatchRow>, f32, f32), ModelError> {
    if clean.batch_size() != corrupted.batch_size() || clean.len() != corrupted.len() {
        return Err(ModelError::BadBatch(format!(
            "clean [{}, {}] and corrupted [{}, {}] batches must have the same shape",
            clean.batch_size(),
            clean.len(),
            corrupted.batch_size(),
            corrupted.len()
        )));
    }
    let selected = M::Hooks::default()
        .sites_matching(sites)
        .map_err(|e| ModelError::BadBatch(e.to_string()))?;
    let source = Recorder::new();
    let mut record = M::Hooks::default();
    record.append_all(FwdStage::Fwd, Record::into(&source));
    let clean_metric = metric(model.forward(clean, &record)?);
    let corrupted_metric = metric(model.forward(corrupted, &M::Hooks::default())?);

    let mut rows = Vec::new();
    for site in &selected {
        let in_block = source.get_key(&format!("layers.0.{}", site.path)).is_some();
        let layers: Vec<Option<usize>> = if in_block {
            (0..model.dims().n_layer).map(Some).collect()
        } else {
            vec![None]
        };
        for layer in layers {
            let mut hooks = M::Hooks::default();
            hooks
                .append_to_path(
                    &format!("{}.fwd", site.path),
                    PatchFrom {
                        source: source.clone(),
                        position: None,
                        layer,
                    },
                )
                .map_err(|e| ModelError::BadBatch(e.to_string()))?;
            let m = metric(model.forward(corrupted, &hooks)?);
            let span = clean_metric - corrupted_metric;
            rows.push(PatchRow {
                site: site.path.clone(),
                layer,
                metric: m,
                restored: if span.abs() > f32::EPSILON {
                    (m - corrupted_metric) / span
                } else {
                    0.0
                },
            });
        }
    }
    Ok((rows, clean_metric, corrupted_metric))
}
