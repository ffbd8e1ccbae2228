//! One hook: something that takes a value and a context and returns a value.

use std::borrow::Cow;
use std::sync::Arc;

use crate::Ctx;
use crate::calls::CallReport;
use crate::render::Renderer;

/// A hook on values of type `T` (a tensor of a fixed rank, usually).
///
/// Closures `Fn(T, &Ctx) -> T` are hooks through [`IntoHook`]; implement the
/// trait directly for hooks that render themselves (groups, autoencoders).
pub trait HookFn<T>: Send + Sync + 'static {
    /// Runs the hook. What it returns is what the next hook receives.
    fn call(&self, x: T, ctx: &Ctx<'_>) -> T;

    /// A short name for tree renderings.
    fn name(&self) -> Cow<'_, str>;

    /// Writes this hook into a tree rendering (one line unless overridden).
    fn render(&self, out: &mut Renderer) {
        out.line(&self.name());
    }

    /// Reports the call counts of the hooks inside this one, for a hook that
    /// holds others (a group); a plain hook reports nothing, its stage
    /// counts its calls.
    fn report_calls(&self, report: &mut CallReport) {
        let _ = report;
    }

    /// Resets the call counts of the hooks inside this one.
    fn reset_calls(&self) {}
}

/// A shared, type-erased hook. Cloning a hook tree clones these `Arc`s: the
/// hook functions (and any state they captured) are shared between copies.
pub type Hook<T> = Arc<dyn HookFn<T>>;

/// A closure with a name, as [`named`] makes it.
pub struct Named<F> {
    name: Cow<'static, str>,
    f: F,
}

impl<F> Named<F> {
    /// Names a closure, so tree renderings say what it does.
    pub fn new(name: impl Into<Cow<'static, str>>, f: F) -> Self {
        Named {
            name: name.into(),
            f,
        }
    }
}

impl<T, F> HookFn<T> for Named<F>
where
    F: Fn(T, &Ctx<'_>) -> T + Send + Sync + 'static,
{
    fn call(&self, x: T, ctx: &Ctx<'_>) -> T {
        (self.f)(x, ctx)
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.name)
    }
}

/// Names a closure for renderings: `named("record q", |x, _| x)`.
pub fn named<F>(name: impl Into<Cow<'static, str>>, f: F) -> Named<F> {
    Named::new(name, f)
}

/// Anything that can be appended to a stage of values `T`.
pub trait IntoHook<T> {
    /// Converts into the shared form stored in a stage.
    fn into_hook(self) -> Hook<T>;
}

impl<T, F> IntoHook<T> for F
where
    F: Fn(T, &Ctx<'_>) -> T + Send + Sync + 'static,
{
    fn into_hook(self) -> Hook<T> {
        Arc::new(Named::new(closure_name::<F>(), self))
    }
}

impl<T, F> IntoHook<T> for Named<F>
where
    F: Fn(T, &Ctx<'_>) -> T + Send + Sync + 'static,
{
    fn into_hook(self) -> Hook<T> {
        Arc::new(self)
    }
}

impl<T: 'static> IntoHook<T> for Hook<T> {
    fn into_hook(self) -> Hook<T> {
        self
    }
}

/// The readable tail of a closure's type name, e.g. `my_experiment::{{closure}}`.
fn closure_name<F>() -> String {
    let full = std::any::type_name::<F>();
    let parts: Vec<&str> = full.split("::").collect();
    let keep = parts.len().saturating_sub(2);
    parts[keep..].join("::")
}
