//! Analytic checks of what the hook sites see (SITES.md): every recorded value
//! is recomputed by hand on the host from other recorded values and the
//! model's weights. Each behaviour runs on both CPU backends.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use common::{CallLog, HostTensor, assert_close, at_layer, host, load, record};
use hooks_core::{Ctx, FwdStage, HookTree, Record, Recorder};
use hooks_model::{Gpt2, ModelError, TokenBatch, TransformerHooks};

on_both_backends!(
    probs_sum_to_one_and_causal_mask,
    padded_mask_follows_xor_rule,
    left_padding_shifts_positions_and_matches_unpadded_rows,
    v_out_is_probability_weighted_values,
    post_act_is_gelu_tanh_of_pre_act,
    norm_sites_recompose,
    q_k_v_are_scaled_projections,
    qk_logits_are_query_key_dot_products,
    layer_in_context_and_forward_order,
    post_act_hooks_see_out_layer,
    denominator_site_only_called_when_hooked,
    denominator_hook_replaces_softmax_denominator,
    every_site_has_its_documented_shape,
    bad_batches_fail_before_any_site_is_called,
);

const TINY: &str = "tiny";

fn plain_batch() -> TokenBatch {
    TokenBatch::new(vec![
        vec![3, 14, 15, 92, 65, 35, 89],
        vec![79, 32, 38, 46, 26, 43, 38],
    ])
    .unwrap()
}

/// Row 0 unpadded (6 tokens), row 1 left-padded by 3.
fn padded_batch() -> TokenBatch {
    TokenBatch::left_padded(vec![vec![5, 6, 7, 8, 9, 10], vec![11, 12, 13]], 0).unwrap()
}

/// The reference's visibility rule: causal, and a pad key only for pad queries.
fn visible(batch: &TokenBatch, b: usize, q: usize, k: usize) -> bool {
    k <= q && batch.is_pad(b, k) == batch.is_pad(b, q)
}

fn forward<B: Backend>(
    model: &Gpt2<B>,
    batch: &TokenBatch,
    hooks: &TransformerHooks<B>,
) -> Tensor<B, 3> {
    model.forward(batch, hooks).expect("forward")
}

fn linear_weight<B: Backend>(l: &Linear<B>) -> HostTensor {
    HostTensor::of(l.weight.val())
}

fn linear_bias<B: Backend>(l: &Linear<B>) -> Vec<f32> {
    host(l.bias.as_ref().expect("GPT-2 linears have biases").val())
}

fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
}

fn probs_sum_to_one_and_causal_mask<B: Backend>() {
    let model = load::<B>(TINY);
    let batch = plain_batch();
    let mut hooks = TransformerHooks::<B>::default();
    let logits = record(&mut hooks.attn.qk_logits);
    let probs = record(&mut hooks.attn.qk_probs);
    forward(&model, &batch, &hooks);
    let (bs, s, h) = (2, 7, 4);
    for layer in 0..2 {
        let l = at_layer(&logits, Some(layer));
        let p = at_layer(&probs, Some(layer));
        assert_eq!(l.shape, vec![bs, s, s, h]);
        assert_eq!(p.shape, vec![bs, s, s, h]);
        for b in 0..bs {
            for q in 0..s {
                for hh in 0..h {
                    let sum: f64 = (0..s).map(|k| f64::from(p.at(&[b, q, k, hh]))).sum();
                    assert!(
                        (sum - 1.0).abs() < 1e-5,
                        "layer {layer} row {b},{q} head {hh}: probs sum to {sum}"
                    );
                    for k in 0..s {
                        let (lv, pv) = (l.at(&[b, q, k, hh]), p.at(&[b, q, k, hh]));
                        if k > q {
                            assert_eq!(
                                lv,
                                f32::NEG_INFINITY,
                                "future key {k} for query {q} must be -inf"
                            );
                            assert_eq!(
                                pv, 0.0,
                                "future key {k} for query {q} must get probability 0"
                            );
                        } else {
                            assert!(
                                lv.is_finite(),
                                "past key {k} for query {q} must be finite, got {lv}"
                            );
                            assert!(
                                pv > 0.0,
                                "past key {k} for query {q} must get probability > 0"
                            );
                        }
                    }
                }
            }
        }
        // The first query sees only itself.
        assert_eq!(p.at(&[0, 0, 0, 0]), 1.0);
    }
}

