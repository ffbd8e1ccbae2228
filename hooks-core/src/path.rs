//! Paths to sites: typed ones checked by rustc ([`path!`](crate::path!)), and
//! string ones checked against the tree's [`Schema`] with errors that name the
//! bad segment and suggest the right one.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::node::{HookNode, Schema, Segment, Step, join_segments};
use crate::site::Stage;

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

/// A string path that could not be resolved.
///
/// Every message escapes control characters of the strings it echoes
/// ([`escape_control`]), so a path typed or read from a file cannot drive the
/// terminal it is printed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty or has an empty segment (`a..b`, `.a`).
    #[error("{}", empty_segment(path, *offset))]
    EmptySegment {
        /// The path as given.
        path: String,
        /// Byte offset of the empty segment.
        offset: usize,
    },
    /// A segment that names nothing under its parent.
    #[error(
        "no hook site `{}` under {} (in \"{}\"){}; available: {}{}",
        escape_control(segment),
        parent_label(parent),
        escape_control(path),
        stage_under_collection(segment),
        available.join(", "),
        suggest(suggestion)
    )]
    UnknownSegment {
        /// The bad segment.
        segment: String,
        /// The path of its parent (empty for the root).
        parent: String,
        /// The whole path as given.
        path: String,
        /// Byte offset of the segment in the path.
        offset: usize,
        /// The names available under the parent.
        available: Vec<String>,
        /// The closest available name, if any is close.
        suggestion: Option<String>,
    },
    /// A path that stops at a collection where a site is needed, or (with no
    /// `available` names) a site path with a stage where only sites are
    /// selected: `attn.q.fwd` where `attn.q` is meant.
    #[error("{}", not_a_site(path, available))]
    NotASite {
        /// The path as given.
        path: String,
        /// Its children.
        available: Vec<String>,
    },
    /// A site path where a stage (`fwd`, `bwd`, `fwd2`) is needed.
    #[error(
        "`{p}` is a site; name a stage: `{p}.fwd`, `{p}.bwd` or `{p}.fwd2`",
        p = escape_control(path)
    )]
    MissingStage {
        /// The path as given.
        path: String,
    },
    /// A segment after a site that is not a stage.
    #[error(
        "no stage `{}` on site `{}` (in \"{}\"); available: fwd, bwd, fwd2{}",
        escape_control(segment),
        escape_control(site),
        escape_control(path),
        suggest(suggestion)
    )]
    UnknownStage {
        /// The bad segment.
        segment: String,
        /// The site's path.
        site: String,
        /// The whole path.
        path: String,
        /// The closest stage name, if close.
        suggestion: Option<String>,
    },
    /// Segments after the stage.
    #[error(
        "`{}` goes past the stage `{stage}`: a stage has no children",
        escape_control(path)
    )]
    PastStage {
        /// The path as given.
        path: String,
        /// The stage it went past.
        stage: String,
    },
    /// A stage where only a site path is accepted.
    #[error(
        "`{}` names a stage; give the site path `{}`",
        escape_control(path),
        escape_control(site)
    )]
    UnexpectedStage {
        /// The path as given.
        path: String,
        /// The site part.
        site: String,
    },
    /// An index past the end of a list.
    #[error(
        "{} (in \"{}\")",
        out_of_range(list, *len, *index),
        escape_control(path)
    )]
    IndexOutOfRange {
        /// The list's path.
        list: String,
        /// How many entries it has.
        len: usize,
        /// The index asked for.
        index: usize,
        /// The whole path as given.
        path: String,
    },
    /// A name where a list needs an index.
    #[error(
        "`{}` is a list: name an entry by its index, e.g. `{}.0` (or all of them, `{}.*`), \
         not `{}` (in \"{}\")",
        escape_control(list),
        escape_control(list),
        escape_control(list),
        escape_control(segment),
        escape_control(path)
    )]
    NotAnIndex {
        /// The list's path.
        list: String,
        /// The segment that is not an index.
        segment: String,
        /// The whole path as given.
        path: String,
    },
    /// A path through an `Option` that holds `None` in this tree.
    #[error(
        "`{}` is absent: this tree holds `None` there (in \"{}\")",
        escape_control(optional),
        escape_control(path)
    )]
    Absent {
        /// The path of the optional child.
        optional: String,
        /// The whole path as given.
        path: String,
    },
    /// A glob pattern that selects no site ([`explain_unmatched`]); an
    /// empty `available` means `parent` is a site (`attn.q.*`).
    #[error(
        "pattern `{}` matches no site{}",
        escape_control(pattern),
        no_match_hint(parent, available)
    )]
    NoMatch {
        /// The pattern as given.
        pattern: String,
        /// The longest leading run of literal segments that names a node
        /// (empty for the root).
        parent: String,
        /// The names under `parent`.
        available: Vec<String>,
    },
}

