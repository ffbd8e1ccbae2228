//! The gradient stage of a site, built on a custom Burn autodiff op.
//!
//! Forward: an identity. Backward: the op receives the gradient of its output
//! (already summed over every downstream use of the value, so a value used
//! twice calls the hooks once), runs the stage's hooks in append order on it,
//! and passes on what they return.
//!
//! Decision (the reference's `WrapperHooks(grad_hook_wrapper)`): gradient
//! hooks can only be *appended* where `B: AutodiffBackend`, and they work on
//! `Tensor<B::InnerBackend, D>`, the gradient's type. A gradient hook on a
//! backend without autodiff is therefore a compile error, never a silent
//! no-op. The stage stores them type-erased, so model code generic over
//! `B: Backend` calls every site without extra bounds.
//!
//! Difference from the reference, on purpose: the reference wraps each hook in
//! its own autograd function, so in the backward pass the *last* appended
//! gradient hook runs first. Here one op runs the whole stage in append order,
//! like the forward stages (and one graph node per site instead of one per hook).

use std::any::{Any, TypeId};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::calls::{CallReport, Counted};
use crate::hook::{Hook, IntoHook};
use crate::render::Renderer;
use crate::{Bindings, Ctx, CtxSnapshot, HookError, Value};

/// The float primitive of Burn's autodiff backend over `I` (its own type,
/// `AutodiffTensor<I>`, is not nameable outside burn-autodiff).
type AutodiffTensor<I> = FloatTensor<Autodiff<I>>;

/// The `bwd` stage of a [`Site`](crate::Site): gradient hooks.
pub struct GradHooks<B: Backend, const D: usize> {
    bound: Bindings,
    stage: Option<Box<dyn ErasedStage<B, D>>>,
}

impl<B: Backend, const D: usize> Default for GradHooks<B, D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend, const D: usize> Clone for GradHooks<B, D> {
    fn clone(&self) -> Self {
        GradHooks {
            bound: self.bound.clone(),
            stage: self.stage.as_ref().map(|s| s.clone_box()),
        }
    }
}

impl<B: Backend, const D: usize> GradHooks<B, D> {
    /// No gradient hooks.
    pub const fn new() -> Self {
        GradHooks {
            bound: Bindings::new(),
            stage: None,
        }
    }

    /// Whether no gradient hook is appended.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.stage.is_none()
    }

    /// How many gradient hooks are appended.
    pub fn len(&self) -> usize {
        self.stage.as_ref().map_or(0, |s| s.len())
    }

    /// Removes every gradient hook, keeping bindings.
    pub fn clear(&mut self) {
        self.stage = None;
    }

    /// Binds a keyword value seen by every gradient hook here.
    pub fn bind(&mut self, key: &str, value: impl Into<Value>) -> Result<&mut Self, HookError> {
        self.bound.bind(key, value)?;
        Ok(self)
    }

    /// Removes a bound value.
    pub fn unbind(&mut self, key: &str) -> Result<&mut Self, HookError> {
        self.bound.unbind(key)?;
        Ok(self)
    }

    /// The bound values.
    pub fn bindings(&self) -> &Bindings {
        &self.bound
    }

    /// Forward pass: the identity, with the backward hooks attached when there
    /// are any and `x` is tracked by autodiff.
    #[inline]
    pub fn call(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        match &self.stage {
            None => x,
            Some(stage) => {
                if self.bound.is_empty() {
                    stage.attach(x, ctx)
                } else {
                    stage.attach(x, &ctx.with_bindings(&self.bound))
                }
            }
        }
    }

    pub(crate) fn render_as(&self, name: &str, out: &mut Renderer) {
        if self.bound.is_empty() {
            out.line(name);
        } else {
            out.line(&format!("{name} {}", self.bound));
        }
        if let Some(stage) = &self.stage {
            out.indented(|out| stage.render(out));
        }
    }

    pub(crate) fn report_calls(&self, report: &mut CallReport) {
        if let Some(stage) = &self.stage {
            stage.report_calls(report);
        }
    }

    pub(crate) fn reset_calls(&self) {
        if let Some(stage) = &self.stage {
            stage.reset_calls();
        }
    }
}