/// Row 1 right-padded by 2 (pad id 0), so pad queries come after real keys.
fn right_padded_batch() -> TokenBatch {
    TokenBatch::new(vec![vec![1, 2, 3, 4, 5, 6], vec![7, 8, 9, 10, 0, 0]])
        .unwrap()
        .with_pad_mask(vec![
            vec![false; 6],
            vec![false, false, false, false, true, true],
        ])
        .unwrap()
}

fn padded_mask_follows_xor_rule<B: Backend>() {
    let model = load::<B>(TINY);
    // (batch, masked past pad keys of real queries, masked past real keys of pad queries)
    // per head and layer: left padding masks row 1's 3 real queries x 3 pad keys; right
    // padding masks row 1's 2 pad queries x 4 real keys.
    let cases = [(padded_batch(), 9, 0), (right_padded_batch(), 0, 8)];
    for (batch, want_pad_keys, want_real_keys) in cases {
        assert!(batch.is_pad(1, 0) || batch.is_pad(1, 5));
        let mut hooks = TransformerHooks::<B>::default();
        let logits = record(&mut hooks.attn.qk_logits);
        let probs = record(&mut hooks.attn.qk_probs);
        forward(&model, &batch, &hooks);
        let (bs, s, h) = (2, 6, 4);
        let mut masked_pad_keys = 0;
        let mut masked_real_keys_for_pad_queries = 0;
        for layer in 0..2 {
            let l = at_layer(&logits, Some(layer));
            let p = at_layer(&probs, Some(layer));
            for b in 0..bs {
                for q in 0..s {
                    for hh in 0..h {
                        let sum: f64 = (0..s).map(|k| f64::from(p.at(&[b, q, k, hh]))).sum();
                        assert!(
                            (sum - 1.0).abs() < 1e-5,
                            "no row is empty: row {b},{q} sums to {sum}"
                        );
                        for k in 0..s {
                            let (lv, pv) = (l.at(&[b, q, k, hh]), p.at(&[b, q, k, hh]));
                            if visible(&batch, b, q, k) {
                                assert!(
                                    lv.is_finite(),
                                    "layer {layer} b{b} q{q} k{k}: visible key masked"
                                );
                                assert!(pv > 0.0);
                            } else {
                                assert_eq!(
                                    lv,
                                    f32::NEG_INFINITY,
                                    "layer {layer} b{b} q{q} k{k}: must be masked"
                                );
                                assert_eq!(pv, 0.0);
                                if k <= q && batch.is_pad(b, k) {
                                    masked_pad_keys += 1;
                                }
                                if k <= q && batch.is_pad(b, q) {
                                    masked_real_keys_for_pad_queries += 1;
                                }
                            }
                        }
                    }
                }
            }
            if batch.is_pad(1, 0) {
                // Left padding: the first real query (3) sees only itself, and so does
                // the first pad query.
                assert_eq!(p.at(&[1, 3, 3, 0]), 1.0);
                assert_eq!(p.at(&[1, 0, 0, 1]), 1.0);
            } else {
                // Right padding: the first pad query (4) sees only itself.
                assert_eq!(p.at(&[1, 4, 4, 2]), 1.0);
            }
        }
        assert_eq!(masked_pad_keys, 2 * h * want_pad_keys);
        assert_eq!(masked_real_keys_for_pad_queries, 2 * h * want_real_keys);
    }
}

