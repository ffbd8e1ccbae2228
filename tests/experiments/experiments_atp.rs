//! Attribution patching (`attribution_patching`) on GPT-2 and a Qwen2:
//! the estimates are the first-order term of the patching effect (central
//! finite differences along the clean − corrupted direction), exact on a
//! linear site, exact through the softmax with the QK fix (against the
//! probabilities of real patched runs), additive over heads and positions;
//! bad input is an error. And the per-head patching table.

use std::borrow::Cow;
use std::ops::Range;

use burn::backend::Autodiff;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use burn_hooks::experiments::{
    ActivationCache, AtpOptions, AtpTable, CacheSpec, attribution_patching, patching_table,
    patching_table_per_head, patching_table_per_position,
};
use hooks_core::{AnyRankHook, Ctx, HookTree, Record, Recorder};
use hooks_model::backend::NdArray;
use hooks_model::{HookedModel, Llama, ModelError, TokenBatch};

use crate::common::{fixture, host, load};

type B = Autodiff<NdArray>;

fn clean() -> TokenBatch {
    TokenBatch::new(vec![
        vec![3, 14, 15, 92, 65, 35],
        vec![89, 79, 32, 38, 46, 26],
    ])
    .unwrap()
}

/// `clean` with positions 1 and 2 of each row changed.
fn corrupted() -> TokenBatch {
    TokenBatch::new(vec![
        vec![3, 40, 60, 92, 65, 35],
        vec![89, 8, 11, 38, 46, 26],
    ])
    .unwrap()
}

/// Mean over rows of logit 5 − logit 7 at the last position: linear in the logits.
fn logit_diff<Bk: Backend>(l: Tensor<Bk, 3>) -> Tensor<Bk, 1> {
    let [b, s, _] = l.dims();
    let a = l.clone().slice([0..b, s - 1..s, 5..6]);
    let c = l.slice([0..b, s - 1..s, 7..8]);
    (a - c).mean().reshape([1])
}

/// Mean log-probability of token 9 at the last two positions: nonlinear.
fn log_prob<Bk: Backend>(l: Tensor<Bk, 3>) -> Tensor<Bk, 1> {
    let [b, s, v] = l.dims();
    log_softmax(l.slice([0..b, s - 2..s, 0..v]), 2)
        .slice([0..b, 0..2, 9..10])
        .mean()
        .reshape([1])
}

fn value(m: Tensor<B, 1>) -> f32 {
    m.into_scalar().elem::<f32>()
}

/// Moves a site's value at one layer a fraction `eps` of the way to the
/// recorded clean value (`eps = 1`: patches it), on a slice: one index of
/// `axis` (a head) and/or one position, or everything.
#[derive(Clone)]
struct Towards {
    clean: Recorder<B>,
    layer: Option<usize>,
    eps: f32,
    head: Option<(usize, usize)>,
    position: Option<usize>,
}

impl AnyRankHook<B> for Towards {
    fn call<const D: usize>(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        if ctx.layer() != self.layer {
            return x;
        }
        let src = self
            .clean
            .get::<D>(ctx.site().unwrap(), ctx.layer())
            .expect("recorded on the clean run");
        let moved = if self.eps == 1.0 {
            src
        } else {
            x.clone() + (src - x.clone()) * self.eps
        };
        let dims = x.dims();
        let ranges: [Range<usize>; D] = std::array::from_fn(|i| match (self.head, self.position) {
            (Some((axis, h)), _) if i == axis => h..h + 1,
            (_, Some(p)) if i == 1 => p..p + 1,
            _ => 0..dims[i],
        });
        x.slice_assign(ranges.clone(), moved.slice(ranges))
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed("Towards")
    }
}

/// Every site of `model` recorded on `batch`.
fn record_all<M: HookedModel<B>>(model: &M, batch: &TokenBatch) -> Recorder<B> {
    let rec = Recorder::new();
    let mut hooks = M::Hooks::default();
    hooks.append_all(hooks_core::FwdStage::Fwd, Record::into(&rec));
    model.forward(batch, &hooks).unwrap();
    rec
}

