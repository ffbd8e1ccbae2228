//! Analytic checks of the Llama family (parity with transformers is
//! `llama_parity.rs`): RoPE's rotation and its frequencies, the gated MLP,
//! grouped-query attention, the sliding window, the KV cache and padding,
//! both config styles, named config and loader errors, tied and untied
//! unembeddings. Models are random, their projections enlarged so that
//! attention is far from uniform; each behaviour runs on both CPU backends.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use common::{
    Entry, HostTensor, TempDir, assert_close, at_layer, host, read_entries, record, write_entries,
};
use hooks_core::Ctx;
use hooks_model::backend::NdArray;
use hooks_model::checkpoint::{CONFIG_FILE, WEIGHTS_FILE};
use hooks_model::llama::rope::{RopeConfig, RopeScaling, inv_freq};
use hooks_model::{
    HookedModel, Llama, LlamaConfig, LlamaHooks, LlamaKvCache, LoadOptions, ModelError, TokenBatch,
};
use safetensors::tensor::Dtype;

on_both_backends!(
    rope_rotates_halves_by_position_and_keeps_norms,
    rope_logits_depend_only_on_relative_position,
    post_act_is_silu_of_gate_times_up,
    rms_norm_sites_recompose,
    probs_sum_to_one_and_logits_are_grouped_dot_products,
    sliding_window_masks_old_keys,
    cached_steps_match_full_forward_with_gqa_and_left_padding,
    left_padded_rows_match_unpadded_rows,
    sites_have_their_documented_shapes,
    tied_and_untied_unembeddings,
    unhooked_baseline_and_first_non_finite,
);

/// A small model config: 2 layers, width 32, 4 query heads over 2 kv
/// heads of width 8, MLP 48, 50 tokens, 64 positions.
fn small(model_type: &str) -> LlamaConfig {
    let mut config = LlamaConfig::new(model_type, 2, 32, 4, 2, 48, 50);
    config.max_position_embeddings = 64;
    config
}

/// A random model with projections 20 times transformers' init and random
/// biases (where the family has them), so that attention is sharp.
fn model<B: Backend>(config: &LlamaConfig) -> Llama<B> {
    let mut model = Llama::<B>::init(config, &Default::default()).expect("init");
    let sharpen = |l: &mut Linear<B>| {
        l.weight = Param::from_tensor(l.weight.val() * 20.0);
        if let Some(bias) = &mut l.bias {
            *bias = Param::from_tensor(bias.val().random_like(Distribution::Normal(0.0, 0.5)));
        }
    };
    for block in &mut model.layers {
        let (a, m) = (&mut block.self_attn, &mut block.mlp);
        for l in [
            &mut a.q_proj,
            &mut a.k_proj,
            &mut a.v_proj,
            &mut a.o_proj,
            &mut m.gate_proj,
            &mut m.up_proj,
            &mut m.down_proj,
        ] {
            sharpen(l);
        }
    }
    model
}

fn logits<B: Backend>(model: &Llama<B>, batch: &TokenBatch) -> HostTensor {
    HostTensor::of(
        model
            .forward(batch, &LlamaHooks::default())
            .expect("forward"),
    )
}

/// The values at `[.., i, ..]` of a host tensor's last axis, at `prefix`.
fn last_axis(t: &HostTensor, prefix: &[usize]) -> Vec<f32> {
    let n = *t.shape.last().unwrap();
    (0..n)
        .map(|i| {
            let mut idx = prefix.to_vec();
            idx.push(i);
            t.at(&idx)
        })
        .collect()
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// A hook making every position's value position 0's.
fn constant_over_positions<B: Backend>(x: Tensor<B, 3>, _: &Ctx<'_>) -> Tensor<B, 3> {
    let [b, s, d] = x.dims();
    x.slice([0..b, 0..1, 0..d]).repeat_dim(1, s)
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n).map(|i| (i * 7 + 3) as u32 % 50).collect()
}

/// `x [D] · w [D, O]` on the host, in f64.
fn vec_mat(x: &[f32], w: &HostTensor) -> Vec<f64> {
    let (d, o) = (w.shape[0], w.shape[1]);
    (0..o)
        .map(|j| {
            (0..d)
                .map(|i| f64::from(x[i]) * f64::from(w.at(&[i, j])))
                .sum()
        })
        .collect()
}

fn llama3(original: usize) -> RopeScaling {
    RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: original,
    }
}

