//! Hooks that work on a tensor of any rank, so one value can be appended to
//! every site of a tree (`append_all`), and the ready-made ones: record,
//! detach, zero, scale.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use rustc_hash::FxHashMap;

use crate::Ctx;
use crate::hook::{Hook, HookFn, IntoHook};

/// A hook generic over the tensor rank.
///
/// Sites have different ranks (`[B,S,D]` residuals, `[B,S,K,H]` attention),
/// so a hook meant for all of them has a generic method instead of a closure
/// type. Implement it on a small struct:
///
/// ```
/// use burn::tensor::{backend::Backend, Tensor};
/// use hooks_core::{AnyRankHook, Ctx};
///
/// struct Clamp(f32);
/// impl<B: Backend> AnyRankHook<B> for Clamp {
///     fn call<const D: usize>(&self, x: Tensor<B, D>, _: &Ctx) -> Tensor<B, D> {
///         x.clamp(-self.0, self.0)
///     }
/// }
/// ```
pub trait AnyRankHook<B: Backend>: Send + Sync + 'static {
    /// Runs the hook on a tensor of rank `D`.
    fn call<const D: usize>(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D>;

    /// A short name for tree renderings.
    fn name(&self) -> Cow<'_, str> {
        let full = std::any::type_name::<Self>();
        Cow::Owned(full.rsplit("::").next().unwrap_or(full).to_string())
    }

    /// This hook on one stage of rank-`D` values, where a closure would go:
    /// `site.fwd.append(Clamp(1.0).for_rank())`. (The ready hooks need no
    /// call: `site.fwd.append(Zero)`.)
    fn for_rank<const D: usize>(self) -> Hook<Tensor<B, D>>
    where
        Self: Sized,
    {
        at_rank(Arc::new(self), None)
    }
}

/// Makes a site hook of rank `D` from a shared rank-generic hook; `site`,
/// when given, is exposed to the hook as [`Ctx::site`] at calls whose caller
/// named no site.
pub(crate) fn at_rank<B: Backend, const D: usize, H: AnyRankHook<B>>(
    hook: Arc<H>,
    site: Option<Arc<str>>,
) -> Hook<Tensor<B, D>> {
    Arc::new(RankAdapter::<B, D, H> {
        hook,
        site,
        _b: PhantomData,
    })
}

struct RankAdapter<B, const D: usize, H> {
    hook: Arc<H>,
    site: Option<Arc<str>>,
    _b: PhantomData<fn() -> B>,
}

impl<B: Backend, const D: usize, H: AnyRankHook<B>> HookFn<Tensor<B, D>> for RankAdapter<B, D, H> {
    fn call(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        // The caller's path wins: a model names every site by its full path,
        // which is also right for a hook appended to a sub-tree.
        match (&self.site, ctx.site()) {
            (Some(site), None) => self.hook.call(x, &ctx.with_site_path(site)),
            _ => self.hook.call(x, ctx),
        }
    }

    fn name(&self) -> Cow<'_, str> {
        self.hook.name()
    }
}

/// Detaches the value from the autodiff graph (the reference's pattern for
/// the norm `scale`: gradients then flow only through the numerator).
#[derive(Clone, Copy, Debug, Default)]
pub struct Detach;

impl<B: Backend> AnyRankHook<B> for Detach {
    fn call<const D: usize>(&self, x: Tensor<B, D>, _: &Ctx<'_>) -> Tensor<B, D> {
        x.detach()
    }
}

/// Replaces the value by zeros (zero-ablation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Zero;

impl<B: Backend> AnyRankHook<B> for Zero {
    fn call<const D: usize>(&self, x: Tensor<B, D>, _: &Ctx<'_>) -> Tensor<B, D> {
        x.zeros_like()
    }
}

/// Multiplies the value by a constant.
#[derive(Clone, Copy, Debug)]
pub struct Scale(pub f32);

impl<B: Backend> AnyRankHook<B> for Scale {
    fn call<const D: usize>(&self, x: Tensor<B, D>, _: &Ctx<'_>) -> Tensor<B, D> {
        x * self.0
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Owned(format!("Scale({})", self.0))
    }
}

/// The ready hooks go on one stage directly, like a closure:
/// `hooks.attn.q.fwd.append(Zero)`, `site.append_bwd(Scale(0.5))`,
/// `site.fwd.append(Record::into(&rec).under("attn.q"))`.
macro_rules! into_hook_at_any_rank {
    ($($hook:ty),*) => {$(
        impl<B: Backend, const D: usize> IntoHook<Tensor<B, D>> for $hook {
            fn into_hook(self) -> Hook<Tensor<B, D>> {
                at_rank(Arc::new(self), None)
            }
        }
    )*};
}

into_hook_at_any_rank!(Detach, Zero, Scale);

