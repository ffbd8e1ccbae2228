//! `hooks atp` end to end: CSV and safetensors output equal to the library's
//! `attribution_patching` on the same backend, on GPT-2 and a Qwen2 folder,
//! prompts, and the exit code of each kind of bad input.

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use burn_hooks::experiments::{AtpOptions, AtpTable, attribution_patching};
use hooks_model::backend::Cpu;
use hooks_model::{Gpt2, HookedModel, Llama, TokenBatch};

use crate::cli::hooks;
use crate::cli_families::ok;
use crate::common::{TempDir, Tensors, fixture};

type B = Autodiff<Cpu>;

/// Runs `hooks`, requiring exit code `code` and `text` in stderr.
fn fails(args: &[&str], code: i32, text: &str) {
    let o = hooks(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "hooks {args:?}:\n{err}");
    assert!(err.contains(text), "expected {text:?} in stderr:\n{err}");
}

const CLEAN: [&str; 2] = ["3,14,15,92,65,35", "89,79,32,38,46,26"];
const CORRUPT: [&str; 2] = ["3,40,60,92,65,35", "89,8,11,38,46,26"];

fn rows(text: &[&str]) -> TokenBatch {
    TokenBatch::new(
        text.iter()
            .map(|r| r.split(',').map(|t| t.parse().unwrap()).collect())
            .collect(),
    )
    .unwrap()
}

fn logit_diff(l: Tensor<B, 3>) -> Tensor<B, 1> {
    let [b, s, _] = l.dims();
    let a = l.clone().slice([0..b, s - 1..s, 5..6]);
    let c = l.slice([0..b, s - 1..s, 7..8]);
    (a - c).mean().reshape([1])
}

fn log_prob_9(l: Tensor<B, 3>) -> Tensor<B, 1> {
    let [b, s, v] = l.dims();
    log_softmax(l.slice([0..b, s - 1..s, 0..v]), 2)
        .slice([0..b, 0..1, 9..10])
        .mean()
        .reshape([1])
}

/// The library's table for the same inputs.
fn library<M: HookedModel<B>>(
    model: &M,
    sites: &[&str],
    metric: fn(Tensor<B, 3>) -> Tensor<B, 1>,
) -> AtpTable {
    attribution_patching(
        model,
        &rows(&CLEAN),
        &rows(&CORRUPT),
        sites,
        metric,
        AtpOptions::default(),
    )
    .unwrap()
}

fn args<'a>(model: &'a str, out: &'a str, metric: &'a str, sites: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["atp", "--model", model, "--metric", metric, "--out", out];
    for (c, x) in CLEAN.iter().zip(CORRUPT.iter()) {
        a.extend(["--clean-tokens", c, "--corrupt-tokens", x]);
    }
    for s in sites {
        a.extend(["--sites", s]);
    }
    a
}

#[test]
fn csv_holds_one_row_per_site_layer_head_position() {
    let tmp = TempDir::new("atp-csv");
    let out = tmp.join("atp.csv");
    let tiny = fixture("tiny");
    let (model_dir, out_s) = (tiny.to_str().unwrap(), out.to_str().unwrap());
    let summary = ok(&args(
        model_dir,
        out_s,
        "logit-diff:5,7",
        &["attn.v_out", "attn.k", "logits"],
    ));
    assert!(
        summary.contains("wrote 102 estimates (5 site × layer)"),
        "{summary}"
    );
    assert!(summary.contains("largest estimates"), "{summary}");

    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("site,layer,head,position,estimate"));
    let lines: Vec<&str> = lines.collect();
    // v_out and k: 2 layers × 4 heads × 6 positions; logits: 6 positions.
    assert_eq!(lines.len(), 2 * 48 + 6);
    assert!(lines[0].starts_with("attn.k,0,0,0,"), "{}", lines[0]);
    assert!(
        lines.last().unwrap().starts_with("logits,,,5,"),
        "{}",
        lines.last().unwrap()
    );

    let model = Gpt2::<B>::load(&tiny, &Default::default()).unwrap();
    let table = library(&model, &["attn.v_out", "attn.k", "logits"], logit_diff);
    assert_eq!(table.rows.len(), lines.len());
    let scale = max_abs(table.rows.iter().map(|r| r.estimate));
    for (line, row) in lines.iter().zip(&table.rows) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[0], row.site);
        assert_eq!(cells[1], row.layer.map_or(String::new(), |l| l.to_string()));
        assert_eq!(cells[2], row.head.map_or(String::new(), |h| h.to_string()));
        assert_eq!(cells[3], row.position.unwrap().to_string());
        let est: f32 = cells[4].parse().unwrap();
        assert!(
            same_value(est, row.estimate, scale),
            "{line}: library {}",
            row.estimate
        );
    }
    // The metric reads the last position only: logits elsewhere estimate 0.
    assert!(
        lines
            .iter()
            .filter(|l| l.starts_with("logits,,,"))
            .take(5)
            .all(|l| l.ends_with(",0"))
    );
}

