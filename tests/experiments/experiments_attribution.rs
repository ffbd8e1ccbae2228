//! Attribution by activation × gradient on `Autodiff<NdArray>`, checked
//! against exact identities of the unembedding and the final norm, and the
//! effect of `detach_norm_scales` on gradients (not on the forward pass).

use crate::common;

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn_hooks::experiments::{
    ActivationCache, Attribution, CacheSpec, act_times_grad, detach_norm_scales,
};
use common::{HostTensor, host, load, max_abs_diff};
use hooks_core::{HookTree, path};
use hooks_model::backend::NdArray;
use hooks_model::{Gpt2, TokenBatch, TransformerHooks};

type AD = Autodiff<NdArray>;

/// The logit whose attribution is taken: logits[0, -1, T].
const T: usize = 42;

fn batch() -> TokenBatch {
    TokenBatch::new(vec![
        vec![3, 14, 15, 92, 65, 35],
        vec![89, 79, 32, 38, 46, 26],
    ])
    .unwrap()
}

fn metric(logits: Tensor<AD, 3>) -> Tensor<AD, 1> {
    logits.slice([0..1, 5..6, T..T + 1]).reshape([1])
}

fn the_logit(model: &Gpt2<AD>) -> f32 {
    HostTensor::of(
        model
            .forward(&batch(), &TransformerHooks::default())
            .unwrap(),
    )
    .at(&[0, 5, T])
}

fn find<'a>(rows: &'a [Attribution], key: &str) -> &'a Attribution {
    rows.iter()
        .find(|a| a.key == key)
        .unwrap_or_else(|| panic!("no attribution for `{key}`"))
}

#[test]
fn act_times_grad_at_the_logits_is_the_logit() {
    let model = load::<AD>("tiny");
    let logit = the_logit(&model);
    let spec = CacheSpec::new().site(&path!(TransformerHooks<AD>: logits));
    let rows =
        act_times_grad(&model, &batch(), TransformerHooks::default(), &spec, metric).unwrap();
    assert_eq!(rows.len(), 1);
    let a = &rows[0];
    assert_eq!(a.key, "logits");
    assert_eq!(a.activation.shape.to_vec(), [2, 6, 97]);
    assert_eq!(a.gradient.shape.to_vec(), [2, 6, 97]);
    // The gradient is one-hot, so act × grad is the logit at one place, 0 elsewhere.
    let nonzero: Vec<(usize, f32)> = a
        .act_x_grad
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, x)| *x != 0.0)
        .collect();
    assert_eq!(nonzero, [(5 * 97 + T, logit)]);
    assert_eq!(a.total, logit);
}

#[test]
fn act_times_grad_at_the_final_norm_output_sums_to_the_logit() {
    // logits = post_ln_f @ W_U with no bias: Σ act × grad is the logit itself.
    let model = load::<AD>("tiny");
    let logit = the_logit(&model);
    let spec = CacheSpec::new().glob("resid.post_ln_f").glob("logits");
    let rows =
        act_times_grad(&model, &batch(), TransformerHooks::default(), &spec, metric).unwrap();
    assert_eq!(rows.len(), 2);
    let a = find(&rows, "resid.post_ln_f");
    assert!((a.total - logit).abs() <= 1e-4, "{} vs {logit}", a.total);
    // Its gradient is column T of the unembedding, at [0, -1] only.
    let g = a.gradient.clone().convert::<f32>().to_vec::<f32>().unwrap();
    let w_u = HostTensor::of(model.unembed.val());
    for (i, &x) in g.iter().enumerate() {
        let (b, s, d) = (i / (6 * 32), (i / 32) % 6, i % 32);
        let expected = if (b, s) == (0, 5) {
            w_u.at(&[d, T])
        } else {
            0.0
        };
        assert!(
            (x - expected).abs() <= 1e-6,
            "grad at {b},{s},{d}: {x} vs {expected}"
        );
    }
    // Rows come largest |total| first.
    assert!(rows[0].total.abs() >= rows[1].total.abs());
}

/// Σ over d of ln_f.bias[d] * W_U[d, T]: what the final norm's bias adds to the logit.
fn bias_part(model: &Gpt2<AD>) -> f32 {
    let b = host(model.ln_f.bias.val());
    let w_u = HostTensor::of(model.unembed.val());
    (0..32).map(|d| b[d] * w_u.at(&[d, T])).sum()
}