/// The corrupted run with `site` at `layer` moved `eps` towards the clean
/// value (on a slice); `extra` adds hooks after it.
#[allow(clippy::too_many_arguments)]
fn moved<M: HookedModel<B>>(
    model: &M,
    clean: &Recorder<B>,
    site: &str,
    layer: Option<usize>,
    eps: f32,
    head: Option<(usize, usize)>,
    position: Option<usize>,
    extra: impl FnOnce(&mut M::Hooks),
) -> Tensor<B, 3> {
    let mut hooks = M::Hooks::default();
    hooks
        .append_to_path(
            &format!("{site}.fwd"),
            Towards {
                clean: clean.clone(),
                layer,
                eps,
                head,
                position,
            },
        )
        .unwrap();
    extra(&mut hooks);
    model.forward(&corrupted(), &hooks).unwrap()
}

/// d/dε metric(corrupted with the slice moved ε towards clean) at ε = 0, by
/// a central difference.
#[allow(clippy::too_many_arguments)]
fn finite_difference<M: HookedModel<B>>(
    model: &M,
    clean: &Recorder<B>,
    site: &str,
    layer: Option<usize>,
    head: Option<(usize, usize)>,
    position: Option<usize>,
    metric: fn(Tensor<B, 3>) -> Tensor<B, 1>,
) -> f32 {
    let eps = 1e-2;
    let at = |e: f32| {
        value(metric(moved(
            model,
            clean,
            site,
            layer,
            e,
            head,
            position,
            |_| (),
        )))
    };
    (at(eps) - at(-eps)) / (2.0 * eps)
}

fn assert_near(what: &str, actual: f32, expected: f32, atol: f32, rtol: f32) {
    assert!(
        (actual - expected).abs() <= atol + rtol * expected.abs(),
        "{what}: {actual} vs {expected}"
    );
}

/// A site, layer, (head axis, head) and position.
type Cell<'a> = (
    &'a str,
    Option<usize>,
    Option<(usize, usize)>,
    Option<usize>,
);

/// Checks estimates at a few cells against finite differences (plain AtP).
fn first_order_term<M: HookedModel<B>>(model: &M, cells: &[Cell]) {
    let table = attribution_patching(
        model,
        &clean(),
        &corrupted(),
        &[],
        log_prob::<B>,
        AtpOptions::linear(),
    )
    .unwrap();
    let rec = record_all(model, &clean());
    for &(site, layer, head, position) in cells {
        let est = table
            .estimate(site, layer, head.map(|h| h.1), position)
            .unwrap_or_else(|| panic!("no row for {site} {layer:?}"));
        let fd = finite_difference(model, &rec, site, layer, head, position, log_prob::<B>);
        assert!(
            fd.abs() > 1e-4,
            "{site} {layer:?} {head:?} {position:?}: effect {fd} too small to test"
        );
        assert_near(
            &format!("{site} {layer:?} {head:?} {position:?}"),
            est,
            fd,
            2e-4,
            2e-2,
        );
    }
}

#[test]
fn gpt2_estimates_are_the_first_order_term() {
    let model = load::<B>("tiny");
    first_order_term(
        &model,
        &[
            ("attn.v_out", Some(1), None, None),
            ("attn.v_out", Some(0), Some((2, 2)), Some(2)),
            ("attn.k", Some(1), Some((2, 1)), None),
            ("attn.q", Some(1), Some((2, 3)), Some(5)),
            ("attn.qk_probs", Some(1), Some((3, 0)), None),
            ("mlp.post_act", Some(0), None, None),
            ("resid.torso.post_attn", Some(0), None, Some(2)),
            ("resid.post_emb", None, None, Some(1)),
        ],
    );
}

#[test]
fn qwen2_estimates_are_the_first_order_term() {
    let model = Llama::<B>::load(fixture("llama/qwen2"), &Default::default()).unwrap();
    first_order_term(
        &model,
        &[
            ("attn.v_out", Some(1), None, None),
            ("attn.k", Some(1), Some((2, 1)), Some(2)),
            ("attn.v", Some(0), Some((2, 0)), None),
            ("mlp.up", Some(0), None, None),
            ("resid.torso.post_mlp", Some(0), None, Some(1)),
        ],
    );
}

