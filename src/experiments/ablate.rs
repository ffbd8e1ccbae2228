//! Ablation, patching and steering hooks, typed by path: the ranges of an
//! ablation are an array of the site's rank, so a wrong rank does not
//! compile.

use std::borrow::Cow;
use std::ops::Range;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use hooks_core::{
    AnyRankHook, Ctx, HookFn, HookTree, Hooks, Path, Recorder, Site, named, record_key,
};

/// Clips `ranges` to `dims` (an end past the size means "to the end").
fn clip<const D: usize>(ranges: &[Range<usize>; D], dims: [usize; D]) -> [Range<usize>; D] {
    std::array::from_fn(|i| ranges[i].start.min(dims[i])..ranges[i].end.min(dims[i]))
}

/// Whether a patch source has the site's shape; if not, reports a fault
/// naming `what` and both shapes (the hook then passes its input on).
fn same_shape<const D: usize>(
    ctx: &Ctx<'_>,
    what: &str,
    source: [usize; D],
    site: [usize; D],
) -> bool {
    if source != site {
        ctx.fail(format!(
            "{what} has shape {source:?}, the site's value {site:?}"
        ));
    }
    source == site
}

/// Sets a slice of a site's value to a constant (e.g. zero one head of
/// `attn.v_out` with `[0..usize::MAX, 0..usize::MAX, h..h + 1, 0..usize::MAX]`).
#[derive(Clone, Debug)]
pub struct Ablate<const D: usize> {
    /// The slice, one range per dimension; ends are clipped to the size.
    pub ranges: [Range<usize>; D],
    /// The value written there.
    pub value: f32,
}

impl<B: Backend, const D: usize> HookFn<Tensor<B, D>> for Ablate<D> {
    fn call(&self, x: Tensor<B, D>, _: &Ctx<'_>) -> Tensor<B, D> {
        let ranges = clip(&self.ranges, x.dims());
        if ranges.iter().any(|r| r.is_empty()) {
            return x;
        }
        let shape: [usize; D] = std::array::from_fn(|i| ranges[i].len());
        let fill = Tensor::<B, D>::full(shape, self.value, &x.device());
        x.slice_assign(ranges, fill)
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Owned(format!("Ablate({:?} = {})", self.ranges, self.value))
    }
}

/// Appends `hook` to the `fwd` stage of the site at `path`, only at `layer`
/// when given (sites outside the blocks take `None`).
fn append_at<B: Backend, T: HookTree<Backend = B>, const D: usize>(
    hooks: &mut T,
    path: &Path<T, Site<B, D>>,
    layer: Option<usize>,
    hook: impl HookFn<Tensor<B, D>>,
) {
    let site = path.get_mut(hooks);
    match layer {
        Some(l) => {
            site.fwd
                .append(Hooks::at_layers(l).with(std::sync::Arc::new(hook) as hooks_core::Hook<_>));
        }
        None => {
            site.fwd
                .append(std::sync::Arc::new(hook) as hooks_core::Hook<_>);
        }
    }
}

/// Sets a slice of the site at `path` (at `layer`) to `value`.
pub fn ablate<B: Backend, T: HookTree<Backend = B>, const D: usize>(
    hooks: &mut T,
    path: &Path<T, Site<B, D>>,
    layer: Option<usize>,
    ranges: [Range<usize>; D],
    value: f32,
) {
    append_at(hooks, path, layer, Ablate { ranges, value });
}

/// Replaces a slice of the site at `path` (at `layer`) by the same slice of
/// `source`, an activation of the same shape from another run. A source of
/// another shape makes the forward pass return [`ModelError::Hook`] naming
/// both shapes.
///
/// [`ModelError::Hook`]: hooks_model::ModelError::Hook
pub fn patch_slice<B: Backend, T: HookTree<Backend = B>, const D: usize>(
    hooks: &mut T,
    path: &Path<T, Site<B, D>>,
    layer: Option<usize>,
    ranges: [Range<usize>; D],
    source: Tensor<B, D>,
) {
    append_at(
        hooks,
        path,
        layer,
        named("PatchSlice", move |x: Tensor<B, D>, ctx: &Ctx<'_>| {
            if !same_shape(ctx, "the patch source", source.dims(), x.dims()) {
                return x;
            }
            let r = clip(&ranges, x.dims());
            x.slice_assign(r.clone(), source.clone().slice(r))
        }),
    );
}

/// Adds `vector` along the last dimension of the site at `path` (a steering
/// vector on the residual stream, for instance).
pub fn add_at<B: Backend, T: HookTree<Backend = B>, const D: usize>(
    hooks: &mut T,
    path: &Path<T, Site<B, D>>,
    layer: Option<usize>,
    vector: Tensor<B, 1>,
) {
    append_at(
        hooks,
        path,
        layer,
        named("AddVector", move |x: Tensor<B, D>, _: &Ctx<'_>| {
            x + vector.clone().unsqueeze::<D>()
        }),
    );
}

/// Replaces a site's value by the one a [`Recorder`] holds for the same site
/// and layer (a clean run's activation, say): the hook of activation
/// patching, rank-generic so one value serves a sweep over many sites.
/// With `position`, only that position (dimension 1) is patched. A missing
/// recording, or one of another shape, makes the forward pass return
/// [`ModelError::Hook`](hooks_model::ModelError::Hook) naming the key.
#[derive(Clone)]
pub struct PatchFrom<B: Backend> {
    /// Where the source activations are.
    pub source: Recorder<B>,
    /// Patch only this position, or the whole value.
    pub position: Option<usize>,
    /// Patch only at this layer (`None`: sites outside the blocks).
    pub layer: Option<usize>,
}

impl<B: Backend> AnyRankHook<B> for PatchFrom<B> {
    fn call<const D: usize>(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        if ctx.layer() != self.layer {
            return x;
        }
        // Models name every site in the context, however the hook was added.
        let Some(site) = ctx.site() else {
            ctx.fail(
                "PatchFrom does not know which site it patches: it was called without a site path",
            );
            return x;
        };
        let Some(src) = self.source.get::<D>(site, ctx.layer()) else {
            ctx.fail(format!(
                "no recorded activation `{}` to patch from",
                record_key(site, ctx.layer())
            ));
            return x;
        };
        if !same_shape(ctx, "the recorded activation", src.dims(), x.dims()) {
            return x;
        }
        match self.position {
            None => src,
            Some(p) => {
                let ranges: [Range<usize>; D] =
                    std::array::from_fn(|i| if i == 1 { p..p + 1 } else { 0..x.dims()[i] });
                x.slice_assign(ranges.clone(), src.slice(ranges))
            }
        }
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed("PatchFrom")
    }
}
