//! Clean → corrupted activation patching over a set of sites and layers
//! (and, with [`patching_table_per_head`], heads; with
//! [`patching_table_per_position`], heads and positions).

use std::borrow::Cow;
use std::ops::Range;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use hooks_core::{AnyRankHook, Ctx, FwdStage, HookTree, Record, Recorder, record_key};

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
    same_shape(clean, corrupted)?;
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
                restored: restored(m, corrupted_metric, span),
            });
        }
    }
    Ok((rows, clean_metric, corrupted_metric))
}

/// The fraction of the clean − corrupted gap (`span`) a patched metric `m`
/// closes; 0 when there is no gap.
fn restored(m: f32, corrupted_metric: f32, span: f32) -> f32 {
    if span.abs() > f32::EPSILON {
        (m - corrupted_metric) / span
    } else {
        0.0
    }
}

/// One cell of a per-head (or per-head and position) patching table.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadPatchRow {
    /// The site path.
    pub site: String,
    /// The layer (`None` for sites outside the blocks).
    pub layer: Option<usize>,
    /// The head whose slice was patched (for `attn.k`/`attn.v`, the
    /// key/value head); `None` for a site without a head axis, patched whole.
    pub head: Option<usize>,
    /// The position (dimension 1: the query position, the key position for
    /// `attn.k`/`attn.v`) patched in every row; `None` for every position
    /// ([`patching_table_per_head`]).
    pub position: Option<usize>,
    /// The metric on the corrupted run with this slice patched from the clean run.
    pub metric: f32,
    /// `(metric - corrupted) / (clean - corrupted)`: 1 = fully restored.
    pub restored: f32,
}

/// Replaces one head's slice (`axis` = `head`) of a site's value at one
/// layer by the clean run's, at one position (dimension 1) or at every
/// position. Sites without a head axis are patched by [`PatchFrom`].
#[derive(Clone)]
struct PatchHead<B: Backend> {
    source: Recorder<B>,
    layer: Option<usize>,
    axis: usize,
    head: usize,
    position: Option<usize>,
}

impl<B: Backend> AnyRankHook<B> for PatchHead<B> {
    fn call<const D: usize>(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        if ctx.layer() != self.layer {
            return x;
        }
        let Some(site) = ctx.site() else {
            ctx.fail("PatchHead was called without a site path");
            return x;
        };
        let Some(src) = self.source.get::<D>(site, ctx.layer()) else {
            ctx.fail(format!(
                "no recorded activation `{}` to patch from",
                record_key(site, ctx.layer())
            ));
            return x;
        };
        let axes_fit = self.axis < D && (self.position.is_none() || D > 1);
        if src.dims() != x.dims() || !axes_fit {
            ctx.fail(format!(
                "the recorded activation has shape {:?}, the site's value {:?}",
                src.dims(),
                x.dims()
            ));
            return x;
        }
        let dims = x.dims();
        let ranges: [Range<usize>; D] = std::array::from_fn(|i| match self.position {
            _ if i == self.axis => self.head..self.head + 1,
            Some(p) if i == 1 => p..p + 1,
            _ => 0..dims[i],
        });
        x.slice_assign(ranges.clone(), src.slice(ranges))
    }

    fn name(&self) -> Cow<'_, str> {
        let at = self
            .position
            .map_or(String::new(), |p| format!(", position {p}"));
        Cow::Owned(format!(
            "PatchHead({} of axis {}{at})",
            self.head, self.axis
        ))
    }
}

/// [`patching_table`] one head at a time: for a site whose shape has a head
/// axis (`H` or `Hkv`: `attn.q`, `attn.k`, `attn.v`, `attn.v_out`,
/// `attn.qk_logits`, `attn.qk_probs`, ...), one run per layer and head with
/// only that head's slice (every position) taken from the clean run; other
/// sites are patched whole (`head: None`). An empty `sites` selects every
/// site. Returns the rows and the clean and corrupted metrics.
pub fn patching_table_per_head<B: Backend, M: HookedModel<B>>(
    model: &M,
    clean: &TokenBatch,
    corrupted: &TokenBatch,
    sites: &[&str],
    metric: impl Fn(Tensor<B, 3>) -> f32,
) -> Result<(Vec<HeadPatchRow>, f32, f32), ModelError> {
    patch_cells(model, clean, corrupted, sites, metric, false)
}