#[test]
fn safetensors_holds_one_tensor_per_site_and_layer() {
    let tmp = TempDir::new("atp-st");
    let out = tmp.join("atp.safetensors");
    let dir = fixture("llama/qwen2");
    let (model_dir, out_s) = (dir.to_str().unwrap(), out.to_str().unwrap());
    ok(&args(
        model_dir,
        out_s,
        "logprob:9",
        &["attn.q,attn.k", "mlp.up"],
    ));
    let st = Tensors::read(&out);
    assert_eq!(
        st.keys(),
        [
            "layers.0.attn.k",
            "layers.0.attn.q",
            "layers.0.mlp.up",
            "layers.1.attn.k",
            "layers.1.attn.q",
            "layers.1.mlp.up"
        ]
    );
    // Keys per kv head (2), queries per query head (4).
    assert_eq!(st.shape("layers.1.attn.k"), [6, 2]);
    assert_eq!(st.shape("layers.0.attn.q"), [6, 4]);
    assert_eq!(st.shape("layers.0.mlp.up"), [6]);
    let values = st.f32("layers.1.attn.k");

    let model = Llama::<B>::load(&dir, &Default::default()).unwrap();
    let table = library(&model, &["attn.q", "attn.k", "mlp.up"], log_prob_9);
    let scale = max_abs(table.rows.iter().map(|r| r.estimate));
    for p in 0..6 {
        for h in 0..2 {
            let est = table.estimate("attn.k", Some(1), Some(h), Some(p)).unwrap();
            assert!(
                same_value(values[p * 2 + h], est, scale),
                "position {p} head {h}: {} vs {est}",
                values[p * 2 + h]
            );
        }
    }
    let meta = st.metadata();
    assert_eq!(meta["producer"], "hooks atp");
    assert_eq!(meta["qk_fix"], "true");
    let clean: f32 = meta["clean_metric"].parse().unwrap();
    assert!(same_value(
        clean,
        table.clean_metric,
        table.clean_metric.abs()
    ));
}

