//! Gradients seen by `bwd` hooks: finite differences, ablating gradient paths,
//! the order hooks fire in, and the fixture's reference gradients. Each runs on
//! `Autodiff<NdArray>` and `Autodiff<Flex>`.

use crate::common;

use std::sync::Arc;

use burn::backend::Autodiff;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use common::{CallLog, Calls, Expected, HostTensor, assert_close, host, load};
use hooks_core::{Ctx, HookTree, Site};
use hooks_model::{Gpt2, Gpt2Config, TokenBatch, TransformerHooks};

on_both_autodiff_backends!(
    post_attn_gradient_matches_finite_differences,
    zeroing_v_gradient_removes_value_path,
    zeroing_post_emb_gradient_zeroes_embedding_grads,
    grad_hooks_fire_in_reverse_layer_order,
    grad_hooks_fire_in_reverse_layer_order_on_init_model,
    recorded_gradients_match_fixture,
);

const TARGET: usize = 5;

/// Σ_b log_softmax(logits[b, -1])[TARGET], on the tensor graph.
fn loss<B: Backend>(logits: Tensor<B, 3>) -> Tensor<B, 1> {
    let [b, s, v] = logits.dims();
    let last = logits.slice([0..b, s - 1..s, 0..v]);
    log_softmax(last, 2)
        .slice([0..b, 0..1, TARGET..TARGET + 1])
        .sum()
}

/// The same loss on the host, accumulated in f64.
fn host_loss(logits: &HostTensor) -> f64 {
    let [b, s, v] = [logits.shape[0], logits.shape[1], logits.shape[2]];
    (0..b)
        .map(|row| {
            let l: Vec<f64> = (0..v)
                .map(|i| f64::from(logits.at(&[row, s - 1, i])))
                .collect();
            let max = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + l.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            l[TARGET] - lse
        })
        .sum()
}

/// Appends a gradient hook recording `(ctx.layer(), gradient)`.
fn record_grad<B: AutodiffBackend, const D: usize>(
    site: &mut Site<B, D>,
) -> Calls<B::InnerBackend, D> {
    let calls: Calls<B::InnerBackend, D> = Arc::default();
    let c = calls.clone();
    site.append_bwd(move |g: Tensor<B::InnerBackend, D>, ctx: &Ctx<'_>| {
        c.lock().unwrap().push((ctx.layer(), g.clone()));
        g
    });
    calls
}

fn grad_at<B: Backend, const D: usize>(calls: &Calls<B, D>, layer: Option<usize>) -> HostTensor {
    common::at_layer(calls, layer)
}

fn batch() -> TokenBatch {
    TokenBatch::new(vec![
        vec![3, 14, 15, 92, 65, 35],
        vec![89, 79, 32, 38, 46, 26],
    ])
    .unwrap()
}