fn left_padding_shifts_positions_and_matches_unpadded_rows<B: Backend>() {
    let model = load::<B>(TINY);
    let batch = padded_batch();
    let mut hooks = TransformerHooks::<B>::default();
    let emb = record(&mut hooks.resid.post_emb);
    let padded = HostTensor::of(forward(&model, &batch, &hooks));
    let emb = at_layer(&emb, None);

    // post_emb = wte[token] + wpe[position], position = non-pad tokens before, clamped at 0.
    let wte = HostTensor::of(model.wte.val());
    let wpe = HostTensor::of(model.wpe.val());
    let expected_positions = [[0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 1, 2]];
    for (b, row) in batch.rows().iter().enumerate() {
        for (s, &tok) in row.iter().enumerate() {
            for d in 0..32 {
                let want = wte.at(&[tok as usize, d]) + wpe.at(&[expected_positions[b][s], d]);
                let got = emb.at(&[b, s, d]);
                assert!(
                    (got - want).abs() < 1e-6,
                    "post_emb[{b},{s},{d}] = {got}, want {want}"
                );
            }
        }
    }

    // Real positions of each row equal the row run alone.
    let alone0 = HostTensor::of(forward(
        &model,
        &TokenBatch::single(vec![5, 6, 7, 8, 9, 10]).unwrap(),
        &Default::default(),
    ));
    let alone1 = HostTensor::of(forward(
        &model,
        &TokenBatch::single(vec![11, 12, 13]).unwrap(),
        &Default::default(),
    ));
    let v = 97;
    let row = |t: &HostTensor, b: usize, s: usize| -> Vec<f32> {
        (0..v).map(|i| t.at(&[b, s, i])).collect()
    };
    for s in 0..6 {
        assert_close(
            &format!("row 0 position {s}"),
            &row(&padded, 0, s),
            &row(&alone0, 0, s),
            1e-5,
            1e-5,
        );
    }
    for s in 0..3 {
        assert_close(
            &format!("row 1 position {s}"),
            &row(&padded, 1, s + 3),
            &row(&alone1, 0, s),
            1e-5,
            1e-5,
        );
    }
}

fn v_out_is_probability_weighted_values<B: Backend>() {
    let model = load::<B>(TINY);
    let batch = padded_batch();
    let mut hooks = TransformerHooks::<B>::default();
    let probs = record(&mut hooks.attn.qk_probs);
    let v = record(&mut hooks.attn.v);
    let v_out = record(&mut hooks.attn.v_out);
    forward(&model, &batch, &hooks);
    let (bs, s, h, d) = (2, 6, 4, 8);
    for layer in 0..2 {
        let (p, vv, out) = (
            at_layer(&probs, Some(layer)),
            at_layer(&v, Some(layer)),
            at_layer(&v_out, Some(layer)),
        );
        assert_eq!(out.shape, vec![bs, s, h, d]);
        let mut want = Vec::new();
        for b in 0..bs {
            for q in 0..s {
                for hh in 0..h {
                    for e in 0..d {
                        let sum: f64 = (0..s)
                            .map(|k| {
                                f64::from(p.at(&[b, q, k, hh])) * f64::from(vv.at(&[b, k, hh, e]))
                            })
                            .sum();
                        want.push(sum as f32);
                    }
                }
            }
        }
        assert_close(
            &format!("v_out layer {layer}"),
            &out.data,
            &want,
            1e-6,
            1e-5,
        );
    }
}

fn post_act_is_gelu_tanh_of_pre_act<B: Backend>() {
    let model = load::<B>(TINY);
    let mut hooks = TransformerHooks::<B>::default();
    let pre = record(&mut hooks.mlp.pre_act);
    let post = record(&mut hooks.mlp.post_act);
    forward(&model, &plain_batch(), &hooks);
    for layer in 0..2 {
        let (pre, post) = (at_layer(&pre, Some(layer)), at_layer(&post, Some(layer)));
        assert_eq!(pre.shape, vec![2, 7, 128]);
        let want: Vec<f32> = pre
            .data
            .iter()
            .map(|&x| gelu_tanh(f64::from(x)) as f32)
            .collect();
        assert_close(
            &format!("post_act layer {layer}"),
            &post.data,
            &want,
            1e-6,
            1e-6,
        );
        // The activation is far from trivial: some inputs are well negative.
        assert!(pre.data.iter().any(|&x| x < -1.0) && pre.data.iter().any(|&x| x > 1.0));
    }
}

