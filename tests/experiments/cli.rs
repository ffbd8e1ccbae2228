//! The `hooks` binary end to end: site listing, caching activations and
//! gradients against the Hugging Face fixtures, sampling, and the exit code
//! of every kind of bad input.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::Dtype;

use burn::tensor::backend::Backend;
use hooks_model::backend::{Cpu, NdArray};

use crate::common::formats::{copy_as, sharded_copy};
use crate::common::{Expected, HostTensor, TempDir, Tensors};
use hooks_model::checkpoint::INDEX_FILE;

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny");

/// Runs the `hooks` binary built with these tests.
pub(crate) fn hooks(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hooks"))
        .args(args)
        .output()
        .expect("the hooks binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that stderr holds `text`, showing stderr when it does not.
fn assert_stderr_contains(o: &Output, text: &str) {
    let err = stderr(o);
    assert!(err.contains(text), "expected {text:?} in stderr:\n{err}");
}

/// Asserts the exit code, showing the output when it differs.
fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// The tiny fixture's reference values, and its two token rows as `--tokens` values.
fn fixture_rows() -> (Expected, Vec<String>) {
    let expected = Expected::of("tiny");
    let (shape, ids) = expected.i64("tokens");
    let [b, s] = shape[..] else {
        panic!("tokens are [B,S]")
    };
    let rows = (0..b)
        .map(|r| {
            ids[r * s..(r + 1) * s]
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    (expected, rows)
}

fn cache_args<'a>(rows: &'a [String], out: &'a str) -> Vec<&'a str> {
    let mut args = vec!["cache", "--model", TINY, "--out", out];
    for r in rows {
        args.extend(["--tokens", r.as_str()]);
    }
    args
}

impl Tensors {
    /// A cached entry as a host tensor.
    fn host(&self, key: &str) -> HostTensor {
        HostTensor {
            shape: self.shape(key),
            data: self.f32(key),
        }
    }
}

/// Asserts a cached entry is as near the truth as the fixture's HF value
/// ([`crate::common::assert_near_truth_with`]; gradients allow the accuracy of
/// the `recip` of the backend `B` the tool ran on, as in `gradients.rs`).
fn assert_near<B: Backend>(expected: &Expected, cached: &Tensors, ours: &str, theirs: &str) {
    let approx = if ours.ends_with(".grad") {
        crate::common::recip_rel_error::<B>()
    } else {
        0.0
    };
    expected.assert_near_with(
        &format!("cli: {ours} vs HF {theirs}"),
        theirs,
        &cached.host(ours),
        approx,
    );
}

#[test]
fn sites_of_gpt2_small() {
    let o = hooks(&["sites"]);
    assert_code(&o, 0);
    let text = stdout(&o);
    let line = |site: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(site))
            .unwrap_or_else(|| panic!("no line for `{site}` in:\n{text}"))
            .to_string()
    };
    assert!(line("attn.qk_probs").contains("[B, S, K, 12]"), "{text}");
    assert!(line("attn.q").contains("[B, S, 12, 64]"), "{text}");
    assert!(line("mlp.pre_act").contains("[B, S, 3072]"), "{text}");
    assert!(line("logits").contains("[B, S, 50257]"), "{text}");
    assert!(
        line("resid.torso.ln_mlp.scale").contains("[B, S, 1]"),
        "{text}"
    );
    // Per-layer sites say which layers; outside ones do not.
    assert!(line("resid.torso.post_mlp").contains("0-11"), "{text}");
    assert!(!line("resid.post_emb").contains("0-11"), "{text}");
    // Forward order: embedding first, logits last.
    let first = text
        .lines()
        .position(|l| l.starts_with("resid.post_emb"))
        .unwrap();
    let last = text.lines().position(|l| l.starts_with("logits")).unwrap();
    assert!(first < last);
    assert!(text.contains("27 sites"), "{text}");
}

#[test]
fn sites_of_a_checkpoint() {
    let o = hooks(&["sites", "--model", TINY]);
    assert_code(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("D 32"), "{text}");
    assert!(text.contains("[B, S, 32]"), "{text}");
    assert!(text.contains("[B, S, K, 4]"), "{text}");
    assert!(text.contains("[B, S, 97]"), "{text}");
    assert!(text.contains("0-1 "), "{text}");
}

#[test]
fn cache_records_every_site_and_matches_the_reference() {
    let tmp = TempDir::new("all");
    let out = tmp.file("acts.safetensors");
    let (expected, rows) = fixture_rows();
    let o = hooks(&cache_args(&rows, &out));
    assert_code(&o, 0);
    assert!(stdout(&o).contains("48 tensors"), "{}", stdout(&o));
    assert!(stdout(&o).contains(&out), "{}", stdout(&o));

    let cached = Tensors::read(&out);
    let keys = cached.keys();
    // 21 sites per layer × 2 layers + 6 outside the blocks.
    assert_eq!(keys.len(), 48, "{keys:?}");
    assert!(keys.iter().all(|k| !k.ends_with(".grad")), "{keys:?}");
    for (key, shape) in [
        ("resid.post_emb", vec![2, 12, 32]),
        ("layers.0.attn.qk_probs", vec![2, 12, 12, 4]),
        ("layers.1.attn.qk_softmax_denominator", vec![2, 12, 1, 4]),
        ("layers.0.attn.v_out", vec![2, 12, 4, 8]),
        ("layers.1.resid.torso.ln_mlp.scale", vec![2, 12, 1]),
        ("layers.1.mlp.post_act", vec![2, 12, 128]),
        ("resid.ln_f.post_scale", vec![2, 12, 32]),
        ("logits", vec![2, 12, 97]),
    ] {
        assert_eq!(cached.shape(key), shape, "{key}");
    }
    assert_near::<Cpu>(&expected, &cached, "logits", "logits");
    for layer in 0..2 {
        assert_near::<Cpu>(
            &expected,
            &cached,
            &format!("layers.{layer}.attn.qk_probs"),
            &format!("attn_probs.{layer}"),
        );
    }
}

#[test]
fn cache_restricts_to_selected_sites() {
    let tmp = TempDir::new("attn");
    let out = tmp.file("attn.safetensors");
    let (_, rows) = fixture_rows();
    let mut args = cache_args(&rows, &out);
    args.extend(["--sites", "attn.*"]);
    let o = hooks(&args);
    assert_code(&o, 0);
    let keys = Tensors::read(&out).keys();
    assert_eq!(keys.len(), 14, "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| k.starts_with("layers.") && k.contains(".attn.")),
        "{keys:?}"
    );

    // Several patterns, comma-separated or repeated.
    let out2 = tmp.file("two.safetensors");
    let mut args = cache_args(&rows, &out2);
    args.extend(["--sites", "logits,resid.post_emb", "--sites", "mlp.pre_act"]);
    let o = hooks(&args);
    assert_code(&o, 0);
    assert_eq!(
        Tensors::read(&out2).keys(),
        [
            "layers.0.mlp.pre_act",
            "layers.1.mlp.pre_act",
            "logits",
            "resid.post_emb"
        ]
    );
}

#[test]
fn cache_records_gradients() {
    let tmp = TempDir::new("grad");
    let out = tmp.file("grads.safetensors");
    let (expected, rows) = fixture_rows();
    assert_eq!(expected.i64("grad_target").1, [5]);
    let mut args = cache_args(&rows, &out);
    args.extend(["--grad-target", "5"]);
    let o = hooks(&args);
    assert_code(&o, 0);
    assert!(
        stderr(&o).is_empty() || !stderr(&o).contains("absent"),
        "{}",
        stderr(&o)
    );

    let cached = Tensors::read(&out);
    let keys = cached.keys();
    assert_eq!(keys.len(), 96, "{keys:?}");
    // Every recorded value has its gradient, with the same key plus `.grad`.
    for key in keys.iter().filter(|k| !k.ends_with(".grad")) {
        let grad = format!("{key}.grad");
        assert_eq!(cached.shape(&grad), cached.shape(key), "{grad}");
    }
    let close = |ours: &str, theirs: &str| assert_near::<Cpu>(&expected, &cached, ours, theirs);
    close("logits.grad", "logits.grad");
    close("logits", "logits");
    close("resid.post_emb.grad", "hidden.0.grad");
    close("resid.post_ln_f.grad", "ln_f.grad");
    close("layers.1.attn.qk_probs.grad", "attn_probs.1.grad");
    close("layers.0.mlp.pre_act.grad", "pre_act.0.grad");
    close("layers.1.resid.torso.delta_mlp.grad", "delta_mlp.1.grad");
    assert!(stdout(&o).contains("loss"), "{}", stdout(&o));
    let printed: f32 = stdout(&o)
        .lines()
        .find_map(|l| {
            l.strip_prefix("loss = ")
                .and_then(|r| r.rsplit(" = ").next())
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no loss line in {}", stdout(&o)));
    // Printed in full (shortest round-trip f32), so compared like any value.
    expected.assert_near(
        "cli: printed loss",
        "loss",
        &HostTensor {
            shape: vec![1],
            data: vec![printed],
        },
    );
}

#[test]
fn ndarray_backend_gives_the_same_values() {
    let tmp = TempDir::new("ndarray");
    let out = tmp.file("nd.safetensors");
    let (expected, rows) = fixture_rows();
    let mut args = vec!["--backend", "ndarray"];
    args.extend(cache_args(&rows, &out));
    args.extend(["--sites", "logits", "--grad-target", "5"]);
    let o = hooks(&args);
    assert_code(&o, 0);
    let cached = Tensors::read(&out);
    assert_eq!(cached.keys(), ["logits", "logits.grad"]);
    assert_near::<NdArray>(&expected, &cached, "logits", "logits");
    assert_near::<NdArray>(&expected, &cached, "logits.grad", "logits.grad");
}

#[test]
fn unknown_site_suggests_the_right_one() {
    let tmp = TempDir::new("typo");
    let out = tmp.file("x.safetensors");
    let o = hooks(&[
        "cache",
        "--model",
        TINY,
        "--tokens",
        "1,2",
        "--out",
        &out,
        "--sites",
        "attn.qk_prbs",
    ]);
    assert_code(&o, 3);
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("did you mean") && err.contains("qk_probs"),
        "{err}"
    );
    assert!(!Path::new(&out).exists());
}

#[test]
fn bad_tokens_are_invalid_input() {
    let tmp = TempDir::new("tokens");
    let out = tmp.file("x.safetensors");
    let run = |extra: &[&str]| {
        let mut args = vec!["cache", "--model", TINY, "--out", &out];
        args.extend(extra);
        hooks(&args)
    };
    let o = run(&["--tokens", "1,1000,2"]);
    assert_code(&o, 3);
    assert_stderr_contains(&o, "1000");

    let o = run(&["--tokens", "1,2,3", "--tokens", "4,5"]);
    assert_code(&o, 3);
    assert_stderr_contains(&o, "equal lengths");

    let o = run(&["--tokens", "1,two"]);
    assert_code(&o, 3);
    assert_stderr_contains(&o, "`two`");

    // "hello" is GPT-2 token 31373, beyond the tiny model's 97 ids.
    let o = run(&["--prompt", "hello"]);
    assert_code(&o, 3);
    assert_stderr_contains(&o, "31373");

    let o = run(&["--tokens", "1,2", "--grad-target", "97"]);
    assert_code(&o, 3);
    assert_stderr_contains(&o, "97");

    let too_long = (0..17).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let o = run(&["--tokens", &too_long]);
    assert_code(&o, 3);
    assert!(!Path::new(&out).exists());
}

#[test]
fn bad_model_files_exit_4() {
    let tmp = TempDir::new("model");
    let out = tmp.file("x.safetensors");
    let missing = tmp.file("no-such-model");
    let o = hooks(&[
        "cache", "--model", &missing, "--tokens", "1,2", "--out", &out,
    ]);
    assert_code(&o, 4);
    assert_stderr_contains(&o, "no-such-model");
    assert_code(&hooks(&["sites", "--model", &missing]), 4);
    assert_code(
        &hooks(&["generate", "--model", &missing, "--prompt", "a"]),
        4,
    );

    // A truncated weights file.
    let broken = tmp.0.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(Path::new(TINY).join(f), broken.join(f)).unwrap();
    }
    let weights = std::fs::OpenOptions::new()
        .write(true)
        .open(broken.join("model.safetensors"))
        .unwrap();
    let len = weights.metadata().unwrap().len();
    weights.set_len(len / 2).unwrap();
    drop(weights);
    let o = hooks(&[
        "cache",
        "--model",
        broken.to_str().unwrap(),
        "--tokens",
        "1,2",
        "--out",
        &out,
    ]);
    assert_code(&o, 4);
    assert_stderr_contains(&o, "model.safetensors");

    // A malformed config.
    std::fs::write(broken.join("config.json"), "{ not json").unwrap();
    let o = hooks(&["sites", "--model", broken.to_str().unwrap()]);
    assert_code(&o, 4);
    assert_stderr_contains(&o, "config.json");
}

#[test]
fn usage_errors_exit_2() {
    assert_code(
        &hooks(&["cache", "--model", TINY, "--out", "x.safetensors"]),
        2,
    );
    assert_code(
        &hooks(&[
            "cache", "--model", TINY, "--tokens", "1", "--prompt", "a", "--out", "x",
        ]),
        2,
    );
    assert_code(&hooks(&["--backend", "tpu", "sites"]), 2);
    assert_code(&hooks(&["frobnicate"]), 2);
    assert_code(&hooks(&["--help"]), 0);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_needs_the_feature() {
    let o = hooks(&[
        "--backend",
        "cuda",
        "generate",
        "--model",
        TINY,
        "--prompt",
        "a",
        "-n",
        "1",
    ]);
    assert_code(&o, 1);
    assert_stderr_contains(&o, "--features cuda");
}

#[test]
fn generate_is_deterministic() {
    // "a" is GPT-2 token 64, inside the tiny model's vocabulary.
    let args = [
        "generate",
        "--model",
        TINY,
        "--prompt",
        "a",
        "-n",
        "3",
        "--seed",
        "1",
        "--temperature",
        "1",
    ];
    let first = hooks(&args);
    assert_code(&first, 0);
    let text = stdout(&first);
    assert!(
        text.starts_with('a') && text.trim_end().chars().count() > 1,
        "{text:?}"
    );
    assert_eq!(stdout(&hooks(&args)), text);

    // Greedy decoding ignores the seed.
    let greedy = |seed: &str| {
        stdout(&hooks(&[
            "generate", "--model", TINY, "--prompt", "a", "-n", "3", "--seed", seed,
        ]))
    };
    assert_eq!(greedy("1"), greedy("2"));

    let o = hooks(&["generate", "--model", TINY, "--prompt", "a", "-n", "16"]);
    assert_code(&o, 3);
    assert_stderr_contains(&o, "context window");
    let o = hooks(&["generate", "--model", TINY, "--prompt", "a", "--top-p", "0"]);
    assert_code(&o, 3);
}

/// A temp copy of the tiny checkpoint in `tmp/<name>`.
fn tiny_copy(tmp: &TempDir, name: &str) -> PathBuf {
    let dir = tmp.0.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(Path::new(TINY).join(f), dir.join(f)).unwrap();
    }
    dir
}

/// No command writes over its own inputs: `--out` at the model's weights or
/// config (directly or through a link) is refused before anything runs,
/// and the files are left as they were.
#[test]
fn outputs_never_replace_the_commands_inputs() {
    let tmp = TempDir::new("clobber");
    let model = tiny_copy(&tmp, "model");
    let m = model.to_str().unwrap();
    let weights = model.join("model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let link = tmp.join("link.safetensors");
    std::os::unix::fs::symlink(&weights, &link).unwrap();
    let config = model.join("config.json");
    let (w, l, c) = (
        weights.to_str().unwrap(),
        link.to_str().unwrap(),
        config.to_str().unwrap(),
    );
    let cases: Vec<Vec<&str>> = vec![
        vec!["cache", "--model", m, "--tokens", "1,2,3", "--out", w],
        vec!["cache", "--model", m, "--tokens", "1,2,3", "--out", l],
        vec!["cache", "--model", m, "--tokens", "1,2,3", "--out", c],
        vec![
            "atp",
            "--model",
            m,
            "--clean-tokens",
            "1,2",
            "--corrupt-tokens",
            "1,3",
            "--metric",
            "logprob:4",
            "--out",
            l,
        ],
        vec![
            "train-sae",
            "--model",
            m,
            "--site",
            "mlp.post_act",
            "--layer",
            "0",
            "--latents",
            "8",
            "--k",
            "2",
            "--steps",
            "1",
            "--out",
            w,
        ],
    ];
    for args in cases {
        let o = hooks(&args);
        assert_code(&o, 1);
        assert_stderr_contains(&o, "an input of this command; give another --out");
    }
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    assert_eq!(
        std::fs::read(&config).unwrap(),
        std::fs::read(Path::new(TINY).join("config.json")).unwrap()
    );
}

/// The temporary files `hooks` leaves in `dir` (there must be none).
fn partial_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-"))
        .collect()
}

#[test]
fn non_finite_weights_are_refused_unless_allowed() {
    let tmp = TempDir::new("nan");
    let model = tiny_copy(&tmp, "nan");
    crate::common::edit_f32(&model, "h.0.attn.c_attn.weight", |v| v[17] = f32::NAN);
    let model = model.to_str().unwrap();
    let out = tmp.file("x.safetensors");

    for args in [
        vec!["generate", "--model", model, "--tokens", "1", "-n", "3"],
        vec!["cache", "--model", model, "--tokens", "1,2", "--out", &out],
    ] {
        let o = hooks(&args);
        assert_code(&o, 4);
        let err = stderr(&o);
        assert!(
            err.contains(
                "weight `h.0.attn.c_attn.weight` holds a non-finite value, NaN, at flat index 17"
            ) && err.contains("--allow-non-finite"),
            "{err}"
        );
    }
    assert!(!Path::new(&out).exists());

    // Allowed on purpose: generate still refuses to sample from NaN logits
    // and names the first site that went non-finite.
    let o = hooks(&[
        "generate",
        "--model",
        model,
        "--tokens",
        "1",
        "-n",
        "3",
        "--allow-non-finite",
    ]);
    assert_code(&o, 5);
    let err = stderr(&o);
    assert!(
        err.contains("first at layer 0, site `attn.q` (key `layers.0.attn.q`): NaN")
            && err.contains("generation of token 1 of 3"),
        "{err}"
    );
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));

    // cache writes the file, with a warning naming the site.
    let o = hooks(&[
        "cache",
        "--model",
        model,
        "--tokens",
        "1,2",
        "--out",
        &out,
        "--allow-non-finite",
    ]);
    assert_code(&o, 0);
    assert_stderr_contains(
        &o,
        "warning: values went non-finite in the forward pass: first at layer 0, site `attn.q`",
    );
    let cached = Tensors::read(&out);
    assert!(cached.f32("layers.0.attn.q").iter().any(|v| v.is_nan()));
    assert!(cached.f32("resid.post_emb").iter().all(|v| v.is_finite()));
}

