//! Activations from a model run live through hooks: each `fill` runs one
//! token batch through any [`HookedModel`] with a recorder at one site
//! (and layer), and hands the values of every real (non-pad) position to
//! the shuffling buffer. The model runs on whatever backend it was loaded
//! on — usually the autodiff backend's inner one, since no gradient of the
//! model is needed — and is the same object the rest of a program uses.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use hooks_core::{HookTree, SiteInfo};

use crate::experiments::{ActivationCache, CacheSpec};
use crate::train::RepeatedBatch;
use hooks_model::sample::SplitMix64;
use hooks_model::{HookedModel, ModelDims, TokenBatch};

use super::error::SaeTrainError;
use super::source::ActivationSource;

/// Token batches for a [`LiveSource`]: `Ok(None)` when there are no more.
pub trait TokenBatches: FnMut() -> Result<Option<TokenBatch>, SaeTrainError> {}
impl<F: FnMut() -> Result<Option<TokenBatch>, SaeTrainError>> TokenBatches for F {}

/// Recorded activations of `site` (at `layer`) of a model, one forward pass
/// per `fill`.
pub struct LiveSource<B: Backend, M: HookedModel<B>, F> {
    model: M,
    hooks: M::Hooks,
    cache: ActivationCache<B>,
    site: SiteInfo,
    layer: Option<usize>,
    width: usize,
    batches: F,
    forward_passes: u64,
}

/// The values per token of `site` for a model with `dims`, or why the site
/// cannot feed an autoencoder.
pub fn site_width(site: &SiteInfo, dims: &ModelDims) -> Result<usize, SaeTrainError> {
    let letters: Vec<&str> = site.dims().collect();
    let usage = |why: String| {
        SaeTrainError::Config(format!(
            "site `{}` cannot train an autoencoder: {why}",
            site.path
        ))
    };
    if letters.len() < 3 || letters[0] != "B" || !matches!(letters[1], "S" | "K") {
        return Err(usage(format!(
            "its values are not one vector per position (shape [{}]); pick a site shaped \
             [B, S, …], e.g. mlp.post_act or resid.torso.delta_mlp",
            letters.join(", ")
        )));
    }
    letters[2..].iter().try_fold(1usize, |w, letter| {
        dims.size_of(letter).map(|n| w * n).ok_or_else(|| {
            usage(format!(
                "its shape [{}] has `{letter}`, which depends on the batch, after the position axis",
                letters.join(", ")
            ))
        })
    })
}

/// Checks that `site` at `layer` of a tree like `hooks` (for a model with
/// `dims`) can feed an autoencoder, before any weight is loaded: one site
/// (not a pattern; a typo gets a suggestion), a layer exactly when the site
/// is inside the blocks, one vector per position. Returns the site and its
/// values per token.
pub fn check_site<T: HookTree>(
    hooks: &T,
    site: &str,
    layer: Option<usize>,
    dims: &ModelDims,
) -> Result<(SiteInfo, usize), SaeTrainError> {
    let info = hooks
        .sites_matching(&[site])?
        .into_iter()
        .find(|s| s.path == site)
        .ok_or_else(|| {
            SaeTrainError::Config(format!(
                "`{site}` is a pattern; name one site (see `hooks sites`)"
            ))
        })?;
    match (info.per_layer, layer) {
        (true, None) => {
            return Err(SaeTrainError::Config(format!(
                "site `{site}` is inside the blocks: give a layer (0..{})",
                dims.n_layer
            )));
        }
        (true, Some(l)) if l >= dims.n_layer => {
            return Err(SaeTrainError::Config(format!(
                "layer {l} does not exist: the model has {} layers (0..{})",
                dims.n_layer, dims.n_layer
            )));
        }
        (false, Some(l)) => {
            return Err(SaeTrainError::Config(format!(
                "site `{site}` is outside the blocks and has no layer (got layer {l})"
            )));
        }
        _ => {}
    }
    if !matches!(info.rank, 3 | 4) {
        return Err(SaeTrainError::Config(format!(
            "site `{site}` has rank {}; sites of rank 3 or 4 can be recorded",
            info.rank
        )));
    }
    let width = site_width(&info, dims)?;
    Ok((info, width))
}

