//! Paths to sites: typed ones checked by rustc ([`path!`](crate::path!)), and
//! string ones checked against the tree's [`Schema`](crate::Schema) with errors that name the
//! bad segment and suggest the right one.

mod error;
mod glob;
mod resolve;
mod typed;

pub use error::{PathError, escape_control};
pub use glob::{closest, glob_matches};
pub use resolve::{ResolvedPath, explain_unmatched, resolve, schema_at};
pub use typed::{__entry, __entry_mut, Entries, IndexMiss, IndexedPath, Path};