#[test]
fn overflowing_activations_exit_5_and_keep_the_old_file() {
    let tmp = TempDir::new("overflow");
    let model = tiny_copy(&tmp, "huge");
    // Finite weights whose sum overflows: the embedding goes to +inf.
    crate::common::edit_f32(&model, "wte.weight", |v| v.fill(f32::MAX));
    crate::common::edit_f32(&model, "wpe.weight", |v| v.fill(f32::MAX));
    let model = model.to_str().unwrap();
    let out = tmp.file("x.safetensors");
    std::fs::write(&out, b"old contents").unwrap();
    let o = hooks(&[
        "cache", "--model", model, "--tokens", "1,2", "--out", &out, "--sites", "logits",
    ]);
    assert_code(&o, 5);
    let err = stderr(&o);
    assert!(
        err.contains("values went non-finite in the forward pass: first at site `resid.post_emb`")
            && err.contains("inf at [0, 0, 0]")
            && err.contains("nothing was written")
            && err.contains("--allow-non-finite"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"old contents");
    assert!(partial_files(&tmp.0).is_empty());

    let o = hooks(&["generate", "--model", model, "--tokens", "1", "-n", "2"]);
    assert_code(&o, 5);
    assert_stderr_contains(&o, "site `resid.post_emb`");

    // Attribution patching too: not a table of zeros with exit 0.
    let atp = |extra: &[&str]| {
        let mut args = vec![
            "atp",
            "--model",
            model,
            "--clean-tokens",
            "1,2",
            "--corrupt-tokens",
            "1,3",
            "--metric",
            "logprob:4",
            "--out",
            &out,
        ];
        args.extend_from_slice(extra);
        hooks(&args)
    };
    let o = atp(&[]);
    assert_code(&o, 5);
    assert_stderr_contains(&o, "first at site `resid.post_emb`");
    assert_stderr_contains(&o, "nothing was written");
    assert_eq!(std::fs::read(&out).unwrap(), b"old contents");
    let o = atp(&["--allow-non-finite"]);
    assert_code(&o, 0);
    assert_stderr_contains(&o, "warning: the metric is NaN on the clean run");
}

#[test]
fn strict_cache_passes_when_every_recording_hook_ran() {
    let dir = TempDir::new("strict");
    let out = dir.0.join("c.safetensors");
    let o = hooks(&[
        "cache",
        "--model",
        TINY,
        "--tokens",
        "1,2,3,4",
        "--grad-target",
        "5",
        "--strict",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("48 activations, 48 gradients"),
        "{}",
        stdout(&o)
    );
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn cache_output_is_byte_reproducible_and_dash_is_stdout() {
    let tmp = TempDir::new("repro");
    let (_, rows) = fixture_rows();
    let mut files = Vec::new();
    for name in ["a.safetensors", "b.safetensors"] {
        let out = tmp.file(name);
        let mut args = cache_args(&rows, &out);
        args.extend(["--grad-target", "5", "--sites", "attn.*,logits"]);
        assert_code(&hooks(&args), 0);
        files.push(std::fs::read(&out).unwrap());
    }
    assert_eq!(files[0], files[1], "the same inputs give the same bytes");
    // The metadata is sorted in the header.
    let n = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&files[0][8..8 + n]).unwrap();
    let meta_keys = [
        "backend",
        "grad_target",
        "loss",
        "model",
        "producer",
        "sites",
        "tokens",
    ];
    let at: Vec<usize> = meta_keys
        .iter()
        .map(|k| header.find(&format!("\"{k}\":")).expect(k))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{header}");

    // `--out -`: the same bytes on standard output, the summary on stderr.
    let mut args = cache_args(&rows, "-");
    args.extend(["--grad-target", "5", "--sites", "attn.*,logits"]);
    let o = hooks(&args);
    assert_code(&o, 0);
    assert_eq!(o.stdout, files[0]);
    assert_stderr_contains(&o, "to standard output");
}

#[test]
fn out_follows_links_and_refuses_what_is_not_a_regular_file() {
    let tmp = TempDir::new("out");
    let run = |out: &str| hooks(&["cache", "--model", TINY, "--tokens", "1,2", "--out", out]);

    // A link: its target is replaced, the link stays a link.
    let target = tmp.file("target.safetensors");
    std::fs::write(&target, b"old").unwrap();
    let link = tmp.file("link.safetensors");
    std::os::unix::fs::symlink("target.safetensors", &link).unwrap();
    assert_code(&run(&link), 0);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(std::fs::read(&target).unwrap().len() > 1000);
    // A dangling link creates its target.
    let dangling = tmp.file("dangling");
    std::os::unix::fs::symlink("new.safetensors", &dangling).unwrap();
    assert_code(&run(&dangling), 0);
    assert!(Path::new(&tmp.file("new.safetensors")).is_file());
    assert!(partial_files(&tmp.0).is_empty());

    // Devices, folders, named pipes and links to them are refused before any work.
    let dev_link = tmp.file("full");
    std::os::unix::fs::symlink("/dev/full", &dev_link).unwrap();
    let folder = tmp.file("folder");
    std::fs::create_dir(&folder).unwrap();
    let mut cases = vec![
        (
            "/dev/full".to_string(),
            "it is a character device, not a regular file",
        ),
        (
            dev_link.clone(),
            "links to `/dev/full`, which is a character device",
        ),
        (folder.clone(), "it is a folder, not a regular file"),
    ];
    let fifo = tmp.file("fifo");
    let made_fifo = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if made_fifo {
        cases.push((
            fifo.clone(),
            "it is a named pipe (FIFO), not a regular file",
        ));
    }
    for (out, needle) in &cases {
        let o = run(out);
        assert_code(&o, 1);
        let err = stderr(&o);
        assert!(
            err.contains(&format!("cannot write `{out}`"))
                && err.contains(needle)
                && err.contains("`-` for standard output"),
            "{out}: {err}"
        );
    }
    assert!(
        std::fs::symlink_metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(Path::new(&folder).is_dir());
    if made_fifo {
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }
    let o = run(&tmp.file("no/such/folder.safetensors"));
    assert_code(&o, 1);
    assert_stderr_contains(&o, "does not exist");
}

#[test]
fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file() {
    let tmp = TempDir::new("efbig");
    let out = tmp.file("x.safetensors");
    std::fs::write(&out, b"old contents").unwrap();
    // A 2 KiB file-size limit: the write fails with EFBIG part way.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 4 && exec '{}' cache --model '{TINY}' --tokens 1,2 --out '{out}'",
            env!("CARGO_BIN_EXE_hooks")
        ))
        .output()
        .unwrap();
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "cannot write `{out}`: File too large (os error 27)"
        )),
        "{err}"
    );
    assert!(!err.contains("Os {"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"old contents");
    assert!(
        partial_files(&tmp.0).is_empty(),
        "{:?}",
        partial_files(&tmp.0)
    );
}

