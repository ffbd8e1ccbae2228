//! An ordered sequence of hooks with bound keyword values: the reference's
//! `Hooks`, `ConditionalHooks`, `AtLayers` and `WrapperHooks` in one type.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::calls::{CallReport, Counted};
use crate::hook::{Hook, HookFn, IntoHook};
use crate::render::Renderer;
use crate::{Bindings, Ctx, HookError, Value};

type Condition<T> = Arc<dyn Fn(&T, &Ctx<'_>) -> bool + Send + Sync>;
type Wrapper<T> = Arc<dyn Fn(Hook<T>) -> Hook<T> + Send + Sync>;

/// Runs its hooks in order, each receiving what the previous one returned.
///
/// The variants of the reference are constructors of this one type:
/// [`Hooks::new`] (plain), [`Hooks::conditional`] (`ConditionalHooks`: run only
/// when a condition on value and context holds), [`Hooks::at_layers`]
/// (`AtLayers`) and [`Hooks::wrapping`] (`WrapperHooks`: every appended hook
/// is passed through a wrapper first). A `Hooks` is itself a hook, so a
/// conditional group can be appended to a site's stage.
///
/// ```
/// use hooks_core::{Ctx, Hooks};
/// let mut h: Hooks<f32> = Hooks::new();
/// h.append(|x: f32, _: &Ctx| x + 1.0).append(|x: f32, _: &Ctx| x * 10.0);
/// assert_eq!(h.call(1.0, &Ctx::root()), 20.0);
///
/// // AtLayers: only at layers 3 and 5; a call with no layer does not match.
/// let mut at = Hooks::at_layers([3, 5]);
/// at.append(|x: f32, _: &Ctx| -x);
/// assert_eq!(at.call(2.0, &Ctx::at_layer(3)), -2.0);
/// assert_eq!(at.call(2.0, &Ctx::at_layer(4)), 2.0);
/// assert_eq!(at.call(2.0, &Ctx::root()), 2.0);
/// ```
pub struct Hooks<T> {
    hooks: Vec<Hook<T>>,
    bound: Bindings,
    condition: Option<Condition<T>>,
    wrapper: Option<Wrapper<T>>,
    name: Cow<'static, str>,
}

impl<T> Clone for Hooks<T> {
    /// Copies the list and the bindings; the hook functions are shared.
    fn clone(&self) -> Self {
        Hooks {
            hooks: self.hooks.clone(),
            bound: self.bound.clone(),
            condition: self.condition.clone(),
            wrapper: self.wrapper.clone(),
            name: self.name.clone(),
        }
    }
}

impl<T: 'static> Default for Hooks<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: 'static> fmt::Debug for Hooks<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut r = Renderer::new();
        self.render_as(&self.name, &mut r);
        f.write_str(r.as_str().trim_end())
    }
}