#[test]
fn prompts_and_no_qk_fix() {
    let tmp = TempDir::new("atp-prompt");
    let out = tmp.join("atp.csv");
    let tiny = fixture("tiny");
    // GPT-2's BPE splits letters from punctuation: one token per character,
    // single bytes (ids below the tiny vocabulary's 97).
    let o = hooks(&[
        "atp",
        "--model",
        tiny.to_str().unwrap(),
        "--clean-prompt",
        "a!b!c",
        "--corrupt-prompt",
        "a!d!c",
        "--metric",
        "logprob:66",
        "--sites",
        "attn.q",
        "--no-qk-fix",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    // 2 layers × 4 heads × 5 positions.
    assert_eq!(text.lines().count(), 1 + 40);
    // Plain AtP: equal to the library's linear estimates.
    let model = Gpt2::<B>::load(&tiny, &Default::default()).unwrap();
    let tok = hooks_model::tokenizer::Tokenizer::gpt2();
    assert_eq!(tok.encode("a!b!c").unwrap(), [64, 0, 65, 0, 66]);
    let clean = TokenBatch::single(tok.encode("a!b!c").unwrap()).unwrap();
    let corrupted = TokenBatch::single(tok.encode("a!d!c").unwrap()).unwrap();
    let metric = |l: Tensor<B, 3>| {
        let [b, s, v] = l.dims();
        log_softmax(l.slice([0..b, s - 1..s, 0..v]), 2)
            .slice([0..b, 0..1, 66..67])
            .mean()
            .reshape([1])
    };
    let table = attribution_patching(
        &model,
        &clean,
        &corrupted,
        &["attn.q"],
        metric,
        AtpOptions::linear(),
    )
    .unwrap();
    let first: f32 = text
        .lines()
        .nth(1)
        .unwrap()
        .rsplit(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let scale = max_abs(table.rows.iter().map(|r| r.estimate));
    assert!(same_value(first, table.rows[0].estimate, scale));
    assert!(table.rows.iter().any(|r| r.estimate != 0.0));
}

#[test]
fn bad_input_exits_with_its_code() {
    let tmp = TempDir::new("atp-bad");
    let tiny = fixture("tiny");
    let m = tiny.to_str().unwrap();
    let csv = tmp.join("out.csv");
    let out = csv.to_str().unwrap();
    let base = |metric: &'static str| args(m, out, metric, &[]);
    fails(
        &base("logit-diff:5"),
        3,
        "is not `logit-diff:A,B` or `logprob:T`",
    );
    fails(
        &base("logprob:500"),
        3,
        "--metric token 500 is outside the model's vocabulary (size 97)",
    );
    fails(&args(m, out, "logprob:9", &["attn.qq"]), 3, "qq");
    let txt = tmp.join("out.txt");
    fails(
        &args(m, txt.to_str().unwrap(), "logprob:9", &[]),
        3,
        "must end in .csv or .safetensors",
    );
    fails(
        &[
            "atp",
            "--model",
            m,
            "--clean-tokens",
            "1,2,3",
            "--corrupt-tokens",
            "1,2",
            "--metric",
            "logprob:9",
            "--out",
            out,
        ],
        3,
        "must have the same shape",
    );
    fails(
        &[
            "atp",
            "--model",
            m,
            "--clean-tokens",
            "1,2,3",
            "--metric",
            "logprob:9",
            "--out",
            out,
        ],
        2,
        "--corrupt-tokens",
    );
    fails(
        &[
            "atp",
            "--model",
            m,
            "--clean-tokens",
            "1,2,300",
            "--corrupt-tokens",
            "1,2,3",
            "--metric",
            "logprob:9",
            "--out",
            out,
        ],
        3,
        "300",
    );
    assert!(!csv.exists(), "nothing written on errors");
}

/// Whether the tool's value `ours` is the library's `lib`: the same up to a
/// few roundings of the table's largest value. The tool runs natively; the
/// test may run under an emulated CPU (`.ci/avx2-tests`), whose matrix
/// kernels round differently, so bit equality would test the CPU, not the
/// plumbing.
fn same_value(ours: f32, lib: f32, scale: f32) -> bool {
    (ours - lib).abs() <= 8.0 * f32::EPSILON * scale.max(f32::MIN_POSITIVE)
}

fn max_abs(values: impl IntoIterator<Item = f32>) -> f32 {
    values.into_iter().fold(0.0, |m, v| m.max(v.abs()))
}

#[test]
fn ig_steps_give_the_library_integrated_estimates() {
    let tmp = TempDir::new("atp-ig");
    let out = tmp.join("atp.csv");
    let tiny = fixture("tiny");
    let (model_dir, out_s) = (tiny.to_str().unwrap(), out.to_str().unwrap());
    let mut a = args(
        model_dir,
        out_s,
        "logprob:9",
        &["attn.v_out", "resid.post_emb"],
    );
    a.extend(["--ig-steps", "8"]);
    ok(&a);
    let text = std::fs::read_to_string(&out).unwrap();
    let estimates: Vec<f32> = text
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();

    let model = Gpt2::<B>::load(&tiny, &Default::default()).unwrap();
    let run = |options| {
        attribution_patching(
            &model,
            &rows(&CLEAN),
            &rows(&CORRUPT),
            &["attn.v_out", "resid.post_emb"],
            log_prob_9,
            options,
        )
        .unwrap()
    };
    let ig = run(AtpOptions::default().integrated(8));
    let plain = run(AtpOptions::default());
    assert_eq!(estimates.len(), ig.rows.len());
    let scale = max_abs(ig.rows.iter().map(|r| r.estimate));
    for (est, row) in estimates.iter().zip(&ig.rows) {
        assert!(same_value(*est, row.estimate, scale), "{est} vs {row:?}");
    }
    // Not AtP's numbers: the path's other points moved them.
    let moved = ig
        .rows
        .iter()
        .zip(&plain.rows)
        .any(|(a, b)| (a.estimate - b.estimate).abs() > 1e-3 * scale);
    assert!(moved, "8 points gave AtP's estimates");

    let mut zero = args(model_dir, out_s, "logprob:9", &[]);
    zero.extend(["--ig-steps", "0"]);
    fails(&zero, 2, "--ig-steps");
}