/// Checks one norm's sites against its input and affine parameters.
#[allow(clippy::too_many_arguments)]
fn check_norm(
    what: &str,
    input: &HostTensor,
    pms: &HostTensor,
    scale: &HostTensor,
    post_scale: &HostTensor,
    output: &HostTensor,
    weight: &[f32],
    bias: &[f32],
) {
    let [bs, s, d] = [input.shape[0], input.shape[1], input.shape[2]];
    assert_eq!(scale.shape, vec![bs, s, 1], "{what}: scale shape");
    let mut want_pms = Vec::new();
    let mut recomposed = Vec::new();
    let mut affine = Vec::new();
    for b in 0..bs {
        for t in 0..s {
            let mean: f64 = (0..d).map(|i| f64::from(input.at(&[b, t, i]))).sum::<f64>() / d as f64;
            let pms_mean: f64 =
                (0..d).map(|i| f64::from(pms.at(&[b, t, i]))).sum::<f64>() / d as f64;
            assert!(
                pms_mean.abs() < 1e-6,
                "{what}: post_mean_subtraction mean at {b},{t} is {pms_mean}"
            );
            let var: f64 = (0..d)
                .map(|i| f64::from(pms.at(&[b, t, i])).powi(2))
                .sum::<f64>()
                / d as f64;
            let want_scale = (var + 1e-5).sqrt();
            let got_scale = f64::from(scale.at(&[b, t, 0]));
            assert!(
                (got_scale - want_scale).abs() <= 1e-5 * want_scale,
                "{what}: scale at {b},{t} is {got_scale}, want {want_scale}"
            );
            for i in 0..d {
                want_pms.push((f64::from(input.at(&[b, t, i])) - mean) as f32);
                recomposed.push(post_scale.at(&[b, t, i]) * scale.at(&[b, t, 0]));
                affine.push(post_scale.at(&[b, t, i]) * weight[i] + bias[i]);
            }
        }
    }
    assert_close(
        &format!("{what}: x - mean"),
        &pms.data,
        &want_pms,
        1e-6,
        1e-5,
    );
    assert_close(
        &format!("{what}: post_scale * scale"),
        &recomposed,
        &pms.data,
        1e-6,
        1e-5,
    );
    assert_close(
        &format!("{what}: affine"),
        &output.data,
        &affine,
        1e-6,
        1e-5,
    );
}

fn norm_sites_recompose<B: Backend>() {
    let model = load::<B>(TINY);
    let mut hooks = TransformerHooks::<B>::default();
    let torso = &mut hooks.resid.torso;
    let (a_pms, a_scale, a_ps) = (
        record(&mut torso.ln_attn.post_mean_subtraction),
        record(&mut torso.ln_attn.scale),
        record(&mut torso.ln_attn.post_scale),
    );
    let (m_pms, m_scale, m_ps) = (
        record(&mut torso.ln_mlp.post_mean_subtraction),
        record(&mut torso.ln_mlp.scale),
        record(&mut torso.ln_mlp.post_scale),
    );
    let (ln_attn, ln_mlp, post_attn, post_mlp) = (
        record(&mut torso.post_ln_attn),
        record(&mut torso.post_ln_mlp),
        record(&mut torso.post_attn),
        record(&mut torso.post_mlp),
    );
    let f = &mut hooks.resid.ln_f;
    let (f_pms, f_scale, f_ps) = (
        record(&mut f.post_mean_subtraction),
        record(&mut f.scale),
        record(&mut f.post_scale),
    );
    let emb = record(&mut hooks.resid.post_emb);
    let ln_f = record(&mut hooks.resid.post_ln_f);
    forward(&model, &padded_batch(), &hooks);

    for layer in 0..2 {
        let block = &model.blocks[layer];
        let input = if layer == 0 {
            at_layer(&emb, None)
        } else {
            at_layer(&post_mlp, Some(layer - 1))
        };
        let l = Some(layer);
        check_norm(
            &format!("ln_1 layer {layer}"),
            &input,
            &at_layer(&a_pms, l),
            &at_layer(&a_scale, l),
            &at_layer(&a_ps, l),
            &at_layer(&ln_attn, l),
            &host(block.ln_1.weight.val()),
            &host(block.ln_1.bias.val()),
        );
        check_norm(
            &format!("ln_2 layer {layer}"),
            &at_layer(&post_attn, l),
            &at_layer(&m_pms, l),
            &at_layer(&m_scale, l),
            &at_layer(&m_ps, l),
            &at_layer(&ln_mlp, l),
            &host(block.ln_2.weight.val()),
            &host(block.ln_2.bias.val()),
        );
    }
    check_norm(
        "ln_f",
        &at_layer(&post_mlp, Some(1)),
        &at_layer(&f_pms, None),
        &at_layer(&f_scale, None),
        &at_layer(&f_ps, None),
        &at_layer(&ln_f, None),
        &host(model.ln_f.weight.val()),
        &host(model.ln_f.bias.val()),
    );
    // The fixture's norm gains are not all 1: the affine step is exercised.
    assert!(
        host(model.blocks[0].ln_1.weight.val())
            .iter()
            .any(|w| (w - 1.0).abs() > 0.1)
    );
}