/// On `resid.post_ln_f` and `logits`, with a metric linear in the logits,
/// AtP is the patching effect itself (whole site and per position), and
/// positions the metric does not read get exactly zero.
fn exact_on_linear_sites<M: HookedModel<B>>(model: &M) {
    let sites = ["resid.post_ln_f", "logits"];
    let table = attribution_patching(
        model,
        &clean(),
        &corrupted(),
        &sites,
        logit_diff::<B>,
        AtpOptions::default(),
    )
    .unwrap();
    let (real, clean_m, corrupted_m) = patching_table(model, &clean(), &corrupted(), &sites, |l| {
        value(logit_diff(l))
    })
    .unwrap();
    assert_near("clean metric", table.clean_metric, clean_m, 1e-5, 1e-5);
    assert_near(
        "corrupted metric",
        table.corrupted_metric,
        corrupted_m,
        1e-5,
        1e-5,
    );
    assert!(
        (clean_m - corrupted_m).abs() > 0.01,
        "the corruption changes the metric"
    );
    for row in &real {
        let est = table.estimate(&row.site, row.layer, None, None).unwrap();
        assert_near(&row.site, est, row.metric - corrupted_m, 1e-4, 1e-4);
    }
    let rec = record_all(model, &clean());
    for site in sites {
        for p in 0..6 {
            let est = table.estimate(site, None, None, Some(p)).unwrap();
            if p < 5 {
                assert_eq!(est, 0.0, "{site} position {p}");
            } else {
                let m = value(logit_diff(moved(
                    model,
                    &rec,
                    site,
                    None,
                    1.0,
                    None,
                    Some(p),
                    |_| (),
                )));
                assert_near(site, est, m - corrupted_m, 1e-4, 1e-4);
            }
        }
    }
}

#[test]
fn gpt2_exact_on_linear_sites() {
    exact_on_linear_sites(&load::<B>("tiny"));
}

#[test]
fn qwen2_exact_on_linear_sites() {
    exact_on_linear_sites(&Llama::<B>::load(fixture("llama/qwen2"), &Default::default()).unwrap());
}

/// With the QK fix, the estimate for one query, key or logit row is
/// Σ (p' − p) · ∂m/∂p with p' the attention probabilities of the real run
/// with that slice patched: exact through the softmax.
fn qk_fix_is_exact_through_the_softmax<M: HookedModel<B>>(
    model: &M,
    cells: &[(&str, usize, usize, usize)],
) {
    let table = attribution_patching(
        model,
        &clean(),
        &corrupted(),
        &["attn.q", "attn.k", "attn.qk_logits"],
        log_prob::<B>,
        AtpOptions::default(),
    )
    .unwrap();
    assert_eq!(table.qk_fixed, ["attn.q", "attn.k", "attn.qk_logits"]);
    let linear = attribution_patching(
        model,
        &clean(),
        &corrupted(),
        &["attn.q", "attn.k", "attn.qk_logits"],
        log_prob::<B>,
        AtpOptions::linear(),
    )
    .unwrap();
    assert!(linear.qk_fixed.is_empty());
    // p and ∂m/∂p on the corrupted run.
    let mut hooks = M::Hooks::default();
    let cache =
        ActivationCache::install_with_grads(&mut hooks, &CacheSpec::new().glob("attn.qk_probs"))
            .unwrap();
    let _ = log_prob(model.forward(&corrupted(), &hooks).unwrap()).backward();
    let rec = record_all(model, &clean());
    for &(site, layer, head, position) in cells {
        let p = host(
            cache
                .get::<4>("attn.qk_probs", Some(layer))
                .unwrap()
                .inner(),
        );
        let g = host(cache.grad::<4>("attn.qk_probs", Some(layer)).unwrap());
        let patched = Recorder::<B>::new();
        let head_axis = if site == "attn.qk_logits" { 3 } else { 2 };
        moved(
            model,
            &rec,
            site,
            Some(layer),
            1.0,
            Some((head_axis, head)),
            Some(position),
            |h| {
                h.append_to_path("attn.qk_probs.fwd", Record::into(&patched))
                    .unwrap();
            },
        );
        let p_new = host(patched.get::<4>("attn.qk_probs", Some(layer)).unwrap());
        let expected: f32 = p_new
            .iter()
            .zip(&p)
            .zip(&g)
            .map(|((a, b), g)| (a - b) * g)
            .sum();
        let what = format!("{site} layer {layer} head {head} position {position}");
        assert!(
            expected.abs() > 1e-5,
            "{what}: effect {expected} too small to test"
        );
        let est = table
            .estimate(site, Some(layer), Some(head), Some(position))
            .unwrap();
        assert_near(&what, est, expected, 1e-6, 2e-4);
        let lin = linear
            .estimate(site, Some(layer), Some(head), Some(position))
            .unwrap();
        assert!(
            (lin - est).abs() > 1e-7,
            "{what}: the fix changes the estimate ({lin} vs {est})"
        );
    }
}

