//! The one traversal every hook tree provides, and the visitors that use it.
//!
//! `#[derive(HookCollection)]` emits [`HookNode`] for a struct: a static
//! [`Schema`] (the string-path lookup table) and `walk` / `walk_mut`, which call
//! a visitor on each field in declaration order. Every operation on a tree
//! (bind, append_all, rendering, iteration, string-path lookup) is a visitor
//! in [`crate::tree`], so the macro output stays small and the behaviour lives
//! in ordinary, tested library code.

use burn::tensor::backend::Backend;

use crate::Site;

/// A node of a hook tree: a [`Site`], or a collection of nodes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a hook site or a hook collection",
    label = "not a hook node",
    note = "a hook node is a `Site<B, D>`, an `AutoencoderHooks<B, D>` or a \
            `Clone + Send + Sync + 'static` struct that derives `HookCollection`",
    note = "a field of a `#[derive(HookCollection)]` struct that is not part of the hook tree \
            must be marked `#[hooks(skip)]`"
)]
pub trait HookNode: Clone + Send + Sync + 'static {
    /// The Burn backend of every tensor in this tree.
    type Backend: Backend;

    /// What this node is: its rank if a site, its children if a collection.
    fn schema() -> Schema;

    /// Visits every site below (or at) this node.
    fn walk<V: Visitor<Self::Backend>>(&self, visitor: &mut V);

    /// Visits every site below (or at) this node, mutably.
    fn walk_mut<V: VisitorMut<Self::Backend>>(&mut self, visitor: &mut V);
}

/// [`HookNode`] as `#[derive(HookCollection)]` calls it on each field.
///
/// One blanket impl, hidden from diagnostics, so that a field which is not a
/// hook node is one short error at the field's type, without rustc's list of
/// every `HookNode` impl in the dependency graph.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a hook site or a hook collection",
    label = "not a hook node",
    note = "a hook node is a `Site<B, D>`, an `AutoencoderHooks<B, D>` or a \
            `Clone + Send + Sync + 'static` struct that derives `HookCollection`",
    note = "a field of a `#[derive(HookCollection)]` struct that is not part of the hook tree \
            must be marked `#[hooks(skip)]`"
)]
pub trait HookField {
    /// [`HookNode::Backend`].
    type Backend: Backend;
    /// [`HookNode::schema`].
    fn schema() -> Schema;
    /// [`HookNode::walk`].
    fn walk<V: Visitor<Self::Backend>>(&self, visitor: &mut V);
    /// [`HookNode::walk_mut`].
    fn walk_mut<V: VisitorMut<Self::Backend>>(&mut self, visitor: &mut V);
}

#[diagnostic::do_not_recommend]
impl<T: HookNode> HookField for T {
    type Backend = T::Backend;

    #[inline]
    fn schema() -> Schema {
        T::schema()
    }

    #[inline]
    fn walk<V: Visitor<T::Backend>>(&self, visitor: &mut V) {
        HookNode::walk(self, visitor);
    }

    #[inline]
    fn walk_mut<V: VisitorMut<T::Backend>>(&mut self, visitor: &mut V) {
        HookNode::walk_mut(self, visitor);
    }
}

/// Reads a hook tree. `enter` returns whether to descend into a child (string
/// lookups prune with it); `exit` is called only for children entered.
pub trait Visitor<B: Backend> {
    /// About to visit child `name`; return `false` to skip it.
    fn enter(&mut self, name: &'static str) -> bool {
        let _ = name;
        true
    }
    /// Done with child `name`.
    fn exit(&mut self, name: &'static str) {
        let _ = name;
    }
    /// A site.
    fn site<const D: usize>(&mut self, site: &Site<B, D>);
}

/// Changes a hook tree; see [`Visitor`].
pub trait VisitorMut<B: Backend> {
    /// About to visit child `name`; return `false` to skip it.
    fn enter(&mut self, name: &'static str) -> bool {
        let _ = name;
        true
    }
    /// Done with child `name`.
    fn exit(&mut self, name: &'static str) {
        let _ = name;
    }
    /// A site.
    fn site<const D: usize>(&mut self, site: &mut Site<B, D>);
}

/// The static shape of a node: the lookup table string paths are checked
/// against before anything is touched.
#[derive(Clone, Debug)]
pub enum Schema {
    /// A site whose values are tensors of this rank.
    Site {
        /// Tensor rank of the values at the site.
        rank: usize,
    },
    /// A collection of named children, in declaration order.
    Collection {
        /// The Rust type name, shown at the top of renderings.
        type_name: &'static str,
        /// The children.
        children: Vec<SchemaChild>,
    },
}

/// One child of a collection.
#[derive(Clone, Copy, Debug)]
pub struct SchemaChild {
    /// The name in string paths (the field name, or its `rename`).
    pub name: &'static str,
    /// The Rust field name, as written in `path!`.
    pub field: &'static str,
    /// The child's schema, built on demand.
    pub schema: fn() -> Schema,
}

impl Schema {
    /// The child called `name` (string-path name).
    pub fn child(&self, name: &str) -> Option<SchemaChild> {
        match self {
            Schema::Site { .. } => None,
            Schema::Collection { children, .. } => {
                children.iter().find(|c| c.name == name).copied()
            }
        }
    }

    /// The children's string-path names.
    pub fn child_names(&self) -> Vec<&'static str> {
        match self {
            Schema::Site { .. } => Vec::new(),
            Schema::Collection { children, .. } => children.iter().map(|c| c.name).collect(),
        }
    }
}
