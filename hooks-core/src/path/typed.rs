//! Typed paths, checked by rustc: [`Path`] and, through lists,
//! [`IndexedPath`], made by `path!`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::node::{HookNode, Schema, Step};

use super::PathError;

/// A typed path from a root collection `R` to a node `T` inside it.
///
/// Made by [`path!`](crate::path!), which spells the path as field accesses so
/// that a misspelt segment is rustc's own "no field" error with its
/// "a field with a similar name exists" help. Holding two function pointers
/// and a name, a path is cheap to clone, store and pass around; reach the node
/// with [`HookTree::at`](crate::HookTree::at) / [`at_mut`](crate::HookTree::at_mut).
///
/// Why no generated "mirror" struct of paths: field access on the real type,
/// inside a closure typed by the root, gives rustc the same check without a
/// second struct per collection; the string form is recovered from the
/// schema, so `rename`d fields print under their string names.
pub struct Path<R, T> {
    name: Arc<str>,
    get: fn(&R) -> &T,
    get_mut: fn(&mut R) -> &mut T,
    _root: PhantomData<fn(R) -> T>,
}

impl<R, T> Clone for Path<R, T> {
    fn clone(&self) -> Self {
        Path {
            name: self.name.clone(),
            get: self.get,
            get_mut: self.get_mut,
            _root: PhantomData,
        }
    }
}

impl<R, T> fmt::Debug for Path<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "path!({})", self.name)
    }
}

impl<R, T> fmt::Display for Path<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl<R: HookNode, T: HookNode<Backend = R::Backend>> Path<R, T> {
    /// Used by [`path!`](crate::path!); `fields` is the dotted Rust field path
    /// (a trailing dot is ignored).
    #[doc(hidden)]
    pub fn __new(fields: &'static str, get: fn(&R) -> &T, get_mut: fn(&mut R) -> &mut T) -> Self {
        Path {
            name: typed_path_name(R::schema(), fields, &[]).name.into(),
            get,
            get_mut,
            _root: PhantomData,
        }
    }
}

/// The string form of a typed path, and the string path of the list each
/// index goes into.
struct TypedName {
    name: String,
    lists: Vec<String>,
}

/// Turns `fields`, the Rust field path as `path!` spells it with one `[]`
/// after a field per index (`blocks[].out.`), into string-path names, with
/// `indices` in place of the brackets: `blocks.3.out`.
fn typed_path_name(root: Schema, fields: &str, indices: &[usize]) -> TypedName {
    let mut schema = root;
    let mut names: Vec<String> = Vec::new();
    let mut lists = Vec::new();
    let mut next_index = indices.iter();
    for field in fields.split('.').filter(|s| !s.is_empty()) {
        let (field, brackets) = match field.find('[') {
            Some(at) => (&field[..at], field[at..].matches("[]").count()),
            None => (field, 0),
        };
        match schema.child(field_or_rename(&schema, field)) {
            Some(child) => {
                names.push(child.name.to_string());
                schema = (child.schema)();
            }
            None => names.push(field.to_string()),
        }
        for _ in 0..brackets {
            lists.push(names.join("."));
            let i = next_index.next().copied().unwrap_or_default();
            names.push(i.to_string());
            if let Step::Child(_, item) = schema.step(&i.to_string()) {
                schema = item;
            }
        }
    }
    TypedName {
        name: names.join("."),
        lists,
    }
}

/// The string-path name of the child whose Rust field is `field`.
fn field_or_rename<'a>(schema: &Schema, field: &'a str) -> &'a str {
    match schema.clone().present() {
        Schema::Collection { children, .. } => children
            .iter()
            .find(|c| c.field == field)
            .map(|c| c.name)
            .unwrap_or(field),
        _ => field,
    }
}

/// An index past the end of a list, met by an [`IndexedPath`]'s accessor.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct IndexMiss {
    nth: usize,
    len: usize,
    index: usize,
}

/// A node that holds entries by index: what `[i]` in [`path!`](crate::path!)
/// may follow.
pub trait Entries {
    /// The entries' type.
    type Entry;
    /// The entries.
    fn entries(&self) -> &[Self::Entry];
    /// The entries, mutably.
    fn entries_mut(&mut self) -> &mut [Self::Entry];
}

impl<N> Entries for Vec<N> {
    type Entry = N;
    fn entries(&self) -> &[N] {
        self
    }
    fn entries_mut(&mut self) -> &mut [N] {
        self
    }
}

impl<N, const K: usize> Entries for [N; K] {
    type Entry = N;
    fn entries(&self) -> &[N] {
        self
    }
    fn entries_mut(&mut self) -> &mut [N] {
        self
    }
}

/// Entry `indices[*nth]` of `list`, counting the index used.
#[doc(hidden)]
pub fn __entry<'a, L: Entries>(
    list: &'a L,
    indices: &[usize],
    nth: &mut usize,
    _as_written: &str,
) -> Result<&'a L::Entry, IndexMiss> {
    let (at, index) = (*nth, indices[*nth]);
    *nth += 1;
    let entries = list.entries();
    entries.get(index).ok_or(IndexMiss {
        nth: at,
        len: entries.len(),
        index,
    })
}

/// [`__entry`], mutably.
#[doc(hidden)]
pub fn __entry_mut<'a, L: Entries>(
    list: &'a mut L,
    indices: &[usize],
    nth: &mut usize,
    _as_written: &str,
) -> Result<&'a mut L::Entry, IndexMiss> {
    let (at, index) = (*nth, indices[*nth]);
    *nth += 1;
    let entries = list.entries_mut();
    let len = entries.len();
    entries.get_mut(index).ok_or(IndexMiss {
        nth: at,
        len,
        index,
    })
}

