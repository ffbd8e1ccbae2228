//! An activation cache: record chosen sites at chosen layers, forward and/or
//! gradient stage, and nothing else, so memory stays bounded to what was
//! asked for (one tensor per site and layer, replaced on each pass).

use std::any::Any;
use std::path::Path as FsPath;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use hooks_core::{HookError, HookTree, Path, Record, Recorder, Site};

use crate::experiments::export::write_safetensors;
use hooks_model::ModelError;

/// Which sites and layers to record.
#[derive(Clone, Debug, Default)]
pub struct CacheSpec {
    sites: Vec<String>,
    layers: Option<Vec<usize>>,
}

impl CacheSpec {
    /// Nothing selected yet (an empty spec records every site).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a site by typed path (checked by rustc).
    pub fn site<T: HookTree, const D: usize>(
        mut self,
        path: &Path<T, Site<T::Backend, D>>,
    ) -> Self {
        self.sites.push(path.name().to_string());
        self
    }

    /// Adds every site matching a glob (`attn.*`, `**.scale`, `logits`);
    /// checked, with suggestions, when the cache is installed.
    pub fn glob(mut self, pattern: &str) -> Self {
        self.sites.push(pattern.to_string());
        self
    }

    /// Records only at these layers (sites outside the blocks, which have no
    /// layer, are then not recorded).
    pub fn layers(mut self, layers: impl IntoIterator<Item = usize>) -> Self {
        self.layers = Some(layers.into_iter().collect());
        self
    }

    /// The site paths this spec selects in `hooks`.
    pub fn resolve<T: HookTree>(&self, hooks: &T) -> Result<Vec<String>, HookError> {
        if self.sites.is_empty() {
            return Ok(hooks.sites().into_iter().map(|s| s.path).collect());
        }
        let patterns: Vec<&str> = self.sites.iter().map(String::as_str).collect();
        Ok(hooks
            .sites_matching(&patterns)?
            .into_iter()
            .map(|s| s.path)
            .collect())
    }
}

/// Gradients recorded on an autodiff backend's inner backend, kept without
/// naming it so the cache type stays `ActivationCache<B>` for every `B`.
trait GradStore: Send + Sync {
    fn data(&self) -> Vec<(String, TensorData)>;
    fn as_any(&self) -> &dyn Any;
}

impl<I: Backend> GradStore for Recorder<I> {
    fn data(&self) -> Vec<(String, TensorData)> {
        self.entries()
            .into_iter()
            .map(|(k, t)| (k, t.to_data()))
            .collect()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Recorded activations (and gradients, on autodiff backends), keyed like
/// `hooks cache`: `layers.<i>.<site>` inside blocks, `<site>` outside;
/// gradients `<key>.grad` in [`ActivationCache::save`].
///
/// ```
/// use burn_flex::Flex;
/// use hooks_core::path;
/// use burn_hooks::experiments::{ActivationCache, CacheSpec};
/// use hooks_model::{Gpt2, Gpt2Config, TokenBatch, TransformerHooks};
///
/// let model = Gpt2::<Flex>::init(&Gpt2Config::new(2, 16, 2, 8, 11), &Default::default()).unwrap();
/// let mut hooks = TransformerHooks::default();
/// let probs = path!(TransformerHooks<Flex>: attn.qk_probs);
/// let cache = ActivationCache::install(&mut hooks, &CacheSpec::new().site(&probs).layers([1])).unwrap();
/// model.forward(&TokenBatch::single(vec![1, 2, 3]).unwrap(), &hooks).unwrap();
/// assert_eq!(cache.at(&probs, Some(1)).unwrap().dims(), [1, 3, 3, 2]);
/// assert!(cache.at(&probs, Some(0)).is_none()); // layer 0 was not asked for
/// ```
pub struct ActivationCache<B: Backend> {
    forward: Recorder<B>,
    grads: Option<Box<dyn GradStore>>,
    sites: Vec<String>,
}

impl<B: Backend> ActivationCache<B> {
    /// Installs forward recording at the `fwd` stage of each selected site.
    pub fn install<T: HookTree<Backend = B>>(
        hooks: &mut T,
        spec: &CacheSpec,
    ) -> Result<Self, HookError> {
        let sites = spec.resolve(hooks)?;
        let forward = Recorder::new();
        for site in &sites {
            hooks.append_to_path(
                &format!("{site}.fwd"),
                Record::into(&forward).at_layers(spec.layers.clone()),
            )?;
        }
        Ok(ActivationCache {
            forward,
            grads: None,
            sites,
        })
    }

    /// The selected site paths.
    pub fn sites(&self) -> &[String] {
        &self.sites
    }

    /// The forward value at `site` (string path) and `layer`, if recorded
    /// with rank `D`.
    pub fn get<const D: usize>(&self, site: &str, layer: Option<usize>) -> Option<Tensor<B, D>> {
        self.forward.get::<D>(site, layer)
    }

    /// The forward value at a typed path.
    pub fn at<T: HookTree<Backend = B>, const D: usize>(
        &self,
        path: &Path<T, Site<B, D>>,
        layer: Option<usize>,
    ) -> Option<Tensor<B, D>> {
        self.forward.get::<D>(path.name(), layer)
    }

    /// The forward recorder.
    pub fn recorder(&self) -> &Recorder<B> {
        &self.forward
    }

    /// Drops every recording (the hooks stay installed).
    pub fn clear(&self) {
        self.forward.clear();
    }

    /// Every recording as host data: forward keys, then `<key>.grad`.
    pub fn data(&self) -> Vec<(String, TensorData)> {
        let mut out: Vec<(String, TensorData)> = self
            .forward
            .entries()
            .into_iter()
            .map(|(k, t)| (k, t.to_data()))
            .collect();
        if let Some(g) = &self.grads {
            out.extend(g.data().into_iter().map(|(k, d)| (format!("{k}.grad"), d)));
        }
        out
    }

    /// Writes every recording to one safetensors file of f32 tensors.
    pub fn save(&self, path: impl AsRef<FsPath>) -> Result<(), ModelError> {
        write_safetensors(&self.data(), path)
    }
}

impl<B: AutodiffBackend> ActivationCache<B> {
    /// Installs forward and gradient recording: the gradient stage of each
    /// selected site records the gradient flowing into it when a loss built
    /// from the forward pass is back-propagated.
    pub fn install_with_grads<T: HookTree<Backend = B>>(
        hooks: &mut T,
        spec: &CacheSpec,
    ) -> Result<Self, HookError> {
        let mut cache = Self::install(hooks, spec)?;
        let grads = Recorder::<B::InnerBackend>::new();
        for site in &cache.sites {
            hooks.append_grad_to_path(
                &format!("{site}.bwd"),
                Record::into(&grads).at_layers(spec.layers.clone()),
            )?;
        }
        cache.grads = Some(Box::new(grads));
        Ok(cache)
    }

    /// The gradient recorder (inner backend), if gradients are recorded.
    pub fn grads(&self) -> Option<&Recorder<B::InnerBackend>> {
        self.grads.as_ref()?.as_any().downcast_ref()
    }

    /// The gradient flowing into `site` at `layer`.
    pub fn grad<const D: usize>(
        &self,
        site: &str,
        layer: Option<usize>,
    ) -> Option<Tensor<B::InnerBackend, D>> {
        self.grads()?.get::<D>(site, layer)
    }
}
