//! Non-finite values (NaN, ±∞): refused in weights as they load (unless
//! allowed, [`crate::checkpoint::LoadOptions`]), and traced in the values at
//! hook sites, where [`HookedModel::first_non_finite`](crate::HookedModel::first_non_finite) names the first site, in
//! forward order, that went non-finite.
//!
//! The checks are plain functions over values, so every checkpoint format
//! (f32 here; bf16 or sharded files later) runs the same ones.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use hooks_core::{AnyRankHook, Ctx, FwdStage, HookTree, record_key};

use crate::{ModelError, TokenBatch};

/// The first value that is NaN or infinite, with its flat index.
pub fn first_non_finite(values: impl IntoIterator<Item = f32>) -> Option<(usize, f32)> {
    values.into_iter().enumerate().find(|(_, v)| !v.is_finite())
}

/// The values of little-endian f32 bytes (a safetensors F32 tensor's data).
pub fn f32_le(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Checks that weight `key` of the file at `path` holds only finite values:
/// [`ModelError::NonFiniteWeight`] names the key and the first bad flat
/// index and value.
pub fn check_finite(
    path: &Path,
    key: &str,
    values: impl IntoIterator<Item = f32>,
) -> Result<(), ModelError> {
    match first_non_finite(values) {
        None => Ok(()),
        Some((index, value)) => Err(ModelError::NonFiniteWeight {
            path: path.to_path_buf(),
            key: key.to_string(),
            index,
            value,
        }),
    }
}

/// Where values first went non-finite: a site (and layer), the first bad
/// element and what was running.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFiniteSite {
    /// What was running: `forward pass`, `backward pass`, `generation of
    /// token 3 of 5`.
    pub during: String,
    /// The site path, e.g. `attn.qk_probs`.
    pub site: String,
    /// The layer, for sites inside the blocks.
    pub layer: Option<usize>,
    /// Flat (row-major) index of the first non-finite element.
    pub index: usize,
    /// Its value: NaN, `inf` or `-inf`.
    pub value: f32,
    /// The shape of the site's value.
    pub shape: Vec<usize>,
}

impl NonFiniteSite {
    /// The key the value has in `hooks cache` files and a [`hooks_core::Recorder`].
    pub fn key(&self) -> String {
        record_key(&self.site, self.layer)
    }

    /// The index of the bad element in each dimension.
    pub fn coordinates(&self) -> Vec<usize> {
        let mut rest = self.index;
        let mut out = vec![0; self.shape.len()];
        for (i, &n) in self.shape.iter().enumerate().rev() {
            if n > 0 {
                out[i] = rest % n;
                rest /= n;
            }
        }
        out
    }
}

impl fmt::Display for NonFiniteSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "values went non-finite in the {}: first at ",
            self.during
        )?;
        match self.layer {
            Some(layer) => write!(f, "layer {layer}, site `{}`", self.site)?,
            None => write!(f, "site `{}`", self.site)?,
        }
        write!(
            f,
            " (key `{}`): {} at {:?} (flat index {}) of shape {:?}",
            self.key(),
            self.value,
            self.coordinates(),
            self.index,
            self.shape
        )
    }
}

/// Whether `value` counts as non-finite at `site`: `-inf` in
/// `attn.qk_logits` is the causal (and pad) mask, not a fault.
pub fn is_fault(site: &str, value: f32) -> bool {
    !(value.is_finite() || (value == f32::NEG_INFINITY && site == "attn.qk_logits"))
}

/// The first non-finite element of host values at `site`, [`is_fault`]'s rule.
pub fn first_fault(site: &str, values: impl IntoIterator<Item = f32>) -> Option<(usize, f32)> {
    values
        .into_iter()
        .enumerate()
        .find(|(_, v)| is_fault(site, *v))
}

/// A hook that notes the first site whose value holds a fault.
struct FirstFault {
    found: Arc<Mutex<Option<NonFiniteSite>>>,
}

impl<B: Backend> AnyRankHook<B> for FirstFault {
    fn call<const D: usize>(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        let mut found = self.found.lock().unwrap_or_else(PoisonError::into_inner);
        if found.is_some() {
            return x;
        }
        // `append_all` and the model both name the site.
        let Some(site) = ctx.site() else {
            ctx.fail("first_non_finite: a site was called without its path");
            return x;
        };
        let data = x.clone().into_data();
        if let Some((index, value)) = first_fault(site, data.iter::<f32>()) {
            *found = Some(NonFiniteSite {
                during: "forward pass".into(),
                site: site.to_string(),
                layer: ctx.layer(),
                index,
                value,
                shape: data.shape.to_vec(),
            });
        }
        x
    }
}

/// [`HookedModel::first_non_finite`](crate::HookedModel::first_non_finite)
/// for any tree: `forward` runs `batch` with a copy of `hooks` plus a check
/// last at every site.
pub fn first_non_finite_site<T: HookTree>(
    batch: &TokenBatch,
    hooks: &T,
    forward: impl FnOnce(&TokenBatch, &T) -> Result<Tensor<T::Backend, 3>, ModelError>,
) -> Result<Option<NonFiniteSite>, ModelError> {
    let found = Arc::new(Mutex::new(None));
    let mut checked = hooks.clone();
    checked.append_all(
        FwdStage::Fwd2,
        FirstFault {
            found: found.clone(),
        },
    );
    forward(batch, &checked)?;
    let site = found.lock().unwrap_or_else(PoisonError::into_inner).take();
    Ok(site)
}

/// Whether a tensor holds a NaN or an infinity, computed on its device (two
/// reductions; only a boolean comes back to the host).
pub fn has_non_finite<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    let bad = t.clone().is_nan().bool_or(t.clone().is_inf());
    bad.any().int().into_scalar().elem::<i64>() != 0
}