/// With the same input at every position, `attn.q` at position p is q at
/// position 0 rotated pairwise, element i with i + d/2, by the angle
/// p · inv_freq[i] (llama3-scaled here), transformers' `rotate_half`
/// convention; position 0 is q itself times d^-1/4, and the rotation keeps
/// every head's norm.
fn rope_rotates_halves_by_position_and_keeps_norms<B: Backend>() {
    let mut config = small("llama");
    config.rope = RopeConfig {
        theta: 500.0,
        scaling: llama3(16),
    };
    let model = model::<B>(&config);
    let mut hooks = LlamaHooks::<B>::default();
    hooks
        .resid
        .torso
        .post_ln_attn
        .fwd
        .append(constant_over_positions::<B>);
    let x = record(&mut hooks.resid.torso.post_ln_attn);
    let q = record(&mut hooks.attn.q);
    let s = 12;
    model
        .forward(&TokenBatch::single(tokens(s)).unwrap(), &hooks)
        .unwrap();
    let (x, q) = (at_layer(&x, Some(0)), at_layer(&q, Some(0)));
    let d = config.head_dim;
    let sigma = (d as f64).powf(-0.25);
    let wq = HostTensor::of(model.layers[0].self_attn.q_proj.weight.val());
    let q_raw = vec_mat(&last_axis(&x, &[0, 0]), &wq);
    let freqs = inv_freq(&config.rope, d);
    let half = d / 2;
    let mut largest_turn = 0.0f64;
    for h in 0..config.num_attention_heads {
        let raw = &q_raw[h * d..(h + 1) * d];
        let raw_norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
        for p in 0..s {
            let got = last_axis(&q, &[0, p, h]);
            let want: Vec<f32> = (0..d)
                .map(|i| {
                    let j = i % half;
                    let (sin, cos) = (p as f64 * freqs[j]).sin_cos();
                    let v = if i < half {
                        raw[j] * cos - raw[j + half] * sin
                    } else {
                        raw[j + half] * cos + raw[j] * sin
                    };
                    (v * sigma) as f32
                })
                .collect();
            assert_close(&format!("q head {h} position {p}"), &got, &want, 1e-4, 1e-4);
            let norm = got
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                (norm - raw_norm * sigma).abs() <= 1e-4 * raw_norm * sigma,
                "head {h} position {p}: norm {norm} after RoPE, {} before",
                raw_norm * sigma
            );
            let turn = got
                .iter()
                .zip(last_axis(&q, &[0, 0, h]))
                .map(|(a, b)| f64::from(a - b).abs())
                .fold(0.0, f64::max);
            largest_turn = largest_turn.max(turn);
        }
    }
    assert!(largest_turn > 0.1, "RoPE barely moved q ({largest_turn})");
}

/// With the same input at every position, the logit of query s and key t
/// depends only on s - t.
fn rope_logits_depend_only_on_relative_position<B: Backend>() {
    let mut config = small("qwen2");
    config.rope.theta = 1000.0;
    let model = model::<B>(&config);
    let mut hooks = LlamaHooks::<B>::default();
    hooks
        .resid
        .torso
        .post_ln_attn
        .fwd
        .append(constant_over_positions::<B>);
    let logits = record(&mut hooks.attn.qk_logits);
    let s = 10;
    model
        .forward(&TokenBatch::single(tokens(s)).unwrap(), &hooks)
        .unwrap();
    let logits = at_layer(&logits, Some(0));
    let scale = logits
        .data
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    let mut spread = 0.0f32;
    for h in 0..config.num_attention_heads {
        for q in 0..s - 1 {
            for k in 0..=q {
                let a = logits.at(&[0, q, k, h]);
                let b = logits.at(&[0, q + 1, k + 1, h]);
                assert!(
                    (a - b).abs() <= 1e-5 * scale.max(1.0),
                    "head {h}: logit ({q},{k}) = {a} but ({},{}) = {b}",
                    q + 1,
                    k + 1
                );
            }
            spread = spread.max((logits.at(&[0, q, 0, h]) - logits.at(&[0, q, q, h])).abs());
        }
    }
    assert!(
        spread > 0.05 * scale,
        "logits hardly depend on distance ({spread})"
    );
}

/// `mlp.post_act` is `silu(mlp.pre_act) · mlp.up`.
fn post_act_is_silu_of_gate_times_up<B: Backend>() {
    let model = model::<B>(&small("llama"));
    let mut hooks = LlamaHooks::<B>::default();
    let pre = record(&mut hooks.mlp.pre_act);
    let up = record(&mut hooks.mlp.up);
    let post = record(&mut hooks.mlp.post_act);
    model
        .forward(&TokenBatch::single(tokens(7)).unwrap(), &hooks)
        .unwrap();
    for layer in [Some(0), Some(1)] {
        let (pre, up, post) = (
            at_layer(&pre, layer),
            at_layer(&up, layer),
            at_layer(&post, layer),
        );
        let want: Vec<f32> = pre
            .data
            .iter()
            .zip(&up.data)
            .map(|(&g, &u)| (silu(f64::from(g)) * f64::from(u)) as f32)
            .collect();
        assert_close(
            &format!("post_act at {layer:?}"),
            &post.data,
            &want,
            1e-5,
            1e-5,
        );
        assert!(
            pre.data.iter().any(|v| *v < -0.5),
            "gate has negative inputs to SiLU"
        );
    }
}