#[test]
fn gpt2_qk_fix_is_exact_through_the_softmax() {
    qk_fix_is_exact_through_the_softmax(
        &load::<B>("tiny"),
        &[
            ("attn.k", 1, 2, 1),
            ("attn.k", 0, 0, 2),
            ("attn.q", 1, 3, 5),
            ("attn.qk_logits", 1, 1, 4),
        ],
    );
}

#[test]
fn qwen2_qk_fix_is_exact_through_the_softmax() {
    // kv head 1 is read by query heads 2 and 3.
    qk_fix_is_exact_through_the_softmax(
        &Llama::<B>::load(fixture("llama/qwen2"), &Default::default()).unwrap(),
        &[
            ("attn.k", 1, 1, 2),
            ("attn.k", 0, 0, 1),
            ("attn.q", 1, 2, 5),
            ("attn.qk_logits", 0, 3, 3),
        ],
    );
}

/// Row counts per site and the sums: heads and positions add up to the
/// whole site, for linear and QK-fixed sites.
fn rows_add_up<M: HookedModel<B>>(model: &M, heads: usize, kv_heads: usize) -> AtpTable {
    let sites = [
        "attn.q",
        "attn.k",
        "attn.v_out",
        "attn.qk_probs",
        "mlp.post_act",
        "logits",
    ];
    let table = attribution_patching(
        model,
        &clean(),
        &corrupted(),
        &sites,
        log_prob::<B>,
        AtpOptions::default(),
    )
    .unwrap();
    let count = |site: &str| table.rows.iter().filter(|r| r.site == site).count();
    assert_eq!(count("attn.q"), 2 * heads * 6);
    assert_eq!(count("attn.k"), 2 * kv_heads * 6);
    assert_eq!(count("attn.v_out"), 2 * heads * 6);
    assert_eq!(count("attn.qk_probs"), 2 * heads * 6);
    assert_eq!(count("mlp.post_act"), 2 * 6);
    assert_eq!(count("logits"), 6);
    assert!(table.rows.iter().all(|r| r.estimate.is_finite()));
    let whole = table.by_site_layer();
    assert_eq!(whole.len(), 5 * 2 + 1);
    let by_head = table.by_head();
    assert_eq!(
        by_head.len(),
        2 * (2 * heads + kv_heads) + 2 * heads + 2 + 1
    );
    let by_position = table.by_position();
    assert_eq!(by_position.len(), whole.len() * 6);
    for w in &whole {
        let heads: f32 = by_head
            .iter()
            .filter(|r| r.site == w.site && r.layer == w.layer)
            .map(|r| r.estimate)
            .sum();
        let positions: f32 = by_position
            .iter()
            .filter(|r| r.site == w.site && r.layer == w.layer)
            .map(|r| r.estimate)
            .sum();
        assert!(w.head.is_none() && w.position.is_none());
        assert_near(&w.site, heads, w.estimate, 1e-6, 1e-5);
        assert_near(&w.site, positions, w.estimate, 1e-6, 1e-5);
    }
    // Tensors: [positions, heads] per site and layer.
    let tensors = table.tensors();
    let shape = |key: &str| {
        tensors
            .iter()
            .find(|(k, _)| k == key)
            .unwrap()
            .1
            .shape
            .to_vec()
    };
    assert_eq!(shape("layers.1.attn.k"), [6, kv_heads]);
    assert_eq!(shape("layers.0.attn.q"), [6, heads]);
    assert_eq!(shape("layers.1.mlp.post_act"), [6]);
    assert_eq!(shape("logits"), [6]);
    assert_eq!(tensors.len(), whole.len());
    let k1: Vec<f32> = tensors
        .iter()
        .find(|(k, _)| k == "layers.1.attn.k")
        .unwrap()
        .1
        .to_vec()
        .unwrap();
    assert_eq!(
        k1[3 * kv_heads + 1],
        table.estimate("attn.k", Some(1), Some(1), Some(3)).unwrap()
    );
    table
}