/// [`patching_table_per_head`] one position at a time as well: one run per
/// site, layer, head (where the site has a head axis) and position
/// (dimension 1, patched in every row), i.e. the real counterpart of every
/// row of [`attribution_patching`](crate::experiments::attribution_patching)'s
/// table, in its order. `S`-times the runs of the per-head table.
pub fn patching_table_per_position<B: Backend, M: HookedModel<B>>(
    model: &M,
    clean: &TokenBatch,
    corrupted: &TokenBatch,
    sites: &[&str],
    metric: impl Fn(Tensor<B, 3>) -> f32,
) -> Result<(Vec<HeadPatchRow>, f32, f32), ModelError> {
    patch_cells(model, clean, corrupted, sites, metric, true)
}

/// The per-head table, split by position when `per_position`.
fn patch_cells<B: Backend, M: HookedModel<B>>(
    model: &M,
    clean: &TokenBatch,
    corrupted: &TokenBatch,
    sites: &[&str],
    metric: impl Fn(Tensor<B, 3>) -> f32,
    per_position: bool,
) -> Result<(Vec<HeadPatchRow>, f32, f32), ModelError> {
    same_shape(clean, corrupted)?;
    let tree = M::Hooks::default();
    let selected = if sites.is_empty() {
        tree.sites()
    } else {
        tree.sites_matching(sites)
            .map_err(|e| ModelError::BadBatch(e.to_string()))?
    };
    let source = Recorder::new();
    let mut record = M::Hooks::default();
    record.append_all(FwdStage::Fwd, Record::into(&source));
    let clean_metric = metric(model.forward(clean, &record)?);
    let corrupted_metric = metric(model.forward(corrupted, &M::Hooks::default())?);
    let span = clean_metric - corrupted_metric;

    let mut rows = Vec::new();
    for site in &selected {
        let layers: Vec<Option<usize>> = if site.per_layer {
            (0..model.dims().n_layer).map(Some).collect()
        } else {
            vec![None]
        };
        let axis = site.dims().position(|l| l == "H" || l == "Hkv");
        for layer in layers {
            let Some(recorded) = source.get_key(&record_key(&site.path, layer)) else {
                continue; // the forward pass does not call this site
            };
            let shape = recorded.shape();
            let heads: Vec<Option<usize>> = match axis {
                Some(a) if a < shape.len() => (0..shape[a]).map(Some).collect(),
                _ => vec![None],
            };
            let positions: Vec<Option<usize>> = if per_position && shape.len() > 1 {
                (0..shape[1]).map(Some).collect()
            } else {
                vec![None]
            };
            for &head in &heads {
                for &position in &positions {
                    let mut hooks = M::Hooks::default();
                    let path = format!("{}.fwd", site.path);
                    let source = source.clone();
                    let added = match (head, axis) {
                        (Some(head), Some(axis)) => hooks.append_to_path(
                            &path,
                            PatchHead {
                                source,
                                layer,
                                axis,
                                head,
                                position,
                            },
                        ),
                        _ => hooks.append_to_path(
                            &path,
                            PatchFrom {
                                source,
                                position,
                                layer,
                            },
                        ),
                    };
                    added.map_err(|e| ModelError::BadBatch(e.to_string()))?;
                    let m = metric(model.forward(corrupted, &hooks)?);
                    rows.push(HeadPatchRow {
                        site: site.path.clone(),
                        layer,
                        head,
                        position,
                        metric: m,
                        restored: restored(m, corrupted_metric, span),
                    });
                }
            }
        }
    }
    Ok((rows, clean_metric, corrupted_metric))
}

/// Clean and corrupted batches must have the same shape: an error naming
/// both shapes otherwise.
pub(crate) fn same_shape(clean: &TokenBatch, corrupted: &TokenBatch) -> Result<(), ModelError> {
    if clean.batch_size() != corrupted.batch_size() || clean.len() != corrupted.len() {
        return Err(ModelError::BadBatch(format!(
            "clean [{}, {}] and corrupted [{}, {}] batches must have the same shape",
            clean.batch_size(),
            clean.len(),
            corrupted.batch_size(),
            corrupted.len()
        )));
    }
    Ok(())
}
