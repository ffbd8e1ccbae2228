//! Errors of the runtime hook API.

use crate::calls::HookCalls;
use crate::path::PathError;

/// What went wrong when changing a hook tree.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HookError {
    /// `bind` of a key that is already bound (the reference raises too).
    #[error("key `{key}` is already bound{}", at(site))]
    AlreadyBound {
        /// The key.
        key: String,
        /// The site path where it was bound, when known.
        site: Option<String>,
    },
    /// `unbind` of a key that is not bound.
    #[error("key `{key}` is not bound{}", at(site))]
    NotBound {
        /// The key.
        key: String,
        /// The site path, when known.
        site: Option<String>,
    },
    /// A string path that does not name what the call needs.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A typed hook whose tensor rank differs from the site's.
    #[error(
        "hook for rank-{hook} tensors cannot go on `{site}`, whose values have rank {site_rank}"
    )]
    RankMismatch {
        /// The site path.
        site: String,
        /// The rank of the site's tensors.
        site_rank: usize,
        /// The rank the hook was written for.
        hook: usize,
    },
    /// Strict mode ([`HookTree::require_all_fired`](crate::HookTree::require_all_fired)):
    /// hooks that never ran.
    #[error("{}", never_fired(hooks))]
    NeverFired {
        /// Each hook that never ran, with where it is.
        hooks: Vec<HookCalls>,
    },
    /// A forward hook aimed at the gradient stage, or the reverse.
    #[error(
        "`{path}` is a gradient stage: it takes gradient hooks (use `append_grad_to_path`), which need an autodiff backend"
    )]
    GradStageNeedsGradHook {
        /// The path as given.
        path: String,
    },
}

fn at(site: &Option<String>) -> String {
    site.as_ref()
        .map(|s| format!(" at `{s}`"))
        .unwrap_or_default()
}

fn never_fired(hooks: &[HookCalls]) -> String {
    let list: Vec<String> = hooks
        .iter()
        .map(|h| format!("`{}` on `{}.{}`", h.hook, h.site, h.stage.name()))
        .collect();
    let n = hooks.len();
    format!(
        "{n} hook{} never ran: {}",
        if n == 1 { "" } else { "s" },
        list.join("; ")
    )
}