#[test]
fn gpt2_rows_add_up() {
    rows_add_up(&load::<B>("tiny"), 4, 4);
}

#[test]
fn qwen2_rows_add_up() {
    let model = Llama::<B>::load(fixture("llama/qwen2"), &Default::default()).unwrap();
    let table = rows_add_up(&model, 4, 2);
    // Keys and values are per kv head: heads 0 and 1 only.
    assert!(
        table
            .rows
            .iter()
            .filter(|r| r.site == "attn.k")
            .all(|r| r.head < Some(2))
    );
}

#[test]
fn llama_init_runs_with_grouped_query_attention() {
    let config = hooks_model::LlamaConfig::new("qwen2", 2, 32, 4, 2, 64, 97);
    let model = Llama::<B>::init(&config, &Default::default()).unwrap();
    let table = rows_add_up(&model, 4, 2);
    assert_eq!(table.qk_fixed, ["attn.q", "attn.k"]);
}

#[test]
fn equal_runs_estimate_zero_everywhere() {
    let model = load::<B>("tiny");
    let table = attribution_patching(
        &model,
        &clean(),
        &clean(),
        &[],
        log_prob::<B>,
        AtpOptions::default(),
    )
    .unwrap();
    // Every site (qk_logits' -inf mask included) at every layer, head, position.
    let sites = hooks_model::TransformerHooks::<B>::default().sites();
    let per_layer = sites.iter().filter(|s| s.per_layer).count();
    assert_eq!(per_layer, 21);
    assert_eq!(
        table.by_site_layer().len(),
        per_layer * 2 + (sites.len() - per_layer)
    );
    assert!(
        table.rows.iter().all(|r| r.estimate == 0.0),
        "{:?}",
        table.rows.iter().find(|r| r.estimate != 0.0)
    );
    assert_eq!(table.clean_metric, table.corrupted_metric);
}

#[test]
fn bad_input_is_an_error() {
    let model = load::<B>("tiny");
    let run = |c: &TokenBatch, sites: &[&str], metric: fn(Tensor<B, 3>) -> Tensor<B, 1>| {
        attribution_patching(&model, &clean(), c, sites, metric, AtpOptions::default()).unwrap_err()
    };
    let short = TokenBatch::new(vec![vec![1, 2, 3], vec![4, 5, 6]]).unwrap();
    let err = run(&short, &[], log_prob::<B>);
    assert!(matches!(err, ModelError::BadBatch(_)), "{err}");
    assert!(
        err.to_string()
            .contains("clean [2, 6] and corrupted [2, 3]"),
        "{err}"
    );
    let one = TokenBatch::new(vec![vec![1, 2, 3, 4, 5, 6]]).unwrap();
    assert!(
        run(&one, &[], log_prob::<B>)
            .to_string()
            .contains("same shape")
    );
    let err = run(&corrupted(), &["attn.qq"], log_prob::<B>).to_string();
    assert!(err.contains("qq"), "{err}");
    let err = run(&corrupted(), &["attn.*", "resid.nope"], log_prob::<B>).to_string();
    assert!(err.contains("nope"), "{err}");
    fn two(l: Tensor<B, 3>) -> Tensor<B, 1> {
        l.sum_dim(2).sum_dim(1).reshape([2])
    }
    let err = run(&corrupted(), &["logits"], two).to_string();
    assert!(err.contains("one value") && err.contains("[2]"), "{err}");
    let big = TokenBatch::new(vec![vec![1, 2, 3, 4, 5, 500]; 2]).unwrap();
    assert!(matches!(
        run(&big, &[], log_prob::<B>),
        ModelError::TokenOutOfRange { .. }
    ));
}

