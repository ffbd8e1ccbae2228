//! Hook nodes that hold other nodes: `Vec<N>`, `[N; K]`, `Option<N>` and
//! `Box<N>`, nested to any depth, so a user's tree can mirror a model that
//! keeps its layers in a list (`blocks: Vec<BlockHooks<B>>`).
//!
//! Lists name their entries by index in paths (`blocks.1.out`); an `Option`
//! is transparent (`maybe.fwd`) and, when `None`, holds no sites; a `Box`
//! is its content. Each impl is one more case of the one traversal, so every
//! tree operation (bind, append_all, is_empty, rendering, iteration, string
//! paths) sees them without code of its own.

use crate::node::{HookNode, Schema, Segment, Visitor, VisitorMut};

impl<N: HookNode> HookNode for Vec<N> {
    type Backend = N::Backend;

    fn schema() -> Schema {
        Schema::List {
            len: None,
            item: N::schema,
        }
    }

    fn walk<V: Visitor<Self::Backend>>(&self, visitor: &mut V) {
        walk_list(self, visitor);
    }

    fn walk_mut<V: VisitorMut<Self::Backend>>(&mut self, visitor: &mut V) {
        walk_list_mut(self, visitor);
    }
}

impl<N: HookNode, const K: usize> HookNode for [N; K] {
    type Backend = N::Backend;

    fn schema() -> Schema {
        Schema::List {
            len: Some(K),
            item: N::schema,
        }
    }

    fn walk<V: Visitor<Self::Backend>>(&self, visitor: &mut V) {
        walk_list(self, visitor);
    }

    fn walk_mut<V: VisitorMut<Self::Backend>>(&mut self, visitor: &mut V) {
        walk_list_mut(self, visitor);
    }
}

fn walk_list<N: HookNode, V: Visitor<N::Backend>>(items: &[N], visitor: &mut V) {
    visitor.list(items.len());
    for (i, item) in items.iter().enumerate() {
        if visitor.enter(Segment::Index(i)) {
            item.walk(visitor);
            visitor.exit(Segment::Index(i));
        }
    }
}

fn walk_list_mut<N: HookNode, V: VisitorMut<N::Backend>>(items: &mut [N], visitor: &mut V) {
    visitor.list(items.len());
    for (i, item) in items.iter_mut().enumerate() {
        if visitor.enter(Segment::Index(i)) {
            item.walk_mut(visitor);
            visitor.exit(Segment::Index(i));
        }
    }
}

impl<N: HookNode> HookNode for Option<N> {
    type Backend = N::Backend;

    fn schema() -> Schema {
        Schema::Optional { item: N::schema }
    }

    fn walk<V: Visitor<Self::Backend>>(&self, visitor: &mut V) {
        match self {
            Some(node) => node.walk(visitor),
            None => visitor.absent(),
        }
    }

    fn walk_mut<V: VisitorMut<Self::Backend>>(&mut self, visitor: &mut V) {
        match self {
            Some(node) => node.walk_mut(visitor),
            None => visitor.absent(),
        }
    }
}

impl<N: HookNode> HookNode for Box<N> {
    type Backend = N::Backend;

    fn schema() -> Schema {
        N::schema()
    }

    fn walk<V: Visitor<Self::Backend>>(&self, visitor: &mut V) {
        (**self).walk(visitor);
    }

    fn walk_mut<V: VisitorMut<Self::Backend>>(&mut self, visitor: &mut V) {
        (**self).walk_mut(visitor);
    }
}