/// `scale = sqrt(mean(x²) + ε)`, `post_scale = x / scale`, the output is
/// `post_scale · weight` (no mean is subtracted).
fn rms_norm_sites_recompose<B: Backend>() {
    let mut model = model::<B>(&small("mistral"));
    let w = model.layers[0]
        .input_layernorm
        .weight
        .val()
        .random_like(Distribution::Uniform(0.5, 1.5));
    model.layers[0].input_layernorm.weight = Param::from_tensor(w);
    let mut hooks = LlamaHooks::<B>::default();
    let x = record(&mut hooks.resid.post_emb);
    let scale = record(&mut hooks.resid.torso.ln_attn.scale);
    let post_scale = record(&mut hooks.resid.torso.ln_attn.post_scale);
    let out = record(&mut hooks.resid.torso.post_ln_attn);
    model
        .forward(&TokenBatch::single(tokens(5)).unwrap(), &hooks)
        .unwrap();
    let x = at_layer(&x, None);
    let (scale, post_scale, out) = (
        at_layer(&scale, Some(0)),
        at_layer(&post_scale, Some(0)),
        at_layer(&out, Some(0)),
    );
    let weight = host(model.layers[0].input_layernorm.weight.val());
    let eps = model.config.rms_norm_eps;
    assert_eq!(scale.shape, vec![1, 5, 1]);
    for s in 0..5 {
        let row = last_axis(&x, &[0, s]);
        let ms = row.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / row.len() as f64;
        let want = (ms + eps).sqrt();
        assert_close("scale", &[scale.at(&[0, s, 0])], &[want as f32], 0.0, 1e-5);
        let normed: Vec<f32> = row.iter().map(|v| (f64::from(*v) / want) as f32).collect();
        assert_close(
            "post_scale",
            &last_axis(&post_scale, &[0, s]),
            &normed,
            1e-6,
            1e-5,
        );
        let weighted: Vec<f32> = normed.iter().zip(&weight).map(|(a, b)| a * b).collect();
        assert_close(
            "post_ln_attn",
            &last_axis(&out, &[0, s]),
            &weighted,
            1e-6,
            1e-5,
        );
    }
}

/// Probabilities sum to one over keys and vanish at later keys; logits are
/// `q·k` with query head h reading kv head h / (H / Hkv); `v_out` is the
/// probability-weighted sum of that kv head's values.
fn probs_sum_to_one_and_logits_are_grouped_dot_products<B: Backend>() {
    let mut config = small("qwen2");
    config.num_attention_heads = 6;
    config.num_key_value_heads = 2;
    config.head_dim = 8;
    let model = model::<B>(&config);
    let mut hooks = LlamaHooks::<B>::default();
    let q = record(&mut hooks.attn.q);
    let k = record(&mut hooks.attn.k);
    let v = record(&mut hooks.attn.v);
    let logits = record(&mut hooks.attn.qk_logits);
    let probs = record(&mut hooks.attn.qk_probs);
    let v_out = record(&mut hooks.attn.v_out);
    let batch = TokenBatch::new(vec![tokens(6), tokens(9)[3..].to_vec()]).unwrap();
    model.forward(&batch, &hooks).unwrap();
    let (h, group, d, s) = (6, 3, 8, 6);
    for layer in [Some(0), Some(1)] {
        let (q, k, v) = (
            at_layer(&q, layer),
            at_layer(&k, layer),
            at_layer(&v, layer),
        );
        let (logits, probs, v_out) = (
            at_layer(&logits, layer),
            at_layer(&probs, layer),
            at_layer(&v_out, layer),
        );
        let mut sharpest = 0.0f32;
        for b in 0..2 {
            for qi in 0..s {
                for head in 0..h {
                    let kv = head / group;
                    let row: Vec<f32> = (0..s).map(|t| probs.at(&[b, qi, t, head])).collect();
                    let total: f32 = row.iter().sum();
                    assert!((total - 1.0).abs() < 1e-5, "probs sum to {total}");
                    sharpest = sharpest.max(row.iter().fold(0.0, |m, p| m.max(*p)));
                    for (t, &p) in row.iter().enumerate() {
                        let dot: f64 = (0..d)
                            .map(|i| {
                                f64::from(q.at(&[b, qi, head, i])) * f64::from(k.at(&[b, t, kv, i]))
                            })
                            .sum();
                        let got = logits.at(&[b, qi, t, head]);
                        if t > qi {
                            assert_eq!(got, f32::NEG_INFINITY, "later key ({qi},{t}) visible");
                            assert_eq!(p, 0.0);
                        } else {
                            assert_close("logit", &[got], &[dot as f32], 1e-4, 1e-5);
                        }
                    }
                    for i in 0..d {
                        let want: f64 = (0..s)
                            .map(|t| f64::from(row[t]) * f64::from(v.at(&[b, t, kv, i])))
                            .sum();
                        assert_close(
                            "v_out",
                            &[v_out.at(&[b, qi, head, i])],
                            &[want as f32],
                            1e-5,
                            1e-5,
                        );
                    }
                }
            }
        }
        assert!(sharpest > 0.9, "attention is nearly uniform ({sharpest})");
    }
}

