//! The order a forward pass meets the sites in, and the recorder keys of a
//! selection: one rule for `hooks sites`, `hooks cache` and the activation
//! store.

use hooks_core::{SiteInfo, record_key};

/// Sorts `sites`, selected from the tree whose sites are `full`, in forward order around the blocks: the
/// sites outside the blocks that come before them (the embedding), then the
/// per-layer ones, then the rest (final norm, logits); tree order within
/// each group.
pub fn order(sites: Vec<SiteInfo>, full: &[SiteInfo]) -> Vec<SiteInfo> {
    let (before, rest): (Vec<_>, Vec<_>) = sites
        .into_iter()
        .partition(|s| !s.per_layer && before_blocks(&s.path, full));
    let (inside, after): (Vec<_>, Vec<_>) = rest.into_iter().partition(|s| s.per_layer);
    before.into_iter().chain(inside).chain(after).collect()
}

/// Whether the outside site `path` comes before the blocks: in the nearest
/// collection above it that holds per-layer sites, it is declared before
/// them (`resid.post_emb` before `resid.torso`; `logits`, after `mlp` and
/// `attn` at the top, is not). Trees declare their nodes in forward order
/// around the blocks, as `TransformerHooks` does.
pub fn before_blocks(path: &str, tree: &[SiteInfo]) -> bool {
    let Some(at) = tree.iter().position(|s| s.path == path) else {
        return false;
    };
    let mut prefix = path;
    while !prefix.is_empty() {
        prefix = prefix.rfind('.').map_or("", |i| &prefix[..i]);
        let under = |s: &&SiteInfo| {
            prefix.is_empty()
                || s.path
                    .strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with('.'))
        };
        let first_inside = tree.iter().filter(under).position(|s| s.per_layer);
        if let Some(first_inside) = first_inside {
            let mine = tree[..at].iter().filter(under).count();
            return mine < first_inside;
        }
    }
    false
}

/// The recorder keys of `sites` (selected from the tree whose sites are
/// `full`) for a model of `n_layer` layers, in the order
/// of [`order`]: outside sites before the blocks, per-layer ones layer
/// by layer, then the other outside ones.
pub fn record_keys(sites: &[SiteInfo], full: &[SiteInfo], n_layer: usize) -> Vec<String> {
    let ordered = order(sites.to_vec(), full);
    let mut keys = Vec::new();
    let (before, rest): (Vec<_>, Vec<_>) = ordered
        .iter()
        .partition(|s| !s.per_layer && before_blocks(&s.path, full));
    let (inside, after): (Vec<_>, Vec<_>) = rest.into_iter().partition(|s| s.per_layer);
    keys.extend(before.iter().map(|s| record_key(&s.path, None)));
    for layer in 0..n_layer {
        keys.extend(inside.iter().map(|s| record_key(&s.path, Some(layer))));
    }
    keys.extend(after.iter().map(|s| record_key(&s.path, None)));
    keys
}