impl<B: Backend, const D: usize> IntoHook<Tensor<B, D>> for Record<B> {
    fn into_hook(self) -> Hook<Tensor<B, D>> {
        at_rank(Arc::new(self), None)
    }
}

/// Records the value into a [`Recorder`] and passes it on unchanged, keyed
/// by the site's path ([`Ctx::site`]: the model names it at every call, so a
/// `Record` appended through a typed path or a field records under the
/// site, as one added by `append_all` or a string path does), or by the key
/// given with [`under`](Record::under).
#[derive(Clone)]
pub struct Record<B: Backend> {
    recorder: Recorder<B>,
    layers: Option<Vec<usize>>,
    key: Option<Arc<str>>,
}

impl<B: Backend> Record<B> {
    /// Records into `recorder` (a shared handle: keep a clone to read it).
    pub fn into(recorder: &Recorder<B>) -> Self {
        Record {
            recorder: recorder.clone(),
            layers: None,
            key: None,
        }
    }

    /// Records under `key` instead of the site's path (for a site called
    /// without one, or to keep two recordings of a site apart).
    pub fn under(mut self, key: impl Into<Arc<str>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Records only at these layers (calls with no layer are then skipped).
    pub fn at_layers(mut self, layers: Option<Vec<usize>>) -> Self {
        self.layers = layers;
        self
    }
}

impl<B: Backend> AnyRankHook<B> for Record<B> {
    fn call<const D: usize>(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        let wanted = match &self.layers {
            None => true,
            Some(ls) => ctx.layer().is_some_and(|l| ls.contains(&l)),
        };
        if !wanted {
            return x;
        }
        match self.key.as_deref().or(ctx.site()) {
            Some(key) => self.recorder.record(key, ctx.layer(), x.clone()),
            None => ctx.fail(
                "Record does not know where it is: the site was called without its path \
                 (`ctx.with_site(\"...\")`); give it a key with `Record::into(&rec).under(\"...\")`",
            ),
        }
        x
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed("Record")
    }
}

/// A tensor whose rank is known at run time only: what a recorder holds.
#[derive(Clone, Debug)]
pub struct ErasedTensor<B: Backend> {
    primitive: TensorPrimitive<B>,
    shape: Vec<usize>,
}

impl<B: Backend> ErasedTensor<B> {
    /// Forgets the rank of `t` (no copy: Burn tensors are shared handles).
    pub fn new<const D: usize>(t: Tensor<B, D>) -> Self {
        let shape = t.dims().to_vec();
        ErasedTensor {
            primitive: t.into_primitive(),
            shape,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The tensor at rank `D`, or `None` if it has another rank.
    pub fn tensor<const D: usize>(&self) -> Option<Tensor<B, D>> {
        (self.shape.len() == D).then(|| Tensor::from_primitive(self.primitive.clone()))
    }

    /// The values (reads the device: this is where recording synchronises).
    pub fn to_data(&self) -> TensorData {
        match self.rank() {
            1 => self.tensor::<1>().map(|t| t.into_data()),
            2 => self.tensor::<2>().map(|t| t.into_data()),
            3 => self.tensor::<3>().map(|t| t.into_data()),
            4 => self.tensor::<4>().map(|t| t.into_data()),
            5 => self.tensor::<5>().map(|t| t.into_data()),
            6 => self.tensor::<6>().map(|t| t.into_data()),
            r => panic!("recorded tensors have rank 1 to 6, not {r}"),
        }
        .expect("rank checked by the match")
    }
}

/// Where [`Record`] hooks put tensors, keyed by site and layer.
///
/// A shared handle (clones see the same store). Recording the same key again
/// replaces the old tensor, so memory stays bounded by the number of sites
/// and layers recorded, however many forward passes run.
/// Keys follow the `hooks cache` scheme: `layers.<i>.<site>` inside blocks,
/// `<site>` outside.
pub struct Recorder<B: Backend> {
    inner: Arc<Mutex<Store<B>>>,
}

/// The recordings, and each key ever recorded, interned.
///
/// A recording pass stores one tensor per site call; formatting and hashing
/// its key every time was most of what a `Record` hook cost. Each (layer,
/// site) pair is given its key once, with the position of the recording it
/// last had, and both survive [`Recorder::clear`], so the next pass finds
/// them with one lookup and no allocation.
struct Store<B: Backend> {
    /// The recordings, in first-recorded order since the last `clear`.
    entries: Vec<(Arc<str>, ErasedTensor<B>)>,
    /// Per layer, per site: the interned key and where its recording is.
    /// Fx hashing: the keys are the program's own site names, and SipHash
    /// was 7 % of what recording every site added to a tiny model's forward.
    slots: FxHashMap<Option<usize>, FxHashMap<Box<str>, Slot>>,
}

struct Slot {
    key: Arc<str>,
    /// Index into `entries`; stale when that entry belongs to another key
    /// (or is gone), which `Store::find` checks.
    at: usize,
}

impl<B: Backend> Store<B> {
    /// The position of the recording at (`layer`, `site`), if there is one.
    fn find(&self, layer: Option<usize>, site: &str) -> Option<usize> {
        let slot = self.slots.get(&layer)?.get(site)?;
        let entry = self.entries.get(slot.at)?;
        Arc::ptr_eq(&entry.0, &slot.key).then_some(slot.at)
    }

    /// Stores `t` at (`layer`, `site`), replacing an earlier recording.
    fn put(&mut self, layer: Option<usize>, site: &str, t: ErasedTensor<B>) {
        let Store { entries, slots } = self;
        let by_site = slots.entry(layer).or_default();
        if !by_site.contains_key(site) {
            let key = Arc::from(record_key(site, layer));
            by_site.insert(
                site.into(),
                Slot {
                    key,
                    at: usize::MAX,
                },
            );
        }
        let slot = by_site.get_mut(site).expect("inserted above");
        match entries.get_mut(slot.at) {
            Some(entry) if Arc::ptr_eq(&entry.0, &slot.key) => entry.1 = t,
            _ => {
                slot.at = entries.len();
                entries.push((slot.key.clone(), t));
            }
        }
    }
}

impl<B: Backend> Clone for Recorder<B> {
    fn clone(&self) -> Self {
        Recorder {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Backend> Default for Recorder<B> {
    fn default() -> Self {
        Self::new()
    }
}

/// The key of a recording: `layers.<i>.<site>` or `<site>`.
pub fn record_key(site: &str, layer: Option<usize>) -> String {
    match layer {
        Some(l) => format!("layers.{l}.{site}"),
        None => site.to_string(),
    }
}

/// The (layer, site) a key names: the inverse of [`record_key`], so that
/// `"layers.3.x"` names the same recording whether it is given as a key or
/// as the site `x` at layer 3.
fn split_key(site: &str, layer: Option<usize>) -> (Option<usize>, &str) {
    if layer.is_some() {
        return (layer, site);
    }
    let split = site
        .strip_prefix("layers.")
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(num, inner)| {
            let l: usize = num.parse().ok()?;
            // Only the form record_key writes: no sign, no leading zeros.
            (l.to_string() == num && !inner.is_empty()).then_some((Some(l), inner))
        });
    split.unwrap_or((None, site))
}

impl<B: Backend> Recorder<B> {
    /// An empty recorder.
    pub fn new() -> Self {
        Recorder {
            inner: Arc::new(Mutex::new(Store {
                entries: Vec::new(),
                slots: FxHashMap::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store<B>> {
        // A hook that panicked while recording leaves consistent data behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `t` under `site` and `layer`, replacing an earlier recording.
    pub fn record<const D: usize>(&self, site: &str, layer: Option<usize>, t: Tensor<B, D>) {
        let t = ErasedTensor::new(t);
        let (layer, site) = split_key(site, layer);
        self.lock().put(layer, site, t);
    }

    /// Stores a tensor under an explicit key.
    pub fn insert(&self, key: String, t: ErasedTensor<B>) {
        let (layer, site) = split_key(&key, None);
        self.lock().put(layer, site, t);
    }

    /// The tensor recorded at `site` and `layer`, if it has rank `D`.
    pub fn get<const D: usize>(&self, site: &str, layer: Option<usize>) -> Option<Tensor<B, D>> {
        self.lookup(site, layer)?.tensor::<D>()
    }

    /// The tensor recorded under `key`.
    pub fn get_key(&self, key: &str) -> Option<ErasedTensor<B>> {
        self.lookup(key, None)
    }

    /// The recording a site and layer (or a key, with no layer) name.
    fn lookup(&self, site: &str, layer: Option<usize>) -> Option<ErasedTensor<B>> {
        let (layer, site) = split_key(site, layer);
        let store = self.lock();
        let at = store.find(layer, site)?;
        Some(store.entries[at].1.clone())
    }

    /// Every key, in first-recorded order.
    pub fn keys(&self) -> Vec<String> {
        self.lock()
            .entries
            .iter()
            .map(|(k, _)| k.to_string())
            .collect()
    }

    /// Every recording, in first-recorded order.
    pub fn entries(&self) -> Vec<(String, ErasedTensor<B>)> {
        self.lock()
            .entries
            .iter()
            .map(|(k, t)| (k.to_string(), t.clone()))
            .collect()
    }

    /// How many tensors are held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every recording (the interned keys stay, for the next pass).
    pub fn clear(&self) {
        self.lock().entries.clear();
    }
}
