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
    note = "a hook node is a `Site<B, D>`, an `AutoencoderHooks<B, D>`, a \
            `Clone + Send + Sync + 'static` struct that derives `HookCollection`, or a \
            `Vec`, array, `Option` or `Box` of hook nodes",
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

/// [`HookNode`] as `#[derive(HookCollection)]` calls it on each field, for
/// the tree's backend `B`.
///
/// One blanket impl, hidden from diagnostics, so that a field which is not a
/// hook node is one short error at the field's type, without rustc's list of
/// every `HookNode` impl in the dependency graph. The backend is a parameter
/// rather than an associated type: the derive's calls then need no
/// projection, so a field such as `Vec<u32>` fails as one obligation
/// (`Vec<u32>: HookField<B>`) and is reported once.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a hook site or a hook collection",
    label = "not a hook node",
    note = "a hook node is a `Site<B, D>`, an `AutoencoderHooks<B, D>`, a \
            `Clone + Send + Sync + 'static` struct that derives `HookCollection`, or a \
            `Vec`, array, `Option` or `Box` of hook nodes",
    note = "a field of a `#[derive(HookCollection)]` struct that is not part of the hook tree \
            must be marked `#[hooks(skip)]`"
)]
pub trait HookField<B: Backend> {
    /// [`HookNode::schema`].
    fn schema() -> Schema;
    /// [`HookNode::walk`].
    fn walk<V: Visitor<B>>(&self, visitor: &mut V);
    /// [`HookNode::walk_mut`].
    fn walk_mut<V: VisitorMut<B>>(&mut self, visitor: &mut V);
}

#[diagnostic::do_not_recommend]
impl<B: Backend, T: HookNode<Backend = B>> HookField<B> for T {
    #[inline]
    fn schema() -> Schema {
        T::schema()
    }

    #[inline]
    fn walk<V: Visitor<B>>(&self, visitor: &mut V) {
        HookNode::walk(self, visitor);
    }

    #[inline]
    fn walk_mut<V: VisitorMut<B>>(&mut self, visitor: &mut V) {
        HookNode::walk_mut(self, visitor);
    }
}

/// One step of a path from the root: a field of a collection (by its
/// string-path name) or an entry of a list (`Vec`, array) by its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A field, under its string-path name.
    Name(&'static str),
    /// An entry of a list.
    Index(usize),
}

impl std::fmt::Display for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Segment::Name(name) => f.write_str(name),
            Segment::Index(i) => write!(f, "{i}"),
        }
    }
}

/// `a.0.b`: segments joined as string paths write them.
pub fn join_segments(segments: &[Segment]) -> String {
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&s.to_string());
    }
    out
}

/// Reads a hook tree. `enter` returns whether to descend into a child (string
/// lookups prune with it); `exit` is called only for children entered.
pub trait Visitor<B: Backend> {
    /// About to visit child `segment`; return `false` to skip it.
    fn enter(&mut self, segment: Segment) -> bool {
        let _ = segment;
        true
    }
    /// Done with child `segment`.
    fn exit(&mut self, segment: Segment) {
        let _ = segment;
    }
    /// A list of `len` entries is about to be visited (before its entries).
    fn list(&mut self, len: usize) {
        let _ = len;
    }
    /// An optional child is `None` here: nothing below it is visited.
    fn absent(&mut self) {}
    /// A site.
    fn site<const D: usize>(&mut self, site: &Site<B, D>);
}

/// Changes a hook tree; see [`Visitor`].
pub trait VisitorMut<B: Backend> {
    /// About to visit child `segment`; return `false` to skip it.
    fn enter(&mut self, segment: Segment) -> bool {
        let _ = segment;
        true
    }
    /// Done with child `segment`.
    fn exit(&mut self, segment: Segment) {
        let _ = segment;
    }
    /// A list of `len` entries is about to be visited (before its entries).
    fn list(&mut self, len: usize) {
        let _ = len;
    }
    /// An optional child is `None` here: nothing below it is visited.
    fn absent(&mut self) {}
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
    /// A list of nodes of one kind, named by index in paths (`blocks.0`).
    List {
        /// The number of entries when the type fixes it (`[N; K]`); `None`
        /// for a `Vec`, whose length only the tree itself knows.
        len: Option<usize>,
        /// The schema of every entry.
        item: fn() -> Schema,
    },
    /// An `Option` of a node: transparent in paths (`maybe.fwd`), and
    /// absent from a tree that holds `None`.
    Optional {
        /// The schema of the node when present.
        item: fn() -> Schema,
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
    /// `#[hooks(shape = "B,S,D")]`: the dimension letters of the site's
    /// values (of every site in the list, option or box this child is),
    /// comma-separated without spaces; `None` when not given.
    pub shape: Option<&'static str>,
    /// `#[hooks(per_layer)]`: every site below this child is called inside
    /// the blocks, with the layer in its context.
    pub per_layer: bool,
    /// The field's doc comment, its first paragraph with lines joined (empty
    /// when it has none).
    pub doc: &'static str,
}

impl SchemaChild {
    /// A child with no attributes and no doc.
    pub const fn plain(name: &'static str, field: &'static str, schema: fn() -> Schema) -> Self {
        SchemaChild {
            name,
            field,
            schema,
            shape: None,
            per_layer: false,
            doc: "",
        }
    }
}

/// What the schema says about one site, from the derive's attributes on
/// the way down to it ([`Schema::site_meta`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteMeta {
    /// The shape's dimension letters (`"B,S,H,d"`), from the nearest
    /// `shape` on the way (the site's field, or the list holding it).
    pub shape: Option<&'static str>,
    /// Whether any node on the way is `per_layer`: the site is called inside
    /// the blocks.
    pub per_layer: bool,
    /// The doc comment of the nearest field on the way.
    pub doc: &'static str,
}

