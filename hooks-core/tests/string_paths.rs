//! String paths (`"resid.torso.post_mlp.fwd"`, as in configs and CLIs) and
//! their errors: each names what is wrong and what would be right.

use crate::common;

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn_ndarray::NdArray;
use common::TinyHooks;
use hooks_core::path::{escape_control, explain_unmatched};
use hooks_core::{Ctx, HookError, HookNode, HookTree, PathError, Scale, Segment, Stage, Zero};

type Ad = Autodiff<NdArray>;

#[test]
fn a_misspelt_segment_names_segment_parent_choices_and_suggestion() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let err = hooks
        .append_to_path("resid.torso.post_mpl.fwd", Zero)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "no hook site `post_mpl` under `resid.torso` (in \"resid.torso.post_mpl.fwd\"); \
         available: post_attn, post_mlp; did you mean `post_mlp`?"
    );
    assert_eq!(
        err,
        HookError::Path(PathError::UnknownSegment {
            segment: "post_mpl".into(),
            parent: "resid.torso".into(),
            path: "resid.torso.post_mpl.fwd".into(),
            offset: 12,
            available: vec!["post_attn".into(), "post_mlp".into()],
            suggestion: Some("post_mlp".into()),
        })
    );
    assert!(hooks.is_empty(), "a failed append changes nothing");
}

#[test]
fn a_misspelt_first_segment_is_under_the_root() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let err = hooks.append_to_path("atn.q.fwd", Zero).err().unwrap();
    assert_eq!(
        err.to_string(),
        "no hook site `atn` under the root (in \"atn.q.fwd\"); \
         available: mlp, attn, resid, logits; did you mean `attn`?"
    );
}

#[test]
fn a_segment_far_from_every_name_gets_no_suggestion() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let err = hooks.append_to_path("mlp.banana.fwd", Zero).err().unwrap();
    assert_eq!(
        err.to_string(),
        "no hook site `banana` under `mlp` (in \"mlp.banana.fwd\"); available: pre_act, post_act"
    );
}

#[test]
fn a_field_name_is_not_the_string_name_of_a_renamed_site() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let err = hooks
        .append_to_path("attn.qk_probs.fwd", Zero)
        .err()
        .unwrap();
    let HookError::Path(PathError::UnknownSegment { available, .. }) = err else {
        panic!("{err}")
    };
    assert_eq!(available, ["q", "probs"]);
}

#[test]
fn a_skipped_field_is_not_a_site() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let err = hooks.append_to_path("attn.note.fwd", Zero).err().unwrap();
    assert!(
        matches!(&err, HookError::Path(PathError::UnknownSegment { segment, .. }) if segment == "note"),
        "{err}"
    );
}

#[test]
fn a_site_path_without_a_stage() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let err = hooks
        .append_to_path("resid.torso.post_mlp", Zero)
        .err()
        .unwrap();
    assert_eq!(
        err,
        HookError::Path(PathError::MissingStage {
            path: "resid.torso.post_mlp".into()
        })
    );
    assert_eq!(
        err.to_string(),
        "`resid.torso.post_mlp` is a site; name a stage: `resid.torso.post_mlp.fwd`, \
         `resid.torso.post_mlp.bwd` or `resid.torso.post_mlp.fwd2`"
    );
}

#[test]
fn a_stage_on_a_collection() {
    let mut hooks = TinyHooks::<NdArray>::default();
    // `torso` is a collection: `fwd` is looked up as a child and not found.
    let err = hooks.append_to_path("resid.torso.fwd", Zero).err().unwrap();
    assert_eq!(
        err.to_string(),
        "no hook site `fwd` under `resid.torso` (in \"resid.torso.fwd\"): `fwd` is a stage, \
         and only a site has stages; available: post_attn, post_mlp"
    );
}

#[test]
fn a_path_that_stops_at_a_collection() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let err = hooks.append_to_path("resid.torso", Zero).err().unwrap();
    assert_eq!(
        err.to_string(),
        "`resid.torso` is a collection, not a site; under it: post_attn, post_mlp"
    );
}

#[test]
fn selecting_a_site_with_its_stage_says_to_leave_the_stage_out() {
    let hooks = TinyHooks::<NdArray>::default();
    for (pattern, stage, site) in [
        ("attn.q.fwd", "fwd", "attn.q"),
        ("logits.bwd", "bwd", "logits"),
        ("resid.torso.post_mlp.fwd2", "fwd2", "resid.torso.post_mlp"),
    ] {
        let err = hooks.sites_matching(&[pattern]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "`{stage}` is a stage, not part of a site path: select the site `{site}` \
                 (a site is recorded or selected as a whole; `fwd`, `bwd` and `fwd2` are the \
                 stages where hooks run on its value)"
            )
        );
        // explain_unmatched says the same.
        let why = explain_unmatched(&TinyHooks::<NdArray>::schema(), pattern);
        assert_eq!(why.to_string(), err.to_string());
    }
}

