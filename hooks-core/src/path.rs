//! Paths to sites: typed ones checked by rustc ([`path!`](crate::path!)), and
//! string ones checked against the tree's [`Schema`] with errors that name the
//! bad segment and suggest the right one.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::node::{HookNode, Schema};
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
        let mut schema = R::schema();
        let mut names = Vec::new();
        for field in fields.split('.').filter(|s| !s.is_empty()) {
            match &schema {
                Schema::Collection { children, .. } => {
                    match children.iter().find(|c| c.field == field) {
                        Some(child) => {
                            names.push(child.name);
                            schema = (child.schema)();
                        }
                        None => names.push(field),
                    }
                }
                Schema::Site { .. } => names.push(field),
            }
        }
        Path {
            name: names.join(".").into(),
            get,
            get_mut,
            _root: PhantomData,
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
}

/// A string path that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty or has an empty segment (`a..b`, `.a`).
    #[error("empty segment at offset {offset} in \"{path}\"")]
    EmptySegment {
        /// The path as given.
        path: String,
        /// Byte offset of the empty segment.
        offset: usize,
    },
    /// A segment that names nothing under its parent.
    #[error(
        "no hook site `{segment}` under {} (in \"{path}\"); available: {}{}",
        parent_label(parent),
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
    /// A path that stops at a collection where a site is needed.
    #[error("`{path}` is a collection, not a site; under it: {}", available.join(", "))]
    NotASite {
        /// The path as given.
        path: String,
        /// Its children.
        available: Vec<String>,
    },
    /// A site path where a stage (`fwd`, `bwd`, `fwd2`) is needed.
    #[error("`{path}` is a site; name a stage: `{path}.fwd`, `{path}.bwd` or `{path}.fwd2`")]
    MissingStage {
        /// The path as given.
        path: String,
    },
    /// A segment after a site that is not a stage.
    #[error(
        "no stage `{segment}` on site `{site}` (in \"{path}\"); available: fwd, bwd, fwd2{}",
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
    #[error("`{path}` goes past the stage `{stage}`: a stage has no children")]
    PastStage {
        /// The path as given.
        path: String,
        /// The stage it went past.
        stage: String,
    },
    /// A stage where only a site path is accepted.
    #[error("`{path}` names a stage; give the site path `{site}`")]
    UnexpectedStage {
        /// The path as given.
        path: String,
        /// The site part.
        site: String,
    },
}

fn parent_label(parent: &str) -> String {
    if parent.is_empty() {
        "the root".to_string()
    } else {
        format!("`{parent}`")
    }
}

fn suggest(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// A string path checked against a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPath {
    /// The names from the root to the node.
    pub segments: Vec<&'static str>,
    /// The node's rank if it is a site.
    pub rank: Option<usize>,
    /// The stage, if the path named one.
    pub stage: Option<Stage>,
}

impl ResolvedPath {
    /// The dotted node path, without the stage.
    pub fn node_path(&self) -> String {
        self.segments.join(".")
    }
}

/// Checks `path` against `schema`: each segment must name a child of the node
/// before it; after a site, one more segment may name a stage.
pub fn resolve(schema: &Schema, path: &str) -> Result<ResolvedPath, PathError> {
    let mut node = schema.clone();
    let mut segments: Vec<&'static str> = Vec::new();
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
        match &node {
            Schema::Site { .. } => match Stage::from_name(segment) {
                Some(s) => stage = Some(s),
                None => {
                    let names = Stage::ALL.map(Stage::name);
                    return Err(PathError::UnknownStage {
                        segment: segment.to_string(),
                        site: segments.join("."),
                        path: path.to_string(),
                        suggestion: closest(segment, &names).map(str::to_string),
                    });
                }
            },
            Schema::Collection { .. } => match node.child(segment) {
                Some(child) => {
                    segments.push(child.name);
                    node = (child.schema)();
                }
                None => {
                    let available = node.child_names();
                    return Err(PathError::UnknownSegment {
                        segment: segment.to_string(),
                        parent: segments.join("."),
                        path: path.to_string(),
                        offset,
                        suggestion: closest(segment, &available).map(str::to_string),
                        available: available.into_iter().map(str::to_string).collect(),
                    });
                }
            },
        }
        offset += segment.len() + 1;
    }
    let rank = match node {
        Schema::Site { rank } => Some(rank),
        Schema::Collection { .. } => None,
    };
    Ok(ResolvedPath {
        segments,
        rank,
        stage,
    })
}

/// The candidate closest to `word` by edit distance, if it is close enough to
/// be a plausible typo (at most a third of the word's length, and at least 1).
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, counting an adjacent swap as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Whether site path `path` is selected by `pattern`.
///
/// `*` matches within one segment, `**` across segments; a pattern without
/// wildcards also selects everything below the collection it names
/// (`attn` selects `attn.q`, `attn.k`, ...).
pub fn glob_matches(pattern: &str, path: &str) -> bool {
    if !pattern.contains('*') {
        return path == pattern
            || (path.starts_with(pattern) && path.as_bytes().get(pattern.len()) == Some(&b'.'));
    }
    glob(pattern.as_bytes(), path.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p {
        [] => s.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        [b'*', rest @ ..] => (0..=s.len())
            .take_while(|&i| i == 0 || s[i - 1] != b'.')
            .any(|i| glob(rest, &s[i..])),
        [c, rest @ ..] => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}