#[test]
fn per_head_patching_patches_one_head() {
    let model = load::<B>("tiny");
    let metric = |l: Tensor<B, 3>| value(log_prob(l));
    let (rows, clean_m, corrupted_m) = patching_table_per_head(
        &model,
        &clean(),
        &corrupted(),
        &["attn.v_out", "attn.k", "resid.post_emb"],
        metric,
    )
    .unwrap();
    // 2 layers × 4 heads of v_out and k, then post_emb whole.
    assert_eq!(rows.len(), 2 * 4 * 2 + 1);
    assert_eq!(rows.last().unwrap().head, None);
    assert_near(
        "post_emb restores all",
        rows.last().unwrap().metric,
        clean_m,
        1e-5,
        1e-5,
    );
    let rec = record_all(&model, &clean());
    for r in &rows[..16] {
        let h = r.head.unwrap();
        let m = metric(moved(
            &model,
            &rec,
            &r.site,
            r.layer,
            1.0,
            Some((2, h)),
            None,
            |_| (),
        ));
        assert_eq!(r.metric, m, "{} {:?} {h}", r.site, r.layer);
        let restored = (m - corrupted_m) / (clean_m - corrupted_m);
        assert_near("restored", r.restored, restored, 1e-6, 1e-5);
    }
    // Heads differ: the patch is one head's slice, not the whole site.
    assert!(rows[0].metric != rows[1].metric);
    let err =
        patching_table_per_head(&model, &clean(), &clean(), &["attn.qq"], metric).unwrap_err();
    assert!(err.to_string().contains("qq"), "{err}");
}

#[test]
fn per_position_patching_patches_one_cell_and_matches_atp_rows() {
    let model = load::<B>("tiny");
    let metric = |l: Tensor<B, 3>| value(log_prob(l));
    let sites = ["attn.v_out", "resid.post_emb", "logits"];
    let (rows, clean_m, corrupted_m) =
        patching_table_per_position(&model, &clean(), &corrupted(), &sites, metric).unwrap();
    // 2 layers × 4 heads × 6 positions of v_out, then 6 positions each of
    // post_emb and logits: AtP's rows, in AtP's order.
    assert_eq!(rows.len(), 2 * 4 * 6 + 6 + 6);
    let atp = attribution_patching(
        &model,
        &clean(),
        &corrupted(),
        &sites,
        log_prob::<B>,
        AtpOptions::default(),
    )
    .unwrap();
    let real: Vec<_> = rows
        .iter()
        .map(|r| (&r.site, r.layer, r.head, r.position))
        .collect();
    let est: Vec<_> = atp
        .rows
        .iter()
        .map(|r| (&r.site, r.layer, r.head, r.position))
        .collect();
    assert_eq!(real, est);

    let rec = record_all(&model, &clean());
    for r in &rows {
        let m = metric(moved(
            &model,
            &rec,
            &r.site,
            r.layer,
            1.0,
            r.head.map(|h| (2, h)),
            r.position,
            |_| (),
        ));
        assert_eq!(
            r.metric, m,
            "{} {:?} {:?} {:?}",
            r.site, r.layer, r.head, r.position
        );
    }
    // The embedding is equal in both runs outside positions 1 and 2, so
    // patching it there changes nothing; at position 1 it does.
    let emb: Vec<_> = rows.iter().filter(|r| r.site == "resid.post_emb").collect();
    for r in &emb {
        if r.position != Some(1) && r.position != Some(2) {
            assert_eq!(r.metric, corrupted_m, "post_emb at {:?}", r.position);
            assert_eq!(r.restored, 0.0);
        }
    }
    assert!(emb[1].metric != corrupted_m);
    // Each scored position's log-probability depends on its own logits
    // only, so the logits' per-position effects add up to the whole
    // effect, and unscored positions have none.
    let logit_rows: Vec<_> = rows.iter().filter(|r| r.site == "logits").collect();
    let total: f32 = logit_rows.iter().map(|r| r.metric - corrupted_m).sum();
    assert_near(
        "logits per position add up",
        total,
        clean_m - corrupted_m,
        1e-4,
        1e-4,
    );
    for r in &logit_rows[..4] {
        assert_eq!(
            r.metric, corrupted_m,
            "logits at {:?} are not scored",
            r.position
        );
    }
}