impl<B: AutodiffBackend, const D: usize> GradHooks<B, D> {
    /// Appends a gradient hook. It receives the gradient flowing into the
    /// site's value and the forward call's context; what it returns replaces
    /// the gradient.
    ///
    /// # Panics
    /// If `B` is an `AutodiffBackend` other than Burn's `Autodiff<_, _>` (the
    /// only one Burn ships), because the op has to reach Burn's graph.
    pub fn append(&mut self, hook: impl IntoHook<Tensor<B::InnerBackend, D>>) -> &mut Self {
        assert!(
            TypeId::of::<B::FloatTensorPrimitive>()
                == TypeId::of::<AutodiffTensor<B::InnerBackend>>(),
            "gradient hooks need burn's Autodiff backend; {} is not one",
            std::any::type_name::<B>()
        );
        let stage = self
            .stage
            .get_or_insert_with(|| Box::new(Stage::<B, D>::default()));
        let stage = stage
            .as_any_mut()
            .downcast_mut::<Stage<B, D>>()
            .expect("a gradient stage is only ever created for its own backend");
        Arc::make_mut(&mut stage.hooks).push(Counted::wrap(hook.into_hook()));
        self
    }
}

/// What `GradHooks` needs from its stage without knowing `B: AutodiffBackend`.
trait ErasedStage<B: Backend, const D: usize>: Send + Sync {
    fn attach(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D>;
    fn len(&self) -> usize;
    fn render(&self, out: &mut Renderer);
    fn report_calls(&self, report: &mut CallReport);
    fn reset_calls(&self);
    fn clone_box(&self) -> Box<dyn ErasedStage<B, D>>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

type InnerHooks<B, const D: usize> =
    Arc<Vec<Hook<Tensor<<B as AutodiffBackend>::InnerBackend, D>>>>;

struct Stage<B: AutodiffBackend, const D: usize> {
    hooks: InnerHooks<B, D>,
    _backend: PhantomData<fn() -> B>,
}

impl<B: AutodiffBackend, const D: usize> Default for Stage<B, D> {
    fn default() -> Self {
        Stage {
            hooks: Arc::new(Vec::new()),
            _backend: PhantomData,
        }
    }
}

impl<B: AutodiffBackend, const D: usize> ErasedStage<B, D> for Stage<B, D> {
    fn attach(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        let op = GradHookOp::<B::InnerBackend, D> {
            hooks: self.hooks.clone(),
            ctx: ctx.snapshot(),
        };
        let primitive = x.into_primitive().tensor();
        let tracked = cast::<_, AutodiffTensor<B::InnerBackend>>(primitive);
        let node = tracked.node.clone();
        let out = op
            .prepare::<NoCheckpointing>([node])
            .compute_bound()
            .stateless(tracked.primitive);
        Tensor::from_primitive(TensorPrimitive::Float(cast::<_, B::FloatTensorPrimitive>(
            out,
        )))
    }

    fn len(&self) -> usize {
        self.hooks.len()
    }

    fn render(&self, out: &mut Renderer) {
        for hook in self.hooks.iter() {
            hook.render(out);
        }
    }

    fn report_calls(&self, report: &mut CallReport) {
        for hook in self.hooks.iter() {
            hook.report_calls(report);
        }
    }

    fn reset_calls(&self) {
        for hook in self.hooks.iter() {
            hook.reset_calls();
        }
    }

    fn clone_box(&self) -> Box<dyn ErasedStage<B, D>> {
        Box::new(Stage::<B, D> {
            hooks: self.hooks.clone(),
            _backend: PhantomData,
        })
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Moves a value between two names of the same type (checked at append time).
fn cast<From: 'static, To: 'static>(value: From) -> To {
    let boxed: Box<dyn Any> = Box::new(value);
    *boxed
        .downcast::<To>()
        .unwrap_or_else(|_| unreachable!("checked in GradHooks::append"))
}

/// The backward step: runs the hooks on the incoming gradient.
struct GradHookOp<I: Backend, const D: usize> {
    hooks: Arc<Vec<Hook<Tensor<I, D>>>>,
    ctx: CtxSnapshot,
}

impl<I: Backend, const D: usize> fmt::Debug for GradHookOp<I, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GradHookOp({} hooks)", self.hooks.len())
    }
}

impl<I: Backend, const D: usize> Backward<I, 1> for GradHookOp<I, D> {
    type State = ();

    fn backward(self, ops: Ops<(), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<I, _>(ops.parents, ops.node, grads, |grad| {
            let ctx = self.ctx.ctx();
            let mut grad = Tensor::<I, D>::from_primitive(TensorPrimitive::Float(grad));
            for hook in self.hooks.iter() {
                grad = hook.call(grad, &ctx);
            }
            grad.into_primitive().tensor()
        });
    }
}