/// `s` with its control characters (C0, DEL, C1) and the Unicode
/// bidirectional controls that reorder displayed text escaped as Rust does
/// (`\n`, `\u{1b}`, `\u{202e}`); other characters, Unicode included, are kept.
///
/// Every message that echoes a string from a user or a file uses it, so that
/// such a string cannot move the cursor, recolour or rewrite the terminal.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    fn hostile(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            )
    }
    if !s.chars().any(hostile) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hostile(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn empty_segment(path: &str, offset: usize) -> String {
    if path.is_empty() {
        "empty site path".to_string()
    } else {
        format!(
            "empty segment at offset {offset} in \"{}\"",
            escape_control(path)
        )
    }
}

fn parent_label(parent: &str) -> String {
    if parent.is_empty() {
        "the root".to_string()
    } else {
        format!("`{}`", escape_control(parent))
    }
}

fn suggest(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!("; did you mean `{}`?", escape_control(s)))
        .unwrap_or_default()
}

/// `: `fwd` is a stage, ...` when a stage name was looked up among a
/// collection's children.
fn stage_under_collection(segment: &str) -> String {
    if Stage::from_name(segment).is_some() {
        format!(": `{segment}` is a stage, and only a site has stages")
    } else {
        String::new()
    }
}

fn not_a_site(path: &str, available: &[String]) -> String {
    if let Some((site, stage)) = path.rsplit_once('.')
        && Stage::from_name(stage).is_some()
    {
        return format!(
            "`{stage}` is a stage, not part of a site path: select the site `{}` \
             (a site is recorded or selected as a whole; `fwd`, `bwd` and `fwd2` are the \
             stages where hooks run on its value)",
            escape_control(site)
        );
    }
    if available.is_empty() {
        return format!("`{}` names no site", escape_control(path));
    }
    format!(
        "`{}` is a collection, not a site; under it: {}",
        escape_control(path),
        available.join(", ")
    )
}

fn out_of_range(list: &str, len: usize, index: usize) -> String {
    let list = escape_control(list);
    match len {
        0 => format!("`{list}` has no entries, so no entry {index}"),
        1 => format!("`{list}` has 1 entry (0), not {index}"),
        _ => format!("`{list}` has {len} entries (0..={}), not {index}", len - 1),
    }
}

fn no_match_hint(parent: &str, available: &[String]) -> String {
    if available.is_empty() {
        if parent.is_empty() {
            return String::new();
        }
        return format!(
            "; `{}` is a site, and patterns select sites, not their stages",
            escape_control(parent)
        );
    }
    format!(
        "; names under {}: {}",
        parent_label(parent),
        available.join(", ")
    )
}

/// A string path checked against a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPath {
    /// The steps from the root to the node.
    pub segments: Vec<Segment>,
    /// The node's rank if it is a site.
    pub rank: Option<usize>,
    /// The stage, if the path named one.
    pub stage: Option<Stage>,
}

impl ResolvedPath {
    /// The dotted node path, without the stage.
    pub fn node_path(&self) -> String {
        join_segments(&self.segments)
    }
}

/// Checks `path` against `schema`: each segment must name a child of the node
/// before it (a field of a collection, an index of a list; an `Option` is
/// passed through); after a site, one more segment may name a stage.
///
/// What only a tree knows (the length of a `Vec`, whether an `Option` holds
/// a node) is checked where a path is used on a tree
/// ([`HookTree`](crate::HookTree)'s string-path methods), with the same errors.
pub fn resolve(schema: &Schema, path: &str) -> Result<ResolvedPath, PathError> {
    let mut node = schema.clone();
    let mut segments: Vec<Segment> = Vec::new();
    let mut stage: Option<Stage> = None;
    let mut offset = 0;
    for segment in path.split('.') {
        if segment.is_empty() {
            return Err(PathError::EmptySegment {
                path: path.to_string(),
                offset,
            });
        }
        if let Some(stage) = stage {
            return Err(PathError::PastStage {
                path: path.to_string(),
                stage: stage.name().to_string(),
            });
        }
        match node.step(segment) {
            Step::Child(step, child) => {
                segments.push(step);
                node = child;
            }
            Step::AtSite => match Stage::from_name(segment) {
                Some(s) => stage = Some(s),
                None => {
                    let names = Stage::ALL.map(Stage::name);
                    return Err(PathError::UnknownStage {
                        segment: segment.to_string(),
                        site: join_segments(&segments),
                        path: path.to_string(),
                        suggestion: closest(segment, &names).map(str::to_string),
                    });
                }
            },
            Step::NoSuchName => {
                let available = node.child_names();
                let names: Vec<&str> = available.iter().map(String::as_str).collect();
                return Err(PathError::UnknownSegment {
                    segment: segment.to_string(),
                    parent: join_segments(&segments),
                    path: path.to_string(),
                    offset,
                    suggestion: closest(segment, &names).map(str::to_string),
                    available,
                });
            }
            Step::NotAnIndex => {
                return Err(PathError::NotAnIndex {
                    list: join_segments(&segments),
                    segment: segment.to_string(),
                    path: path.to_string(),
                });
            }
            Step::OutOfRange { len } => {
                return Err(PathError::IndexOutOfRange {
                    list: join_segments(&segments),
                    len,
                    // The segment is all digits but may not fit a usize.
                    index: segment.parse().unwrap_or(usize::MAX),
                    path: path.to_string(),
                });
            }
        }
        offset += segment.len() + 1;
    }
    Ok(ResolvedPath {
        segments,
        rank: node.rank(),
        stage,
    })
}

