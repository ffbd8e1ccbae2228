//! What can be wrong with a string path, in words that name the bad part.

use std::borrow::Cow;

use crate::site::Stage;

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
    /// A glob pattern that selects no site ([`explain_unmatched`](super::explain_unmatched)); an
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
