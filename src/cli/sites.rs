//! `hooks sites`: every hook site with its shape, in forward order, and the
//! site table the other commands use to name cache keys.

use std::fmt::Write as _;

use hooks_core::{HookTree, SiteInfo, record_key};

use super::args::SitesArgs;
use super::error::CliError;
use hooks_model::backend::Cpu;
use hooks_model::{Gpt2Config, TransformerHooks, checkpoint};

/// One dimension of a site's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// Batch size B (symbolic).
    Batch,
    /// Query positions S (symbolic).
    Query,
    /// Key positions K: S plus cached positions (symbolic).
    Key,
    /// Model width D.
    Model,
    /// Heads H.
    Heads,
    /// Head width d.
    HeadWidth,
    /// MLP width F.
    Mlp,
    /// Vocabulary V.
    Vocab,
    /// A kept dimension of size 1.
    One,
}

impl Dim {
    /// `B`, `S`, `K`, or the size the config gives.
    pub fn render(self, config: &Gpt2Config) -> String {
        match self {
            Dim::Batch => "B".into(),
            Dim::Query => "S".into(),
            Dim::Key => "K".into(),
            Dim::Model => config.n_embd.to_string(),
            Dim::Heads => config.n_head.to_string(),
            Dim::HeadWidth => config.d_head().to_string(),
            Dim::Mlp => config.d_mlp().to_string(),
            Dim::Vocab => config.vocab_size.to_string(),
            Dim::One => "1".into(),
        }
    }

    /// The size for a batch of `batch` rows of `seq` tokens and no cache.
    pub fn size(self, config: &Gpt2Config, batch: usize, seq: usize) -> usize {
        match self {
            Dim::Batch => batch,
            Dim::Query | Dim::Key => seq,
            Dim::Model => config.n_embd,
            Dim::Heads => config.n_head,
            Dim::HeadWidth => config.d_head(),
            Dim::Mlp => config.d_mlp(),
            Dim::Vocab => config.vocab_size,
            Dim::One => 1,
        }
    }
}

/// What `SITES.md` says about one site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteSpec {
    /// Dotted site path, as in `TransformerHooks`.
    pub path: String,
    /// Whether the site is inside the blocks (called once per layer).
    pub per_layer: bool,
    /// The shape of its values.
    pub shape: Vec<Dim>,
    /// A remark printed after the shape.
    pub note: Option<&'static str>,
}

/// Every site of [`TransformerHooks`] in the order the forward pass calls it.
pub fn site_specs() -> Vec<SiteSpec> {
    use Dim::*;
    const BSD: &[Dim] = &[Batch, Query, Model];
    let spec = |path: &str, per_layer: bool, shape: &[Dim], note: Option<&'static str>| SiteSpec {
        path: path.to_string(),
        per_layer,
        shape: shape.to_vec(),
        note,
    };
    let norm = |prefix: &str, per_layer: bool| {
        [
            spec(
                &format!("{prefix}.post_mean_subtraction"),
                per_layer,
                BSD,
                None,
            ),
            spec(
                &format!("{prefix}.scale"),
                per_layer,
                &[Batch, Query, One],
                None,
            ),
            spec(&format!("{prefix}.post_scale"), per_layer, BSD, None),
        ]
    };
    let block = |path: &str, shape: &[Dim]| spec(path, true, shape, None);
    let mut out = vec![spec("resid.post_emb", false, BSD, None)];
    out.extend(norm("resid.torso.ln_attn", true));
    out.extend([
        block("resid.torso.post_ln_attn", BSD),
        spec(
            "attn.q",
            true,
            &[Batch, Query, Heads, HeadWidth],
            Some("scaled by d^-1/4"),
        ),
        spec(
            "attn.k",
            true,
            &[Batch, Key, Heads, HeadWidth],
            Some("scaled by d^-1/4"),
        ),
        block("attn.v", &[Batch, Key, Heads, HeadWidth]),
        spec(
            "attn.qk_logits",
            true,
            &[Batch, Query, Key, Heads],
            Some("masked with -inf"),
        ),
        spec(
            "attn.qk_softmax_denominator",
            true,
            &[Batch, Query, One, Heads],
            Some("only called when hooked"),
        ),
        block("attn.qk_probs", &[Batch, Query, Key, Heads]),
        block("attn.v_out", &[Batch, Query, Heads, HeadWidth]),
        block("resid.torso.delta_attn", BSD),
        block("resid.torso.post_attn", BSD),
    ]);
    out.extend(norm("resid.torso.ln_mlp", true));
    out.extend([
        block("resid.torso.post_ln_mlp", BSD),
        block("mlp.pre_act", &[Batch, Query, Mlp]),
        block("mlp.post_act", &[Batch, Query, Mlp]),
        block("resid.torso.delta_mlp", BSD),
        block("resid.torso.post_mlp", BSD),
    ]);
    out.extend(norm("resid.ln_f", false));
    out.push(spec("resid.post_ln_f", false, BSD, None));
    out.push(spec("logits", false, &[Batch, Query, Vocab], None));
    out
}

/// Whether `path` is a site inside the blocks. Sites missing from
/// [`site_specs`] are judged by their top-level field.
pub fn is_per_layer(path: &str) -> bool {
    site_specs()
        .into_iter()
        .find(|s| s.path == path)
        .map(|s| s.per_layer)
        .unwrap_or_else(|| {
            path.starts_with("attn.")
                || path.starts_with("mlp.")
                || path.starts_with("resid.torso.")
        })
}

