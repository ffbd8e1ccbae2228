//! String paths checked against a tree's schema.

use crate::node::{Schema, Segment, Step, join_segments};
use crate::site::Stage;

use super::{PathError, closest};

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

/// Why `pattern` selects no site of `schema`, for a pattern that
/// [`glob_matches`](super::glob_matches) no site path with: a path checked by [`resolve`] names
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
