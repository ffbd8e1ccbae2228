//! The context a hook receives alongside the value: the layer, the site path
//! (when known) and every keyword value bound on the way down.
//!
//! The reference binds `layer` on a deep copy of the whole hook tree for every
//! layer of every forward pass. Here the model passes the layer in a [`Ctx`]
//! that lives on the stack: building one allocates nothing, and each
//! [`Hooks`](crate::Hooks) stage with bindings pushes a borrowed frame on top.

use crate::{Bindings, HookFault, HookFaults, Value};

/// What a hook is told about the call it is part of.
///
/// `Ctx` is `Copy` and borrowed: hooks that need it later (gradient hooks run
/// during the backward pass) get an owned [`CtxSnapshot`] re-borrowed as a
/// `Ctx`, so every hook has the same signature.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    layer: Option<usize>,
    site: Option<&'a str>,
    bound: Option<&'a Bindings>,
    parent: Option<&'a Ctx<'a>>,
    faults: Option<&'a HookFaults>,
}

impl<'a> Ctx<'a> {
    /// A context with no layer: sites outside the transformer blocks.
    pub const fn root() -> Ctx<'static> {
        Ctx {
            layer: None,
            site: None,
            bound: None,
            parent: None,
            faults: None,
        }
    }

    /// A context inside block `layer`.
    pub const fn at_layer(layer: usize) -> Ctx<'static> {
        Ctx {
            layer: Some(layer),
            site: None,
            bound: None,
            parent: None,
            faults: None,
        }
    }

    /// The same context with `bindings` visible on top (used by stages with
    /// bound values, and by the model for extras such as `out_layer`).
    pub fn with_bindings<'b>(&'b self, bindings: &'b Bindings) -> Ctx<'b> {
        Ctx {
            layer: self.layer,
            site: self.site,
            bound: Some(bindings),
            parent: Some(self),
            faults: self.faults,
        }
    }

    /// The same context, naming the site being called.
    pub fn with_site<'b>(&'b self, site: &'b str) -> Ctx<'b> {
        Ctx {
            layer: self.layer,
            site: Some(site),
            bound: None,
            parent: Some(self),
            faults: self.faults,
        }
    }

    /// The same context, with hooks' faults ([`Ctx::fail`]) collected in
    /// `faults` instead of panicking. The model's forward pass sets one up
    /// and returns the first fault as an error.
    pub fn with_faults<'b>(&self, faults: &'b HookFaults) -> Ctx<'b>
    where
        'a: 'b,
    {
        Ctx {
            faults: Some(faults),
            ..*self
        }
    }

    /// Reports that the hook cannot do its job (bad input it was given at
    /// set-up, a value of an unexpected shape). The hook should then return
    /// its input unchanged: the caller that collects faults turns the first
    /// one into an error when the call is over. Without a collector (a hook
    /// called directly, or a gradient hook during the backward pass) this
    /// panics with the message.
    pub fn fail(&self, message: impl Into<String>) {
        let fault = HookFault {
            site: self.site.map(str::to_string),
            layer: self.layer(),
            message: message.into(),
        };
        match self.faults {
            Some(sink) => sink.report(fault),
            None => panic!("{fault}"),
        }
    }

    /// The layer of the call: the one the model passed, else a bound `layer`
    /// integer (the reference's way), else `None` (outside the blocks).
    pub fn layer(&self) -> Option<usize> {
        self.layer.or_else(|| {
            self.get("layer")
                .and_then(Value::as_int)
                .and_then(|l| usize::try_from(l).ok())
        })
    }

    /// The dotted path of the site, when the hook was installed through a
    /// path-aware method (`append_all`, `append_to_path`, typed paths).
    pub fn site(&self) -> Option<&'a str> {
        self.site
    }

    /// The value bound to `key`; inner bindings shadow outer ones.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        let mut frame = Some(self);
        while let Some(f) = frame {
            if let Some(v) = f.bound.and_then(|b| b.get(key)) {
                return Some(v);
            }
            frame = f.parent;
        }
        None
    }

    /// Every visible binding, innermost first (shadowed ones skipped).
    pub fn bindings(&self) -> Vec<(&'a str, &'a Value)> {
        let mut out: Vec<(&'a str, &'a Value)> = Vec::new();
        let mut frame = Some(self);
        while let Some(f) = frame {
            if let Some(b) = f.bound {
                for (k, v) in b.iter() {
                    if !out.iter().any(|(seen, _)| *seen == k) {
                        out.push((k, v));
                    }
                }
            }
            frame = f.parent;
        }
        out
    }

    /// An owned copy, for hooks that run after this call has returned.
    pub fn snapshot(&self) -> CtxSnapshot {
        let mut bindings = Bindings::new();
        // innermost first, so reverse to restore binding order
        for (k, v) in self.bindings().into_iter().rev() {
            bindings
                .bind(k, v.clone())
                .expect("bindings() yields each key once");
        }
        CtxSnapshot {
            layer: self.layer,
            site: self.site.map(Into::into),
            bindings,
        }
    }
}

impl Default for Ctx<'static> {
    fn default() -> Self {
        Ctx::root()
    }
}

/// An owned [`Ctx`]: what a gradient hook is given during the backward pass.
#[derive(Clone, Debug, Default)]
pub struct CtxSnapshot {
    layer: Option<usize>,
    site: Option<std::sync::Arc<str>>,
    bindings: Bindings,
}

impl CtxSnapshot {
    /// Borrows the snapshot as a context.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            layer: self.layer,
            site: self.site.as_deref(),
            bound: (!self.bindings.is_empty()).then_some(&self.bindings),
            parent: None,
            faults: None,
        }
    }
}