#[test]
fn a_glob_that_matches_nothing_lists_the_names_where_it_went_wrong() {
    let schema = TinyHooks::<NdArray>::schema();
    let why = explain_unmatched(&schema, "*.zz");
    assert_eq!(
        why.to_string(),
        "pattern `*.zz` matches no site; names under the root: mlp, attn, resid, logits"
    );
    let why = explain_unmatched(&schema, "resid.torso.x*");
    assert_eq!(
        why,
        PathError::NoMatch {
            pattern: "resid.torso.x*".into(),
            parent: "resid.torso".into(),
            available: vec!["post_attn".into(), "post_mlp".into()],
        }
    );
    assert_eq!(
        why.to_string(),
        "pattern `resid.torso.x*` matches no site; names under `resid.torso`: post_attn, post_mlp"
    );
    assert_eq!(
        explain_unmatched(&schema, "attn.q.*").to_string(),
        "pattern `attn.q.*` matches no site; `attn.q` is a site, and patterns select sites, \
         not their stages"
    );
    // Without wildcards it is the path checker's precise message.
    assert_eq!(
        explain_unmatched(&schema, "atn.q").to_string(),
        "no hook site `atn` under the root (in \"atn.q\"); available: mlp, attn, resid, logits; \
         did you mean `attn`?"
    );
}

#[test]
fn control_characters_are_escaped_in_messages() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let err = hooks
        .append_to_path("attn.\u{1b}[2J\u{202e}.fwd", Zero)
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        !msg.contains('\u{1b}') && !msg.contains('\u{202e}'),
        "{msg:?}"
    );
    assert!(msg.contains("`\\u{1b}[2J\\u{202e}`"), "{msg}");
    assert_eq!(escape_control("plain é 日本"), "plain é 日本");
    assert_eq!(escape_control("a\nb\u{7}"), "a\\nb\\u{7}");
    // The empty path.
    let err = hooks.append_to_path("", Zero).err().unwrap();
    assert_eq!(err.to_string(), "empty site path");
}

#[test]
fn a_misspelt_stage() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let err = hooks.append_to_path("logits.fdw", Zero).err().unwrap();
    assert_eq!(
        err.to_string(),
        "no stage `fdw` on site `logits` (in \"logits.fdw\"); available: fwd, bwd, fwd2; \
         did you mean `fwd`?"
    );
}

#[test]
fn segments_after_the_stage() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let err = hooks.append_to_path("logits.fwd.x", Zero).err().unwrap();
    assert_eq!(
        err.to_string(),
        "`logits.fwd.x` goes past the stage `fwd`: a stage has no children"
    );
}

#[test]
fn empty_segments() {
    let mut hooks = TinyHooks::<NdArray>::default();
    for (path, offset) in [("", 0), ("mlp..fwd", 4), (".mlp", 0)] {
        let err = hooks.append_to_path(path, Zero).err().unwrap();
        assert_eq!(
            err,
            HookError::Path(PathError::EmptySegment {
                path: path.into(),
                offset
            })
        );
    }
}

#[test]
fn bwd_through_append_to_path_is_refused() {
    // Even on an autodiff backend: a forward hook is not a gradient hook.
    let mut hooks = TinyHooks::<Ad>::default();
    let err = hooks
        .append_to_path("logits.bwd", Scale(2.0))
        .err()
        .unwrap();
    assert_eq!(
        err,
        HookError::GradStageNeedsGradHook {
            path: "logits.bwd".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "`logits.bwd` is a gradient stage: it takes gradient hooks (use \
         `append_grad_to_path`), which need an autodiff backend"
    );
    assert!(hooks.is_empty());
}

#[test]
fn append_grad_to_path_wants_bwd() {
    let mut hooks = TinyHooks::<Ad>::default();
    let err = hooks.append_grad_to_path("logits.fwd", Zero).err().unwrap();
    assert_eq!(
        err.to_string(),
        "no stage `fwd` on site `logits` (in \"logits.fwd\"); available: fwd, bwd, fwd2; \
         did you mean `bwd`?"
    );
    hooks.append_grad_to_path("logits.bwd", Zero).unwrap();
    assert_eq!(hooks.logits.bwd.len(), 1);
}

#[test]
fn a_rank_mismatch_in_append_typed_to_path() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let err = hooks
        .append_typed_to_path::<3>("attn.q.fwd", |x: Tensor<NdArray, 3>, _: &Ctx| x)
        .err()
        .unwrap();
    assert_eq!(
        err,
        HookError::RankMismatch {
            site: "attn.q".into(),
            site_rank: 4,
            hook: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "hook for rank-3 tensors cannot go on `attn.q`, whose values have rank 4"
    );
    assert!(hooks.is_empty());

    hooks
        .append_typed_to_path::<4>("attn.q.fwd2", |x: Tensor<NdArray, 4>, _: &Ctx| x)
        .unwrap();
    assert_eq!(hooks.attn.q.fwd2.len(), 1);
}

#[test]
fn append_typed_to_path_refuses_bwd() {
    let mut hooks = TinyHooks::<NdArray>::default();
    let err = hooks
        .append_typed_to_path::<2>("logits.bwd", |x: Tensor<NdArray, 2>, _: &Ctx| x)
        .err()
        .unwrap();
    assert!(
        matches!(err, HookError::GradStageNeedsGradHook { .. }),
        "{err}"
    );
}

#[test]
fn resolve_checks_without_changing_anything() {
    let ok = TinyHooks::<NdArray>::resolve("attn.probs.fwd2").unwrap();
    assert_eq!(ok.segments, [Segment::Name("attn"), Segment::Name("probs")]);
    assert_eq!(ok.node_path(), "attn.probs");
    assert_eq!(ok.rank, Some(4));
    assert_eq!(ok.stage, Some(Stage::Fwd2));
    assert_eq!(ok.node_path(), "attn.probs");

    let collection = TinyHooks::<NdArray>::resolve("resid").unwrap();
    assert_eq!((collection.rank, collection.stage), (None, None));
}
