//! Finding sites in a tree: iteration, globs, typed paths; and the tree's
//! thread-safety.

use crate::common;

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn_ndarray::NdArray;
use common::{AttentionHooks, Inputs, SITES, TinyHooks, TorsoHooks, forward, scalar};
use hooks_core::{
    AutoencoderHooks, Ctx, Detach, HookError, HookTree, Hooks, Path, PathError, Record, Scale,
    Site, SiteInfo, Zero, path,
};

type Ad = Autodiff<NdArray>;

fn paths(sites: Vec<SiteInfo>) -> Vec<String> {
    sites.into_iter().map(|s| s.path).collect()
}

#[test]
fn sites_in_declaration_order_with_ranks() {
    let expected: Vec<SiteInfo> = SITES
        .iter()
        .map(|(path, rank)| SiteInfo {
            path: path.to_string(),
            rank: *rank,
            shape: None,
            per_layer: false,
            doc: "",
        })
        .collect();
    assert_eq!(TinyHooks::<NdArray>::default().sites(), expected);
}

#[test]
fn a_sub_collection_lists_its_own_paths() {
    let torso = TorsoHooks::<NdArray>::default();
    assert_eq!(paths(torso.sites()), ["post_attn", "post_mlp"]);
    // A lone site is a tree of one site with the empty path.
    assert_eq!(
        Site::<NdArray, 4>::default().sites(),
        [SiteInfo {
            path: String::new(),
            rank: 4,
            shape: None,
            per_layer: false,
            doc: "",
        }]
    );
}

#[test]
fn sites_matching_globs() {
    let hooks = TinyHooks::<NdArray>::default();
    // `*` stays within a segment...
    assert_eq!(
        paths(hooks.sites_matching(&["attn.*"]).unwrap()),
        ["attn.q", "attn.probs"]
    );
    assert_eq!(
        paths(hooks.sites_matching(&["*.post_*"]).unwrap()),
        ["mlp.post_act", "resid.post_emb"]
    );
    // ...`**` crosses segments...
    assert_eq!(
        paths(hooks.sites_matching(&["**.post_*"]).unwrap()),
        [
            "mlp.post_act",
            "resid.post_emb",
            "resid.torso.post_attn",
            "resid.torso.post_mlp"
        ]
    );
    // ...and a plain collection path selects everything below it.
    assert_eq!(
        paths(hooks.sites_matching(&["resid.torso", "logits"]).unwrap()),
        ["resid.torso.post_attn", "resid.torso.post_mlp", "logits"]
    );
    // Results keep declaration order, not pattern order, with no duplicates.
    assert_eq!(
        paths(hooks.sites_matching(&["logits", "mlp.*", "mlp"]).unwrap()),
        ["mlp.pre_act", "mlp.post_act", "logits"]
    );
}

#[test]
fn a_glob_that_matches_nothing_is_an_error() {
    let hooks = TinyHooks::<NdArray>::default();
    let err = hooks.sites_matching(&["attn.*", "atn.*"]).err().unwrap();
    assert!(
        matches!(&err, HookError::Path(PathError::UnknownSegment { suggestion: Some(s), .. }) if s == "attn"),
        "{err}"
    );
    let err = hooks.sites_matching(&["**.nothing"]).err().unwrap();
    assert!(err.to_string().contains("**.nothing"), "{err}");
}

#[test]
fn typed_paths_name_fields_and_print_string_names() {
    let q = path!(TinyHooks<NdArray>: attn.q);
    let probs = path!(TinyHooks<NdArray>: attn.qk_probs);
    let torso = path!(TinyHooks<NdArray>: resid.torso);
    assert_eq!(q.name(), "attn.q");
    assert_eq!(probs.name(), "attn.probs", "the rename, not the field name");
    assert_eq!(torso.to_string(), "resid.torso");
    assert_eq!(format!("{probs:?}"), "path!(attn.probs)");
}

#[test]
fn at_and_at_mut() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let post_mlp: Path<TinyHooks<NdArray>, Site<NdArray, 3>> =
        path!(TinyHooks<NdArray>: resid.torso.post_mlp);
    hooks
        .at_mut(&post_mlp)
        .fwd
        .append(|x: Tensor<NdArray, 3>, _: &Ctx| x * 3.0);
    assert_eq!(hooks.at(&post_mlp).fwd.len(), 1);
    assert!(hooks.resid.torso.post_attn.is_empty());
    assert_eq!(scalar(forward(&hooks, 0, &Inputs::ones())), 56.0 + 24.0);

    // A path to a collection gives the collection, with every tree op.
    let attn = path!(TinyHooks<NdArray>: attn);
    hooks
        .at_mut(&attn)
        .append_all(hooks_core::FwdStage::Fwd, Zero);
    let a: &AttentionHooks<NdArray> = hooks.at(&attn);
    assert!(!a.is_empty());
    assert_eq!(scalar(forward(&hooks, 0, &Inputs::ones())), 40.0 + 24.0);
}

#[test]
fn typed_paths_are_values() {
    // Stored, cloned and used on several trees.
    let layer_sites = [
        path!(TinyHooks<NdArray>: mlp.pre_act),
        path!(TinyHooks<NdArray>: resid.torso.post_attn),
    ];
    let mut trees = vec![TinyHooks::<NdArray>::default(); 2];
    for (tree, p) in trees.iter_mut().zip(layer_sites.iter().cloned()) {
        tree.at_mut(&p)
            .fwd
            .append(Hooks::at_layers(0).with(|x: Tensor<NdArray, 3>, _: &Ctx| x * 2.0));
    }
    assert!(!trees[0].mlp.pre_act.is_empty() && trees[0].resid.torso.post_attn.is_empty());
    assert!(trees[1].mlp.pre_act.is_empty() && !trees[1].resid.torso.post_attn.is_empty());
}

fn assert_send_sync<T: Send + Sync + 'static>() {}

#[test]
fn trees_and_hooks_are_send_and_sync() {
    assert_send_sync::<TinyHooks<NdArray>>();
    assert_send_sync::<TinyHooks<Ad>>();
    assert_send_sync::<Site<Ad, 4>>();
    assert_send_sync::<Hooks<Tensor<NdArray, 3>>>();
    assert_send_sync::<hooks_core::GradHooks<Ad, 3>>();
    assert_send_sync::<hooks_core::Hook<Tensor<NdArray, 3>>>();
    assert_send_sync::<AutoencoderHooks<Ad, 3>>();
    assert_send_sync::<Record<NdArray>>();
    assert_send_sync::<hooks_core::Recorder<NdArray>>();
    assert_send_sync::<(Zero, Scale, Detach)>();
    assert_send_sync::<Path<TinyHooks<NdArray>, Site<NdArray, 3>>>();
    assert_send_sync::<HookError>();
}

#[test]
fn a_tree_moves_to_another_thread() {
    let mut hooks = TinyHooks::<NdArray>::default();
    hooks.append_all(hooks_core::FwdStage::Fwd, Scale(2.0));
    let hooks = std::sync::Arc::new(hooks);
    let handles: Vec<_> = (0..2)
        .map(|layer| {
            let hooks = hooks.clone();
            std::thread::spawn(move || scalar(forward(&hooks, layer, &Inputs::ones())))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 128.0);
    }
}