impl<B, M, F> LiveSource<B, M, F>
where
    B: Backend,
    M: HookedModel<B>,
    F: TokenBatches,
{
    /// Records `site` (a path of the family's tree, e.g. `mlp.post_act`) at
    /// `layer` (`None` for a site outside the blocks) of `model`, on the
    /// batches `batches` yields.
    pub fn new(
        model: M,
        site: &str,
        layer: Option<usize>,
        batches: F,
    ) -> Result<Self, SaeTrainError> {
        Self::with_hooks(model, M::Hooks::default(), site, layer, batches)
    }

    /// As [`new`](Self::new), with hooks of the caller's on the tree too (a
    /// steering vector or an ablation active while the activations are
    /// collected); the recorder is appended after them.
    pub fn with_hooks(
        model: M,
        mut hooks: M::Hooks,
        site: &str,
        layer: Option<usize>,
        batches: F,
    ) -> Result<Self, SaeTrainError> {
        let (info, width) = check_site(&hooks, site, layer, &model.dims())?;
        let mut spec = CacheSpec::new().glob(site);
        if let Some(l) = layer {
            spec = spec.layers([l]);
        }
        let cache = ActivationCache::install(&mut hooks, &spec)?;
        Ok(LiveSource {
            model,
            hooks,
            cache,
            site: info,
            layer,
            width,
            batches,
            forward_passes: 0,
        })
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model back.
    pub fn into_model(self) -> M {
        self.model
    }

    /// Forward passes run so far.
    pub fn forward_passes(&self) -> u64 {
        self.forward_passes
    }

    /// The recorded value of the last pass as `[B·S, width]`.
    fn take_recorded(&self) -> Option<Tensor<B, 2>> {
        let path = self.site.path.as_str();
        let flat = match self.site.rank {
            3 => self.cache.get::<3>(path, self.layer).map(|t| {
                let [b, s, w] = t.dims();
                t.reshape([b * s, w])
            }),
            _ => self.cache.get::<4>(path, self.layer).map(|t| {
                let [b, s, h, w] = t.dims();
                t.reshape([b * s, h * w])
            }),
        };
        self.cache.clear();
        flat
    }
}

impl<B, M, F> ActivationSource for LiveSource<B, M, F>
where
    B: Backend,
    M: HookedModel<B>,
    F: TokenBatches,
{
    fn width(&self) -> usize {
        self.width
    }

    fn fill(&mut self, out: &mut Vec<f32>) -> Result<usize, SaeTrainError> {
        let Some(batch) = (self.batches)()? else {
            return Ok(0);
        };
        self.model.forward(&batch, &self.hooks)?;
        self.forward_passes += 1;
        let values = self.take_recorded().ok_or_else(|| {
            SaeTrainError::Source(format!(
                "the forward pass did not reach `{}`{}",
                self.site.path,
                self.layer
                    .map_or(String::new(), |l| format!(" at layer {l}"))
            ))
        })?;
        let [rows, w] = values.dims();
        if w != self.width {
            return Err(SaeTrainError::Source(format!(
                "`{}` gave {w} values per token, not {}",
                self.site.path, self.width
            )));
        }
        let host = values
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| SaeTrainError::Source(format!("reading the activations: {e:?}")))?;
        let (b, s) = (batch.batch_size(), batch.len());
        debug_assert_eq!(rows, b * s);
        if batch.pad_mask().is_none() {
            out.extend_from_slice(&host);
            return Ok(rows);
        }
        let mut n = 0;
        for r in 0..b {
            for p in 0..s {
                if !batch.is_pad(r, p) {
                    let t = r * s + p;
                    out.extend_from_slice(&host[t * w..(t + 1) * w]);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    fn describe(&self) -> String {
        match self.layer {
            Some(l) => format!("`{}` at layer {l}", self.site.path),
            None => format!("`{}`", self.site.path),
        }
    }
}

/// Endless batches of `rows` rows of `len` tokens drawn uniformly from
/// `0..vocab`.
pub fn random_tokens(vocab: usize, rows: usize, len: usize, seed: u64) -> impl TokenBatches {
    let mut rng = SplitMix64(seed);
    move || {
        let rows = (0..rows)
            .map(|_| {
                (0..len)
                    .map(|_| (rng.next_u64() % vocab.max(1) as u64) as u32)
                    .collect()
            })
            .collect();
        Ok(Some(TokenBatch::new(rows)?))
    }
}

/// Endless batches of the induction task the bundled model was trained on
/// ([`RepeatedBatch`]: random tokens with a random run of at least
/// `min_period` tokens repeated once per row).
pub fn repeated_runs(
    vocab: usize,
    rows: usize,
    len: usize,
    min_period: usize,
    seed: u64,
) -> impl TokenBatches {
    let mut rng = SplitMix64(seed);
    move || {
        Ok(Some(
            RepeatedBatch::random(&mut rng, rows, len, min_period, vocab)?.batch,
        ))
    }
}

/// Batches of `rows` rows of `len` tokens cut from `tokens` (a corpus
/// flattened in order; the remainder that fills no row is left out), from
/// the start again after the end when `cycle`.
pub fn token_rows(
    tokens: Vec<u32>,
    rows: usize,
    len: usize,
    cycle: bool,
) -> Result<impl TokenBatches, SaeTrainError> {
    let per_batch = rows * len;
    if per_batch == 0 || tokens.len() < len {
        return Err(SaeTrainError::Source(format!(
            "{} tokens do not fill one row of {len}",
            tokens.len()
        )));
    }
    let usable = tokens.len() / len * len;
    let mut at = 0usize;
    Ok(move || {
        if at + len > usable {
            if !cycle {
                return Ok(None);
            }
            at = 0;
        }
        let mut batch = Vec::with_capacity(rows);
        while batch.len() < rows && at + len <= usable {
            batch.push(tokens[at..at + len].to_vec());
            at += len;
        }
        Ok(Some(TokenBatch::new(batch)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cut_from_a_corpus() {
        let mut rows = token_rows((0..10).collect(), 2, 3, false).unwrap();
        let b = rows().unwrap().unwrap();
        assert_eq!(b.rows(), [vec![0, 1, 2], vec![3, 4, 5]]);
        let b = rows().unwrap().unwrap();
        assert_eq!(b.rows(), [vec![6, 7, 8]]);
        assert!(rows().unwrap().is_none());
        let mut again = token_rows((0..7).collect(), 2, 3, true).unwrap();
        again().unwrap();
        assert_eq!(
            again().unwrap().unwrap().rows(),
            [vec![0, 1, 2], vec![3, 4, 5]]
        );
        assert!(token_rows(vec![1, 2], 1, 3, true).is_err());
    }
}