impl<T: 'static> Hooks<T> {
    /// An empty plain sequence.
    pub const fn new() -> Self {
        Hooks {
            hooks: Vec::new(),
            bound: Bindings::new(),
            condition: None,
            wrapper: None,
            name: Cow::Borrowed("Hooks"),
        }
    }

    /// `ConditionalHooks`: the hooks run only when `condition(&x, ctx)` holds;
    /// otherwise the value passes through unchanged.
    pub fn conditional(condition: impl Fn(&T, &Ctx<'_>) -> bool + Send + Sync + 'static) -> Self {
        Hooks {
            condition: Some(Arc::new(condition)),
            name: Cow::Borrowed("ConditionalHooks"),
            ..Self::new()
        }
    }

    /// `AtLayers`: the hooks run only at the given layers.
    ///
    /// Rule for sites with no layer in their context (the embedding, the
    /// final norm, the logits): they never match. The reference crashes
    /// there; a layer filter that silently matched them would be worse.
    pub fn at_layers(layers: impl Into<Layers>) -> Self {
        let layers: Layers = layers.into();
        let name = format!("AtLayers({layers})");
        let set = layers.0.clone();
        Hooks {
            condition: Some(Arc::new(move |_: &T, ctx: &Ctx<'_>| {
                ctx.layer().is_some_and(|l| set.contains(&l))
            })),
            name: Cow::Owned(name),
            ..Self::new()
        }
    }

    /// `WrapperHooks`: each hook appended later is first passed through
    /// `wrapper`, and the wrapped hook is what runs.
    pub fn wrapping(wrapper: impl Fn(Hook<T>) -> Hook<T> + Send + Sync + 'static) -> Self {
        Hooks {
            wrapper: Some(Arc::new(wrapper)),
            name: Cow::Borrowed("WrapperHooks"),
            ..Self::new()
        }
    }

    /// Renames the group in renderings.
    pub fn named(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Appends a hook (a closure, a named hook, another `Hooks` group...).
    pub fn append(&mut self, hook: impl IntoHook<T>) -> &mut Self {
        let hook = hook.into_hook();
        let hook = match &self.wrapper {
            Some(wrap) => wrap(hook),
            None => hook,
        };
        self.hooks.push(Counted::wrap(hook));
        self
    }

    /// Builder form of [`append`](Self::append).
    pub fn with(mut self, hook: impl IntoHook<T>) -> Self {
        self.append(hook);
        self
    }

    /// Binds a keyword value that every hook here sees in its context.
    /// Binding the same key twice is an error naming the key.
    pub fn bind(&mut self, key: &str, value: impl Into<Value>) -> Result<&mut Self, HookError> {
        self.bound.bind(key, value)?;
        Ok(self)
    }

    /// Removes a bound value; an error if it was not bound.
    pub fn unbind(&mut self, key: &str) -> Result<&mut Self, HookError> {
        self.bound.unbind(key)?;
        Ok(self)
    }

    /// The bound values.
    pub fn bindings(&self) -> &Bindings {
        &self.bound
    }

    /// Whether no hook is appended (bindings do not count, as in the reference).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// How many hooks are appended.
    pub fn len(&self) -> usize {
        self.hooks.len()
    }

    /// Removes every hook, keeping bindings.
    pub fn clear(&mut self) {
        self.hooks.clear();
    }

    /// The appended hooks, in order.
    pub fn hooks(&self) -> &[Hook<T>] {
        &self.hooks
    }

    /// Runs the hooks on `x`. An empty sequence returns `x` untouched, with no
    /// allocation and no clone.
    #[inline]
    pub fn call(&self, x: T, ctx: &Ctx<'_>) -> T {
        if self.hooks.is_empty() {
            return x;
        }
        self.call_nonempty(x, ctx)
    }

    #[inline(never)]
    fn call_nonempty(&self, mut x: T, ctx: &Ctx<'_>) -> T {
        let frame;
        let ctx = if self.bound.is_empty() {
            ctx
        } else {
            frame = ctx.with_bindings(&self.bound);
            &frame
        };
        if let Some(cond) = &self.condition
            && !cond(&x, ctx)
        {
            return x;
        }
        for hook in &self.hooks {
            x = hook.call(x, ctx);
        }
        x
    }

    /// Writes `name {bindings}` and, indented below, each hook.
    pub(crate) fn render_as(&self, name: &str, out: &mut Renderer) {
        if self.bound.is_empty() {
            out.line(name);
        } else {
            out.line(&format!("{name} {}", self.bound));
        }
        out.indented(|out| {
            for hook in &self.hooks {
                hook.render(out);
            }
        });
    }
}

impl<T: 'static> HookFn<T> for Hooks<T> {
    fn call(&self, x: T, ctx: &Ctx<'_>) -> T {
        Hooks::call(self, x, ctx)
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.name)
    }

    fn render(&self, out: &mut Renderer) {
        self.render_as(&self.name, out);
    }

    fn report_calls(&self, report: &mut CallReport) {
        for hook in &self.hooks {
            hook.report_calls(report);
        }
    }

    fn reset_calls(&self) {
        for hook in &self.hooks {
            hook.reset_calls();
        }
    }
}

impl<T: 'static> IntoHook<T> for Hooks<T> {
    fn into_hook(self) -> Hook<T> {
        Arc::new(self)
    }
}

/// The layer set of [`Hooks::at_layers`]: one layer or several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layers(pub Vec<usize>);

impl fmt::Display for Layers {
    /// `[3, 5]`, as the reference prints `AtLayers([3, 5])`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<usize> for Layers {
    fn from(l: usize) -> Self {
        Layers(vec![l])
    }
}

impl From<Vec<usize>> for Layers {
    fn from(v: Vec<usize>) -> Self {
        Layers(v)
    }
}

impl From<&[usize]> for Layers {
    fn from(v: &[usize]) -> Self {
        Layers(v.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Layers {
    fn from(v: [usize; N]) -> Self {
        Layers(v.to_vec())
    }
}