#[test]
fn generate_with_a_huge_count_is_invalid_input() {
    let o = hooks(&[
        "generate",
        "--model",
        TINY,
        "--tokens",
        "1",
        "-n",
        "18446744073709551615",
    ]);
    assert_code(&o, 3);
    assert_stderr_contains(
        &o,
        "a prompt of 1 token(s) + 18446744073709551615 new token(s) exceeds the context window of 16 positions",
    );
}

#[test]
fn site_patterns_with_a_stage_or_matching_nothing_say_why() {
    let run = |pattern: &str| {
        hooks(&[
            "cache", "--model", TINY, "--tokens", "1,2", "--out", "unused", "--sites", pattern,
        ])
    };
    for (pattern, site) in [
        ("attn.q.fwd", "attn.q"),
        ("logits.bwd", "logits"),
        ("resid.torso.post_mlp.fwd2", "resid.torso.post_mlp"),
    ] {
        let o = run(pattern);
        assert_code(&o, 3);
        let err = stderr(&o);
        let stage = pattern.rsplit('.').next().unwrap();
        assert!(
            err.contains(&format!(
                "`{stage}` is a stage, not part of a site path: select the site `{site}`"
            )),
            "{err}"
        );
        assert!(!err.contains("under it: \n"), "{err}");
    }
    let o = run("*.zz");
    assert_code(&o, 3);
    assert_stderr_contains(
        &o,
        "pattern `*.zz` matches no site; names under the root: mlp, attn, resid, logits",
    );
    let o = run("attn.zz*");
    assert_code(&o, 3);
    assert_stderr_contains(
        &o,
        "pattern `attn.zz*` matches no site; names under `attn`: q, k, v",
    );
    let o = run("resid.torso.fwd");
    assert_code(&o, 3);
    assert_stderr_contains(&o, "`fwd` is a stage");
}

