//! Hooks that prove they fired: every appended hook counts its calls and
//! the layers it ran at, so that after a forward pass a user can ask which
//! hooks ran ([`HookTree::hook_calls`](crate::HookTree::hook_calls)) and make
//! an intervention that silently never ran an error
//! ([`HookTree::require_all_fired`](crate::HookTree::require_all_fired)): an
//! `AtLayers([20])` on a 12-layer model, a hook on a site the model skips in
//! some mode.
//!
//! The count is two relaxed atomic operations per hook call; a stage with no
//! hooks does not reach it, so an empty tree costs what it did.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Ctx;
use crate::hook::{Hook, HookFn};
use crate::render::Renderer;
use crate::site::Stage;

/// How often a hook ran, and at which layers (0 to 63; 64 and above are
/// counted together).
#[derive(Debug, Default)]
pub(crate) struct CallStats {
    calls: AtomicU64,
    /// Bit `l` for layer `l < 63`; bit 63 for every layer from 63 up.
    layers: AtomicU64,
}

impl CallStats {
    #[inline]
    fn record(&self, layer: Option<usize>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = layer {
            self.layers.fetch_or(1 << l.min(63), Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> (u64, Vec<usize>) {
        let bits = self.layers.load(Ordering::Relaxed);
        let layers = (0..64).filter(|l| bits & (1 << l) != 0).collect();
        (self.calls.load(Ordering::Relaxed), layers)
    }

    fn reset(&self) {
        self.calls.store(0, Ordering::Relaxed);
        self.layers.store(0, Ordering::Relaxed);
    }
}

/// A hook with its call counter: what stages store for each appended hook.
pub(crate) struct Counted<T> {
    hook: Hook<T>,
    stats: CallStats,
}

impl<T: 'static> Counted<T> {
    /// Wraps `hook` with a fresh counter.
    pub(crate) fn wrap(hook: Hook<T>) -> Hook<T> {
        Arc::new(Counted {
            hook,
            stats: CallStats::default(),
        })
    }
}

impl<T: 'static> HookFn<T> for Counted<T> {
    #[inline]
    fn call(&self, x: T, ctx: &Ctx<'_>) -> T {
        self.stats.record(ctx.layer());
        self.hook.call(x, ctx)
    }

    fn name(&self) -> Cow<'_, str> {
        self.hook.name()
    }

    fn render(&self, out: &mut Renderer) {
        self.hook.render(out);
    }

    fn report_calls(&self, report: &mut CallReport) {
        let (calls, layers) = self.stats.snapshot();
        let name = self.hook.name().into_owned();
        let before = report.entries.len();
        report.within(&name, |report| self.hook.report_calls(report));
        if report.entries.len() == before {
            // A leaf: nothing inside reported, so this is the hook itself.
            report.push(name, calls, layers);
        }
    }

    fn reset_calls(&self) {
        self.stats.reset();
        self.hook.reset_calls();
    }
}

/// One appended hook and what it did since the tree was built or its
/// counts were reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookCalls {
    /// The site's path.
    pub site: String,
    /// The stage the hook is on.
    pub stage: Stage,
    /// The hook's name, inside the groups that hold it
    /// (`AtLayers([20]) › ablate`).
    pub hook: String,
    /// How many times it ran.
    pub calls: u64,
    /// The layers it ran at (63 stands for 63 and above).
    pub layers: Vec<usize>,
}

impl fmt::Display for HookCalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` on `{}.{}`: {} call{}",
            self.hook,
            self.site,
            self.stage.name(),
            self.calls,
            if self.calls == 1 { "" } else { "s" }
        )?;
        if !self.layers.is_empty() {
            write!(f, " at layers {:?}", self.layers)?;
        }
        Ok(())
    }
}

/// What [`HookFn::report_calls`] writes into: the hooks of one stage.
pub struct CallReport {
    site: String,
    stage: Stage,
    groups: Vec<String>,
    entries: Vec<HookCalls>,
}

impl CallReport {
    pub(crate) fn new(site: String, stage: Stage) -> Self {
        CallReport {
            site,
            stage,
            groups: Vec::new(),
            entries: Vec::new(),
        }
    }

    pub(crate) fn finish(self) -> Vec<HookCalls> {
        self.entries
    }

    /// Reports what `f` reports as inside the group `name`.
    pub fn within(&mut self, name: &str, f: impl FnOnce(&mut Self)) {
        self.groups.push(name.to_string());
        f(self);
        self.groups.pop();
    }

    /// One hook (a leaf) with its counts.
    pub fn push(&mut self, name: String, calls: u64, layers: Vec<usize>) {
        let mut hook = self.groups.join(" › ");
        if !hook.is_empty() {
            hook.push_str(" › ");
        }
        hook.push_str(&name);
        self.entries.push(HookCalls {
            site: self.site.clone(),
            stage: self.stage,
            hook,
            calls,
            layers,
        });
    }
}