fn q_k_v_are_scaled_projections<B: Backend>() {
    let model = load::<B>(TINY);
    let mut hooks = TransformerHooks::<B>::default();
    let x = record(&mut hooks.resid.torso.post_ln_attn);
    let (q, k, v) = (
        record(&mut hooks.attn.q),
        record(&mut hooks.attn.k),
        record(&mut hooks.attn.v),
    );
    forward(&model, &plain_batch(), &hooks);
    let (bs, s, dm, h, d) = (2, 7, 32, 4, 8);
    let scale = (d as f64).powf(-0.25);
    for layer in 0..2 {
        let c_attn = &model.blocks[layer].attn.c_attn;
        let (w, bias) = (linear_weight(c_attn), linear_bias(c_attn));
        assert_eq!(w.shape, vec![dm, 3 * dm]);
        let x = at_layer(&x, Some(layer));
        let proj = |b: usize, t: usize, col: usize| -> f64 {
            (0..dm)
                .map(|i| f64::from(x.at(&[b, t, i])) * f64::from(w.at(&[i, col])))
                .sum::<f64>()
                + f64::from(bias[col])
        };
        for (name, calls, part, factor) in
            [("q", &q, 0, scale), ("k", &k, 1, scale), ("v", &v, 2, 1.0)]
        {
            let got = at_layer(calls, Some(layer));
            assert_eq!(got.shape, vec![bs, s, h, d], "{name} shape");
            let mut want = Vec::new();
            for b in 0..bs {
                for t in 0..s {
                    for hh in 0..h {
                        for e in 0..d {
                            want.push((proj(b, t, part * dm + hh * d + e) * factor) as f32);
                        }
                    }
                }
            }
            assert_close(
                &format!("{name} layer {layer}"),
                &got.data,
                &want,
                1e-5,
                1e-5,
            );
        }
    }
}

fn qk_logits_are_query_key_dot_products<B: Backend>() {
    let model = load::<B>(TINY);
    let batch = padded_batch();
    let mut hooks = TransformerHooks::<B>::default();
    let (q, k, logits) = (
        record(&mut hooks.attn.q),
        record(&mut hooks.attn.k),
        record(&mut hooks.attn.qk_logits),
    );
    forward(&model, &batch, &hooks);
    let (bs, s, h, d) = (2, 6, 4, 8);
    for layer in 0..2 {
        let (q, k, l) = (
            at_layer(&q, Some(layer)),
            at_layer(&k, Some(layer)),
            at_layer(&logits, Some(layer)),
        );
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for b in 0..bs {
            for qi in 0..s {
                for ki in 0..s {
                    for hh in 0..h {
                        if !visible(&batch, b, qi, ki) {
                            continue;
                        }
                        let dot: f64 = (0..d)
                            .map(|e| {
                                f64::from(q.at(&[b, qi, hh, e])) * f64::from(k.at(&[b, ki, hh, e]))
                            })
                            .sum();
                        want.push(dot as f32);
                        got.push(l.at(&[b, qi, ki, hh]));
                    }
                }
            }
        }
        // (6*7/2 + 3*4/2 + 3*4/2) query-key pairs per head.
        assert_eq!(got.len(), (21 + 6 + 6) * h);
        assert_close(&format!("qk_logits layer {layer}"), &got, &want, 1e-5, 1e-5);
    }
}