fn post_attn_gradient_matches_finite_differences<B: AutodiffBackend>() {
    let model = load::<B>("tiny");
    let batch = batch();
    let (bs, s, d) = (2, 6, 32);
    let mut hooks = TransformerHooks::<B>::default();
    let grads = record_grad(&mut hooks.resid.torso.post_attn);
    let logits = model.forward(&batch, &hooks).unwrap();
    let base = host_loss(&HostTensor::of(logits.clone()));
    let l = loss(logits);
    assert!((f64::from(l.clone().into_scalar().elem::<f32>()) - base).abs() < 1e-4);
    l.backward();
    assert_eq!(
        grads
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        vec![Some(1), Some(0)],
        "one gradient call per layer, last layer first"
    );

    // Loss as a function of the site's value at `layer`, with `delta` added at `coord`.
    let perturbed = |layer: usize, coord: [usize; 3], delta: f32| -> f64 {
        let mut hooks = TransformerHooks::<B>::default();
        let mut one_hot = vec![0.0f32; bs * s * d];
        one_hot[(coord[0] * s + coord[1]) * d + coord[2]] = delta;
        hooks
            .resid
            .torso
            .post_attn
            .fwd
            .append(move |x: Tensor<B, 3>, ctx: &Ctx<'_>| {
                if ctx.layer() == Some(layer) {
                    let dims = x.dims();
                    x.clone()
                        + Tensor::from_data(TensorData::new(one_hot.clone(), dims), &x.device())
                } else {
                    x
                }
            });
        host_loss(&HostTensor::of(model.forward(&batch, &hooks).unwrap()))
    };
    let eps = 1e-2f32;
    let fd = |layer: usize, coord: [usize; 3]| {
        (perturbed(layer, coord, eps) - perturbed(layer, coord, -eps)) / (2.0 * f64::from(eps))
    };

    for layer in [1, 0] {
        let g = grad_at(&grads, Some(layer));
        assert_eq!(g.shape, vec![bs, s, d]);
        if layer == 1 {
            // Only the last position reaches the loss from the last layer's residual.
            for b in 0..bs {
                for t in 0..s - 1 {
                    for i in 0..d {
                        assert_eq!(g.at(&[b, t, i]), 0.0, "layer 1 grad at {b},{t},{i}");
                    }
                }
            }
            assert_eq!(
                fd(1, [0, 2, 7]),
                0.0,
                "an earlier position does not move the loss"
            );
        }
        // The largest few coordinates, and a few fixed ones (an earlier position in layer 0).
        let mut coords: Vec<[usize; 3]> = Vec::new();
        let mut order: Vec<usize> = (0..g.data.len()).collect();
        order.sort_by(|&a, &b| g.data[b].abs().total_cmp(&g.data[a].abs()));
        for &flat in order.iter().take(3) {
            coords.push([flat / (s * d), flat / d % s, flat % d]);
        }
        coords.push([1, s - 1, 11]);
        if layer == 0 {
            coords.push([0, 2, 5]);
            coords.push([1, 0, 30]);
        }
        for c in coords {
            let want = fd(layer, c);
            let got = f64::from(g.at(&c));
            assert!(
                (got - want).abs() <= 1e-2 * want.abs().max(got.abs()) + 2e-4,
                "layer {layer} {c:?}: recorded gradient {got}, finite difference {want}"
            );
        }
        // The gradient is far from zero where it matters.
        assert!(
            g.data.iter().any(|x| x.abs() > 0.05),
            "layer {layer}: gradient too small to test"
        );
    }
}

/// Max |x| over a column range of a `[rows, cols]` host tensor.
fn max_abs_cols(t: &HostTensor, cols: std::ops::Range<usize>) -> f32 {
    let mut m = 0.0f32;
    for r in 0..t.shape[0] {
        for c in cols.clone() {
            m = m.max(t.at(&[r, c]).abs());
        }
    }
    m
}