type Get<R, T> = for<'r> fn(&'r R, &[usize]) -> Result<&'r T, IndexMiss>;
type GetMut<R, T> = for<'r> fn(&'r mut R, &[usize]) -> Result<&'r mut T, IndexMiss>;

/// A typed path through lists, `path!(Net<B>: blocks[3].out)`: rustc checks
/// the names, and the indices are checked when the path is used
/// ([`HookTree::try_at`](crate::HookTree::try_at)), with the error a string
/// path gets ("`blocks` has 2 entries (0..=1), not 3").
pub struct IndexedPath<R, T> {
    name: Arc<str>,
    lists: Arc<[String]>,
    indices: Arc<[usize]>,
    get: Get<R, T>,
    get_mut: GetMut<R, T>,
}

impl<R, T> Clone for IndexedPath<R, T> {
    fn clone(&self) -> Self {
        IndexedPath {
            name: self.name.clone(),
            lists: self.lists.clone(),
            indices: self.indices.clone(),
            get: self.get,
            get_mut: self.get_mut,
        }
    }
}

impl<R, T> fmt::Debug for IndexedPath<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "path!({})", self.name)
    }
}

impl<R, T> fmt::Display for IndexedPath<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl<R: HookNode, T: HookNode<Backend = R::Backend>> IndexedPath<R, T> {
    /// Used by [`path!`](crate::path!).
    #[doc(hidden)]
    pub fn __new(
        fields: &'static str,
        indices: Vec<usize>,
        get: Get<R, T>,
        get_mut: GetMut<R, T>,
    ) -> Self {
        let typed = typed_path_name(R::schema(), fields, &indices);
        IndexedPath {
            name: typed.name.into(),
            lists: typed.lists.into(),
            indices: indices.into(),
            get,
            get_mut,
        }
    }
}

impl<R, T> IndexedPath<R, T> {
    /// The string path, e.g. `blocks.3.out`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node this path names inside `root`, or which index is too large.
    pub fn get<'r>(&self, root: &'r R) -> Result<&'r T, PathError> {
        (self.get)(root, &self.indices).map_err(|m| self.miss(m))
    }

    /// The node this path names inside `root`, mutably.
    pub fn get_mut<'r>(&self, root: &'r mut R) -> Result<&'r mut T, PathError> {
        (self.get_mut)(root, &self.indices).map_err(|m| self.miss(m))
    }

    fn miss(&self, m: IndexMiss) -> PathError {
        PathError::IndexOutOfRange {
            list: self.lists.get(m.nth).cloned().unwrap_or_default(),
            len: m.len,
            index: m.index,
            path: self.name.to_string(),
        }
    }
}

impl<R, T> Path<R, T> {
    /// The string path, e.g. `resid.torso.post_mlp` (renamed fields under
    /// their string names).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node this path names inside `root`.
    pub fn get<'r>(&self, root: &'r R) -> &'r T {
        (self.get)(root)
    }

    /// The node this path names inside `root`, mutably.
    pub fn get_mut<'r>(&self, root: &'r mut R) -> &'r mut T {
        (self.get_mut)(root)
    }
}

/// A typed path, checked by rustc: `path!(Root: a.b.c)`.
///
/// `Root` is the root collection type (with its generic arguments, e.g.
/// `MyHooks<NdArray>`); the segments are its field names.
///
/// ```
/// use burn_ndarray::NdArray;
/// use hooks_core::{path, HookCollection, HookTree, Site};
///
/// #[derive(HookCollection, Clone, Default)]
/// struct Attn<B: burn::tensor::backend::Backend> {
///     q: Site<B, 4>,
///     #[hooks(rename = "probs")]
///     qk_probs: Site<B, 4>,
/// }
/// #[derive(HookCollection, Clone, Default)]
/// struct Model<B: burn::tensor::backend::Backend> {
///     attn: Attn<B>,
/// }
///
/// let p = path!(Model<NdArray>: attn.qk_probs);
/// assert_eq!(p.name(), "attn.probs");
/// let mut hooks = Model::<NdArray>::default();
/// hooks.at_mut(&p).fwd.append(|x, _: &hooks_core::Ctx| x);
/// assert!(!hooks.at(&p).is_empty());
/// ```
#[macro_export]
macro_rules! path {
    ($root:ty : $($seg:ident).+) => {
        $crate::Path::<$root, _>::__new(
            ::core::concat!($(::core::stringify!($seg), "."),+),
            |root: &$root| &root.$($seg).+,
            |root: &mut $root| &mut root.$($seg).+,
        )
    };
    ($root:ty : $($seg:ident $([$idx:expr])*).+) => {
        $crate::path::IndexedPath::<$root, _>::__new(
            ::core::concat!($(::core::stringify!($seg), $("[]", $crate::__discard!($idx),)* "."),+),
            ::std::vec![$($($idx,)*)+],
            |root: &$root, indices: &[usize]| {
                let mut nth = 0usize;
                let node = root;
                $(
                    let node = &node.$seg;
                    $(
                        let node = $crate::path::__entry(
                            node, indices, &mut nth, ::core::stringify!($idx),
                        )?;
                    )*
                )+
                ::core::result::Result::Ok(node)
            },
            |root: &mut $root, indices: &[usize]| {
                let mut nth = 0usize;
                let node = root;
                $(
                    let node = &mut node.$seg;
                    $(
                        let node = $crate::path::__entry_mut(
                            node, indices, &mut nth, ::core::stringify!($idx),
                        )?;
                    )*
                )+
                ::core::result::Result::Ok(node)
            },
        )
    };
}

/// Expands to nothing: lets `path!` repeat once per index without using it.
#[doc(hidden)]
#[macro_export]
macro_rules! __discard {
    ($($t:tt)*) => {
        ""
    };
}
