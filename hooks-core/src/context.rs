//! The context a hook receives alongside the value: the layer, the site's
//! path and every keyword value bound on the way down.
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
    site: Option<SiteName<'a>>,
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

    /// The same context, naming the site being called by its full dotted
    /// path in the model's tree (`"attn.q"`, `"resid.torso.ln_mlp.scale"`).
    /// Models call every site this way: a copy of five words, no frame and
    /// no allocation, so every hook learns its site however it was added.
    #[inline]
    pub const fn with_site(&self, site: &'static str) -> Ctx<'a> {
        Ctx {
            site: Some(SiteName::Static(site)),
            ..*self
        }
    }

    /// [`with_site`](Self::with_site) for a path built at run time (what
    /// `append_all` and string paths tell a hook when its caller named no
    /// site).
    pub fn with_site_path<'b>(&self, site: &'b str) -> Ctx<'b>
    where
        'a: 'b,
    {
        Ctx {
            site: Some(SiteName::Borrowed(site)),
            ..*self
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
            site: self.site().map(str::to_string),
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

    /// The dotted path of the site being called: the one the model names at
    /// every call ([`with_site`](Self::with_site)), else the one a
    /// path-aware method (`append_all`, `append_to_path`) knew; `None` only
    /// when neither did (a site called directly with `Ctx::root()`).
    pub fn site(&self) -> Option<&'a str> {
        self.site.map(SiteName::get)
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
            site: self.site.map(|s| match s {
                // The model's paths are static: a snapshot of one copies a
                // pointer.
                SiteName::Static(s) => OwnedSiteName::Static(s),
                SiteName::Borrowed(s) => OwnedSiteName::Owned(s.into()),
            }),
            bindings,
        }
    }
}

impl Default for Ctx<'static> {
    fn default() -> Self {
        Ctx::root()
    }
}

/// A site's path in a [`Ctx`]: the model's static one, or one a hook
/// adapter borrowed.
#[derive(Clone, Copy, Debug)]
enum SiteName<'a> {
    Static(&'static str),
    Borrowed(&'a str),
}

impl<'a> SiteName<'a> {
    fn get(self) -> &'a str {
        match self {
            SiteName::Static(s) => s,
            SiteName::Borrowed(s) => s,
        }
    }
}

/// A site's path in a [`CtxSnapshot`].
#[derive(Clone, Debug)]
enum OwnedSiteName {
    Static(&'static str),
    Owned(std::sync::Arc<str>),
}

/// An owned [`Ctx`]: what a gradient hook is given during the backward pass.
#[derive(Clone, Debug, Default)]
pub struct CtxSnapshot {
    layer: Option<usize>,
    site: Option<OwnedSiteName>,
    bindings: Bindings,
}

impl CtxSnapshot {
    /// Borrows the snapshot as a context.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            layer: self.layer,
            site: self.site.as_ref().map(|s| match s {
                OwnedSiteName::Static(s) => SiteName::Static(s),
                OwnedSiteName::Owned(s) => SiteName::Borrowed(s),
            }),
            bound: (!self.bindings.is_empty()).then_some(&self.bindings),
            parent: None,
            faults: None,
        }
    }
}