#[test]
fn detaching_the_norm_scales_makes_the_final_norm_linear() {
    // At the input of ln_f (the last block's `post_mlp`), with c = x - mean(x)
    // and s = sqrt(mean(c²) + eps) at [0, -1]:
    //  - scales detached, the norm is affine: Σ act × grad = logit - bias part;
    //  - as is, it is nearly scale-invariant: Σ act × grad = (logit - bias part) · eps / s².
    let model = load::<AD>("tiny");
    let logit = the_logit(&model);
    let linear_part = logit - bias_part(&model);
    let eps = model.config.layer_norm_epsilon as f32;

    // s at [0, -1], recorded at `resid.ln_f.scale`.
    let mut hooks = TransformerHooks::<AD>::default();
    let scale =
        ActivationCache::install(&mut hooks, &CacheSpec::new().glob("resid.ln_f.scale")).unwrap();
    model.forward(&batch(), &hooks).unwrap();
    let s = HostTensor::of(scale.get::<3>("resid.ln_f.scale", None).unwrap()).at(&[0, 5, 0]);

    let spec = CacheSpec::new().glob("resid.torso.post_mlp").layers([1]);
    let plain =
        act_times_grad(&model, &batch(), TransformerHooks::default(), &spec, metric).unwrap();
    let mut detached_hooks = TransformerHooks::default();
    detach_norm_scales(&mut detached_hooks).unwrap();
    let detached = act_times_grad(&model, &batch(), detached_hooks, &spec, metric).unwrap();

    let key = "layers.1.resid.torso.post_mlp";
    let expected_plain = linear_part * eps / (s * s);
    let (p, d) = (find(&plain, key).total, find(&detached, key).total);
    assert!(
        (d - linear_part).abs() <= 1e-4 * (1.0 + linear_part.abs()),
        "{d} vs {linear_part}"
    );
    // Here eps / s² is about 1e-6: the sum cancels to a few 1e-6, so f32
    // rounding allows an absolute 1e-6.
    assert!(
        (p - expected_plain).abs() <= 1e-6,
        "{p} vs {expected_plain} (s = {s})"
    );
    assert!(p.abs() < 1e-4 * d.abs(), "{p} vs {d}");
    // The gradients differ, the activations do not.
    assert_eq!(
        find(&plain, key).activation,
        find(&detached, key).activation
    );
}

#[test]
fn detach_norm_scales_detaches_every_scale_and_keeps_the_forward_pass() {
    let model = load::<AD>("tiny");
    let mut hooks = TransformerHooks::<AD>::default();
    detach_norm_scales(&mut hooks).unwrap();
    for stage in [
        &hooks.resid.torso.ln_attn.scale.fwd,
        &hooks.resid.torso.ln_mlp.scale.fwd,
        &hooks.resid.ln_f.scale.fwd,
    ] {
        assert_eq!(stage.len(), 1);
        assert_eq!(stage.hooks()[0].name(), "Detach");
    }
    assert_eq!(hooks.render().matches("Detach").count(), 3);

    // The forward pass is unchanged, bit for bit.
    let plain = host(
        model
            .forward(&batch(), &TransformerHooks::default())
            .unwrap(),
    );
    assert_eq!(host(model.forward(&batch(), &hooks).unwrap()), plain);

    // All 2·n_layer + 1 scale calls are detached: with the scales detached no
    // gradient reaches them (5 forward recordings, 0 gradients); as is, 5.
    let spec = CacheSpec::new().glob("**.scale");
    let count = |mut hooks: TransformerHooks<AD>| {
        let cache = ActivationCache::install_with_grads(&mut hooks, &spec).unwrap();
        metric(model.forward(&batch(), &hooks).unwrap()).backward();
        (cache.recorder().len(), cache.grads().unwrap().len())
    };
    assert_eq!(count(TransformerHooks::default()), (5, 5));
    assert_eq!(count(hooks.clone()), (5, 0));
    let rows = act_times_grad(&model, &batch(), hooks.clone(), &spec, metric).unwrap();
    assert!(rows.is_empty(), "no gradient reaches a detached scale");
    let rows =
        act_times_grad(&model, &batch(), TransformerHooks::default(), &spec, metric).unwrap();
    assert_eq!(rows.len(), 5);

    // The gradient at the embedding output changes.
    let emb = CacheSpec::new().glob("resid.post_emb");
    let g_plain =
        act_times_grad(&model, &batch(), TransformerHooks::default(), &emb, metric).unwrap();
    let g_detached = act_times_grad(&model, &batch(), hooks, &emb, metric).unwrap();
    let to_vec = |a: &Attribution| a.gradient.clone().convert::<f32>().to_vec::<f32>().unwrap();
    let (gp, gd) = (to_vec(&g_plain[0]), to_vec(&g_detached[0]));
    assert_eq!(gp.len(), 2 * 6 * 32);
    assert!(
        max_abs_diff(&gp, &gd) > 1e-3,
        "detaching changes the gradient at resid.post_emb"
    );
    // Row 1 does not reach the metric either way.
    assert!(gp[6 * 32..].iter().chain(&gd[6 * 32..]).all(|&x| x == 0.0));
}

#[test]
fn act_times_grad_reports_only_sites_on_a_path_to_the_metric() {
    // A metric of the logits alone: the layer-0 sites all reach it; with a
    // layer filter only layer 1 is reported.
    let model = load::<AD>("tiny");
    let spec = CacheSpec::new().glob("attn.v_out").layers([1]);
    let rows =
        act_times_grad(&model, &batch(), TransformerHooks::default(), &spec, metric).unwrap();
    let keys: Vec<&str> = rows.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["layers.1.attn.v_out"]);
    let a = &rows[0];
    assert_eq!(a.activation.shape.to_vec(), [2, 6, 4, 8]);
    let sum: f32 = a.act_x_grad.iter().sum();
    assert_eq!(a.total, sum);

    // A bad glob is an error, not a panic.
    let err = act_times_grad(
        &model,
        &batch(),
        TransformerHooks::default(),
        &CacheSpec::new().glob("attn.v_outt"),
        metric,
    )
    .unwrap_err();
    assert!(err.to_string().contains("did you mean `v_out`?"), "{err}");
}