/// Where one segment of a string path leads from a node ([`Schema::step`]).
#[derive(Clone, Debug)]
pub enum Step {
    /// To this child.
    Child(Segment, Schema),
    /// The node is a collection without a child of that name.
    NoSuchName,
    /// The node is a list and the segment is not an index.
    NotAnIndex,
    /// The node is a list of fixed length `len` and the index is past it.
    OutOfRange {
        /// The list's length.
        len: usize,
    },
    /// The node is a site: the segment can only be a stage.
    AtSite,
}

impl Schema {
    /// This schema with `Option` wrappers removed: what a path sees.
    pub fn present(self) -> Schema {
        let mut node = self;
        while let Schema::Optional { item } = node {
            node = item();
        }
        node
    }

    /// Whether this node (after `Option` wrappers) is a site.
    pub fn is_site(&self) -> bool {
        matches!(self.clone().present(), Schema::Site { .. })
    }

    /// The rank of the site this node is, if it is one.
    pub fn rank(&self) -> Option<usize> {
        match self.clone().present() {
            Schema::Site { rank } => Some(rank),
            _ => None,
        }
    }

    /// Where string-path segment `segment` leads from this node.
    pub fn step(&self, segment: &str) -> Step {
        match self.clone().present() {
            Schema::Site { .. } => Step::AtSite,
            Schema::Optional { .. } => unreachable!("present() removes Option wrappers"),
            Schema::Collection { children, .. } => {
                match children.iter().find(|c| c.name == segment) {
                    Some(c) => Step::Child(Segment::Name(c.name), (c.schema)()),
                    None => Step::NoSuchName,
                }
            }
            Schema::List { len, item } => {
                let index = (!segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| segment.parse::<usize>().ok())
                    .flatten();
                match (index, len) {
                    (None, _) => Step::NotAnIndex,
                    (Some(i), Some(len)) if i >= len => Step::OutOfRange { len },
                    (Some(i), _) => Step::Child(Segment::Index(i), item()),
                }
            }
        }
    }

    /// What the attributes from this node down to the node at `segments`
    /// say: the shape and doc of the field nearest to it, and whether any
    /// field on the way is `per_layer`. Segments that lead nowhere end the
    /// walk (the metadata gathered so far is returned).
    pub fn site_meta(&self, segments: &[Segment]) -> SiteMeta {
        let mut meta = SiteMeta::default();
        let mut node = self.clone().present();
        for segment in segments {
            node = match (node, segment) {
                (Schema::Collection { children, .. }, Segment::Name(name)) => {
                    let Some(child) = children.iter().find(|c| c.name == *name) else {
                        break;
                    };
                    meta.per_layer |= child.per_layer;
                    meta.doc = child.doc;
                    meta.shape = child.shape.or(meta.shape);
                    (child.schema)().present()
                }
                (Schema::List { item, .. }, Segment::Index(_)) => item().present(),
                _ => break,
            };
        }
        meta
    }

    /// The child called `name` (string-path name) of a collection.
    pub fn child(&self, name: &str) -> Option<SchemaChild> {
        match self.clone().present() {
            Schema::Collection { children, .. } => {
                children.iter().find(|c| c.name == name).copied()
            }
            _ => None,
        }
    }

    /// What may follow this node in a path: the children's names of a
    /// collection, `0..K` (or `0, 1, …` when only the tree knows the
    /// length) for a list, nothing for a site.
    pub fn child_names(&self) -> Vec<String> {
        match self.clone().present() {
            Schema::Collection { children, .. } => {
                children.iter().map(|c| c.name.to_string()).collect()
            }
            Schema::List { len: Some(0), .. } => Vec::new(),
            Schema::List { len: Some(len), .. } => vec![format!("0..{len} (an index)")],
            Schema::List { len: None, .. } => {
                vec!["an index (the length is known at run time)".to_string()]
            }
            _ => Vec::new(),
        }
    }
}
