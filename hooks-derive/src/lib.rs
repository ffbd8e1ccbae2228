//! `#[derive(HookCollection)]`: turns a struct of hook sites into a hook tree.
//!
//! The pipeline follows thiserror's: [`ast`] parses the input into a small
//! model that borrows from syn (keeping spans for errors), validation happens
//! while building it, and [`expand`] emits one `HookNode` impl: a schema (the
//! string-path lookup table) and one traversal, shared and mutable. Every
//! operation on trees is a runtime visitor in `hooks-core`.
//!
//! ```ignore
//! #[derive(HookCollection, Clone, Default)]
//! pub struct MlpHooks<B: Backend> {
//!     #[hooks(shape = "B,S,F")]
//!     pub pre_act: Site<B, 3>,
//!     #[hooks(rename = "post_gelu", shape = "B,S,F")]
//!     pub post_act: Site<B, 3>,
//!     #[hooks(skip)]
//!     pub note: String,
//! }
//! ```
//!
//! Attributes: on fields `#[hooks(rename = "name")]` (the name in string
//! paths), `#[hooks(skip)]` (not part of the tree), `#[hooks(shape =
//! "B,S,H,d")]` on a site (or a list, option or box of sites: the
//! dimension letters of its values, from `B S K D H Hkv d F V 1`, as many as
//! its rank — checked here when the rank is a literal, by a const assertion
//! otherwise) and `#[hooks(per_layer)]` on any field (every site below it is
//! called inside the blocks, with the layer in its context). They, and the
//! first paragraph of each field's doc comment, go into the schema
//! (`SchemaChild`) and from there into every `SiteInfo`, so tools read site
//! metadata off the tree instead of tables of their own. On the struct
//! `#[hooks(crate = "path")]` (where `hooks-core` is, if not found by name).
//! Errors never panic: each is a spanned `compile_error!`, and an impl is
//! still emitted where possible so the user sees one error, not twenty.

mod ast;
mod attr;
mod expand;

use proc_macro::TokenStream;

/// Derives `HookNode` (and so every `HookTree` operation) for a struct with
/// named fields whose fields are hook sites or hook collections.
#[proc_macro_derive(HookCollection, attributes(hooks))]
pub fn derive_hook_collection(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}