/// The schema of the node at `segments` (resolved from `schema`), with
/// `Option` wrappers kept.
pub fn schema_at(schema: &Schema, segments: &[Segment]) -> Schema {
    let mut node = schema.clone();
    for seg in segments {
        match node.step(&seg.to_string()) {
            Step::Child(_, child) => node = child,
            _ => break,
        }
    }
    node
}

/// The candidate closest to `word` by edit distance, if it is close enough to
/// be a plausible typo (at most a third of the word's length, and at least 1).
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let len = word.chars().count();
    let limit = (len / 3).max(1);
    candidates
        .iter()
        // Lengths further apart than the limit cannot be within it: skip
        // them without the quadratic table (a long hostile word stays cheap).
        .filter(|c| len.abs_diff(c.chars().count()) <= limit)
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, counting an adjacent swap as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rolling rows: the swap rule looks two rows back.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(before[j - 2] + 1);
            }
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Whether site path `path` is selected by `pattern`.
///
/// `*` matches within one segment, `**` across segments; a pattern without
/// wildcards also selects everything below the collection it names
/// (`attn` selects `attn.q`, `attn.k`, ...). Matching takes time
/// proportional to the pattern's length times the path's, whatever the
/// pattern (no backtracking).
pub fn glob_matches(pattern: &str, path: &str) -> bool {
    if !pattern.contains('*') {
        return path == pattern
            || (path.starts_with(pattern) && path.as_bytes().get(pattern.len()) == Some(&b'.'));
    }
    glob(pattern.as_bytes(), path.as_bytes())
}

enum Token {
    /// `**`: any run of bytes.
    Any,
    /// `*`: any run of bytes without a `.`.
    InSegment,
    Byte(u8),
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    let mut tokens = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i..] {
            [b'*', b'*', ..] => {
                tokens.push(Token::Any);
                i += 2;
            }
            [b'*', ..] => {
                tokens.push(Token::InSegment);
                i += 1;
            }
            [c, ..] => {
                tokens.push(Token::Byte(c));
                i += 1;
            }
            [] => unreachable!("i < p.len()"),
        }
    }
    // matched[j]: the tokens so far match s[..j].
    let mut matched = vec![false; s.len() + 1];
    matched[0] = true;
    let mut next = vec![false; s.len() + 1];
    for token in &tokens {
        match token {
            Token::Any => {
                next[0] = matched[0];
                for j in 1..=s.len() {
                    next[j] = matched[j] || next[j - 1];
                }
            }
            Token::InSegment => {
                next[0] = matched[0];
                for j in 1..=s.len() {
                    next[j] = matched[j] || (next[j - 1] && s[j - 1] != b'.');
                }
            }
            Token::Byte(c) => {
                next[0] = false;
                for j in 1..=s.len() {
                    next[j] = matched[j - 1] && s[j - 1] == *c;
                }
            }
        }
        std::mem::swap(&mut matched, &mut next);
        if !matched.iter().any(|&m| m) {
            return false;
        }
    }
    matched[s.len()]
}

/// Why `pattern` selects no site of `schema`, for a pattern that
/// [`glob_matches`] no site path with: a path checked by [`resolve`] names
/// its bad segment (with a suggestion); a site path ending in a stage
/// (`attn.q.fwd`) says to leave the stage out; a glob says it matches
/// nothing and lists the names under its longest literal prefix.
pub fn explain_unmatched(schema: &Schema, pattern: &str) -> PathError {
    if !pattern.contains('*') {
        return match resolve(schema, pattern) {
            Err(e) => e,
            Ok(resolved) => PathError::NotASite {
                path: pattern.to_string(),
                available: if resolved.stage.is_some() {
                    Vec::new()
                } else {
                    child_names_at(schema, &resolved.segments)
                },
            },
        };
    }
    let mut node = schema.clone();
    let mut parent: Vec<Segment> = Vec::new();
    for segment in pattern.split('.') {
        if segment.contains('*') {
            break;
        }
        match node.step(segment) {
            Step::Child(step, next) => {
                parent.push(step);
                node = next;
                if node.is_site() {
                    // Nothing is below a site: `attn.q.*` selects nothing.
                    break;
                }
            }
            _ => break,
        }
    }
    PathError::NoMatch {
        pattern: pattern.to_string(),
        parent: join_segments(&parent),
        available: node.child_names(),
    }
}

fn child_names_at(schema: &Schema, segments: &[Segment]) -> Vec<String> {
    schema_at(schema, segments).child_names()
}
