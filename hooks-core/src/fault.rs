//! How a forward hook reports that it cannot do its job.
//!
//! Hooks return a tensor, not a `Result`: a site's hooks run deep inside the
//! model's forward pass, which has nowhere to propagate an error to. A hook
//! that finds bad input (a patch source of the wrong shape, a recording
//! that is missing) calls [`Ctx::fail`](crate::Ctx::fail) and returns its
//! input unchanged; the caller that set up a [`HookFaults`] sink (the
//! model's `forward`) turns the first fault into an error once the pass is
//! over. Without a sink, `fail` panics with the same message.

use std::fmt;
use std::sync::OnceLock;

/// A hook's report that it could not run, with where it was called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hook failed{}: {message}", where_(.site, *.layer))]
pub struct HookFault {
    /// The site's path ([`Ctx::site`](crate::Ctx::site): models name it at
    /// every call; `None` only for a site called without one).
    pub site: Option<String>,
    /// The layer of the call (`None` outside the blocks).
    pub layer: Option<usize>,
    /// What went wrong.
    pub message: String,
}

fn where_(site: &Option<String>, layer: Option<usize>) -> String {
    match (site, layer) {
        (Some(s), Some(l)) => format!(" at `{s}` (layer {l})"),
        (Some(s), None) => format!(" at `{s}`"),
        (None, Some(l)) => format!(" at layer {l}"),
        (None, None) => String::new(),
    }
}

/// Where hooks' faults are collected during one call: the first one is
/// kept (later ones are usually its consequences).
#[derive(Default)]
pub struct HookFaults {
    first: OnceLock<HookFault>,
}

impl HookFaults {
    /// An empty sink.
    pub const fn new() -> Self {
        HookFaults {
            first: OnceLock::new(),
        }
    }

    /// Records `fault` unless one is already recorded.
    pub fn report(&self, fault: HookFault) {
        let _ = self.first.set(fault);
    }

    /// The first fault, if any (the sink is emptied).
    pub fn take(&mut self) -> Option<HookFault> {
        self.first.take()
    }

    /// Whether a fault has been recorded.
    pub fn is_empty(&self) -> bool {
        self.first.get().is_none()
    }
}

impl fmt::Debug for HookFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookFaults")
            .field("first", &self.first.get())
            .finish()
    }
}