/// Every site in forward order (SITES.md), with its layer.
fn forward_order(n_layer: usize) -> Vec<(String, Option<usize>)> {
    let block = [
        "resid.torso.ln_attn.post_mean_subtraction",
        "resid.torso.ln_attn.scale",
        "resid.torso.ln_attn.post_scale",
        "resid.torso.post_ln_attn",
        "attn.q",
        "attn.k",
        "attn.v",
        "attn.qk_logits",
        "attn.qk_softmax_denominator",
        "attn.qk_probs",
        "attn.v_out",
        "resid.torso.delta_attn",
        "resid.torso.post_attn",
        "resid.torso.ln_mlp.post_mean_subtraction",
        "resid.torso.ln_mlp.scale",
        "resid.torso.ln_mlp.post_scale",
        "resid.torso.post_ln_mlp",
        "mlp.pre_act",
        "mlp.post_act",
        "resid.torso.delta_mlp",
        "resid.torso.post_mlp",
    ];
    let mut out = vec![("resid.post_emb".to_string(), None)];
    for l in 0..n_layer {
        out.extend(block.iter().map(|s| (s.to_string(), Some(l))));
    }
    for s in [
        "resid.ln_f.post_mean_subtraction",
        "resid.ln_f.scale",
        "resid.ln_f.post_scale",
        "resid.post_ln_f",
        "logits",
    ] {
        out.push((s.to_string(), None));
    }
    out
}

fn layer_in_context_and_forward_order<B: Backend>() {
    for (fixture, n_layer) in [("tiny", 2), ("untied", 3)] {
        let model = load::<B>(fixture);
        let log = CallLog::default();
        let mut hooks = TransformerHooks::<B>::default();
        hooks.append_all(FwdStage::Fwd, log.clone());
        forward(
            &model,
            &TokenBatch::new(vec![vec![1, 2, 3], vec![4, 5, 6]]).unwrap(),
            &hooks,
        );
        let calls = log.calls();
        assert_eq!(
            calls,
            forward_order(n_layer),
            "{fixture}: sites, order and layers"
        );
        assert_eq!(calls.len(), 6 + 21 * n_layer);
    }
}

fn post_act_hooks_see_out_layer<B: Backend>() {
    let model = load::<B>(TINY);
    // (layer, out_layer weight, out_layer bias) per call.
    type Seen = Vec<(Option<usize>, HostTensor, Vec<f32>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let pre_sees: Arc<Mutex<Vec<bool>>> = Arc::default();
    let mut hooks = TransformerHooks::<B>::default();
    let s = seen.clone();
    hooks
        .mlp
        .post_act
        .fwd
        .append(move |x: Tensor<B, 3>, ctx: &Ctx<'_>| {
            let linear = ctx
                .get("out_layer")
                .expect("post_act hooks get `out_layer`")
                .downcast_ref::<Linear<B>>()
                .expect("`out_layer` is a burn::nn::Linear<B>");
            s.lock()
                .unwrap()
                .push((ctx.layer(), linear_weight(linear), linear_bias(linear)));
            x
        });
    let p = pre_sees.clone();
    hooks
        .mlp
        .pre_act
        .fwd
        .append(move |x: Tensor<B, 3>, ctx: &Ctx<'_>| {
            p.lock().unwrap().push(ctx.get("out_layer").is_some());
            x
        });
    forward(&model, &plain_batch(), &hooks);
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![Some(0), Some(1)]
    );
    for (layer, w, b) in seen.iter() {
        let proj = &model.blocks[layer.unwrap()].mlp.c_proj;
        assert_eq!(w.shape, vec![128, 32]);
        assert_eq!(
            w.data,
            linear_weight(proj).data,
            "layer {layer:?}: out_layer weight"
        );
        assert_eq!(*b, linear_bias(proj), "layer {layer:?}: out_layer bias");
    }
    // Layers differ, so the check above tells the blocks apart.
    assert_ne!(seen[0].1.data, seen[1].1.data);
    assert_eq!(
        *pre_sees.lock().unwrap(),
        vec![false, false],
        "only post_act gets out_layer"
    );
}

fn denominator_site_only_called_when_hooked<B: Backend>() {
    let model = load::<B>(TINY);
    let batch = plain_batch();
    let rec = Recorder::<B>::new();
    let mut hooks = TransformerHooks::<B>::default();
    hooks.append_all(FwdStage::Fwd, Record::into(&rec));
    hooks.attn.qk_softmax_denominator = Default::default();
    forward(&model, &batch, &hooks);
    let keys = rec.keys();
    assert_eq!(
        keys.len(),
        6 + 20 * 2,
        "every site but the denominator: {keys:?}"
    );
    assert!(!keys.iter().any(|k| k.contains("qk_softmax_denominator")));
    // Without a denominator hook the probabilities are the softmax of the
    // logits: Burn's, or on Flex the fused one, whose sum runs in another
    // order (a few float32 ulp; `fused::tests` bounds it against float64).
    for layer in 0..2 {
        let logits = rec.get::<4>("attn.qk_logits", Some(layer)).unwrap();
        let probs = rec.get::<4>("attn.qk_probs", Some(layer)).unwrap();
        assert_close(
            &format!("softmax layer {layer}"),
            &host(probs),
            &host(softmax(logits, 2)),
            4.0 * f32::EPSILON,
            8.0 * f32::EPSILON,
        );
    }
}

