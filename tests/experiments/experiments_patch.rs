//! Ablation, patching and steering by typed path (`ablate`, `patch_slice`,
//! `add_at`), and the clean → corrupted `patching_table`.

use crate::common;

use burn::tensor::{Tensor, TensorData};
use burn_hooks::experiments::{PatchFrom, ablate, add_at, patch_slice, patching_table};
use common::{HostTensor, host, load, max_abs_diff, record};
use hooks_core::{HookTree, Recorder, path};
use hooks_model::backend::NdArray;
use hooks_model::{ModelError, TokenBatch, TransformerHooks};

type B = NdArray;
const ALL: std::ops::Range<usize> = 0..usize::MAX;

fn clean() -> TokenBatch {
    TokenBatch::new(vec![
        vec![3, 14, 15, 92, 65, 35],
        vec![89, 79, 32, 38, 46, 26],
    ])
    .unwrap()
}

/// `clean` with the token at position 2 of each row changed.
fn corrupted() -> TokenBatch {
    TokenBatch::new(vec![
        vec![3, 14, 60, 92, 65, 35],
        vec![89, 79, 11, 38, 46, 26],
    ])
    .unwrap()
}

#[test]
fn ablate_zeroes_exactly_one_head_of_v_out() {
    const HEAD: usize = 2;
    const LAYER: usize = 1;
    let model = load::<B>("tiny");
    let v_out = path!(TransformerHooks<NdArray>: attn.v_out);

    let mut plain = TransformerHooks::<B>::default();
    let before = record(&mut plain.attn.v_out);
    let plain_logits = host(model.forward(&clean(), &plain).unwrap());

    let mut hooks = TransformerHooks::<B>::default();
    ablate(
        &mut hooks,
        &v_out,
        Some(LAYER),
        [ALL, ALL, HEAD..HEAD + 1, ALL],
        0.0,
    );
    // Appended after the ablation: sees its result.
    let after = record(&mut hooks.attn.v_out);
    let logits = host(model.forward(&clean(), &hooks).unwrap());

    let (b0, a0) = (
        common::at_layer(&before, Some(0)),
        common::at_layer(&after, Some(0)),
    );
    assert_eq!(a0.data, b0.data, "layer 0 untouched");
    let (b1, a1) = (
        common::at_layer(&before, Some(LAYER)),
        common::at_layer(&after, Some(LAYER)),
    );
    assert_eq!(a1.shape, [2, 6, 4, 8]);
    let mut zeros = 0;
    for b in 0..2 {
        for s in 0..6 {
            for h in 0..4 {
                for i in 0..8 {
                    let idx = [b, s, h, i];
                    if h == HEAD {
                        assert_eq!(a1.at(&idx), 0.0, "{idx:?}");
                        zeros += 1;
                    } else {
                        assert_eq!(a1.at(&idx), b1.at(&idx), "{idx:?}");
                    }
                }
            }
        }
    }
    assert_eq!(zeros, 2 * 6 * 8);
    assert!(b1.data.iter().skip(HEAD * 8).take(8).any(|&x| x != 0.0));
    assert!(
        max_abs_diff(&logits, &plain_logits) > 1e-5,
        "the ablation reaches the logits"
    );

    // A constant other than zero, on a slice of positions only.
    let mut hooks = TransformerHooks::<B>::default();
    ablate(&mut hooks, &v_out, Some(0), [0..1, 4..6, 0..1, ALL], 3.5);
    let after = record(&mut hooks.attn.v_out);
    model.forward(&clean(), &hooks).unwrap();
    let a0 = common::at_layer(&after, Some(0));
    let mut changed = 0;
    for (i, (&new, &old)) in a0.data.iter().zip(&b0.data).enumerate() {
        let (b, s, h) = (i / (6 * 32), (i / 32) % 6, (i / 8) % 4);
        if b == 0 && s >= 4 && h == 0 {
            assert_eq!(new, 3.5, "flat index {i}");
            changed += 1;
        } else {
            assert_eq!(new, old, "flat index {i}");
        }
    }
    assert_eq!(changed, 2 * 8);
}

#[test]
fn patch_slice_copies_the_slice_of_the_source() {
    let model = load::<B>("tiny");
    let post_attn = path!(TransformerHooks<NdArray>: resid.torso.post_attn);
    let mut plain = TransformerHooks::<B>::default();
    let before = record(&mut plain.resid.torso.post_attn);
    model.forward(&clean(), &plain).unwrap();
    let before = common::at_layer(&before, Some(0));

    let values: Vec<f32> = (0..2 * 6 * 32).map(|i| i as f32).collect();
    let source = Tensor::<B, 3>::from_data(
        TensorData::new(values.clone(), [2, 6, 32]),
        &Default::default(),
    );
    let mut hooks = TransformerHooks::<B>::default();
    patch_slice(&mut hooks, &post_attn, Some(0), [1..2, 2..4, ALL], source);
    let after = record(&mut hooks.resid.torso.post_attn);
    model.forward(&clean(), &hooks).unwrap();
    let after = common::at_layer(&after, Some(0));
    let mut patched = 0;
    for (i, &source) in values.iter().enumerate() {
        let (b, s) = (i / (6 * 32), (i / 32) % 6);
        if b == 1 && (2..4).contains(&s) {
            assert_eq!(after.data[i], source, "flat index {i}");
            patched += 1;
        } else {
            assert_eq!(after.data[i], before.data[i], "flat index {i}");
        }
    }
    assert_eq!(patched, 2 * 32);
}