/// Mistral's window (and Qwen2's, with `use_sliding_window`, from
/// `max_window_layers` on) masks keys `sliding_window` or more positions
/// back; a cached run gives the same logits; a Qwen2 window without
/// `use_sliding_window` and a Llama ignore it.
fn sliding_window_masks_old_keys<B: Backend>() {
    let s = 9;
    let window = 3;
    let batch = TokenBatch::single(tokens(s)).unwrap();
    let probs_of = |model: &Llama<B>| {
        let mut hooks = LlamaHooks::<B>::default();
        let probs = record(&mut hooks.attn.qk_probs);
        model.forward(&batch, &hooks).unwrap();
        [at_layer(&probs, Some(0)), at_layer(&probs, Some(1))]
    };
    let windowed = |p: &HostTensor| -> bool {
        (0..s).all(|q| (0..q.saturating_sub(window - 1)).all(|k| p.at(&[0, q, k, 0]) == 0.0))
    };
    let sees_far = |p: &HostTensor| p.at(&[0, s - 1, 0, 0]) > 0.0;

    // Transformers' init (attention near uniform), so that every visible
    // key has a probability well above zero.
    let plain = |config: &LlamaConfig| Llama::<B>::init(config, &Default::default()).unwrap();
    let mut mistral = small("mistral");
    mistral.sliding_window = Some(window);
    let model = plain(&mistral);
    for p in probs_of(&model) {
        assert!(windowed(&p), "mistral: a key outside the window is visible");
        for q in 0..s {
            for k in q.saturating_sub(window - 1)..=q {
                assert!(
                    p.at(&[0, q, k, 0]) > 0.0,
                    "mistral: key {k} in the window of {q} masked"
                );
            }
        }
    }
    // Through the cache: prompt of 4, then one token at a time.
    let full = logits(&model, &batch);
    let mut cache = LlamaKvCache::new(&model);
    let hooks = LlamaHooks::<B>::default();
    let mut steps = HostTensor::of(
        model
            .forward_cached(
                &TokenBatch::single(tokens(s)[..4].to_vec()).unwrap(),
                &mut cache,
                &hooks,
            )
            .unwrap(),
    )
    .data;
    for &t in &tokens(s)[4..] {
        let step = model
            .forward_cached(&TokenBatch::single(vec![t]).unwrap(), &mut cache, &hooks)
            .unwrap();
        steps.extend(host(step));
    }
    assert_close("mistral cached vs full", &steps, &full.data, 1e-4, 1e-4);

    let mut qwen = small("qwen2");
    qwen.sliding_window = Some(window);
    let [l0, l1] = probs_of(&plain(&qwen));
    assert!(
        sees_far(&l0) && sees_far(&l1),
        "qwen2 without use_sliding_window"
    );
    qwen.use_sliding_window = true;
    qwen.max_window_layers = Some(1);
    let [l0, l1] = probs_of(&plain(&qwen));
    assert!(sees_far(&l0), "qwen2 layer 0 is below max_window_layers");
    assert!(
        windowed(&l1) && !sees_far(&l1),
        "qwen2 layer 1 has the window"
    );

    let mut llama = small("llama");
    llama.sliding_window = Some(window);
    let [l0, _] = probs_of(&plain(&llama));
    assert!(sees_far(&l0), "llama has no sliding window");
}