fn zeroing_v_gradient_removes_value_path<B: AutodiffBackend>() {
    let model = load::<B>("tiny");
    let d = 32;
    let batch = batch();
    let run = |zero_v: bool| {
        let mut hooks = TransformerHooks::<B>::default();
        if zero_v {
            hooks
                .attn
                .v
                .append_bwd(|g: Tensor<B::InnerBackend, 4>, _: &Ctx<'_>| g.zeros_like());
        }
        let grads = loss(model.forward(&batch, &hooks).unwrap()).backward();
        (0..2)
            .map(|i| {
                let c = &model.blocks[i].attn.c_attn;
                let w = c.weight.val().grad(&grads).expect("c_attn weight grad");
                let b = c
                    .bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .grad(&grads)
                    .expect("c_attn bias grad");
                (HostTensor::of(w), host(b))
            })
            .collect::<Vec<_>>()
    };
    let plain = run(false);
    let zeroed = run(true);
    for layer in 0..2 {
        let (w, b) = &zeroed[layer];
        assert_eq!(w.shape, vec![d, 3 * d]);
        assert_eq!(
            max_abs_cols(w, 2 * d..3 * d),
            0.0,
            "layer {layer}: v columns of c_attn.weight"
        );
        assert!(
            b[2 * d..].iter().all(|&x| x == 0.0),
            "layer {layer}: v part of c_attn.bias"
        );
        assert!(
            max_abs_cols(w, 0..d) > 1e-4,
            "layer {layer}: q columns keep a gradient"
        );
        assert!(
            max_abs_cols(w, d..2 * d) > 1e-4,
            "layer {layer}: k columns keep a gradient"
        );
        // Without the hook the value path carries a gradient.
        assert!(
            max_abs_cols(&plain[layer].0, 2 * d..3 * d) > 1e-4,
            "layer {layer}: plain v columns"
        );
    }
    // Layer 0's q/k gradient partly flows back through layer 1's values, so it changes too.
    assert!(common::max_abs_diff(&plain[0].0.data, &zeroed[0].0.data) > 1e-6);
}

fn zeroing_post_emb_gradient_zeroes_embedding_grads<B: AutodiffBackend>() {
    let model = load::<B>("tiny");
    let batch = batch();
    let run = |zero: bool| {
        let mut hooks = TransformerHooks::<B>::default();
        if zero {
            hooks
                .resid
                .post_emb
                .append_bwd(|g: Tensor<B::InnerBackend, 3>, _: &Ctx<'_>| g.zeros_like());
        }
        let grads = loss(model.forward(&batch, &hooks).unwrap()).backward();
        let wte = host(model.wte.val().grad(&grads).expect("wte grad"));
        let wpe = host(model.wpe.val().grad(&grads).expect("wpe grad"));
        let unembed = host(model.unembed.val().grad(&grads).expect("unembed grad"));
        let c_fc = host(
            model.blocks[0]
                .mlp
                .c_fc
                .weight
                .val()
                .grad(&grads)
                .expect("c_fc grad"),
        );
        (wte, wpe, unembed, c_fc)
    };
    let (wte, wpe, unembed, c_fc) = run(true);
    assert_eq!(wte.len(), 97 * 32);
    assert_eq!(wpe.len(), 16 * 32);
    assert!(wte.iter().all(|&x| x == 0.0), "wte grad must be zero");
    assert!(wpe.iter().all(|&x| x == 0.0), "wpe grad must be zero");
    // Paths that do not go through the embedding are untouched.
    let (p_wte, p_wpe, p_unembed, p_c_fc) = run(false);
    assert_eq!(
        unembed, p_unembed,
        "the unembedding gradient does not pass post_emb"
    );
    assert_eq!(
        c_fc, p_c_fc,
        "block weights' gradients do not pass post_emb"
    );
    assert!(
        p_wte.iter().any(|x| x.abs() > 1e-4),
        "without the hook wte has a gradient"
    );
    assert!(
        p_wpe.iter().any(|x| x.abs() > 1e-4),
        "without the hook wpe has a gradient"
    );
    // Unused positions (>= 6) and unused tokens get no gradient even then.
    assert!(p_wpe[6 * 32..].iter().all(|&x| x == 0.0));
    assert!(
        p_wte[..32].iter().all(|&x| x == 0.0),
        "token 0 is not in the batch"
    );
}

fn check_reverse_order<B: AutodiffBackend>(model: &Gpt2<B>, n_layer: usize) {
    let log = CallLog::default();
    let mut hooks = TransformerHooks::<B>::default();
    hooks.append_all_grad(log.clone());
    let logits = model.forward(&batch(), &hooks).unwrap();
    assert!(
        log.calls().is_empty(),
        "gradient hooks do not run in the forward pass"
    );
    loss(logits).backward();
    let calls = log.calls();
    assert_eq!(
        calls.len(),
        6 + 21 * n_layer,
        "every site's gradient hook fires once: {calls:?}"
    );
    assert_eq!(calls[0], ("logits".to_string(), None));
    assert_eq!(calls.last().unwrap(), &("resid.post_emb".to_string(), None));
    let layers: Vec<usize> = calls.iter().filter_map(|c| c.1).collect();
    assert_eq!(layers.len(), 21 * n_layer);
    assert!(
        layers.windows(2).all(|w| w[0] >= w[1]),
        "layers in reverse order: {layers:?}"
    );
    assert_eq!(layers[0], n_layer - 1);
    assert_eq!(*layers.last().unwrap(), 0);
    // Sites outside the blocks carry no layer.
    for (site, layer) in &calls {
        let outside = site == "logits"
            || site == "resid.post_emb"
            || site.starts_with("resid.ln_f")
            || site == "resid.post_ln_f";
        assert_eq!(layer.is_none(), outside, "{site}: layer {layer:?}");
    }
}

fn grad_hooks_fire_in_reverse_layer_order<B: AutodiffBackend>() {
    check_reverse_order(&load::<B>("untied"), 3);
}

fn grad_hooks_fire_in_reverse_layer_order_on_init_model<B: AutodiffBackend>() {
    let config = Gpt2Config::new(3, 16, 2, 8, 100);
    let model = Gpt2::<B>::init(&config, &Default::default()).expect("init");
    check_reverse_order(&model, 3);
    // The initialised model trains: every parameter gets a gradient.
    let grads = loss(model.forward(&batch(), &Default::default()).unwrap()).backward();
    assert!(
        model.unembed.val().grad(&grads).is_some(),
        "unembed is a trainable parameter"
    );
    assert!(model.wte.val().grad(&grads).is_some());
}

fn recorded_gradients_match_fixture<B: AutodiffBackend>() {
    let model = load::<B>("tiny");
    let expected = Expected::of("tiny");
    assert_eq!(expected.i64("grad_target").1, vec![TARGET as i64]);
    let tokens = expected.tokens();
    let mut hooks = TransformerHooks::<B>::default();
    let logits_g = record_grad(&mut hooks.logits);
    let post_act_g = record_grad(&mut hooks.mlp.post_act);
    let pre_act_g = record_grad(&mut hooks.mlp.pre_act);
    let post_emb_g = record_grad(&mut hooks.resid.post_emb);
    let post_attn_g = record_grad(&mut hooks.resid.torso.post_attn);
    let post_mlp_g = record_grad(&mut hooks.resid.torso.post_mlp);
    let delta_attn_g = record_grad(&mut hooks.resid.torso.delta_attn);
    let delta_mlp_g = record_grad(&mut hooks.resid.torso.delta_mlp);
    let ln_1_g = record_grad(&mut hooks.resid.torso.post_ln_attn);
    let ln_2_g = record_grad(&mut hooks.resid.torso.post_ln_mlp);
    let probs_g = record_grad(&mut hooks.attn.qk_probs);
    let ln_f_g = record_grad(&mut hooks.resid.post_ln_f);

    let backend = common::backend_name::<B>();
    let logits = model.forward(&tokens, &hooks).unwrap();
    let forward = |what: &str, got: HostTensor| {
        expected.assert_near(&format!("tiny {backend}: {what}"), what, &got);
    };
    forward("logits", HostTensor::of(logits.clone()));
    let l = loss(logits);
    let got_loss: f32 = l.clone().into_scalar().elem();
    forward(
        "loss",
        HostTensor {
            shape: vec![1],
            data: vec![got_loss],
        },
    );
    let grads = l.backward();

    // Gradients through a division are scaled by the inner backend's `recip`,
    // an estimate on NdArray: allow its measured accuracy.
    let recip = common::recip_rel_error::<B::InnerBackend>();
    println!("tiny {backend}: recip relative error {recip:.3e}");
    let check = |what: &str, got: HostTensor, key: &str| {
        expected.assert_near_with(&format!("tiny {backend}: {what}"), key, &got, recip);
    };

    check("logits grad", grad_at(&logits_g, None), "logits.grad");
    check("post_ln_f grad", grad_at(&ln_f_g, None), "ln_f.grad");
    check("post_emb grad", grad_at(&post_emb_g, None), "hidden.0.grad");
    for i in 0..2 {
        let l = Some(i);
        check(
            &format!("post_act {i} grad"),
            grad_at(&post_act_g, l),
            &format!("post_act.{i}.grad"),
        );
        check(
            &format!("pre_act {i} grad"),
            grad_at(&pre_act_g, l),
            &format!("pre_act.{i}.grad"),
        );
        check(
            &format!("post_attn {i} grad"),
            grad_at(&post_attn_g, l),
            &format!("resid_mid.{i}.grad"),
        );
        check(
            &format!("delta_attn {i} grad"),
            grad_at(&delta_attn_g, l),
            &format!("delta_attn.{i}.grad"),
        );
        check(
            &format!("delta_mlp {i} grad"),
            grad_at(&delta_mlp_g, l),
            &format!("delta_mlp.{i}.grad"),
        );
        check(
            &format!("ln_1 {i} grad"),
            grad_at(&ln_1_g, l),
            &format!("ln_1.{i}.grad"),
        );
        check(
            &format!("ln_2 {i} grad"),
            grad_at(&ln_2_g, l),
            &format!("ln_2.{i}.grad"),
        );
        check(
            &format!("qk_probs {i} grad"),
            grad_at(&probs_g, l),
            &format!("attn_probs.{i}.grad"),
        );
    }
    check(
        "post_mlp 0 grad",
        grad_at(&post_mlp_g, Some(0)),
        "hidden.1.grad",
    );
    check(
        "post_mlp 1 grad",
        grad_at(&post_mlp_g, Some(1)),
        "resid_final.grad",
    );
    let c_fc = model.blocks[0]
        .mlp
        .c_fc
        .weight
        .val()
        .grad(&grads)
        .expect("c_fc grad");
    check(
        "h.0.mlp.c_fc.weight grad",
        HostTensor::of(c_fc),
        "param_grad.h.0.mlp.c_fc.weight",
    );

    // The logits gradient is softmax - onehot at the last position, zero elsewhere.
    let g = grad_at(&logits_g, None);
    assert!((0..2).all(|b| (0..11).all(|s| (0..97).all(|v| g.at(&[b, s, v]) == 0.0))));
    // d/dz_T (z_T - logsumexp z) = 1 - p_T, and -p_i elsewhere: each row sums to 0.
    for b in 0..2 {
        let t = g.at(&[b, 11, TARGET]);
        assert!(t > 0.0 && t < 1.0, "row {b}: gradient at the target is {t}");
        let sum: f32 = (0..97).map(|v| g.at(&[b, 11, v])).sum();
        assert!(sum.abs() < 1e-5, "row {b}: gradient sums to {sum}");
        assert!(
            (0..97)
                .filter(|&v| v != TARGET)
                .all(|v| g.at(&[b, 11, v]) < 0.0)
        );
    }
}

#[test]
fn grad_hooks_compile_only_for_autodiff_and_work_on_plain_autodiff_alias() {
    // `Autodiff<NdArray>` named directly (not through the crate's alias).
    type Ad = Autodiff<hooks_model::backend::NdArray>;
    let model = load::<Ad>("tiny");
    let mut hooks = TransformerHooks::<Ad>::default();
    // A gradient hook that doubles the logits gradient doubles every parameter gradient.
    hooks
        .logits
        .append_bwd(|g: Tensor<hooks_model::backend::NdArray, 3>, _: &Ctx<'_>| g * 2.0);
    let doubled = loss(model.forward(&batch(), &hooks).unwrap()).backward();
    let plain = loss(model.forward(&batch(), &Default::default()).unwrap()).backward();
    let w = |g| host(model.blocks[1].mlp.c_proj.weight.val().grad(g).unwrap());
    let (d, p) = (w(&doubled), w(&plain));
    let twice: Vec<f32> = p.iter().map(|x| x * 2.0).collect();
    assert_close("doubled c_proj grad", &d, &twice, 1e-7, 1e-6);
    assert!(p.iter().any(|x| x.abs() > 1e-4));
}