#[test]
fn patch_slice_with_a_source_of_another_shape_is_an_error() {
    let model = load::<B>("tiny");
    let post_attn = path!(TransformerHooks<NdArray>: resid.torso.post_attn);
    let mut hooks = TransformerHooks::<B>::default();
    let source = Tensor::<B, 3>::zeros([1, 6, 32], &Default::default());
    patch_slice(&mut hooks, &post_attn, Some(0), [ALL, ALL, ALL], source);
    match model.forward(&clean(), &hooks) {
        Err(ModelError::Hook(fault)) => {
            assert_eq!(fault.layer, Some(0));
            assert_eq!(
                fault.to_string(),
                "hook failed at `resid.torso.post_attn` (layer 0): the patch source has \
                 shape [1, 6, 32], the site's value [2, 6, 32]"
            );
        }
        other => panic!("expected a hook fault, got {other:?}"),
    }
}

#[test]
fn patching_from_an_empty_recorder_names_the_missing_recording() {
    let model = load::<B>("tiny");
    let mut hooks = TransformerHooks::<B>::default();
    hooks
        .append_to_path(
            "resid.torso.post_attn.fwd",
            PatchFrom {
                source: Recorder::new(),
                position: None,
                layer: Some(1),
            },
        )
        .unwrap();
    match model.forward(&clean(), &hooks) {
        Err(ModelError::Hook(fault)) => {
            assert_eq!(fault.site.as_deref(), Some("resid.torso.post_attn"));
            assert_eq!(fault.layer, Some(1));
            assert!(
                fault
                    .message
                    .contains("no recorded activation `layers.1.resid.torso.post_attn`"),
                "{fault}"
            );
        }
        other => panic!("expected a hook fault, got {other:?}"),
    }
}

#[test]
fn add_at_adds_a_steering_vector() {
    let model = load::<B>("tiny");
    let post_attn = path!(TransformerHooks<NdArray>: resid.torso.post_attn);
    let steer: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.25).collect();

    let mut plain = TransformerHooks::<B>::default();
    let before = record(&mut plain.resid.torso.post_attn);
    model.forward(&clean(), &plain).unwrap();

    let mut hooks = TransformerHooks::<B>::default();
    add_at(
        &mut hooks,
        &post_attn,
        Some(1),
        Tensor::from_data(TensorData::new(steer.clone(), [32]), &Default::default()),
    );
    let after = record(&mut hooks.resid.torso.post_attn);
    model.forward(&clean(), &hooks).unwrap();

    assert_eq!(
        common::at_layer(&after, Some(0)).data,
        common::at_layer(&before, Some(0)).data,
        "layer 0 is not steered"
    );
    let (a, b) = (
        common::at_layer(&after, Some(1)),
        common::at_layer(&before, Some(1)),
    );
    for (i, (x, y)) in a.data.iter().zip(&b.data).enumerate() {
        assert!(
            (x - y - steer[i % 32]).abs() < 1e-5,
            "delta at flat index {i}"
        );
    }
    assert_eq!(
        hooks.render().matches("AddVector").count(),
        1,
        "{}",
        hooks.render()
    );
}

/// logits[b, -1, 35] - logits[b, -1, 26], summed over rows.
fn logit_diff(logits: Tensor<B, 3>) -> f32 {
    let l = HostTensor::of(logits);
    (0..2).map(|b| l.at(&[b, 5, 35]) - l.at(&[b, 5, 26])).sum()
}