/// A left-padded batch through the cache (a padded prompt, then one token
/// per step) gives the full forward's logits at every real position, with
/// grouped-query heads and biases (Qwen2).
fn cached_steps_match_full_forward_with_gqa_and_left_padding<B: Backend>() {
    let model = model::<B>(&small("qwen2"));
    let batch = TokenBatch::left_padded(vec![vec![5, 6, 7, 8, 9, 10, 11], vec![12, 13, 14, 15]], 0)
        .unwrap();
    let full = logits(&model, &batch);
    let rows = batch.rows();
    let pad = batch.pad_mask().unwrap();
    let prompt = 4;
    let hooks = LlamaHooks::<B>::default();
    let mut cache = LlamaKvCache::new(&model);
    assert!(cache.is_empty());
    let first = TokenBatch::new(rows.iter().map(|r| r[..prompt].to_vec()).collect())
        .unwrap()
        .with_pad_mask(pad.iter().map(|p| p[..prompt].to_vec()).collect())
        .unwrap();
    let mut got = vec![HostTensor::of(
        model.forward_cached(&first, &mut cache, &hooks).unwrap(),
    )];
    assert_eq!(cache.len(), prompt);
    for s in prompt..batch.len() {
        let step = TokenBatch::new(rows.iter().map(|r| vec![r[s]]).collect()).unwrap();
        got.push(HostTensor::of(
            model.forward_cached(&step, &mut cache, &hooks).unwrap(),
        ));
        assert_eq!(cache.len(), s + 1);
        assert_eq!(<Llama<B> as HookedModel<B>>::cache_len(&cache), s + 1);
    }
    let mut checked = 0;
    for b in 0..2 {
        for s in 0..batch.len() {
            if batch.is_pad(b, s) {
                continue;
            }
            let (chunk, at) = if s < prompt {
                (&got[0], s)
            } else {
                (&got[s - prompt + 1], 0)
            };
            assert_close(
                &format!("row {b} position {s}"),
                &last_axis(chunk, &[b, at]),
                &last_axis(&full, &[b, s]),
                1e-4,
                1e-4,
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 11);
    // A step for another number of rows is refused before any work.
    let err = model
        .forward_cached(&TokenBatch::single(vec![1]).unwrap(), &mut cache, &hooks)
        .unwrap_err();
    assert!(matches!(err, ModelError::BadBatch(_)), "{err}");
}

/// Left-padded (or right-padded) rows give the logits of the same rows
/// alone at their real positions.
fn left_padded_rows_match_unpadded_rows<B: Backend>() {
    let mut config = small("llama");
    config.rope = RopeConfig {
        theta: 100.0,
        scaling: llama3(8),
    };
    let model = model::<B>(&config);
    let short = vec![12u32, 13, 14];
    let long = vec![5u32, 6, 7, 8, 9, 10];
    let padded = TokenBatch::left_padded(vec![long.clone(), short.clone()], 1).unwrap();
    let both = logits(&model, &padded);
    let alone_short = logits(&model, &TokenBatch::single(short.clone()).unwrap());
    let alone_long = logits(&model, &TokenBatch::single(long).unwrap());
    for s in 0..6 {
        assert_close(
            "long row",
            &last_axis(&both, &[0, s]),
            &last_axis(&alone_long, &[0, s]),
            1e-4,
            1e-4,
        );
    }
    for s in 0..3 {
        assert_close(
            "left-padded row",
            &last_axis(&both, &[1, s + 3]),
            &last_axis(&alone_short, &[0, s]),
            1e-4,
            1e-4,
        );
    }
    let right = TokenBatch::new(vec![vec![12, 13, 14, 1, 1]])
        .unwrap()
        .with_pad_mask(vec![vec![false, false, false, true, true]])
        .unwrap();
    let right = logits(&model, &right);
    for s in 0..3 {
        assert_close(
            "right-padded row",
            &last_axis(&right, &[0, s]),
            &last_axis(&alone_short, &[0, s]),
            1e-4,
            1e-4,
        );
    }
}

/// Every site's shape, with a head width that is not D / H (32 / 4 ≠ 6)
/// and grouped kv heads, on a cached step (K > S).
fn sites_have_their_documented_shapes<B: Backend>() {
    let mut config = small("llama");
    config.head_dim = 6;
    config.attention_bias = true;
    config.mlp_bias = true;
    let model = model::<B>(&config);
    let mut cache = LlamaKvCache::new(&model);
    let two_rows =
        |n: usize| TokenBatch::new(vec![tokens(n), tokens(n + 1)[1..].to_vec()]).unwrap();
    model
        .forward_cached(&two_rows(5), &mut cache, &LlamaHooks::default())
        .unwrap();
    let mut hooks = LlamaHooks::<B>::default();
    let shape3 = |calls: &common::Calls<B, 3>| -> Vec<Vec<usize>> {
        calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| t.dims().to_vec())
            .collect()
    };
    let shape4 = |calls: &common::Calls<B, 4>| -> Vec<Vec<usize>> {
        calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| t.dims().to_vec())
            .collect()
    };
    let (b, s, k, d, h, hkv, dh, f, v) = (2, 2, 7, 32, 4, 2, 6, 48, 50);
    let r = &mut hooks.resid;
    let sites3 = vec![
        (record(&mut r.post_emb), vec![b, s, d], 1),
        (record(&mut r.torso.ln_attn.scale), vec![b, s, 1], 2),
        (record(&mut r.torso.ln_attn.post_scale), vec![b, s, d], 2),
        (record(&mut r.torso.post_ln_attn), vec![b, s, d], 2),
        (record(&mut r.torso.delta_attn), vec![b, s, d], 2),
        (record(&mut r.torso.post_attn), vec![b, s, d], 2),
        (record(&mut r.torso.ln_mlp.scale), vec![b, s, 1], 2),
        (record(&mut r.torso.ln_mlp.post_scale), vec![b, s, d], 2),
        (record(&mut r.torso.post_ln_mlp), vec![b, s, d], 2),
        (record(&mut r.torso.delta_mlp), vec![b, s, d], 2),
        (record(&mut r.torso.post_mlp), vec![b, s, d], 2),
        (record(&mut r.ln_f.scale), vec![b, s, 1], 1),
        (record(&mut r.ln_f.post_scale), vec![b, s, d], 1),
        (record(&mut r.post_ln_f), vec![b, s, d], 1),
        (record(&mut hooks.mlp.pre_act), vec![b, s, f], 2),
        (record(&mut hooks.mlp.up), vec![b, s, f], 2),
        (record(&mut hooks.mlp.post_act), vec![b, s, f], 2),
        (record(&mut hooks.logits), vec![b, s, v], 1),
    ];
    let a = &mut hooks.attn;
    let sites4 = [
        (record(&mut a.q), vec![b, s, h, dh]),
        (record(&mut a.k), vec![b, k, hkv, dh]),
        (record(&mut a.v), vec![b, k, hkv, dh]),
        (record(&mut a.qk_logits), vec![b, s, k, h]),
        (record(&mut a.qk_probs), vec![b, s, k, h]),
        (record(&mut a.v_out), vec![b, s, h, dh]),
    ];
    let out = model
        .forward_cached(
            &TokenBatch::new(vec![vec![1, 2], vec![3, 4]]).unwrap(),
            &mut cache,
            &hooks,
        )
        .unwrap();
    assert_eq!(out.dims(), [b, s, v]);
    for (i, (calls, shape, n)) in sites3.iter().enumerate() {
        assert_eq!(shape3(calls), vec![shape.clone(); *n], "rank-3 site {i}");
    }
    for (i, (calls, shape)) in sites4.iter().enumerate() {
        assert_eq!(shape4(calls), vec![shape.clone(); 2], "rank-4 site {i}");
    }
    let dims = model.dims();
    assert_eq!(
        (
            dims.n_head,
            dims.n_kv_head,
            dims.d_head,
            dims.d_mlp,
            dims.n_ctx
        ),
        (h, hkv, dh, f, 64)
    );
}

