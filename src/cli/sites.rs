//! `hooks sites`: every hook site of a family's tree with its shape, and the
//! order of the cache keys the other commands write.
//!
//! Nothing here is a table of its own: shapes, whether a site is called
//! inside the blocks and the one-line descriptions are read off the derived
//! schema ([`HookTree::sites`]: `#[hooks(shape = "...")]`,
//! `#[hooks(per_layer)]` and the fields' doc comments), and the letters are
//! turned into sizes by [`ModelDims::size_of`].

use std::fmt::Write as _;

use hooks_core::{HookTree, SiteInfo};

pub use crate::site_order::{order, record_keys};

use super::args::SitesArgs;
use super::error::CliError;
use hooks_model::backend::Cpu;
use hooks_model::{
    AnyConfig, FamilyJob, FromCheckpoint, Gpt2Config, HookedModel, ModelDims, TransformerHooks,
};

/// One dimension of a site's shape: a letter of `#[hooks(shape = "...")]`
/// (`B`, `S`, `K`, `D`, `H`, `Hkv`, `d`, `F`, `V`, `1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim(pub &'static str);

impl Dim {
    /// `B`, `S`, `K` (they depend on the batch), or the size `dims` gives.
    pub fn render(self, dims: &ModelDims) -> String {
        dims.size_of(self.0)
            .map_or_else(|| self.0.to_string(), |n| n.to_string())
    }

    /// The size for a batch of `batch` rows of `seq` tokens and no cache
    /// (`None` for a letter [`ModelDims::size_of`] does not know).
    pub fn size(self, dims: &ModelDims, batch: usize, seq: usize) -> Option<usize> {
        match self.0 {
            "B" => Some(batch),
            "S" | "K" => Some(seq),
            letter => dims.size_of(letter),
        }
    }
}

/// What the schema says about one site, as `hooks sites` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteSpec {
    /// Dotted site path.
    pub path: String,
    /// The rank of its values.
    pub rank: usize,
    /// Whether the site is inside the blocks (called once per layer).
    pub per_layer: bool,
    /// The shape of its values, when the tree declares it.
    pub shape: Option<Vec<Dim>>,
    /// The first sentence of the field's doc comment, without the shape
    /// written in it (the shape column says it).
    pub note: String,
}

impl From<&SiteInfo> for SiteSpec {
    fn from(site: &SiteInfo) -> Self {
        SiteSpec {
            path: site.path.clone(),
            rank: site.rank,
            per_layer: site.per_layer,
            shape: site.shape.map(|_| site.dims().map(Dim).collect()),
            note: note(site.doc),
        }
    }
}

impl SiteSpec {
    /// `[B, S, 12, 64]`, or `[rank 4]` when the tree declares no shape.
    pub fn render_shape(&self, dims: &ModelDims) -> String {
        match &self.shape {
            Some(shape) => {
                let dims: Vec<_> = shape.iter().map(|d| d.render(dims)).collect();
                format!("[{}]", dims.join(", "))
            }
            None => format!("[rank {}]", self.rank),
        }
    }
}

/// A doc comment's first sentence, with shapes in backticks (`` `[B,S,D]` ``)
/// taken out.
fn note(doc: &str) -> String {
    let first = match doc.find(". ") {
        Some(end) => &doc[..=end],
        None => doc,
    };
    let mut out = String::new();
    let mut rest = first;
    while let Some(start) = rest.find("`[") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find("]`") {
            Some(end) => rest = &rest[start + 2 + end + 2..],
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    let out = out
        .replace(" ,", ",")
        .replace(" .", ".")
        .replace(" ;", ";")
        .replace(" )", ")")
        .replace(":.", ".");
    out.trim_end_matches(':').trim().to_string()
}

/// The sites of `tree` as [`site_specs`] orders them.
pub fn tree_specs<T: HookTree>(tree: &T) -> Vec<SiteSpec> {
    let sites = tree.sites();
    site_specs(&sites, &sites)
}

/// `sites` in the order a forward pass meets them around the blocks: the
/// sites outside the blocks that come before them (the embedding), then the
/// per-layer ones, then the rest (final norm, logits); tree order within
/// each group. `full` is every site of the tree they were selected from.
pub fn site_specs(sites: &[SiteInfo], full: &[SiteInfo]) -> Vec<SiteSpec> {
    order(sites.to_vec(), full)
        .iter()
        .map(SiteSpec::from)
        .collect()
}

/// Runs `hooks sites`: the family's tree, with the folder's sizes (GPT-2
/// small's without a folder).
pub fn run(args: &SitesArgs) -> Result<(), CliError> {
    let text = match &args.model {
        Some(dir) => {
            let config = AnyConfig::load(dir).map_err(|e| CliError::model_files(dir, e))?;
            let name = format!("`{}`", hooks_model::shown(dir));
            config.run::<Cpu, _>(Render(&name))
        }
        None => render(
            &TransformerHooks::<Cpu>::default(),
            &Gpt2Config::gpt2_small().dims(),
            "GPT-2 small",
        ),
    };
    super::print_out(&text)
}

/// [`render`] with the tree of the folder's family.
struct Render<'a>(&'a str);

impl FamilyJob<Cpu> for Render<'_> {
    type Output = String;

    fn run<M: FromCheckpoint<Cpu>>(self, config: &AnyConfig) -> String {
        let name = format!("{} ({})", self.0, config.model_type());
        render(
            &<M as HookedModel<Cpu>>::Hooks::default(),
            &config.dims(),
            &name,
        )
    }
}

