//! A hook site: the reference's `FwdBwdHooks`.

use std::fmt;

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::hook::IntoHook;
use crate::node::{HookNode, Schema, Visitor, VisitorMut};
use crate::{Ctx, GradHooks, Hooks};

/// Where a value passes through three stages, called in this order:
///
/// - `fwd`: forward hooks, which may replace the value;
/// - `bwd`: gradient hooks, an identity in the forward pass; in the backward
///   pass each sees (and may replace) the gradient flowing into the value as
///   it left `fwd`, with the context of the forward call;
/// - `fwd2`: forward hooks after the gradient stage (the reference splices
///   autoencoders here, so gradient hooks see the unspliced value's gradient).
///
/// A site is a plain struct field; calling an empty one is three length
/// checks, with no allocation and no clone.
///
/// ```
/// use burn::tensor::Tensor;
/// use burn_ndarray::NdArray;
/// use hooks_core::{Ctx, Site};
///
/// let mut site = Site::<NdArray, 1>::default();
/// site.fwd.append(|x: Tensor<NdArray, 1>, _: &Ctx| x * 2.0);
/// let y = site.call(Tensor::from_floats([1.0, 2.0], &Default::default()), &Ctx::root());
/// assert_eq!(y.to_data().to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
/// ```
pub struct Site<B: Backend, const D: usize> {
    /// Forward hooks.
    pub fwd: Hooks<Tensor<B, D>>,
    /// Gradient hooks.
    pub bwd: GradHooks<B, D>,
    /// Forward hooks after the gradient stage.
    pub fwd2: Hooks<Tensor<B, D>>,
}

/// What a gradient hook on a site of `Site<B, D>` receives and returns: the
/// gradient, a tensor of the autodiff backend's inner backend, so that
/// `site.append_bwd(|g: GradTensor<B, 3>, _: &Ctx| g * 0.5)` reads as what it
/// is (rather than `Tensor<<B as AutodiffBackend>::InnerBackend, 3>`).
pub type GradTensor<B, const D: usize> = Tensor<<B as AutodiffBackend>::InnerBackend, D>;

/// The three stages of a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Forward hooks.
    Fwd,
    /// Gradient hooks.
    Bwd,
    /// Forward hooks after the gradient stage.
    Fwd2,
}

impl Stage {
    /// All stages, in call order.
    pub const ALL: [Stage; 3] = [Stage::Fwd, Stage::Bwd, Stage::Fwd2];

    /// The name used in string paths.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Fwd => "fwd",
            Stage::Bwd => "bwd",
            Stage::Fwd2 => "fwd2",
        }
    }

    /// The stage called `name`.
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The stages a forward hook can go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FwdStage {
    /// Before the gradient stage.
    Fwd,
    /// After the gradient stage.
    Fwd2,
}

impl<B: Backend, const D: usize> Default for Site<B, D> {
    fn default() -> Self {
        Site {
            fwd: Hooks::new(),
            bwd: GradHooks::new(),
            fwd2: Hooks::new(),
        }
    }
}

impl<B: Backend, const D: usize> Clone for Site<B, D> {
    /// Copies hook lists and bindings; hook functions are shared (`Arc`).
    fn clone(&self) -> Self {
        Site {
            fwd: self.fwd.clone(),
            bwd: self.bwd.clone(),
            fwd2: self.fwd2.clone(),
        }
    }
}

impl<B: Backend, const D: usize> fmt::Debug for Site<B, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::tree::render_node(self, "Site").trim_end())
    }
}

impl<B: Backend, const D: usize> Site<B, D> {
    /// Runs `fwd`, then the gradient stage, then `fwd2`.
    #[inline]
    pub fn call(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        if self.is_empty() {
            return x;
        }
        let x = self.fwd.call(x, ctx);
        let x = self.bwd.call(x, ctx);
        self.fwd2.call(x, ctx)
    }

    /// Whether no stage has a hook.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.fwd.is_empty() && self.bwd.is_empty() && self.fwd2.is_empty()
    }

    /// Appends a forward hook to `fwd`.
    pub fn append_fwd(&mut self, hook: impl IntoHook<Tensor<B, D>>) -> &mut Self {
        self.fwd.append(hook);
        self
    }

    /// Appends a forward hook to `fwd2`.
    pub fn append_fwd2(&mut self, hook: impl IntoHook<Tensor<B, D>>) -> &mut Self {
        self.fwd2.append(hook);
        self
    }

    /// The forward stage `stage`.
    pub fn fwd_stage_mut(&mut self, stage: FwdStage) -> &mut Hooks<Tensor<B, D>> {
        match stage {
            FwdStage::Fwd => &mut self.fwd,
            FwdStage::Fwd2 => &mut self.fwd2,
        }
    }
}

impl<B: AutodiffBackend, const D: usize> Site<B, D> {
    /// Appends a gradient hook to `bwd` (autodiff backends only).
    pub fn append_bwd(&mut self, hook: impl IntoHook<Tensor<B::InnerBackend, D>>) -> &mut Self {
        self.bwd.append(hook);
        self
    }
}

impl<B: Backend, const D: usize> HookNode for Site<B, D> {
    type Backend = B;

    fn schema() -> Schema {
        Schema::Site { rank: D }
    }

    fn walk<V: Visitor<B>>(&self, visitor: &mut V) {
        visitor.site(self);
    }

    fn walk_mut<V: VisitorMut<B>>(&mut self, visitor: &mut V) {
        visitor.site(self);
    }
}