/// A tied model's unembedding is its embedding; save → load is exact;
/// a tied checkpoint loads without `lm_head.weight` (and ignores a stored
/// one); an untied one without it is a missing key.
fn tied_and_untied_unembeddings<B: Backend>() {
    let mut config = small("qwen2");
    config.tie_word_embeddings = true;
    let model = model::<B>(&config);
    let embed_t = HostTensor::of(model.embed_tokens.val().transpose());
    assert_eq!(host(model.unembed.val()), embed_t.data, "tied init");
    let batch = TokenBatch::single(tokens(6)).unwrap();
    let want = logits(&model, &batch);

    let dir = TempDir::new("llama-tied");
    model.save(dir.path()).unwrap();
    let reloaded = Llama::<B>::load(dir.path(), &Default::default()).unwrap();
    assert!(!reloaded.config.tie_word_embeddings, "saved untied");
    assert_eq!(logits(&reloaded, &batch).data, want.data, "save → load");

    // Tied, with a stored lm_head of zeros: transformers ties it, so do we.
    edit_config(dir.path(), |c| {
        c.insert("tie_word_embeddings".into(), true.into());
    });
    edit_weights(dir.path(), |e| {
        let head = e.get_mut("lm_head.weight").unwrap();
        head.data.iter_mut().for_each(|b| *b = 0);
    });
    let tied = Llama::<B>::load(dir.path(), &Default::default()).unwrap();
    assert_eq!(host(tied.unembed.val()), embed_t.data, "tied with lm_head");
    assert_eq!(logits(&tied, &batch).data, want.data);
    edit_weights(dir.path(), |e| {
        e.remove("lm_head.weight");
    });
    let tied = Llama::<B>::load(dir.path(), &Default::default()).unwrap();
    assert_eq!(
        host(tied.unembed.val()),
        embed_t.data,
        "tied without lm_head"
    );

    edit_config(dir.path(), |c| {
        c.insert("tie_word_embeddings".into(), false.into());
    });
    match Llama::<B>::load(dir.path(), &Default::default()) {
        Err(ModelError::MissingKey { key, .. }) => assert_eq!(key, "lm_head.weight"),
        other => panic!(
            "expected a missing lm_head.weight, got {:?}",
            other.map(|_| ())
        ),
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join(CONFIG_FILE);
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(value.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

fn edit_weights(dir: &Path, f: impl FnOnce(&mut BTreeMap<String, Entry>)) {
    let path = dir.join(WEIGHTS_FILE);
    let mut entries = read_entries(&path);
    f(&mut entries);
    write_entries(&path, &entries);
}

/// A config.json in transformers 4.x's style, with `extra` fields added.
fn legacy_json(extra: &str) -> String {
    format!(
        r#"{{"model_type": "llama", "vocab_size": 50, "hidden_size": 32,
            "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "max_position_embeddings": 64,
            "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": [2, 3]{extra}}}"#
    )
}

const LLAMA3_FIELDS: &str = r#""factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16"#;

fn bad_config(text: &str) -> String {
    match LlamaConfig::from_json(text) {
        Err(ModelError::BadConfig(why)) => why,
        Err(other) => panic!("expected BadConfig, got {other:?}"),
        Ok(c) => panic!("{text} should not parse, got {c:?}"),
    }
}

#[test]
fn both_rope_styles_give_the_same_config_and_model() {
    let v4 = legacy_json(&format!(
        r#", "rope_theta": 500000.0, "rope_scaling": {{"rope_type": "llama3", {LLAMA3_FIELDS}}}"#
    ));
    let v4_old_key = legacy_json(&format!(
        r#", "rope_theta": 500000.0, "rope_scaling": {{"type": "llama3", {LLAMA3_FIELDS}}}"#
    ));
    let v5 = legacy_json(&format!(
        r#", "rope_parameters": {{"rope_type": "llama3", "rope_theta": 500000.0, {LLAMA3_FIELDS}}}"#
    ));
    let a = LlamaConfig::from_json(&v4).unwrap();
    assert_eq!(a, LlamaConfig::from_json(&v4_old_key).unwrap());
    assert_eq!(a, LlamaConfig::from_json(&v5).unwrap());
    assert_eq!(a.rope.theta, 500000.0);
    assert_eq!(a.rope.scaling, llama3(16));
    assert_eq!(a.head_dim, 8);
    assert_eq!(a.bos_token_id.as_ref().unwrap().ids(), &[1]);
    assert_eq!(a.eos_token_id.as_ref().unwrap().ids(), &[2, 3]);
    // Our own output (both styles at once) reads back the same.
    assert_eq!(LlamaConfig::from_json(&a.to_json()).unwrap(), a);
    // Default RoPE: no rope fields, `rope_scaling: null`, or "default" in either style.
    let plain = LlamaConfig::from_json(&legacy_json("")).unwrap();
    assert_eq!(plain.rope, RopeConfig::default());
    for extra in [
        r#", "rope_scaling": null, "rope_theta": 10000"#,
        r#", "rope_scaling": {"rope_type": "default"}"#,
        r#", "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}"#,
    ] {
        assert_eq!(
            LlamaConfig::from_json(&legacy_json(extra)).unwrap(),
            plain,
            "{extra}"
        );
    }

    // The same weights under each config file give the same logits.
    let model = model::<NdArray>(&a);
    let dir = TempDir::new("llama-styles");
    model.save(dir.path()).unwrap();
    let batch = TokenBatch::single(tokens(20)).unwrap();
    let want = logits(&model, &batch);
    for text in [&v4, &v5] {
        std::fs::write(dir.join(CONFIG_FILE), text).unwrap();
        let loaded = Llama::<NdArray>::load(dir.path(), &Default::default()).unwrap();
        assert_eq!(logits(&loaded, &batch).data, want.data);
    }
    // Not the same model as without scaling (position 20 > 16 reaches
    // the rescaled band).
    std::fs::write(
        dir.join(CONFIG_FILE),
        legacy_json(r#", "rope_theta": 500000.0"#),
    )
    .unwrap();
    let unscaled = Llama::<NdArray>::load(dir.path(), &Default::default()).unwrap();
    assert_ne!(logits(&unscaled, &batch).data, want.data);
}

#[test]
fn family_fields_round_trip_through_json() {
    let mut qwen = small("qwen2");
    qwen.use_sliding_window = true;
    qwen.sliding_window = Some(16);
    qwen.max_window_layers = Some(1);
    qwen.tie_word_embeddings = true;
    let back = LlamaConfig::from_json(&qwen.to_json()).unwrap();
    assert_eq!(back, qwen);
    assert_eq!(
        (back.layer_window(0), back.layer_window(1)),
        (None, Some(16))
    );
    assert!(back.qkv_bias() && !back.o_bias() && !back.mlp_has_bias());

    let mut mistral = small("mistral");
    mistral.sliding_window = Some(8);
    mistral.head_dim = 12;
    assert_eq!(LlamaConfig::from_json(&mistral.to_json()).unwrap(), mistral);

    let mut llama = small("llama");
    llama.attention_bias = true;
    assert_eq!(LlamaConfig::from_json(&llama.to_json()).unwrap(), llama);
    assert!(llama.qkv_bias() && llama.o_bias() && !llama.mlp_has_bias());

    let qwen_types = r#"{"model_type": "qwen2", "vocab_size": 50, "hidden_size": 32,
        "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 64, "use_sliding_window": true, "sliding_window": 4,
        "layer_types": ["sliding_attention", "full_attention"]}"#;
    let c = LlamaConfig::from_json(qwen_types).unwrap();
    assert_eq!((c.layer_window(0), c.layer_window(1)), (Some(4), None));
    assert_eq!(c.num_key_value_heads, 4, "defaults to the query heads");
    assert_eq!(c.rms_norm_eps, 1e-6, "transformers' default");

    for family in ["llama", "qwen2", "mistral"] {
        let m = Llama::<NdArray>::init(&small(family), &Default::default()).unwrap();
        assert_eq!(m.family(), family);
        assert_eq!(m.config.model_type(), family);
    }
}

#[test]
fn bad_configs_give_named_errors() {
    let why = bad_config(&legacy_json(
        r#", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#,
    ));
    assert!(
        why.contains("yarn") && why.contains("llama3") && why.contains("default"),
        "{why}"
    );
    let why = bad_config(&legacy_json(
        r#", "rope_parameters": {"rope_type": "dynamic"}"#,
    ));
    assert!(
        why.contains("rope_parameters") && why.contains("dynamic"),
        "{why}"
    );
    let why = bad_config(&legacy_json(
        r#", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}"#,
    ));
    assert!(why.contains("low_freq_factor"), "{why}");
    let why = bad_config(&legacy_json(
        r#", "rope_theta": 10000.0, "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}"#,
    ));
    assert!(why.contains("disagree"), "{why}");

    let replaced = |field: &str, value: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&legacy_json("")).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    };
    let why = bad_config(&replaced("num_key_value_heads", "3"));
    assert!(
        why.contains("num_attention_heads (4)") && why.contains("num_key_value_heads (3)"),
        "{why}"
    );
    let why = bad_config(&replaced("hidden_act", "\"gelu\""));
    assert!(why.contains("hidden_act") && why.contains("gelu"), "{why}");
    for field in [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "vocab_size",
    ] {
        let why = bad_config(&replaced(field, "0"));
        assert!(
            why.contains(field) && why.contains("positive"),
            "{field}: {why}"
        );
    }
    let why = bad_config(&replaced("head_dim", "7"));
    assert!(
        why.contains("head_dim (7)") && why.contains("even"),
        "{why}"
    );
    let why = bad_config(&replaced("rms_norm_eps", "-1.0"));
    assert!(why.contains("rms_norm_eps"), "{why}");
    let why = bad_config(&replaced("model_type", "\"gpt2\""));
    assert!(why.contains("gpt2") && why.contains("qwen2"), "{why}");
    let why = bad_config(&replaced("hidden_size", "\"wide\""));
    assert!(why.contains("hidden_size") && why.contains("wide"), "{why}");
    let why = bad_config(&replaced("vocab_size", "100000000000000000"));
    assert!(why.contains("overflow") || why.contains("address"), "{why}");
    let why = bad_config(&replaced("eos_token_id", "\"end\""));
    assert!(why.contains("eos_token_id"), "{why}");

    // The same checks guard `init`.
    let mut config = small("llama");
    config.num_key_value_heads = 3;
    assert!(matches!(
        Llama::<NdArray>::init(&config, &Default::default()),
        Err(ModelError::BadConfig(_))
    ));
}