/// The sites of the tree in forward order, each with its spec when known.
pub fn ordered_sites() -> Vec<(SiteInfo, Option<SiteSpec>)> {
    order(TransformerHooks::<Cpu>::default().sites())
}

/// Sorts `sites` into forward order (unknown ones last, in tree order).
pub fn order(sites: Vec<SiteInfo>) -> Vec<(SiteInfo, Option<SiteSpec>)> {
    let specs = site_specs();
    let mut with: Vec<_> = sites
        .into_iter()
        .map(|s| {
            let i = specs.iter().position(|p| p.path == s.path);
            (i.unwrap_or(usize::MAX), s, i.map(|i| specs[i].clone()))
        })
        .collect();
    with.sort_by_key(|(i, _, _)| *i);
    with.into_iter().map(|(_, s, spec)| (s, spec)).collect()
}

/// The recorder keys of `sites` for a model of `n_layer` layers, in the order
/// the forward pass produces them: outside sites before the blocks (the
/// embedding) or after them, per-layer ones layer by layer.
pub fn record_keys(sites: &[SiteInfo], n_layer: usize) -> Vec<String> {
    let ordered = order(sites.to_vec());
    let (inside, outside): (Vec<_>, Vec<_>) =
        ordered.iter().partition(|(s, _)| is_per_layer(&s.path));
    let mut keys = Vec::new();
    let before = |s: &SiteInfo| s.path == "resid.post_emb";
    keys.extend(
        outside
            .iter()
            .filter(|(s, _)| before(s))
            .map(|(s, _)| record_key(&s.path, None)),
    );
    for layer in 0..n_layer {
        keys.extend(inside.iter().map(|(s, _)| record_key(&s.path, Some(layer))));
    }
    keys.extend(
        outside
            .iter()
            .filter(|(s, _)| !before(s))
            .map(|(s, _)| record_key(&s.path, None)),
    );
    keys
}

/// Runs `hooks sites`.
pub fn run(args: &SitesArgs) -> Result<(), CliError> {
    let (config, name) = match &args.model {
        Some(dir) => {
            let config = checkpoint::load_config(dir).map_err(|e| CliError::model_files(dir, e))?;
            (config, format!("`{}`", hooks_model::shown(dir)))
        }
        None => (Gpt2Config::gpt2_small(), "GPT-2 small".to_string()),
    };
    super::print_out(&render(&config, &name))
}

/// The text `hooks sites` prints.
pub fn render(config: &Gpt2Config, name: &str) -> String {
    let mut out = String::new();
    let last = config.n_layer.saturating_sub(1);
    let _ = writeln!(
        out,
        "{name}: {} layers, D {}, H {}, d {}, F {}, V {}, {} positions",
        config.n_layer,
        config.n_embd,
        config.n_head,
        config.d_head(),
        config.d_mlp(),
        config.vocab_size,
        config.n_positions
    );
    let _ = writeln!(
        out,
        "B batch, S query positions, K key positions (S plus any cached positions)\n"
    );
    let sites = ordered_sites();
    let width = sites
        .iter()
        .map(|(s, _)| s.path.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let layers = if config.n_layer == 1 {
        "0".to_string()
    } else {
        format!("0-{last}")
    };
    let layer_width = layers.len().max("layers".len());
    let _ = writeln!(out, "{:width$}  {:layer_width$}  shape", "site", "layers");
    let mut values = 0;
    let mut rows = Vec::new();
    for (site, spec) in &sites {
        let per_layer = spec
            .as_ref()
            .map_or_else(|| is_per_layer(&site.path), |s| s.per_layer);
        // Saturating: the count is printed, never used to allocate.
        values = usize::saturating_add(values, if per_layer { config.n_layer } else { 1 });
        let shape = match spec {
            Some(spec) => {
                let dims: Vec<_> = spec.shape.iter().map(|d| d.render(config)).collect();
                format!("[{}]", dims.join(", "))
            }
            None => format!("[rank {}]", site.rank),
        };
        let note = spec.as_ref().and_then(|s| s.note).unwrap_or_default();
        let which = if per_layer { layers.as_str() } else { "-" };
        rows.push((site.path.as_str(), which, shape, note));
    }
    let shape_width = rows.iter().map(|r| r.2.chars().count()).max().unwrap_or(0);
    for (path, which, shape, note) in rows {
        let line = format!("{path:width$}  {which:layer_width$}  {shape:shape_width$}  {note}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(
        out,
        "\n{} sites, {values} values per forward pass. `hooks cache` keys are `layers.<i>.<site>` for \
         per-layer sites and `<site>` otherwise;\nselect sites with `--sites` by path or glob \
         (`attn.*` one segment, `resid.**` any depth).",
        sites.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_covers_the_tree() {
        let tree = TransformerHooks::<Cpu>::default().sites();
        let specs = site_specs();
        assert_eq!(tree.len(), specs.len());
        for site in &tree {
            let spec = specs
                .iter()
                .find(|s| s.path == site.path)
                .unwrap_or_else(|| panic!("{} has no spec", site.path));
            assert_eq!(spec.shape.len(), site.rank, "{}", site.path);
        }
    }

    #[test]
    fn keys_follow_the_forward_pass() {
        let tree = TransformerHooks::<Cpu>::default();
        let sites = tree
            .sites_matching(&["logits", "resid.post_emb", "attn.qk_probs"])
            .unwrap();
        assert_eq!(
            record_keys(&sites, 2),
            [
                "resid.post_emb",
                "layers.0.attn.qk_probs",
                "layers.1.attn.qk_probs",
                "logits"
            ]
        );
    }
}
