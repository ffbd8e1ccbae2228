//! Attribution by activation × gradient, and the reference's detach pattern.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use hooks_core::{Detach, HookError, HookTree};

use crate::experiments::cache::{ActivationCache, CacheSpec};
use hooks_model::{HookedModel, ModelError, TokenBatch};

/// Activation, gradient and their product at one site and layer.
#[derive(Clone, Debug)]
pub struct Attribution {
    /// The recording key (`layers.<i>.<site>` or `<site>`).
    pub key: String,
    /// The forward value.
    pub activation: TensorData,
    /// The gradient of the metric with respect to it.
    pub gradient: TensorData,
    /// Element-wise activation × gradient.
    pub act_x_grad: Vec<f32>,
    /// Sum of `act_x_grad`: the first-order estimate of how much the metric
    /// would drop if the activation were zeroed.
    pub total: f32,
}

/// Runs `batch` through `model` with `hooks` (plus recording of the sites in
/// `spec`), back-propagates the scalar `metric(logits)` and returns act × grad
/// at every selected site and layer, largest |total| first.
pub fn act_times_grad<B: AutodiffBackend, M: HookedModel<B>>(
    model: &M,
    batch: &TokenBatch,
    mut hooks: M::Hooks,
    spec: &CacheSpec,
    metric: impl Fn(Tensor<B, 3>) -> Tensor<B, 1>,
) -> Result<Vec<Attribution>, ModelError> {
    let cache = ActivationCache::install_with_grads(&mut hooks, spec)
        .map_err(|e| ModelError::BadBatch(e.to_string()))?;
    let logits = model.forward(batch, &hooks)?;
    let _grads = metric(logits).backward();
    let grads = cache.grads().expect("installed with gradients");
    let mut out = Vec::new();
    for (key, act) in cache.recorder().entries() {
        let Some(grad) = grads.get_key(&key) else {
            continue; // not on a path to the metric
        };
        let activation = act.to_data();
        let gradient = grad.to_data();
        let a = activation
            .clone()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32");
        let g = gradient
            .clone()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32");
        let act_x_grad: Vec<f32> = a.iter().zip(&g).map(|(a, g)| a * g).collect();
        let total = act_x_grad.iter().sum();
        out.push(Attribution {
            key,
            activation,
            gradient,
            act_x_grad,
            total,
        });
    }
    out.sort_by(|a, b| b.total.abs().total_cmp(&a.total.abs()));
    Ok(out)
}

/// Detaches every norm `scale` (`resid.torso.ln_attn.scale`, ...,
/// `resid.ln_f.scale`): gradients then flow only through the numerator of
/// each norm, the reference's pattern for attribution through layer norms.
pub fn detach_norm_scales<T: HookTree>(hooks: &mut T) -> Result<(), HookError> {
    for site in hooks.sites_matching(&["**.scale"])? {
        hooks.append_to_path(&format!("{}.fwd", site.path), Detach)?;
    }
    Ok(())
}