fn denominator_hook_replaces_softmax_denominator<B: Backend>() {
    let model = load::<B>(TINY);
    let batch = padded_batch();
    let (bs, s, h) = (2, 6, 4);

    let mut plain = TransformerHooks::<B>::default();
    let plain_probs = record(&mut plain.attn.qk_probs);
    let plain_out = HostTensor::of(forward(&model, &batch, &plain));

    // An identity hook on the denominator: the hand-written softmax.
    let mut ident = TransformerHooks::<B>::default();
    let den = record(&mut ident.attn.qk_softmax_denominator);
    let logits = record(&mut ident.attn.qk_logits);
    let ident_probs = record(&mut ident.attn.qk_probs);
    let ident_out = HostTensor::of(forward(&model, &batch, &ident));
    assert_close(
        "logits with an identity denominator hook",
        &ident_out.data,
        &plain_out.data,
        1e-5,
        0.0,
    );
    for layer in 0..2 {
        let l = Some(layer);
        assert_close(
            &format!("probs layer {layer}"),
            &at_layer(&ident_probs, l).data,
            &at_layer(&plain_probs, l).data,
            1e-6,
            0.0,
        );
        let den = at_layer(&den, l);
        let lg = at_layer(&logits, l);
        assert_eq!(den.shape, vec![bs, s, 1, h]);
        let mut want = Vec::new();
        for b in 0..bs {
            for q in 0..s {
                for hh in 0..h {
                    let max = (0..s)
                        .map(|k| lg.at(&[b, q, k, hh]))
                        .fold(f32::NEG_INFINITY, f32::max);
                    let sum: f64 = (0..s)
                        .map(|k| (f64::from(lg.at(&[b, q, k, hh])) - f64::from(max)).exp())
                        .sum();
                    want.push(sum as f32);
                }
            }
        }
        assert_close(
            &format!("denominator layer {layer}"),
            &den.data,
            &want,
            1e-6,
            1e-5,
        );
        assert!(
            den.data.iter().all(|&x| x >= 1.0),
            "the max term contributes exp(0) = 1"
        );
    }

    // Doubling the denominator halves the probabilities.
    let mut doubled = TransformerHooks::<B>::default();
    doubled
        .attn
        .qk_softmax_denominator
        .fwd
        .append(|x: Tensor<B, 4>, _: &Ctx<'_>| x * 2.0);
    let half = record(&mut doubled.attn.qk_probs);
    let doubled_out = HostTensor::of(forward(&model, &batch, &doubled));
    let base0 = at_layer(&plain_probs, Some(0));
    let halved: Vec<f32> = base0.data.iter().map(|p| p / 2.0).collect();
    assert_close(
        "layer 0 probs, doubled denominator",
        &at_layer(&half, Some(0)).data,
        &halved,
        1e-7,
        1e-6,
    );
    for layer in 0..2 {
        let p = at_layer(&half, Some(layer));
        for b in 0..bs {
            for q in 0..s {
                for hh in 0..h {
                    let sum: f64 = (0..s).map(|k| f64::from(p.at(&[b, q, k, hh]))).sum();
                    assert!(
                        (sum - 0.5).abs() < 1e-5,
                        "layer {layer}: halved probs sum to {sum}"
                    );
                }
            }
        }
    }
    assert!(
        common::max_abs_diff(&doubled_out.data, &plain_out.data) > 1e-3,
        "halving attention changes the logits"
    );
}

fn every_site_has_its_documented_shape<B: Backend>() {
    for (fixture, n_layer, dm, h, v) in [("tiny", 2, 32, 4, 97), ("untied", 3, 48, 6, 131)] {
        let model = load::<B>(fixture);
        let batch = padded_batch();
        let (bs, s, d, f) = (2, 6, dm / h, 4 * dm);
        let rec = Recorder::<B>::new();
        let mut hooks = TransformerHooks::<B>::default();
        hooks.append_all(FwdStage::Fwd, Record::into(&rec));
        let out = forward(&model, &batch, &hooks);
        assert_eq!(out.dims(), [bs, s, v]);

        let mut want: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for k in [
            "resid.post_emb",
            "resid.ln_f.post_mean_subtraction",
            "resid.ln_f.post_scale",
            "resid.post_ln_f",
        ] {
            want.insert(k.into(), vec![bs, s, dm]);
        }
        want.insert("resid.ln_f.scale".into(), vec![bs, s, 1]);
        want.insert("logits".into(), vec![bs, s, v]);
        for l in 0..n_layer {
            let key = |site: &str| format!("layers.{l}.{site}");
            for site in [
                "resid.torso.ln_attn.post_mean_subtraction",
                "resid.torso.ln_attn.post_scale",
                "resid.torso.post_ln_attn",
                "resid.torso.delta_attn",
                "resid.torso.post_attn",
                "resid.torso.ln_mlp.post_mean_subtraction",
                "resid.torso.ln_mlp.post_scale",
                "resid.torso.post_ln_mlp",
                "resid.torso.delta_mlp",
                "resid.torso.post_mlp",
            ] {
                want.insert(key(site), vec![bs, s, dm]);
            }
            want.insert(key("resid.torso.ln_attn.scale"), vec![bs, s, 1]);
            want.insert(key("resid.torso.ln_mlp.scale"), vec![bs, s, 1]);
            for site in ["attn.q", "attn.k", "attn.v", "attn.v_out"] {
                want.insert(key(site), vec![bs, s, h, d]);
            }
            want.insert(key("attn.qk_logits"), vec![bs, s, s, h]);
            want.insert(key("attn.qk_probs"), vec![bs, s, s, h]);
            want.insert(key("attn.qk_softmax_denominator"), vec![bs, s, 1, h]);
            want.insert(key("mlp.pre_act"), vec![bs, s, f]);
            want.insert(key("mlp.post_act"), vec![bs, s, f]);
        }
        let got: BTreeMap<String, Vec<usize>> = rec
            .entries()
            .into_iter()
            .map(|(k, t)| (k, t.shape().to_vec()))
            .collect();
        assert_eq!(got, want, "{fixture}: recorded sites and shapes");
        assert_eq!(got.len(), 6 + 21 * n_layer);
        // The recorded logits are the returned ones.
        assert_eq!(
            rec.get_key("logits")
                .unwrap()
                .to_data()
                .to_vec::<f32>()
                .unwrap(),
            host(out)
        );
    }
}

fn bad_batches_fail_before_any_site_is_called<B: Backend>() {
    let model = load::<B>(TINY);
    let rec = Recorder::<B>::new();
    let mut hooks = TransformerHooks::<B>::default();
    hooks.append_all(FwdStage::Fwd, Record::into(&rec));

    let long = TokenBatch::new(vec![vec![1; 17], vec![2; 17]]).unwrap();
    match model.forward(&long, &hooks) {
        Err(ModelError::TooLong {
            row,
            len,
            n_positions,
        }) => assert_eq!((row, len, n_positions), (0, 17, 16)),
        other => panic!("expected TooLong, got {:?}", other.map(|t| t.dims())),
    }
    let err = model.forward(&long, &hooks).unwrap_err().to_string();
    assert!(err.contains("17") && err.contains("16"), "{err}");

    let oov = TokenBatch::new(vec![vec![1, 2, 3], vec![4, 5, 97]]).unwrap();
    match model.forward(&oov, &hooks) {
        Err(ModelError::TokenOutOfRange {
            token,
            row,
            position,
            vocab_size,
        }) => {
            assert_eq!((token, row, position, vocab_size), (97, 1, 2, 97))
        }
        other => panic!(
            "expected TokenOutOfRange, got {:?}",
            other.map(|t| t.dims())
        ),
    }
    assert!(
        rec.is_empty(),
        "no site may run for a refused batch: {:?}",
        rec.keys()
    );

    // The limits themselves are fine: 16 tokens, id 96.
    let ok = TokenBatch::single(vec![96; 16]).unwrap();
    assert_eq!(model.forward(&ok, &hooks).unwrap().dims(), [1, 16, 97]);
    assert_eq!(rec.len(), 6 + 21 * 2);
}
