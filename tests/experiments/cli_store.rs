//! `hooks cache --dataset` and `hooks merge-manifests` end to end: a text
//! corpus through a folder's tokenizer, a run killed with SIGKILL and
//! restarted, slices merged, and the exit code of each kind of bad input.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::hooks;
use crate::cli_families::{ok, qwen2_with_tokenizer};
use crate::common::{TempDir, Tensors, XorShift, workspace_root};
use crate::store::file_bytes as files;
use burn_hooks::store::{ActivationStore, Manifest};

fn bundled() -> String {
    workspace_root()
        .join("checkpoints/induction-2l")
        .display()
        .to_string()
}

/// A corpus of `docs` random documents for the bundled model.
fn token_corpus(path: &Path, seed: u64, docs: usize) {
    let mut rng = XorShift::new(seed);
    let text: String = (0..docs)
        .map(|_| {
            let doc: Vec<u32> = (0..20 + rng.below(200))
                .map(|_| rng.below(128) as u32)
                .collect();
            format!("{}\n", serde_json::json!({ "tokens": doc }))
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_text_corpus_through_the_folders_tokenizer_matches_hooks_cache_on_row_0() {
    let model = qwen2_with_tokenizer();
    let tmp = TempDir::new("cli-store-text");
    let corpus = tmp.join("corpus.txt");
    std::fs::write(
        &corpus,
        "Hello world\nThe quick brown fox jumps over the lazy dog.\n\nHello again, world.\n",
    )
    .unwrap();
    let out = tmp.join("store");
    let m = model.path().to_str().unwrap();
    let o = out.to_str().unwrap();
    let summary = ok(&[
        "cache",
        "--model",
        m,
        "--dataset",
        corpus.to_str().unwrap(),
        "--sites",
        "resid.torso.post_mlp,mlp.post_act",
        "--layers",
        "1",
        "--seq-len",
        "8",
        "--out",
        o,
    ]);
    assert!(
        summary.contains("stored") && summary.contains("tokens/s"),
        "{summary}"
    );
    let store = ActivationStore::open(&out).unwrap();
    store.verify().unwrap();
    let manifest = store.manifest();
    assert!(manifest.tokens >= 16, "{manifest:?}");
    let keys: Vec<&str> = manifest.keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(
        keys,
        ["layers.1.mlp.post_act", "layers.1.resid.torso.post_mlp"]
    );

    let shard = Tensors::read(store.shard_path(0));
    let row0: Vec<String> = shard.i64("tokens")[..8]
        .iter()
        .map(i64::to_string)
        .collect();
    let direct = tmp.join("row0.safetensors");
    ok(&[
        "cache",
        "--model",
        m,
        "--tokens",
        &row0.join(","),
        "--sites",
        "resid.torso.post_mlp",
        "--out",
        direct.to_str().unwrap(),
    ]);
    let direct = Tensors::read(&direct);
    let key = "layers.1.resid.torso.post_mlp";
    let width = store.width(key).unwrap();
    assert_eq!(shard.f32(key)[..8 * width], direct.f32(key)[..]);
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_the_bytes_of_an_uninterrupted_run() {
    let tmp = TempDir::new("cli-store-kill");
    let corpus = tmp.join("corpus.jsonl");
    token_corpus(&corpus, 11, 600);
    let args = |out: &Path| -> Vec<String> {
        [
            "cache",
            "--model",
            &bundled(),
            "--dataset",
            corpus.to_str().unwrap(),
            "--sites",
            "mlp.post_act,attn.qk_probs",
            "--shard-mb",
            "1",
            "--batch",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let whole = tmp.join("whole");
    let whole_args = args(&whole);
    ok(&whole_args.iter().map(String::as_str).collect::<Vec<_>>());
    let expected = files(&whole);
    assert!(expected.len() > 10, "{} files", expected.len());

    let out = tmp.join("killed");
    let run_args = args(&out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hooks"))
        .args(&run_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has written a shard or two, mid-way.
    let started = Instant::now();
    let mut killed_with = None;
    while started.elapsed() < Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if let Ok(m) = Manifest::read(&out.join("manifest.json"))
            && m.shards.len() >= 2
        {
            child.kill().unwrap();
            killed_with = Some(m.shards.len());
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.wait().unwrap();
    if let Some(shards) = killed_with {
        let partial = Manifest::read(&out.join("manifest.json")).unwrap();
        assert!(!partial.complete && partial.shards.len() >= shards);
        ActivationStore::open(&out).unwrap().verify().unwrap();
        let summary = ok(&run_args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(summary.starts_with("resumed; "), "{summary}");
    } else {
        eprintln!("note: the run finished before it could be killed");
    }
    assert_eq!(files(&out), expected);
    // And a third run has nothing to do.
    let summary = ok(&run_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(summary.contains("nothing to do"), "{summary}");
}

#[test]
fn slices_on_several_machines_merge_with_merge_manifests() {
    let tmp = TempDir::new("cli-store-slices");
    let corpus = tmp.join("corpus.jsonl");
    token_corpus(&corpus, 12, 40);
    let out = tmp.join("store");
    let b = bundled();
    let c = corpus.to_str().unwrap().to_string();
    let o = out.to_str().unwrap().to_string();
    let run = |slice: &str| {
        ok(&[
            "cache",
            "--model",
            &b,
            "--dataset",
            &c,
            "--sites",
            "resid.torso.post_attn",
            "--seq-len",
            "16",
            "--shard-mb",
            "1",
            "--shard",
            slice,
            "--out",
            &o,
        ])
    };
    run("0/2");
    let early = hooks(&["merge-manifests", &o]);
    assert_eq!(early.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&early.stderr).contains("1/2 are missing"));
    run("1/2");
    let merged = ok(&["merge-manifests", &o]);
    assert!(merged.contains("merged 2 slices"), "{merged}");
    let store = ActivationStore::open(&out).unwrap();
    store.verify().unwrap();
    assert_eq!(store.manifest().corpus_rows, Some(store.manifest().rows()));
}

#[test]
fn bad_input_gets_the_input_exit_code_and_leaves_nothing() {
    let tmp = TempDir::new("cli-store-bad");
    let b = bundled();
    let corpus = tmp.join("bad.jsonl");
    std::fs::write(&corpus, "{\"tokens\": [1, 2]}\n{\"tokens\": [1, 900]}\n").unwrap();
    let out = tmp.join("store");
    let c = corpus.to_str().unwrap();
    let o = out.to_str().unwrap();
    // `hooks cache --model <bundled> --out <o> <args>`: exit code, stderr.
    let cache = |args: &[&str]| {
        let all: Vec<&str> = ["cache", "--model", &b, "--out", o]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let r = hooks(&all);
        (
            r.status.code(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    };
    let (status, err) = cache(&["--dataset", c, "--sites", "logits"]);
    assert_eq!(status, Some(3), "{err}");
    assert!(err.contains("line 2: token 900"), "{err}");
    let (status, err) = cache(&["--dataset", c]);
    assert_eq!(status, Some(3), "{err}");
    assert!(err.contains("--sites"), "{err}");
    // Corpus options without --dataset are input errors; gradients with it,
    // a usage error.
    let (status, err) = cache(&["--tokens", "1,2", "--seq-len", "4"]);
    assert_eq!(status, Some(3), "{err}");
    assert!(err.contains("--seq-len applies only to a corpus"), "{err}");
    let (status, _) = cache(&["--dataset", c, "--grad-target", "1", "--sites", "logits"]);
    assert_eq!(status, Some(2));
    let (status, err) = cache(&["--dataset", c, "--sites", "logits", "--shard", "2/2"]);
    assert_eq!(status, Some(3), "{err}");
    assert!(err.contains("0 ≤ i < n"), "{err}");
    let missing = tmp.join("missing.jsonl");
    let (status, err) = cache(&["--dataset", missing.to_str().unwrap(), "--sites", "logits"]);
    assert_eq!(status, Some(1), "{err}");
    assert!(err.contains("missing.jsonl"), "{err}");
}

/// `hooks cache --model <bundled> --dataset <corpus> --sites mlp.post_act
/// --seq-len 16 --out <out> <more>`: exit code and stderr, run in `cwd`.
fn cache_in(cwd: &Path, corpus: &Path, out: &str, more: &[&str]) -> (Option<i32>, String) {
    let r = Command::new(env!("CARGO_BIN_EXE_hooks"))
        .current_dir(cwd)
        .args([
            "cache",
            "--model",
            &bundled(),
            "--dataset",
            corpus.to_str().unwrap(),
            "--sites",
            "mlp.post_act",
            "--seq-len",
            "16",
            "--out",
            out,
        ])
        .args(more)
        .output()
        .unwrap();
    (
        r.status.code(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// 50 documents of 100 random ids (5000 tokens), as the audit's corpus.
fn audit_corpus(path: &Path) {
    let mut rng = XorShift::new(21);
    let text: String = (0..50)
        .map(|_| {
            let doc: Vec<u32> = (0..100).map(|_| rng.below(128) as u32).collect();
            format!("{}\n", serde_json::json!({ "tokens": doc }))
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn absurd_batch_and_shard_sizes_are_refused_or_bounded_by_the_corpus() {
    let tmp = TempDir::new("cli-store-sizes");
    let corpus = tmp.join("good.jsonl");
    audit_corpus(&corpus);
    let out = |name: &str| tmp.join(name).to_str().unwrap().to_string();
    for (more, expected) in [
        (
            ["--batch", "18446744073709551615"],
            "--batch 18446744073709551615 is too large",
        ),
        (
            ["--shard-mb", "0"],
            "--shard-mb 0: a shard must be at least 1 MiB",
        ),
        (
            ["--shard-mb", "18446744073709551615"],
            "--shard-mb 18446744073709551615 is too large",
        ),
    ] {
        let (code, err) = cache_in(&tmp.0, &corpus, &out("refused"), &more);
        assert_eq!(code, Some(3), "{more:?}: {err}");
        assert!(err.contains(expected), "{err}");
        assert!(!tmp.join("refused").exists());
    }
    // Allocated by what the 5000 tokens fill: a batch of 2^32 rows is one
    // pass per shard, a 100000 MiB shard holds the whole corpus.
    let (code, err) = cache_in(&tmp.0, &corpus, &out("batch"), &["--batch", "4294967296"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = cache_in(&tmp.0, &corpus, &out("shard"), &["--shard-mb", "100000"]);
    assert_eq!(code, Some(0), "{err}");
    let m = Manifest::read(&tmp.join("shard/manifest.json")).unwrap();
    assert_eq!((m.shards.len(), m.tokens), (1, 4992));
    // The same single shard (the manifests differ in rows per shard).
    let shard = |dir: &str| std::fs::read(tmp.join(dir).join("shard-00000.safetensors")).unwrap();
    assert!(shard("batch") == shard("shard"));
}

#[test]
fn a_value_beyond_f16_exits_5_naming_the_key_and_leaves_no_shard() {
    let tmp = TempDir::new("cli-store-f16");
    let model = crate::store::model_with_embedding(&tmp.join("model"), 120, 1e5);
    let corpus = tmp.join("c.jsonl");
    std::fs::write(
        &corpus,
        format!("{}\n", serde_json::json!({ "tokens": vec![120u32; 40] })),
    )
    .unwrap();
    let out = tmp.join("store");
    let o = hooks(&[
        "cache",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        corpus.to_str().unwrap(),
        "--sites",
        "resid.post_emb",
        "--seq-len",
        "16",
        "--dtype",
        "f16",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(
        err.contains("(key `resid.post_emb`)")
            && err.contains("overflowed f16 (largest finite value 65504)")
            && err.contains("--dtype f32"),
        "{err}"
    );
    let names: Vec<String> = files(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["manifest.json"], "no shard, no temporary file");
}

#[test]
fn resuming_after_the_corpus_changed_in_place_exits_1_naming_the_shard() {
    let tmp = TempDir::new("cli-store-changed");
    let corpus = tmp.join("good.jsonl");
    audit_corpus(&corpus);
    let out = tmp.join("store");
    let o = out.to_str().unwrap();
    let (code, err) = cache_in(&tmp.0, &corpus, o, &["--shard-mb", "1"]);
    assert_eq!(code, Some(0), "{err}");
    // What a run killed after its second shard leaves.
    let path = out.join("manifest.json");
    let mut m = Manifest::read(&path).unwrap();
    assert!(m.shards.len() > 3);
    m.shards.truncate(2);
    m.tokens = m.shards.iter().map(|s| s.n_tokens()).sum();
    (m.next_block, m.complete, m.corpus_rows, m.dropped_tokens) = (2, false, None, None);
    m.write(&path).unwrap();
    let extra: Vec<String> = files(&out)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| {
            ![
                "manifest.json",
                "shard-00000.safetensors",
                "shard-00001.safetensors",
            ]
            .contains(&n.as_str())
        })
        .collect();
    for name in extra {
        std::fs::remove_file(out.join(name)).unwrap();
    }
    // The first document's first two ids swapped: the same size.
    let text = std::fs::read_to_string(&corpus).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(first).unwrap();
    let ids = doc["tokens"].as_array_mut().unwrap();
    let i = (1..ids.len()).find(|&i| ids[i] != ids[0]).unwrap();
    ids.swap(0, i);
    std::fs::write(&corpus, format!("{doc}\n{rest}")).unwrap();
    assert_eq!(std::fs::read_to_string(&corpus).unwrap().len(), text.len());

    let before = files(&out);
    let (code, err) = cache_in(&tmp.0, &corpus, o, &["--shard-mb", "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no longer matches")
            && err.contains("shard-00000.safetensors")
            && err.contains("at corpus row 0, position 0")
            && err.contains("another --out folder"),
        "{err}"
    );
    assert_eq!(files(&out), before, "nothing was changed");
}

#[test]
fn a_damaged_shard_is_caught_by_merge_manifests_and_train_sae() {
    let tmp = TempDir::new("cli-store-damaged");
    let corpus = tmp.join("good.jsonl");
    audit_corpus(&corpus);
    let damage = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let n = bytes.len();
        bytes[n - 8..n - 4].copy_from_slice(&[0xff; 4]);
        std::fs::write(path, bytes).unwrap();
    };
    let sliced = tmp.join("sliced");
    let s = sliced.to_str().unwrap();
    for slice in ["0/2", "1/2"] {
        let (code, err) = cache_in(&tmp.0, &corpus, s, &["--shard-mb", "1", "--shard", slice]);
        assert_eq!(code, Some(0), "{err}");
    }
    damage(&sliced.join("shard-00001.safetensors"));
    let o = hooks(&["merge-manifests", s]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("shard-00001.safetensors") && err.contains("SHA-256"),
        "{err}"
    );
    assert!(!sliced.join("manifest.json").exists());

    let whole = tmp.join("whole");
    let w = whole.to_str().unwrap();
    let (code, err) = cache_in(&tmp.0, &corpus, w, &["--shard-mb", "1"]);
    assert_eq!(code, Some(0), "{err}");
    damage(&whole.join("shard-00002.safetensors"));
    let sae = tmp.join("sae.safetensors");
    let o = hooks(&[
        "train-sae",
        "--store",
        w,
        "--key",
        "layers.0.mlp.post_act",
        "--latents",
        "16",
        "--k",
        "4",
        "--steps",
        "40",
        "--batch",
        "64",
        "--out",
        sae.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("shard-00002.safetensors") && err.contains("SHA-256"),
        "{err}"
    );
    assert!(!sae.exists());
}

#[test]
fn corpus_errors_name_the_file_and_line_or_how_much_is_there() {
    let tmp = TempDir::new("cli-store-corpus");
    let bytes: Vec<u8> = (0..3000u32)
        .map(|i| (i * 7919 % 251) as u8 | 0x80)
        .collect();
    let npy = |n: usize, cut: usize| {
        let mut header = format!("{{'descr': '<u2', 'fortran_order': False, 'shape': ({n},), }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend((0..n as u16).flat_map(|t| (t % 128).to_le_bytes()));
        out.truncate(out.len() - cut);
        out
    };
    for (name, contents, expected) in [
        (
            "random.jsonl",
            bytes,
            "random.jsonl: line 1: not UTF-8 text",
        ),
        (
            "cut1.npy",
            npy(1000, 1),
            "promises 1000 token ids of 2 bytes each, but the file holds only 999 whole ids and 1 \
             byte of another",
        ),
        (
            "cut101.npy",
            npy(1000, 101),
            "holds only 949 whole ids and 1 byte of another",
        ),
        (
            "string.jsonl",
            b"{\"tokens\":\"1,2,3\"}\n".to_vec(),
            "line 1: \"tokens\" is not an array of token ids (it is a string)",
        ),
    ] {
        let corpus = tmp.join(name);
        std::fs::write(&corpus, contents).unwrap();
        let (code, err) = cache_in(&tmp.0, &corpus, "store", &[]);
        assert_eq!(code, Some(3), "{name}: {err}");
        assert!(
            err.contains(expected) && err.contains(name),
            "{name}: {err}"
        );
    }
}

#[test]
fn merging_slices_of_different_commands_gives_mergings_advice_in_words() {
    let tmp = TempDir::new("cli-store-merge");
    let corpus = tmp.join("good.jsonl");
    audit_corpus(&corpus);
    let s = tmp.join("sliced");
    let s = s.to_str().unwrap();
    let (code, err) = cache_in(&tmp.0, &corpus, s, &["--shard-mb", "1", "--shard", "0/2"]);
    assert_eq!(code, Some(0), "{err}");
    let more = ["--shard-mb", "1", "--shard", "1/2", "--layers", "0"];
    let (code, err) = cache_in(&tmp.0, &corpus, s, &more);
    assert_eq!(code, Some(0), "{err}");
    let o = hooks(&["merge-manifests", s]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("different --layers (0) than") && err.contains("(every layer)"),
        "{err}"
    );
    assert!(err.contains("rerun that slice"), "{err}");
    assert!(
        !err.contains("--out") && !err.contains("Some(") && !err.contains("None"),
        "{err}"
    );
}

#[test]
fn an_out_that_is_stdout_the_corpus_or_the_model_is_refused() {
    let tmp = TempDir::new("cli-store-out");
    let corpus = tmp.join("good.jsonl");
    audit_corpus(&corpus);
    let before = std::fs::read(&corpus).unwrap();
    let (code, err) = cache_in(&tmp.0, &corpus, "-", &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("--out - means standard output"), "{err}");
    assert!(!tmp.join("-").exists(), "no folder named `-`");
    let (code, err) = cache_in(&tmp.0, &corpus, corpus.to_str().unwrap(), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("is the --dataset file itself"), "{err}");
    assert_eq!(std::fs::read(&corpus).unwrap(), before);
    let (code, err) = cache_in(&tmp.0, &corpus, &bundled(), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("is the model's folder"), "{err}");
    let parent = workspace_root().join("checkpoints");
    let (code, err) = cache_in(&tmp.0, &corpus, parent.to_str().unwrap(), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("holds the model's folder"), "{err}");
}