#[test]
fn llama3_scaling_changes_only_low_frequencies() {
    // Llama 3.1's parameters: every band is populated at d = 128.
    let (theta, d) = (500000.0, 128);
    let (factor, low, high, original) = (8.0, 1.0, 4.0, 8192.0);
    let default = inv_freq(
        &RopeConfig {
            theta,
            scaling: RopeScaling::Default,
        },
        d,
    );
    let scaled = inv_freq(
        &RopeConfig {
            theta,
            scaling: llama3(8192),
        },
        d,
    );
    assert_eq!(default.len(), d / 2);
    let mut bands = [0usize; 3];
    for i in 0..d / 2 {
        let direct = 1.0 / f64::powf(theta, 2.0 * i as f64 / d as f64);
        assert!((default[i] - direct).abs() <= 1e-15 * direct, "default {i}");
        let wavelen = 2.0 * std::f64::consts::PI / direct;
        if wavelen < original / high {
            assert_eq!(scaled[i], default[i], "high frequency {i} untouched");
            bands[0] += 1;
        } else if wavelen > original / low {
            assert!(
                (scaled[i] - direct / factor).abs() <= 1e-15 * direct,
                "low frequency {i}"
            );
            bands[2] += 1;
        } else {
            // Interpolated between slowed and kept, linearly in original / wavelen.
            let t = (original / wavelen - low) / (high - low);
            let want = direct / factor + t * (direct - direct / factor);
            assert!(
                (scaled[i] - want).abs() <= 1e-12 * direct,
                "medium frequency {i}"
            );
            assert!(scaled[i] < default[i] && scaled[i] > default[i] / factor);
            bands[1] += 1;
        }
    }
    assert!(bands.iter().all(|&n| n > 0), "bands {bands:?}");
}

