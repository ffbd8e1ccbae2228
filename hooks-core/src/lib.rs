//! The runtime of a statically typed hook DSL for transformer
//! interpretability on [Burn](https://burn.dev).
//!
//! A model calls a tree of hook [`Site`]s at every interesting point of its
//! forward pass. Each site runs forward hooks (`fwd`), a gradient stage whose
//! hooks see and may replace the gradient (`bwd`, autodiff backends only) and
//! a second forward stage (`fwd2`). Trees are plain structs of sites that
//! `#[derive(HookCollection)]` turns into collections: a site path is a field
//! path, checked by rustc ([`path!`]), and string paths still work for
//! configs and CLIs ([`HookTree::append_to_path`]), with errors that name the
//! bad segment and suggest the right one.
//!
//! Map from the reference module (`seed_hooks.py`):
//!
//! | reference | here |
//! |---|---|
//! | `Hooks` | [`Hooks`] |
//! | `FwdBwdHooks` | [`Site`] |
//! | `WrapperHooks`, `ConditionalHooks`, `AtLayers` | [`Hooks::wrapping`], [`Hooks::conditional`], [`Hooks::at_layers`] |
//! | `grad_hook_wrapper` | [`GradHooks`] (a custom autodiff op) |
//! | `HookCollection` subclasses | structs with `#[derive(HookCollection)]`, ops in [`HookTree`] |
//! | `AutoencoderHooks` | [`AutoencoderHooks`] |
//! | keyword arguments, `bind` | [`Ctx`], [`Value`], [`HookTree::bind`] |
//!
//! ```
//! use burn::tensor::{backend::Backend, Tensor};
//! use burn_ndarray::NdArray;
//! use hooks_core::{path, Ctx, HookCollection, HookTree, Hooks, Site};
//!
//! #[derive(HookCollection, Clone, Default)]
//! struct MyHooks<B: Backend> {
//!     resid: Site<B, 3>,
//!     logits: Site<B, 3>,
//! }
//!
//! let mut hooks = MyHooks::<NdArray>::default();
//! // A typed field path...
//! hooks.resid.fwd.append(|x: Tensor<NdArray, 3>, _: &Ctx| x * 2.0);
//! // ...or a stored typed path: `path!(MyHooks<NdArray>: logitz)` would not compile.
//! let logits = path!(MyHooks<NdArray>: logits);
//! hooks.at_mut(&logits).fwd.append(Hooks::at_layers(0).with(|x: Tensor<NdArray, 3>, _: &Ctx| -x));
//!
//! let x = Tensor::<NdArray, 3>::ones([1, 2, 3], &Default::default());
//! let y = hooks.resid.call(x, &Ctx::at_layer(0));
//! assert_eq!(y.sum().into_scalar(), 12.0);
//! ```

#![warn(missing_docs)]
// Path errors carry the names a user needs to fix a typo; they are returned
// while a tree is set up, never on the forward pass, so their size is fine.
#![allow(clippy::result_large_err)]

// Lets the derive's output name `::hooks_core` inside this crate's own tests.
extern crate self as hooks_core;

mod autoencoder;
mod calls;
mod containers;
mod context;
mod error;
mod fault;
mod grad;
mod hook;
mod hooks;
mod node;
pub mod path;
mod rank;
mod render;
mod site;
pub mod tree;
mod value;

pub use autoencoder::{AutoencoderHooks, InputDecoder};
pub use calls::{CallReport, HookCalls};
pub use context::{Ctx, CtxSnapshot};
pub use error::HookError;
pub use fault::{HookFault, HookFaults};
pub use grad::GradHooks;
pub use hook::{Hook, HookFn, IntoHook, Named, named};
pub use hooks::{Hooks, Layers};
pub use hooks_derive::HookCollection;
#[doc(hidden)]
pub use node::HookField;
pub use node::{
    HookNode, Schema, SchemaChild, Segment, SiteMeta, Step, Visitor, VisitorMut, join_segments,
};
pub use path::{Path, PathError, ResolvedPath};
pub use rank::{AnyRankHook, Detach, ErasedTensor, Record, Recorder, Scale, Zero, record_key};
pub use render::Renderer;
pub use site::{FwdStage, GradTensor, Site, Stage};
pub use tree::{HookTree, SiteInfo};
pub use value::{Bindings, Value};

/// Everything a user of hook trees usually needs.
pub mod prelude {
    pub use crate::{
        AnyRankHook, AutoencoderHooks, Ctx, Detach, FwdStage, HookCollection, HookNode, HookTree,
        Hooks, Record, Recorder, Scale, Site, Stage, Value, Zero, named, path,
    };
}