/// The text `hooks sites` prints for `tree` with the sizes `dims`.
pub fn render<T: HookTree>(tree: &T, dims: &ModelDims, name: &str) -> String {
    let mut out = String::new();
    let last = dims.n_layer.saturating_sub(1);
    let kv = if dims.n_kv_head == dims.n_head {
        String::new()
    } else {
        format!(", Hkv {}", dims.n_kv_head)
    };
    let _ = writeln!(
        out,
        "{name}: {} layers, D {}, H {}{kv}, d {}, F {}, V {}, {} positions",
        dims.n_layer,
        dims.d_model,
        dims.n_head,
        dims.d_head,
        dims.d_mlp,
        dims.vocab_size,
        dims.n_ctx
    );
    let _ = writeln!(
        out,
        "B batch, S query positions, K key positions (S plus any cached positions)\n"
    );
    let specs = tree_specs(tree);
    let width = specs.iter().map(|s| s.path.len()).max().unwrap_or(4).max(4);
    let layers = if dims.n_layer == 1 {
        "0".to_string()
    } else {
        format!("0-{last}")
    };
    let layer_width = layers.len().max("layers".len());
    let _ = writeln!(out, "{:width$}  {:layer_width$}  shape", "site", "layers");
    let mut values = 0;
    let mut rows = Vec::new();
    for spec in &specs {
        // Saturating: the count is printed, never used to allocate.
        values = usize::saturating_add(values, if spec.per_layer { dims.n_layer } else { 1 });
        let which = if spec.per_layer { layers.as_str() } else { "-" };
        rows.push((
            spec.path.as_str(),
            which,
            spec.render_shape(dims),
            spec.note.as_str(),
        ));
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
        specs.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hooks_model::LlamaHooks;

    fn gpt2_specs() -> Vec<SiteSpec> {
        tree_specs(&TransformerHooks::<Cpu>::default())
    }

    #[test]
    fn every_site_of_both_families_declares_its_shape() {
        let dims = Gpt2Config::gpt2_small().dims();
        let llama = tree_specs(&LlamaHooks::<Cpu>::default());
        for spec in gpt2_specs().into_iter().chain(llama) {
            let shape = spec
                .shape
                .as_ref()
                .unwrap_or_else(|| panic!("{} declares no shape", spec.path));
            assert_eq!(shape.len(), spec.rank, "{}", spec.path);
            for d in shape {
                assert!(d.size(&dims, 2, 5).is_some(), "{}: {d:?}", spec.path);
            }
        }
    }

    #[test]
    fn gpt2_shapes_and_layers_come_from_the_schema() {
        let dims = Gpt2Config::gpt2_small().dims();
        let spec = |path: &str| {
            gpt2_specs()
                .into_iter()
                .find(|s| s.path == path)
                .unwrap_or_else(|| panic!("no {path}"))
        };
        assert_eq!(spec("attn.q").render_shape(&dims), "[B, S, 12, 64]");
        assert_eq!(spec("attn.k").render_shape(&dims), "[B, K, 12, 64]");
        assert_eq!(
            spec("attn.qk_softmax_denominator").render_shape(&dims),
            "[B, S, 1, 12]"
        );
        assert_eq!(spec("resid.ln_f.scale").render_shape(&dims), "[B, S, 1]");
        assert!(spec("resid.torso.ln_mlp.scale").per_layer);
        assert!(spec("mlp.post_act").per_layer);
        assert!(!spec("resid.ln_f.scale").per_layer);
        assert!(!spec("logits").per_layer);
        // Notes are the docs, without the shape.
        assert_eq!(spec("attn.q").note, "Queries, multiplied by d^-1/4.");
        assert!(
            spec("attn.qk_softmax_denominator")
                .note
                .contains("only called when it has hooks"),
            "{}",
            spec("attn.qk_softmax_denominator").note
        );
        let counts = gpt2_specs().iter().filter(|s| s.per_layer).count();
        assert_eq!((gpt2_specs().len(), counts), (27, 21));
    }

    #[test]
    fn the_embedding_comes_first_and_the_logits_last() {
        let specs = gpt2_specs();
        assert_eq!(specs[0].path, "resid.post_emb");
        assert_eq!(specs.last().unwrap().path, "logits");
        let outside: Vec<_> = specs
            .iter()
            .filter(|s| !s.per_layer)
            .map(|s| s.path.as_str())
            .collect();
        assert_eq!(
            outside,
            [
                "resid.post_emb",
                "resid.ln_f.post_mean_subtraction",
                "resid.ln_f.scale",
                "resid.ln_f.post_scale",
                "resid.post_ln_f",
                "logits"
            ]
        );
    }

    #[test]
    fn keys_follow_the_forward_pass() {
        let tree = TransformerHooks::<Cpu>::default();
        let sites = tree
            .sites_matching(&["logits", "resid.post_emb", "attn.qk_probs"])
            .unwrap();
        assert_eq!(
            record_keys(&sites, &tree.sites(), 2),
            [
                "resid.post_emb",
                "layers.0.attn.qk_probs",
                "layers.1.attn.qk_probs",
                "logits"
            ]
        );
    }

    #[test]
    fn notes_drop_the_shapes_written_in_the_docs() {
        assert_eq!(note("Output of ln_1 `[B,S,D]`."), "Output of ln_1.");
        assert_eq!(
            note("Masked attention logits, laid out query, key, head: `[B,S,K,H]`."),
            "Masked attention logits, laid out query, key, head."
        );
        assert_eq!(note("First. Second."), "First.");
        assert_eq!(note(""), "");
    }
}