/// The sum of the rows of `site` (all layers, heads and positions).
fn site_total(table: &AtpTable, site: &str) -> f32 {
    table
        .rows
        .iter()
        .filter(|r| r.site == site)
        .map(|r| r.estimate)
        .sum()
}

/// Integrated gradients (`AtpOptions::integrated`): one point is AtP; with
/// more, the estimate for the embedding, the whole input, obeys IG's
/// completeness (its sum tends to m(clean) − m(corrupted), the effect of
/// patching the embedding, as the path's points grow: a left Riemann sum,
/// error O(1/n)), where AtP's first-order term is off; on a GPT-2 and a
/// Qwen2.
fn integrated_gradients_complete_the_embedding<M: HookedModel<B>>(model: &M) {
    let sites = ["resid.post_emb", "attn.*", "mlp.post_act"];
    let run = |options| {
        attribution_patching(
            model,
            &clean(),
            &corrupted(),
            &sites,
            log_prob::<B>,
            options,
        )
        .unwrap()
    };
    let atp = run(AtpOptions::default());
    assert_eq!(run(AtpOptions::default().integrated(1)), atp);
    let effect = atp.clean_metric - atp.corrupted_metric;
    assert!(effect.abs() > 0.05, "clean and corrupted differ: {effect}");

    let mut errors = Vec::new();
    for n in [4, 16, 64] {
        let ig = run(AtpOptions::default().integrated(n));
        assert_eq!(ig.rows.len(), atp.rows.len());
        assert_eq!(
            (ig.clean_metric, ig.corrupted_metric),
            (atp.clean_metric, atp.corrupted_metric)
        );
        errors.push((site_total(&ig, "resid.post_emb") - effect).abs());
    }
    let atp_error = (site_total(&atp, "resid.post_emb") - effect).abs();
    // The error falls with the points: by ≥ 2× per 4× more (the Riemann
    // sum's leading term gives 4× once n is large; measured on the GPT-2:
    // 0.017, 0.008, 0.002 of an effect of 0.95, where AtP is off by 0.45),
    // and at 64 points it is under 3 % of the effect and below AtP's.
    assert!(
        errors[1] * 2.0 <= errors[0] && errors[2] * 2.0 <= errors[1],
        "errors at 4, 16, 64 points: {errors:?} (AtP: {atp_error}, effect {effect})"
    );
    assert!(
        errors[2] <= 0.03 * effect.abs() && errors[2] < atp_error,
        "errors at 4, 16, 64 points: {errors:?} (AtP: {atp_error}, effect {effect})"
    );
}

#[test]
fn gpt2_integrated_gradients_complete_the_embedding() {
    integrated_gradients_complete_the_embedding(&load::<B>("tiny"));
}

#[test]
fn qwen2_integrated_gradients_complete_the_embedding() {
    let model = Llama::<B>::load(fixture("llama/qwen2"), &Default::default()).unwrap();
    integrated_gradients_complete_the_embedding(&model);
}

#[test]
fn zero_integration_points_are_an_error() {
    let model = load::<B>("tiny");
    let err = attribution_patching(
        &model,
        &clean(),
        &corrupted(),
        &[],
        log_prob::<B>,
        AtpOptions::default().integrated(0),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("ig_steps must be at least 1"), "{err}");
}
