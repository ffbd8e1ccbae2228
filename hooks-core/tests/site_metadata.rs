//! The derived schema as the one source of site metadata: `shape` and
//! `per_layer` attributes and field docs reach `Schema`, `SchemaChild` and
//! every `SiteInfo`, inherited down the tree (through nested collections,
//! lists, options and boxes).

use burn::tensor::backend::Backend;
use burn_ndarray::NdArray;
use hooks_core::{HookCollection, HookNode, HookTree, Schema, Segment, Site, SiteInfo, SiteMeta};

/// Sites of a norm, shared by two places in the tree.
#[derive(HookCollection, Clone, Default)]
struct NormHooks<B: Backend> {
    /// The scale `[B,S,1]`.
    #[hooks(shape = "B,S,1")]
    scale: Site<B, 3>,
    /// No shape declared.
    out: Site<B, 3>,
}

#[derive(HookCollection, Clone, Default)]
struct AttnHooks<B: Backend> {
    /// Queries, one line
    /// and a second line.
    ///
    /// A second paragraph, not part of the summary.
    #[hooks(shape = " B, S, H, d ")]
    q: Site<B, 4>,
    #[hooks(shape = "B,S,K,H", rename = "probs")]
    qk_probs: Site<B, 4>,
    #[hooks(shape = "B,K,Hkv,d")]
    k: Site<B, 4>,
}

#[derive(HookCollection, Clone, Default)]
struct BlockHooks<B: Backend> {
    #[hooks(shape = "B,S,D")]
    out: Site<B, 3>,
}

#[derive(HookCollection, Clone, Default)]
struct ModelHooks<B: Backend> {
    #[hooks(shape = "B,S,D")]
    post_emb: Site<B, 3>,
    #[hooks(per_layer)]
    attn: AttnHooks<B>,
    #[hooks(per_layer)]
    ln_attn: NormHooks<B>,
    ln_f: NormHooks<B>,
    /// One entry per head.
    #[hooks(per_layer, shape = "B,S,d")]
    heads: [Site<B, 3>; 2],
    blocks: Vec<BlockHooks<B>>,
    #[hooks(shape = "B,1")]
    maybe: Option<Box<Site<B, 2>>>,
    #[hooks(shape = "B,S,V")]
    logits: Site<B, 3>,
}

type Tree = ModelHooks<NdArray>;

fn tree() -> Tree {
    ModelHooks {
        blocks: vec![BlockHooks::default(); 2],
        maybe: Some(Box::default()),
        ..Default::default()
    }
}

fn info(sites: &[SiteInfo], path: &str) -> SiteInfo {
    sites
        .iter()
        .find(|s| s.path == path)
        .unwrap_or_else(|| panic!("no site `{path}`"))
        .clone()
}

#[test]
fn every_site_carries_its_shape_and_whether_it_is_per_layer() {
    let sites = tree().sites();
    let got: Vec<(&str, Option<&str>, bool)> = sites
        .iter()
        .map(|s| (s.path.as_str(), s.shape, s.per_layer))
        .collect();
    assert_eq!(
        got,
        [
            ("post_emb", Some("B,S,D"), false),
            // Spaces in the attribute are dropped.
            ("attn.q", Some("B,S,H,d"), true),
            ("attn.probs", Some("B,S,K,H"), true),
            ("attn.k", Some("B,K,Hkv,d"), true),
            // A shared node: per_layer where it is mounted under a
            // per_layer field, not elsewhere; its shapes everywhere.
            ("ln_attn.scale", Some("B,S,1"), true),
            ("ln_attn.out", None, true),
            ("ln_f.scale", Some("B,S,1"), false),
            ("ln_f.out", None, false),
            // A shape on a list holds for each entry.
            ("heads.0", Some("B,S,d"), true),
            ("heads.1", Some("B,S,d"), true),
            ("blocks.0.out", Some("B,S,D"), false),
            ("blocks.1.out", Some("B,S,D"), false),
            // Through an Option and a Box.
            ("maybe", Some("B,1"), false),
            ("logits", Some("B,S,V"), false),
        ]
    );
    for site in &sites {
        if site.shape.is_some() {
            assert_eq!(site.dims().count(), site.rank, "{}", site.path);
        }
    }
    assert_eq!(
        info(&sites, "attn.q").dims().collect::<Vec<_>>(),
        ["B", "S", "H", "d"]
    );
    assert_eq!(info(&sites, "ln_f.out").dims().count(), 0);
}

#[test]
fn docs_are_the_first_paragraph_of_the_field_comment() {
    let sites = tree().sites();
    assert_eq!(
        info(&sites, "attn.q").doc,
        "Queries, one line and a second line."
    );
    assert_eq!(info(&sites, "ln_attn.scale").doc, "The scale `[B,S,1]`.");
    // A list entry has the list field's doc; no comment is empty.
    assert_eq!(info(&sites, "heads.1").doc, "One entry per head.");
    assert_eq!(info(&sites, "attn.probs").doc, "");
}

#[test]
fn the_schema_children_hold_the_attributes() {
    let Schema::Collection { children, .. } = Tree::schema() else {
        panic!("a derived tree is a collection");
    };
    let attn = children.iter().find(|c| c.name == "attn").unwrap();
    assert!(attn.per_layer);
    assert_eq!(attn.shape, None);
    let heads = children.iter().find(|c| c.name == "heads").unwrap();
    assert!(heads.per_layer);
    assert_eq!(heads.shape, Some("B,S,d"));
    let probs = Tree::schema().child("attn").unwrap();
    let probs = (probs.schema)().child("probs").unwrap();
    assert_eq!((probs.field, probs.shape), ("qk_probs", Some("B,S,K,H")));
    assert!(!probs.per_layer, "per_layer is on the parent, not copied");
}

#[test]
fn site_meta_follows_a_path_and_stops_where_it_leads_nowhere() {
    let schema = Tree::schema();
    assert_eq!(
        schema.site_meta(&[Segment::Name("ln_attn"), Segment::Name("scale")]),
        SiteMeta {
            shape: Some("B,S,1"),
            per_layer: true,
            doc: "The scale `[B,S,1]`.",
        }
    );
    // A node that is not a site: what was gathered on the way.
    assert_eq!(
        schema.site_meta(&[Segment::Name("attn")]),
        SiteMeta {
            shape: None,
            per_layer: true,
            doc: "",
        }
    );
    // A bad segment ends the walk.
    assert_eq!(
        schema.site_meta(&[Segment::Name("attn"), Segment::Index(3)]),
        schema.site_meta(&[Segment::Name("attn")])
    );
    assert_eq!(schema.site_meta(&[]), SiteMeta::default());
}

/// A shape on a site whose rank is a const parameter is checked by a const
/// assertion when the schema is built (this one holds).
#[derive(HookCollection, Clone, Default)]
struct Generic<B: Backend, const R: usize> {
    #[hooks(shape = "B,S,D")]
    x: Site<B, R>,
}

#[test]
fn a_shape_on_a_const_rank_is_checked_when_the_schema_is_built() {
    let sites = Generic::<NdArray, 3>::default().sites();
    assert_eq!(sites[0].shape, Some("B,S,D"));
    assert_eq!(sites[0].rank, 3);
}