#[test]
fn patching_table_restores_fully_at_the_residual_stream() {
    let model = load::<B>("tiny");
    let sites = [
        "resid.post_emb",
        "resid.torso.post_attn",
        "resid.torso.delta_mlp",
        "resid.torso.post_mlp",
        "resid.post_ln_f",
        "logits",
    ];
    let (rows, clean_m, corrupted_m) =
        patching_table(&model, &clean(), &corrupted(), &sites, logit_diff).unwrap();

    let plain = TransformerHooks::<B>::default();
    assert_eq!(
        clean_m,
        logit_diff(model.forward(&clean(), &plain).unwrap())
    );
    assert_eq!(
        corrupted_m,
        logit_diff(model.forward(&corrupted(), &plain).unwrap())
    );
    assert!(
        (clean_m - corrupted_m).abs() > 1e-3,
        "the corruption matters"
    );

    let cells: Vec<(&str, Option<usize>)> =
        rows.iter().map(|r| (r.site.as_str(), r.layer)).collect();
    assert_eq!(
        cells,
        [
            ("resid.post_emb", None),
            ("resid.torso.post_attn", Some(0)),
            ("resid.torso.post_attn", Some(1)),
            ("resid.torso.delta_mlp", Some(0)),
            ("resid.torso.delta_mlp", Some(1)),
            ("resid.torso.post_mlp", Some(0)),
            ("resid.torso.post_mlp", Some(1)),
            ("resid.post_ln_f", None),
            ("logits", None),
        ],
        "n_layer rows per block site, one per outside site, in tree order"
    );
    for r in &rows {
        let expected = (r.metric - corrupted_m) / (clean_m - corrupted_m);
        assert!((r.restored - expected).abs() < 1e-6, "{r:?}");
        // The whole residual stream (or anything after it) carries everything.
        if r.site != "resid.torso.delta_mlp" {
            assert!((r.restored - 1.0).abs() < 1e-4, "{r:?}");
            assert!((r.metric - clean_m).abs() < 1e-4, "{r:?}");
        }
    }

    // A block output alone is a partial patch: the table's value equals a
    // hand-made patch of the clean activation.
    let mut record_clean = TransformerHooks::<B>::default();
    let clean_delta = record(&mut record_clean.resid.torso.delta_mlp);
    model.forward(&clean(), &record_clean).unwrap();
    let delta_mlp = path!(TransformerHooks<NdArray>: resid.torso.delta_mlp);
    for layer in [0, 1] {
        let source = common::tensor_at(&clean_delta, Some(layer));
        let mut hooks = TransformerHooks::<B>::default();
        patch_slice(&mut hooks, &delta_mlp, Some(layer), [ALL, ALL, ALL], source);
        let by_hand = logit_diff(model.forward(&corrupted(), &hooks).unwrap());
        let row = rows
            .iter()
            .find(|r| r.site == "resid.torso.delta_mlp" && r.layer == Some(layer))
            .unwrap();
        assert_eq!(row.metric, by_hand, "layer {layer}");
    }
}

#[test]
fn patching_the_same_batch_restores_nothing_to_restore() {
    let model = load::<B>("tiny");
    let (rows, clean_m, corrupted_m) =
        patching_table(&model, &clean(), &clean(), &["attn.v_out"], logit_diff).unwrap();
    assert_eq!(clean_m, corrupted_m);
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r.metric, clean_m);
        assert_eq!(r.restored, 0.0, "no span: reported as 0");
    }
}

#[test]
fn patching_table_rejects_mismatched_batches_and_bad_sites() {
    let model = load::<B>("tiny");
    let short = TokenBatch::new(vec![vec![3, 14, 15, 92, 65], vec![89, 79, 32, 38, 46]]).unwrap();
    let err = patching_table(&model, &clean(), &short, &["logits"], logit_diff).unwrap_err();
    assert!(matches!(err, ModelError::BadBatch(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "bad batch: clean [2, 6] and corrupted [2, 5] batches must have the same shape"
    );
    let one_row = TokenBatch::single(vec![3, 14, 15, 92, 65, 35]).unwrap();
    let err = patching_table(&model, &clean(), &one_row, &["logits"], logit_diff).unwrap_err();
    assert!(err.to_string().contains("[1, 6]"), "{err}");

    let err = patching_table(
        &model,
        &clean(),
        &corrupted(),
        &["resid.torso.post_atn"],
        logit_diff,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("did you mean `post_attn`?"),
        "{err}"
    );
}

#[test]
fn ablate_on_a_site_outside_the_blocks_uses_no_layer() {
    let model = load::<B>("tiny");
    let logits = path!(TransformerHooks<NdArray>: logits);
    let mut hooks = TransformerHooks::<B>::default();
    // Layer filters never match outside the blocks: this does nothing.
    ablate(&mut hooks, &logits, Some(0), [ALL, ALL, 0..10], 0.0);
    let out = host(model.forward(&clean(), &hooks).unwrap());
    assert_eq!(
        out,
        host(
            model
                .forward(&clean(), &TransformerHooks::default())
                .unwrap()
        )
    );
    // With `None` it applies.
    let mut hooks = TransformerHooks::<B>::default();
    ablate(&mut hooks, &logits, None, [ALL, ALL, 0..10], -1.0);
    let out = model.forward(&clean(), &hooks).unwrap();
    let out = HostTensor::of(out);
    for b in 0..2 {
        for s in 0..6 {
            for v in 0..10 {
                assert_eq!(out.at(&[b, s, v]), -1.0);
            }
        }
    }
}