#[test]
fn loader_errors_name_the_key() {
    let config = small("llama");
    let model = Llama::<NdArray>::init(&config, &Default::default()).unwrap();
    let fresh = || {
        let dir = TempDir::new("llama-errors");
        model.save(dir.path()).unwrap();
        dir
    };
    let load = |dir: &TempDir| Llama::<NdArray>::load(dir.path(), &Default::default());

    let dir = fresh();
    edit_weights(dir.path(), |e| {
        e.remove("model.layers.1.mlp.up_proj.weight");
    });
    match load(&dir) {
        Err(ModelError::MissingKey { key, path, .. }) => {
            assert_eq!(key, "model.layers.1.mlp.up_proj.weight");
            assert_eq!(path, dir.join(WEIGHTS_FILE));
        }
        other => panic!("expected MissingKey, got {:?}", other.map(|_| ())),
    }

    let dir = fresh();
    edit_weights(dir.path(), |e| {
        let k = e.get_mut("model.layers.0.self_attn.k_proj.weight").unwrap();
        k.shape = vec![8, 64];
    });
    match load(&dir) {
        Err(ModelError::WrongShape {
            key,
            expected,
            found,
            ..
        }) => {
            assert_eq!(key, "model.layers.0.self_attn.k_proj.weight");
            assert_eq!((expected, found), (vec![16, 32], vec![8, 64]));
        }
        other => panic!("expected WrongShape, got {:?}", other.map(|_| ())),
    }

    let dir = fresh();
    edit_weights(dir.path(), |e| {
        let norm = e["model.layers.1.input_layernorm.weight"].clone();
        e.insert("model.layers.2.input_layernorm.weight".into(), norm);
    });
    let err = load(&dir).map(|_| ()).unwrap_err();
    assert!(matches!(err, ModelError::ConfigMismatch { .. }), "{err:?}");
    assert!(
        err.to_string().contains("model.layers.2")
            && err.to_string().contains("num_hidden_layers = 2"),
        "{err}"
    );

    let dir = fresh();
    edit_weights(dir.path(), |e| {
        e.insert(
            "model.layers.0.self_attn.q_proj.bias".into(),
            Entry {
                dtype: Dtype::F32,
                shape: vec![32],
                data: vec![0; 128],
            },
        );
    });
    let err = load(&dir).map(|_| ()).unwrap_err();
    assert!(
        err.to_string().contains("q_proj.bias") && err.to_string().contains("attention_bias"),
        "{err}"
    );

    let dir = fresh();
    edit_weights(dir.path(), |e| {
        let w = e.get_mut("model.norm.weight").unwrap();
        w.data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    match load(&dir) {
        Err(ModelError::NonFiniteWeight { key, index, .. }) => {
            assert_eq!((key.as_str(), index), ("model.norm.weight", 1));
        }
        other => panic!("expected NonFiniteWeight, got {:?}", other.map(|_| ())),
    }
    let allowed = Llama::<NdArray>::load_with(
        dir.path(),
        &Default::default(),
        LoadOptions::new().allow_non_finite(true),
    )
    .unwrap();
    assert!(host(allowed.norm.weight.val())[1].is_nan());

    let dir = fresh();
    edit_config(dir.path(), |c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "longrope"}),
        );
    });
    let err = load(&dir).map(|_| ()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(CONFIG_FILE) && msg.contains("longrope"),
        "{msg}"
    );
}

/// `forward_unhooked` (every site compiled out) gives the logits of an
/// empty tree; `first_non_finite` passes over the mask's `-inf` in
/// `attn.qk_logits` and names the first site a NaN reaches.
fn unhooked_baseline_and_first_non_finite<B: Backend>() {
    let model = model::<B>(&small("mistral"));
    let batch = TokenBatch::left_padded(vec![tokens(5), tokens(3)], 0).unwrap();
    let want = logits(&model, &batch);
    assert_eq!(host(model.forward_unhooked(&batch).unwrap()), want.data);

    let mut hooks = LlamaHooks::<B>::default();
    assert_eq!(model.first_non_finite(&batch, &hooks).unwrap(), None);
    hooks.mlp.up.fwd.append(|x: Tensor<B, 3>, ctx: &Ctx<'_>| {
        if ctx.layer() == Some(1) {
            x.clone() / x.zeros_like() * 0.0
        } else {
            x
        }
    });
    let found = model
        .first_non_finite(&batch, &hooks)
        .unwrap()
        .expect("a NaN");
    assert_eq!((found.site.as_str(), found.layer), ("mlp.up", Some(1)));
    assert!(found.value.is_nan());
}