#[test]
fn control_characters_in_user_input_are_escaped() {
    let escape = "\u{1b}[31m";
    for args in [
        vec![
            "cache",
            "--model",
            TINY,
            "--tokens",
            "1,2",
            "--out",
            "x",
            "--sites",
            "a\u{1b}[31mb",
        ],
        vec![
            "cache",
            "--model",
            TINY,
            "--tokens",
            "1,\u{1b}[2J",
            "--out",
            "x",
        ],
        vec!["sites", "--model", "/nonexistent/\u{1b}[31m\u{7}"],
        // clap's own usage error echoes the value (clap drops the control
        // characters itself; the tool escapes whatever is left).
        vec![
            "generate",
            "--model",
            TINY,
            "--prompt",
            "a",
            "--seed",
            "1\u{1b}[31m\u{7}",
        ],
        vec![
            "cache",
            "--model",
            TINY,
            "--tokens",
            "1",
            "--out",
            "/nonexistent/\u{202e}x",
        ],
    ] {
        let o = hooks(&args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        let err = stderr(&o);
        assert!(
            !err.contains(escape) && !err.contains('\u{7}') && !err.contains('\u{202e}'),
            "{args:?}: {err:?}"
        );
        assert!(
            args.contains(&"--seed")
                || ["\\u{1b}", "\\u{7}", "\\u{202e}"]
                    .iter()
                    .any(|e| err.contains(e)),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn absurd_layer_counts_are_bounded() {
    let tmp = TempDir::new("layers");
    let model = tiny_copy(&tmp, "big");
    crate::common::edit_config_json(&model, |c| {
        c.insert("n_layer".into(), 100_000_000.into());
    });
    let model = model.to_str().unwrap();
    let out = tmp.file("x.safetensors");
    // Under a 4 GiB address-space limit: nothing is allocated per layer
    // before the weights are checked (10⁸ layers' keys would need far more).
    let bounded = |args: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v 4194304 && exec '{}' {args}",
                env!("CARGO_BIN_EXE_hooks")
            ))
            .output()
            .unwrap()
    };
    let o = bounded(&format!(
        "cache --model '{model}' --tokens 1,2 --out '{out}'"
    ));
    assert_code(&o, 4);
    assert_stderr_contains(
        &o,
        "weights hold 2 layers (h.0 to h.1) but config.json says n_layer = 100000000",
    );
    let o = bounded(&format!("generate --model '{model}' --tokens 1 -n 1"));
    assert_code(&o, 4);
    // `sites` reads only the config: it prints the count without allocating per layer.
    let o = bounded(&format!("sites --model '{model}'"));
    assert_code(&o, 0);
    assert!(stdout(&o).contains("100000000 layers"), "{}", stdout(&o));
    assert!(stdout(&o).contains("0-99999999"), "{}", stdout(&o));
}

#[test]
fn bad_config_values_and_truncated_weights_are_named_precisely() {
    let tmp = TempDir::new("cfg");
    let model = tiny_copy(&tmp, "m");
    let dir = model.to_str().unwrap();
    let cases: [(&str, serde_json::Value, &str); 5] = [
        (
            "layer_norm_epsilon",
            (-1e-5).into(),
            "layer_norm_epsilon must be a finite number > 0, not -1e-5",
        ),
        (
            "layer_norm_epsilon",
            0.0.into(),
            "layer_norm_epsilon must be a finite number > 0, not 0e0",
        ),
        (
            "n_embd",
            4_611_686_018_427_387_904u64.into(),
            "the MLP width 4 · n_embd",
        ),
        ("n_inner", 0.into(), "n_inner must be positive, not 0"),
        ("vocab_size", 0.into(), "vocab_size must be positive, not 0"),
    ];
    for (field, value, needle) in cases {
        std::fs::copy(
            Path::new(TINY).join("config.json"),
            model.join("config.json"),
        )
        .unwrap();
        crate::common::edit_config_json(&model, |c| {
            c.insert(field.into(), value.clone());
            if field == "n_embd" {
                c.insert("n_head".into(), 1.into());
            }
        });
        let o = hooks(&["sites", "--model", dir]);
        assert_code(&o, 4);
        let err = stderr(&o);
        assert!(err.contains(needle), "{field}={value}: {err}");
        assert_eq!(err.matches("config.json").count(), 1, "{err}");
        assert!(!stdout(&o).contains("F 0"), "{}", stdout(&o));
    }
    std::fs::write(model.join("config.json"), "{ not json").unwrap();
    let o = hooks(&["sites", "--model", dir]);
    assert_code(&o, 4);
    assert_eq!(
        stderr(&o).matches("config.json").count(),
        1,
        "{}",
        stderr(&o)
    );

    // A truncated weights file says by how much.
    std::fs::copy(
        Path::new(TINY).join("config.json"),
        model.join("config.json"),
    )
    .unwrap();
    let weights = std::fs::read(Path::new(TINY).join("model.safetensors")).unwrap();
    std::fs::write(model.join("model.safetensors"), &weights[..100]).unwrap();
    let header = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap());
    let o = hooks(&["generate", "--model", dir, "--tokens", "1", "-n", "1"]);
    assert_code(&o, 4);
    assert_stderr_contains(
        &o,
        &format!(
            "not a valid safetensors file: truncated: the file has 100 bytes, the header needs {header}"
        ),
    );
    std::fs::write(
        model.join("model.safetensors"),
        &weights[..weights.len() - 10],
    )
    .unwrap();
    let o = hooks(&["generate", "--model", dir, "--tokens", "1", "-n", "1"]);
    assert_stderr_contains(
        &o,
        &format!(
            "truncated: the file has {} bytes, the header needs {}",
            weights.len() - 10,
            weights.len()
        ),
    );
}

/// The `hooks` tool loads a sharded BF16 folder like the f32 file (the same
/// greedy continuation), and a broken index is exit code 4 naming it.
#[test]
fn the_hooks_tool_loads_sharded_bf16_folders() {
    let run = |dir: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hooks"))
            .args(["generate", "--model"])
            .arg(dir)
            .args(["--tokens", "3,9,60,61,5", "-n", "3", "--temperature", "0"])
            .output()
            .unwrap()
    };
    let sharded = sharded_copy("tiny", Dtype::BF16, 4);
    let single = copy_as("tiny", Dtype::BF16);
    let (a, b) = (run(sharded.path()), run(single.path()));
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    assert!(!a.stdout.is_empty());
    std::fs::write(sharded.join(INDEX_FILE), "{ not json").unwrap();
    let o = run(sharded.path());
    assert_eq!(o.status.code(), Some(4));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(INDEX_FILE) && err.contains("the index is not JSON"),
        "{err}"
    );
}
