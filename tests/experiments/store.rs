//! Activation stores (`burn_hooks::store`): a corpus through the bundled
//! model into shards, checked against direct forward passes; resuming after
//! a crash at any point gives the same bytes as an uninterrupted run; slices
//! merge into the whole store; every corpus format packs the same rows; bad
//! input and foreign folders are refused with nothing changed.

use crate::common::{TempDir, Tensors, XorShift, workspace_root};

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use burn_hooks::store::{
    ActivationStore, Corpus, CorpusFormat, Manifest, ModelRecord, Outcome, Progress, Slice,
    StoreDtype, StoreError, StoreOptions, StoredKey, TokenWidth, blocks_needed, build_store,
    merge_manifests, stored_keys,
};
use hooks_core::{HookTree, Record, Recorder};
use hooks_model::backend::Cpu;
use hooks_model::tokenizer::Tokenizer;
use hooks_model::{Gpt2, Llama, LlamaHooks, TokenBatch, TransformerHooks};

fn bundled_dir() -> PathBuf {
    workspace_root().join("checkpoints/induction-2l")
}

fn bundled() -> Gpt2<Cpu> {
    Gpt2::load(bundled_dir(), &Default::default()).expect("the bundled model loads")
}

/// `docs` documents of 5 to 150 random ids below 128.
fn documents(seed: u64, docs: usize) -> Vec<Vec<u32>> {
    let mut rng = XorShift::new(seed);
    (0..docs)
        .map(|_| {
            (0..5 + rng.below(146))
                .map(|_| rng.below(128) as u32)
                .collect()
        })
        .collect()
}

fn write_jsonl(path: &Path, docs: &[Vec<u32>]) {
    let text: String = docs
        .iter()
        .map(|d| format!("{}\n", serde_json::json!({ "tokens": d })))
        .collect();
    std::fs::write(path, text).unwrap();
}

fn options(sites: &[&str]) -> StoreOptions {
    StoreOptions {
        sites: sites.iter().map(|s| s.to_string()).collect(),
        seq_len: 32,
        batch: 3,
        // About 5 rows of these sites per shard.
        shard_bytes: 400_000,
        ..StoreOptions::default()
    }
}

const SITES: [&str; 4] = [
    "mlp.post_act",
    "attn.qk_probs",
    "resid.torso.post_mlp",
    "logits",
];

fn build(
    model: &Gpt2<Cpu>,
    corpus: &Path,
    options: &StoreOptions,
    out: &Path,
) -> Result<Outcome, StoreError> {
    let corpus = Corpus::open(corpus, TokenWidth::U16)?;
    let record = ModelRecord::of(&bundled_dir(), "gpt2")?;
    build_store(model, &corpus, None, &record, options, out, &mut |_| {})
}

/// Builds slice `index` of `count` into `out` (a `--shard i/n` run).
fn build_slice(
    model: &Gpt2<Cpu>,
    corpus: &Path,
    options: &StoreOptions,
    (index, count): (usize, usize),
    out: &Path,
) -> Manifest {
    let slice = Slice { index, count };
    let options = StoreOptions {
        slice,
        ..options.clone()
    };
    built(build(model, corpus, &options, out).unwrap())
}

fn built(outcome: Outcome) -> Manifest {
    match outcome {
        Outcome::Built { manifest, .. } => manifest,
        Outcome::AlreadyComplete(m) => panic!("expected a build, got a complete store: {m:?}"),
    }
}

/// The recorded values of one batch, by key, through a plain `Recorder`.
fn direct(model: &Gpt2<Cpu>, rows: Vec<Vec<u32>>) -> Vec<(String, TensorData)> {
    let recorder = Recorder::<Cpu>::new();
    let mut hooks = TransformerHooks::<Cpu>::default();
    for site in SITES {
        hooks
            .append_to_path(&format!("{site}.fwd"), Record::into(&recorder))
            .unwrap();
    }
    model
        .forward(&TokenBatch::new(rows).unwrap(), &hooks)
        .unwrap();
    recorder
        .entries()
        .into_iter()
        .map(|(k, t)| (k, t.to_data()))
        .collect()
}

fn packed(docs: &[Vec<u32>], seq_len: usize) -> Vec<Vec<u32>> {
    let flat: Vec<u32> = docs.concat();
    flat.chunks_exact(seq_len).map(<[u32]>::to_vec).collect()
}

/// Every file of `dir` with its bytes, sorted by name.
pub(crate) fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn shards_hold_every_token_of_the_corpus_as_a_direct_forward_gives_it() {
    let model = bundled();
    let tmp = TempDir::new("store");
    let docs = documents(1, 40);
    let corpus = tmp.join("corpus.jsonl");
    write_jsonl(&corpus, &docs);
    let out = tmp.join("store");
    let manifest = built(build(&model, &corpus, &options(&SITES), &out).unwrap());

    let rows = packed(&docs, 32);
    let total: usize = docs.iter().map(Vec::len).sum();
    assert_eq!(manifest.corpus_rows, Some(rows.len() as u64));
    assert_eq!(manifest.tokens, rows.len() as u64 * 32);
    assert_eq!(manifest.dropped_tokens, Some((total % 32) as u64));
    assert!(manifest.complete);
    assert_eq!(manifest.keys[0].key, "layers.0.mlp.post_act");
    assert_eq!(manifest.keys.last().unwrap().key, "logits");
    assert_eq!(
        manifest.keys.len(),
        7,
        "three sites at 2 layers, and logits"
    );
    let r = manifest.rows_per_shard as usize;
    assert!(r > 1 && manifest.shards.len() > 3, "{r} rows per shard");
    assert_eq!(manifest.shards.len(), rows.len().div_ceil(r));

    // Every shard: [N, ..] per key, equal to a direct forward of its rows
    // in one batch (another batching than the store's: values must not
    // depend on it), and tokens / row / position.
    let store = ActivationStore::open(&out).unwrap();
    store.verify().unwrap();
    for (i, shard) in manifest.shards.iter().enumerate() {
        let st = Tensors::read(store.shard_path(i));
        let [first, end] = shard.rows.map(|x| x as usize);
        let n = (end - first) * 32;
        let tokens: Vec<i64> = rows[first..end]
            .concat()
            .iter()
            .map(|&t| t as i64)
            .collect();
        assert_eq!(st.i64("tokens"), tokens);
        assert_eq!(
            st.i64("row"),
            (first..end)
                .flat_map(|r| [r as i64; 32])
                .collect::<Vec<_>>()
        );
        assert_eq!(
            st.i64("position"),
            (0..end - first).flat_map(|_| 0..32i64).collect::<Vec<_>>()
        );
        for (key, data) in direct(&model, rows[first..end].to_vec()) {
            let stored = st.shape(&key);
            let mut shape = data.shape.to_vec();
            let per_token: Vec<usize> = shape.split_off(2);
            assert_eq!(stored[0], n, "{key}");
            assert_eq!(&stored[1..], per_token.as_slice(), "{key}");
            assert_eq!(
                st.f32(&key),
                data.to_vec::<f32>().unwrap(),
                "{key}, shard {i}"
            );
        }
    }

    // The reader gives each key's values in corpus order.
    let mut seen = 0;
    for chunk in store.key_chunks("layers.1.mlp.post_act") {
        let (values, n) = chunk.unwrap();
        assert_eq!(values.len(), n * 256);
        seen += n;
    }
    assert_eq!(seen as u64, store.tokens());
    // A token's attention probabilities are [K, H]: 32 keys by the heads.
    let heads = model.config.n_head;
    assert_eq!(store.width("layers.0.attn.qk_probs").unwrap(), 32 * heads);
    let err = store.key_chunks("layers.2.mlp.post_act").next().unwrap();
    assert!(matches!(err, Err(StoreError::UnknownKey { .. })), "{err:?}");
}

#[test]
fn a_crash_at_any_point_resumes_to_the_bytes_of_an_uninterrupted_run() {
    let model = bundled();
    let tmp = TempDir::new("store-resume");
    let corpus = tmp.join("corpus.jsonl");
    write_jsonl(&corpus, &documents(2, 30));
    let opts = options(&["mlp.post_act", "resid.torso.post_attn"]);
    let whole = tmp.join("whole");
    built(build(&model, &corpus, &opts, &whole).unwrap());
    let expected = file_bytes(&whole);

    let record = ModelRecord::of(&bundled_dir(), "gpt2").unwrap();
    let source = Corpus::open(&corpus, TokenWidth::U16).unwrap();
    // Crash after 1, 4, 9 progress reports (mid-shard and at shard ends).
    for crash_after in [1usize, 4, 9] {
        let out = tmp.join(&format!("crash-{crash_after}"));
        let mut calls = 0;
        let crashed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            build_store(
                &model,
                &source,
                None,
                &record,
                &opts,
                &out,
                &mut |_: &Progress| {
                    calls += 1;
                    if calls == crash_after {
                        panic!("simulated crash");
                    }
                },
            )
        }));
        assert!(crashed.is_err(), "the run was interrupted");
        // What the crash left: a manifest listing whole shards only.
        let partial = Manifest::read(&out.join("manifest.json")).unwrap();
        assert!(!partial.complete);
        ActivationStore::open(&out).unwrap().verify().unwrap();
        // A killed write leaves a temporary file; the resume removes it.
        std::fs::write(out.join(".shard-00001.safetensors.partial-99-0"), b"junk").unwrap();
        let Outcome::Built { resumed, .. } = build(&model, &corpus, &opts, &out).unwrap() else {
            panic!("expected a build")
        };
        assert_eq!(resumed, !partial.shards.is_empty());
        assert_eq!(
            file_bytes(&out),
            expected,
            "after a crash at report {crash_after}"
        );
    }
    // Rerunning a complete store does nothing.
    assert!(matches!(
        build(&model, &corpus, &opts, &whole).unwrap(),
        Outcome::AlreadyComplete(_)
    ));
    assert_eq!(file_bytes(&whole), expected);
}

#[test]
fn slices_merge_into_the_whole_store() {
    let model = bundled();
    let tmp = TempDir::new("store-slices");
    let corpus = tmp.join("corpus.jsonl");
    write_jsonl(&corpus, &documents(3, 40));
    let opts = options(&["resid.torso.post_mlp"]);
    let opts = StoreOptions {
        shard_bytes: 60_000,
        ..opts
    };
    let whole = tmp.join("whole");
    let whole_manifest = built(build(&model, &corpus, &opts, &whole).unwrap());
    assert!(whole_manifest.shards.len() >= 6);

    let sliced = tmp.join("sliced");
    for index in 0..3 {
        let part = build_slice(&model, &corpus, &opts, (index, 3), &sliced);
        assert!(part.shards.iter().all(|s| s.block % 3 == index as u64));
        if index == 1 {
            // Not all slices yet: merging is refused, naming the missing one.
            let err = merge_manifests(&sliced).unwrap_err().to_string();
            assert!(err.contains("2/3") && err.contains("missing"), "{err}");
            let err = ActivationStore::open(&sliced).unwrap_err().to_string();
            assert!(err.contains("merge-manifests"), "{err}");
        }
    }
    let err = build(&model, &corpus, &opts, &sliced)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds the slices"),
        "a whole run into the slices' folder: {err}"
    );
    let merged = merge_manifests(&sliced).unwrap();
    assert_eq!(merged, whole_manifest);
    for shard in &whole_manifest.shards {
        assert_eq!(
            std::fs::read(sliced.join(&shard.file)).unwrap(),
            std::fs::read(whole.join(&shard.file)).unwrap()
        );
    }
    // Merging again is harmless; a slice into a merged store is refused.
    assert_eq!(merge_manifests(&sliced).unwrap(), merged);
    let err = build(
        &model,
        &corpus,
        &StoreOptions {
            slice: Slice { index: 0, count: 3 },
            ..opts
        },
        &sliced,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("a slice cannot be added"), "{err}");
}

#[test]
fn every_corpus_format_packs_the_same_rows() {
    let tmp = TempDir::new("store-formats");
    let docs = documents(4, 12);
    let flat: Vec<u32> = docs.concat();
    let jsonl = tmp.join("c.jsonl");
    write_jsonl(&jsonl, &docs);
    let bin16 = tmp.join("c.bin");
    std::fs::write(
        &bin16,
        flat.iter()
            .flat_map(|&t| (t as u16).to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let bin32 = tmp.join("c.u32");
    std::fs::write(
        &bin32,
        flat.iter()
            .flat_map(|t| t.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let npy = tmp.join("c.npy");
    std::fs::write(
        &npy,
        npy_bytes(
            "<i8",
            &flat
                .iter()
                .map(|&t| (t as u64).to_le_bytes())
                .collect::<Vec<_>>()
                .concat(),
            flat.len(),
        ),
    )
    .unwrap();

    let rows_of = |path: &Path, width: TokenWidth| -> (Vec<Vec<u32>>, u64) {
        let corpus = Corpus::open(path, width).unwrap();
        let mut rows = corpus.rows(17, None, 128, None).unwrap();
        let out: Vec<Vec<u32>> = rows.by_ref().map(Result::unwrap).collect();
        (out, rows.dropped_tokens())
    };
    let expected = (packed(&docs, 17), (flat.len() % 17) as u64);
    assert_eq!(rows_of(&jsonl, TokenWidth::U16), expected);
    assert_eq!(rows_of(&bin16, TokenWidth::U16), expected);
    assert_eq!(rows_of(&bin32, TokenWidth::U32), expected);
    assert_eq!(rows_of(&npy, TokenWidth::U16), expected);
    assert_eq!(
        Corpus::open(&npy, TokenWidth::U16).unwrap().format(),
        CorpusFormat::Npy
    );

    // A separator after each document.
    let corpus = Corpus::open(&jsonl, TokenWidth::U16).unwrap();
    let with_sep: Vec<Vec<u32>> = corpus
        .rows(17, Some(127), 128, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let joined: Vec<u32> = docs
        .iter()
        .flat_map(|d| d.iter().copied().chain([127]))
        .collect();
    assert_eq!(
        with_sep,
        joined
            .chunks_exact(17)
            .map(<[u32]>::to_vec)
            .collect::<Vec<_>>()
    );

    // Text, through a tokenizer.json (its post-processor adds the
    // begin-of-text token to each document); empty lines are skipped.
    let tok = Tokenizer::from_file(crate::common::fixture("tokenizer/tokenizer.json")).unwrap();
    let lines = [
        "Hello world",
        "",
        "The quick brown fox jumps over the lazy dog.",
    ];
    let txt = tmp.join("c.txt");
    std::fs::write(&txt, lines.join("\n")).unwrap();
    let text_rows: Vec<u32> = Corpus::open(&txt, TokenWidth::U16)
        .unwrap()
        .rows(4, None, tok.vocab_size(), Some(&tok))
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .concat();
    let encoded: Vec<u32> = [lines[0], lines[2]]
        .iter()
        .flat_map(|l| tok.encode(l).unwrap())
        .collect();
    assert_eq!(text_rows, encoded[..encoded.len() / 4 * 4]);
    let jsonl_text = tmp.join("t.jsonl");
    std::fs::write(
        &jsonl_text,
        format!(
            "{}\n{}\n",
            serde_json::json!({"text": lines[0]}),
            serde_json::json!({"text": lines[2]})
        ),
    )
    .unwrap();
    let corpus = Corpus::open(&jsonl_text, TokenWidth::U16).unwrap();
    assert_eq!(corpus.format(), CorpusFormat::JsonlText);
    let from_jsonl: Vec<u32> = corpus
        .rows(4, None, tok.vocab_size(), Some(&tok))
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(from_jsonl, text_rows);
}

/// A `.npy` file of `n` elements of type `descr`.
fn npy_bytes(descr: &str, data: &[u8], n: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n},), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn half_precision_stores_round_the_f32_values() {
    let model = bundled();
    let tmp = TempDir::new("store-half");
    let corpus = tmp.join("corpus.jsonl");
    write_jsonl(&corpus, &documents(5, 6));
    let read = |dtype: StoreDtype| -> Vec<f32> {
        let out = tmp.join(&format!("{dtype:?}"));
        let opts = StoreOptions {
            dtype,
            ..options(&["resid.torso.post_mlp"])
        };
        built(build(&model, &corpus, &opts, &out).unwrap());
        let store = ActivationStore::open(&out).unwrap();
        store
            .key_chunks("layers.1.resid.torso.post_mlp")
            .map(|c| c.unwrap().0)
            .collect::<Vec<_>>()
            .concat()
    };
    let exact = read(StoreDtype::F32);
    let f16 = read(StoreDtype::F16);
    let bf16 = read(StoreDtype::Bf16);
    assert!(!exact.is_empty());
    for (i, &x) in exact.iter().enumerate() {
        assert_eq!(f16[i], half::f16::from_f32(x).to_f32());
        assert_eq!(bf16[i], half::bf16::from_f32(x).to_f32());
    }
}

#[test]
fn bad_corpora_and_options_are_errors_naming_what_is_wrong() {
    let model = bundled();
    let tmp = TempDir::new("store-errors");
    let err_of = |name: &str, contents: &[u8], opts: &StoreOptions| -> String {
        let path = tmp.join(name);
        std::fs::write(&path, contents).unwrap();
        let out = tmp.join(&format!("out-{name}"));
        let err = build(&model, &path, opts, &out).unwrap_err().to_string();
        // Nothing was stored: at most the manifest of a store not yet begun.
        if out.exists() {
            let files: Vec<String> = file_bytes(&out).into_iter().map(|(n, _)| n).collect();
            assert!(
                files.is_empty() || files == ["manifest.json"],
                "{name}: {files:?}"
            );
            if !files.is_empty() {
                assert!(
                    Manifest::read(&out.join("manifest.json"))
                        .unwrap()
                        .shards
                        .is_empty()
                );
            }
        }
        err
    };
    let opts = options(&["mlp.post_act"]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "big.jsonl",
            b"{\"tokens\": [1, 2, 3]}\n{\"tokens\": [4, 500]}\n".to_vec(),
            "line 2: token 500 (position 1",
        ),
        (
            "neg.jsonl",
            b"{\"tokens\": [1, -2]}\n".to_vec(),
            "\"tokens\"[1] = -2 is not a token id",
        ),
        (
            "mixed.jsonl",
            b"{\"tokens\": [1]}\n{\"text\": \"a\"}\n".to_vec(),
            "line 2: no \"tokens\" field (the first line has one)",
        ),
        (
            "string.jsonl",
            b"{\"tokens\":\"1,2,3\"}\n".to_vec(),
            "line 1: \"tokens\" is not an array of token ids (it is a string)",
        ),
        (
            "array.jsonl",
            b"{\"tokens\": [1]}\n[1, 2]\n".to_vec(),
            "line 2: not a JSON object (it is an array)",
        ),
        (
            "binary.jsonl",
            (0..3000u32)
                .map(|i| (i * 7919 % 251) as u8 | 0x80)
                .collect(),
            "line 1: not UTF-8 text",
        ),
        (
            "late.jsonl",
            b"{\"tokens\": [1]}\n\xff\xfe\n".to_vec(),
            "line 2: not UTF-8 text",
        ),
        (
            "bad.jsonl",
            b"{\"tokens\": [1]}\nnot json\n".to_vec(),
            "line 2: not a JSON object",
        ),
        (
            "none.jsonl",
            b"{\"ids\": [1]}\n".to_vec(),
            "neither \"text\" nor \"tokens\"",
        ),
        (
            "odd.bin",
            vec![1, 0, 2],
            "3 bytes, not a whole number of 2-byte token ids",
        ),
        (
            "far.bin",
            [5u16, 300].iter().flat_map(|t| t.to_le_bytes()).collect(),
            "token 1: id 300 is outside",
        ),
        (
            "f.npy",
            npy_bytes("<f4", &[0; 8], 2),
            "element type \"<f4\"",
        ),
        (
            "short.npy",
            b"\x93NUMPY".to_vec(),
            "shorter than the .npy magic",
        ),
        (
            "trunc.npy",
            npy_bytes("<u2", &[1, 0], 5),
            "ends early: its header promises 5 token ids of 2 bytes each, but the file holds \
             only 1 whole id (is it truncated?)",
        ),
        (
            "trunc101.npy",
            npy_bytes("<u2", &[1u8; 2000][..2000 - 101], 1000),
            "promises 1000 token ids of 2 bytes each, but the file holds only 949 whole ids and \
             1 byte of another",
        ),
    ];
    for (name, contents, expected) in cases {
        let err = err_of(name, &contents, &opts);
        assert!(
            err.contains(expected) && err.contains(name),
            "{name}: {err}"
        );
    }
    let ok = b"{\"tokens\": [1, 2, 3]}\n";
    let err = err_of(
        "layers.jsonl",
        ok,
        &StoreOptions {
            layers: Some(vec![2]),
            ..opts.clone()
        },
    );
    assert!(err.contains("--layers 2: the model has 2 layers"), "{err}");
    let err = err_of(
        "seq.jsonl",
        ok,
        &StoreOptions {
            seq_len: 65,
            ..opts.clone()
        },
    );
    assert!(err.contains("--seq-len 65") && err.contains("64"), "{err}");
    let err = err_of(
        "sites.jsonl",
        ok,
        &StoreOptions {
            sites: vec!["mlp.post_ac".into()],
            ..opts.clone()
        },
    );
    assert!(err.contains("did you mean `post_act`"), "{err}");
    let err = err_of(
        "outside.jsonl",
        ok,
        &StoreOptions {
            sites: vec!["logits".into()],
            layers: Some(vec![0]),
            ..opts.clone()
        },
    );
    assert!(err.contains("selects nothing"), "{err}");
}

#[test]
fn a_folder_holding_something_else_is_left_as_it_was() {
    let model = bundled();
    let tmp = TempDir::new("store-foreign");
    let corpus = tmp.join("corpus.jsonl");
    write_jsonl(&corpus, &documents(6, 10));
    let opts = options(&["mlp.post_act"]);

    let foreign = tmp.join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    let err = build(&model, &corpus, &opts, &foreign)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("notes.txt") && err.contains("not part of an activation store"),
        "{err}"
    );
    assert_eq!(
        file_bytes(&foreign),
        vec![("notes.txt".to_string(), b"mine".to_vec())]
    );

    // A store made with other options is not resumed into.
    let out = tmp.join("store");
    built(build(&model, &corpus, &opts, &out).unwrap());
    let before = file_bytes(&out);
    let err = build(
        &model,
        &corpus,
        &StoreOptions {
            seq_len: 16,
            ..opts.clone()
        },
        &out,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("different --seq-len (32, this run: 16)"),
        "{err}"
    );
    // Every field in words, not as Rust writes its values.
    let differing = [
        (
            StoreOptions {
                layers: Some(vec![0]),
                ..opts.clone()
            },
            "different --layers (every layer, this run: 0)",
        ),
        (
            StoreOptions {
                dtype: StoreDtype::F16,
                ..opts.clone()
            },
            "different --dtype (f32, this run: f16)",
        ),
        (
            StoreOptions {
                separator: Some(5),
                ..opts.clone()
            },
            "different separator (none, this run: token 5)",
        ),
    ];
    for (other, expected) in differing {
        let err = build(&model, &corpus, &other, &out)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("Some(") && !err.contains("None"), "{err}");
    }
    let longer = tmp.join("longer.jsonl");
    write_jsonl(&longer, &documents(6, 11));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let err = build(&model, &longer, &opts, &out).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "different corpus (JSON lines of token ids, {} bytes, this run: JSON lines of token \
             ids, {} bytes)",
            size(&corpus),
            size(&longer)
        )),
        "{err}"
    );
    let err = build(
        &model,
        &corpus,
        &StoreOptions {
            sites: vec!["attn.v".into()],
            ..opts.clone()
        },
        &out,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("different --sites"), "{err}");
    assert_eq!(file_bytes(&out), before);

    // A shard changed after the fact is caught when resuming and verifying.
    let store = ActivationStore::open(&out).unwrap();
    let shard = store.shard_path(0);
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    let err = store.verify().unwrap_err().to_string();
    assert!(err.contains("SHA-256"), "{err}");
}

#[test]
fn the_store_runs_on_any_hooked_model() {
    // A Llama-family model: same keys scheme, its own sites.
    let model =
        hooks_model::Llama::<Cpu>::load(crate::common::fixture("llama/qwen2"), &Default::default())
            .unwrap();
    let tmp = TempDir::new("store-llama");
    let corpus = tmp.join("corpus.jsonl");
    write_jsonl(&corpus, &documents(7, 8));
    let out = tmp.join("store");
    let record = ModelRecord::of(&crate::common::fixture("llama/qwen2"), "qwen2").unwrap();
    let source = Corpus::open(&corpus, TokenWidth::U16).unwrap();
    let opts = StoreOptions {
        layers: Some(vec![1]),
        ..options(&["mlp.up", "attn.k"])
    };
    let manifest =
        built(build_store(&model, &source, None, &record, &opts, &out, &mut |_| {}).unwrap());
    let keys: Vec<(&str, &[usize])> = manifest
        .keys
        .iter()
        .map(|k| (k.key.as_str(), k.shape.as_slice()))
        .collect();
    let dims = model.dims();
    assert_eq!(
        keys,
        [
            ("layers.1.mlp.up", &[dims.d_mlp][..]),
            ("layers.1.attn.k", &[dims.n_kv_head, dims.d_head][..]),
        ]
    );
    // Only the first two blocks ran (no unembedding): the values are still
    // those of a full forward.
    assert_eq!(blocks_needed::<Cpu, Llama<Cpu>>(&manifest.keys), Some(2));
    let store = ActivationStore::open(&out).unwrap();
    store.verify().unwrap();
    let (stored, n) = store.key_chunks("layers.1.mlp.up").next().unwrap().unwrap();
    let rows = packed(&documents(7, 8), 32);
    let recorder = Recorder::<Cpu>::new();
    let mut hooks = LlamaHooks::<Cpu>::default();
    hooks
        .append_to_path("mlp.up.fwd", Record::into(&recorder))
        .unwrap();
    model
        .forward(&TokenBatch::new(rows[..n / 32].to_vec()).unwrap(), &hooks)
        .unwrap();
    let direct = recorder.get::<3>("mlp.up", Some(1)).unwrap();
    assert_eq!(stored, direct.into_data().to_vec::<f32>().unwrap());
}

#[test]
fn a_store_runs_only_the_blocks_its_keys_need() {
    let dims = bundled().dims();
    let keys = |sites: &[&str], layers: Option<Vec<usize>>| {
        let opts = StoreOptions {
            layers,
            ..options(sites)
        };
        stored_keys::<Cpu, Gpt2<Cpu>>(&dims, &opts).unwrap()
    };
    let needed = |k: Vec<StoredKey>| blocks_needed::<Cpu, Gpt2<Cpu>>(&k);
    assert_eq!(needed(keys(&["resid.post_emb"], None)), Some(0));
    assert_eq!(needed(keys(&["mlp.post_act"], Some(vec![0]))), Some(1));
    assert_eq!(needed(keys(&["attn.*"], None)), Some(2));
    assert_eq!(needed(keys(&["resid.ln_f.*"], None)), None);
    assert_eq!(needed(keys(&["logits"], None)), None);
}

/// A copy of the bundled model in `dir` whose embedding of token `id` is
/// `value` everywhere: `resid.post_emb` then holds about `value` at each
/// position of that token.
pub(crate) fn model_with_embedding(dir: &Path, id: usize, value: f32) -> PathBuf {
    copy_bundled(dir);
    crate::common::edit_f32(dir, "transformer.wte.weight", |v| {
        let d = v.len() / 128;
        v[id * d..(id + 1) * d].fill(value);
    });
    dir.to_path_buf()
}

/// A copy of the bundled model's files in `dir`.
fn copy_bundled(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(bundled_dir().join(f), dir.join(f)).unwrap();
    }
    dir.to_path_buf()
}

/// The temporary (`.partial-`) files left in `dir`.
fn partial_files(dir: &Path) -> Vec<String> {
    file_bytes(dir)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.contains(".partial-"))
        .collect()
}

#[test]
fn absurd_batch_and_shard_sizes_are_bounded_by_the_corpus_or_refused() {
    let model = bundled();
    let tmp = TempDir::new("store-sizes");
    let corpus = tmp.join("corpus.jsonl");
    write_jsonl(&corpus, &documents(9, 20));
    let opts = options(&["mlp.post_act"]);
    let reference = tmp.join("reference");
    built(build(&model, &corpus, &opts, &reference).unwrap());

    // A batch of 2^32 rows or shards of u64::MAX bytes allocate what the
    // corpus fills, and a batch larger than the corpus is one forward pass
    // per shard: the same shards.
    let out = tmp.join("huge-batch");
    let huge_batch = StoreOptions {
        batch: 1 << 32,
        ..opts.clone()
    };
    built(build(&model, &corpus, &huge_batch, &out).unwrap());
    assert_eq!(file_bytes(&out), file_bytes(&reference));
    let out = tmp.join("huge-shard");
    let huge_shard = StoreOptions {
        shard_bytes: u64::MAX,
        ..opts.clone()
    };
    let manifest = built(build(&model, &corpus, &huge_shard, &out).unwrap());
    assert_eq!(manifest.shards.len(), 1);
    assert_eq!(manifest.tokens, built_tokens(&reference));

    // Sizes whose products overflow, and empty shards, are option errors.
    let refused = [
        (
            StoreOptions {
                batch: usize::MAX,
                ..opts.clone()
            },
            "--batch 18446744073709551615 is too large",
        ),
        (
            StoreOptions {
                shard_bytes: 0,
                ..opts.clone()
            },
            "--shard-mb at least 1",
        ),
    ];
    for (bad, expected) in refused {
        let out = tmp.join("refused");
        let err = build(&model, &corpus, &bad, &out).unwrap_err();
        assert!(matches!(err, StoreError::Options(_)), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
        assert!(!out.exists());
    }
}

fn built_tokens(dir: &Path) -> u64 {
    Manifest::read(&dir.join("manifest.json")).unwrap().tokens
}

#[test]
fn a_value_beyond_f16_or_bf16_is_an_error_naming_the_key_and_keeps_the_shards_before() {
    let tmp = TempDir::new("store-overflow");
    // Token 120's embedding overflows f16 (whose largest value is 65504),
    // and token 121's bf16; both are finite in f32.
    let dir = model_with_embedding(&tmp.join("model-f16"), 120, 1e5);
    let f16_model = Gpt2::<Cpu>::load(&dir, &Default::default()).unwrap();
    let dir = model_with_embedding(&tmp.join("model-bf16"), 121, 3.4e38);
    let bf16_model = Gpt2::<Cpu>::load(&dir, &Default::default()).unwrap();
    // 10 rows of 32 without them, then a row starting with them.
    let flat: Vec<u32> = documents(10, 40).concat().iter().map(|t| t % 100).collect();
    let last_row = [120, 121].into_iter().chain([7; 30]).collect();
    let corpus = tmp.join("corpus.jsonl");
    write_jsonl(&corpus, &[flat[..10 * 32].to_vec(), last_row]);
    // 4 rows per shard: shards 0 and 1 are whole before row 10 (block 2).
    let opts = StoreOptions {
        shard_bytes: 4 * 32 * (64 * 2 + 24),
        ..options(&["resid.post_emb"])
    };
    for (model, dtype, expected) in [
        (
            &f16_model,
            StoreDtype::F16,
            "overflowed f16 (largest finite value 65504)",
        ),
        (&bf16_model, StoreDtype::Bf16, "overflowed bf16"),
    ] {
        let out = tmp.join(&format!("store-{dtype}"));
        let opts = StoreOptions {
            dtype,
            ..opts.clone()
        };
        let err = build(model, &corpus, &opts, &out).unwrap_err();
        let StoreError::Overflow { row, value, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*row, 10);
        assert!(value.is_finite());
        let text = err.to_string();
        assert!(
            text.contains("`resid.post_emb`")
                && text.contains(expected)
                && text.contains("--dtype f32"),
            "{text}"
        );
        // The shards before it are whole and listed; nothing else is there.
        let manifest = Manifest::read(&out.join("manifest.json")).unwrap();
        assert_eq!(manifest.shards.len(), 2);
        assert!(!manifest.complete);
        let names: Vec<String> = file_bytes(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "manifest.json",
                "shard-00000.safetensors",
                "shard-00001.safetensors"
            ]
        );
        ActivationStore::open(&out).unwrap().verify().unwrap();
        // --allow-non-finite stores it as infinity.
        let allowed = StoreOptions {
            allow_non_finite: true,
            ..opts.clone()
        };
        built(build(model, &corpus, &allowed, &out).unwrap());
        let store = ActivationStore::open(&out).unwrap();
        let values: Vec<f32> = store
            .key_chunks("resid.post_emb")
            .map(|c| c.unwrap().0)
            .collect::<Vec<_>>()
            .concat();
        assert!(values.iter().any(|v| v.is_infinite()));
    }
}

#[test]
fn resuming_over_a_corpus_edited_in_place_is_refused_naming_the_shard() {
    let model = bundled();
    let tmp = TempDir::new("store-changed");
    let corpus = tmp.join("corpus.jsonl");
    let mut docs = documents(11, 30);
    write_jsonl(&corpus, &docs);
    let opts = options(&["mlp.post_act"]);
    let out = tmp.join("store");
    // A run that stops after its second shard.
    let record = ModelRecord::of(&bundled_dir(), "gpt2").unwrap();
    let source = Corpus::open(&corpus, TokenWidth::U16).unwrap();
    let crashed = std::panic::catch_unwind(AssertUnwindSafe(|| {
        build_store(
            &model,
            &source,
            None,
            &record,
            &opts,
            &out,
            &mut |p: &Progress| {
                if p.shards == 2 {
                    panic!("simulated crash");
                }
            },
        )
    }));
    assert!(crashed.is_err());
    let partial = Manifest::read(&out.join("manifest.json")).unwrap();
    assert_eq!(partial.shards.len(), 2);
    let r = partial.rows_per_shard as usize;

    // One token of shard 1's first row changes, the file keeping its size:
    // the token at flat position r × 32 + 3, to another of as many digits.
    let at = r * 32 + 3;
    let (mut doc, mut i) = (0, at);
    while i >= docs[doc].len() {
        i -= docs[doc].len();
        doc += 1;
    }
    let t = docs[doc][i];
    let digits = |x: u32| x.to_string().len();
    docs[doc][i] = if digits(t + 1) == digits(t) && t + 1 < 128 {
        t + 1
    } else {
        t - 1
    };
    let size = std::fs::metadata(&corpus).unwrap().len();
    write_jsonl(&corpus, &docs);
    assert_eq!(std::fs::metadata(&corpus).unwrap().len(), size);

    let before = file_bytes(&out);
    let err = build(&model, &corpus, &opts, &out).unwrap_err();
    assert!(matches!(err, StoreError::CorpusChanged { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("shard-00001.safetensors")
            && text.contains(&format!(
                "at corpus row {r}, position 3, the corpus now has token {} where the shard \
                 holds {t}",
                docs[doc][i]
            ))
            && text.contains("another --out folder"),
        "{text}"
    );
    assert_eq!(file_bytes(&out), before, "nothing was changed");

    // So is a corpus that now ends inside the stored rows (padded with a
    // blank line to the same size).
    docs[doc][i] = t;
    let line = format!(
        "{}\n",
        serde_json::json!({ "tokens": docs.concat()[..r * 32 + 40] })
    );
    let blank = " ".repeat(size as usize - line.len() - 1);
    std::fs::write(&corpus, format!("{line}{blank}\n")).unwrap();
    let err = build(&model, &corpus, &opts, &out).unwrap_err();
    assert!(matches!(err, StoreError::CorpusChanged { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!(
            "the corpus now ends after {} rows, but the shard holds rows {r} to {}",
            r + 1,
            2 * r - 1
        )),
        "{err}"
    );
    assert_eq!(file_bytes(&out), before);
}

#[test]
fn readers_and_merging_catch_a_damaged_shard_by_its_sha256() {
    let model = bundled();
    let tmp = TempDir::new("store-damaged");
    let corpus = tmp.join("corpus.jsonl");
    write_jsonl(&corpus, &documents(12, 30));
    let opts = options(&["mlp.post_act"]);
    // 4 bytes overwritten near the end of a shard (its `position` values).
    let damage = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let n = bytes.len();
        bytes[n - 12..n - 8].copy_from_slice(&[0xff; 4]);
        std::fs::write(path, bytes).unwrap();
    };

    let out = tmp.join("store");
    built(build(&model, &corpus, &opts, &out).unwrap());
    let store = ActivationStore::open(&out).unwrap();
    assert!(store.manifest().shards.len() >= 3);
    damage(&store.shard_path(1));
    let chunks: Vec<_> = store.key_chunks("layers.0.mlp.post_act").collect();
    assert_eq!(chunks.len(), 2, "the iteration stops at the damaged shard");
    assert!(chunks[0].is_ok());
    let err = chunks[1].as_ref().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string().contains("shard-00001.safetensors") && err.to_string().contains("SHA-256"),
        "{err}"
    );
    let err = store.verify().unwrap_err().to_string();
    assert!(err.contains("shard-00001.safetensors"), "{err}");

    // Merging slices checks every shard before writing manifest.json.
    let sliced = tmp.join("sliced");
    for index in 0..2 {
        build_slice(&model, &corpus, &opts, (index, 2), &sliced);
    }
    damage(&sliced.join("shard-00002.safetensors"));
    let err = merge_manifests(&sliced).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("shard-00002.safetensors"), "{err}");
    assert!(!sliced.join("manifest.json").exists());
}

#[test]
fn slices_made_by_different_commands_are_not_merged_and_the_advice_is_mergings() {
    let model = bundled();
    let tmp = TempDir::new("store-merge-mismatch");
    let corpus = tmp.join("corpus.jsonl");
    write_jsonl(&corpus, &documents(13, 20));
    let opts = options(&["mlp.post_act"]);
    let sliced = tmp.join("sliced");
    for (index, layers) in [(0, None), (1, Some(vec![0, 1]))] {
        let slice = Slice { index, count: 2 };
        let o = StoreOptions {
            slice,
            layers,
            ..opts.clone()
        };
        built(build(&model, &corpus, &o, &sliced).unwrap());
    }
    let err = merge_manifests(&sliced).unwrap_err();
    assert!(matches!(err, StoreError::SliceMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("manifest-1-of-2.json was made with a different --layers (0,1) than")
            && text.contains("manifest-0-of-2.json (every layer)")
            && text.contains("rerun that slice"),
        "{text}"
    );
    assert!(!text.contains("--out") && !text.contains("Some("), "{text}");
    assert!(!sliced.join("manifest.json").exists());
}

#[test]
fn an_out_folder_that_would_overwrite_the_corpus_or_the_model_is_refused() {
    let tmp = TempDir::new("store-clobber");
    let model_dir = copy_bundled(&tmp.join("models/gpt"));
    let model = Gpt2::<Cpu>::load(&model_dir, &Default::default()).unwrap();
    let record = ModelRecord::of(&model_dir, "gpt2").unwrap();
    let data = tmp.join("data");
    std::fs::create_dir(&data).unwrap();
    // Named like a shard, so a store in its folder would overwrite it.
    let corpus = data.join("shard-00000.safetensors");
    let ids: Vec<u8> = (0..2000u16).flat_map(|t| (t % 128).to_le_bytes()).collect();
    std::fs::write(&corpus, &ids).unwrap();
    let source = Corpus::open(&corpus, TokenWidth::U16).unwrap();
    let opts = options(&["mlp.post_act"]);
    let everything = || (file_bytes(&data), file_bytes(&model_dir));
    let before = everything();
    for (out, expected) in [
        (corpus.clone(), "is the --dataset file itself"),
        (data.clone(), "holds the --dataset file"),
        (model_dir.clone(), "is the model's folder"),
        (tmp.join("models"), "holds the model's folder"),
    ] {
        let err =
            build_store(&model, &source, None, &record, &opts, &out, &mut |_| {}).unwrap_err();
        assert!(matches!(err, StoreError::Options(_)), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
        assert_eq!(everything(), before);
    }
    assert!(partial_files(&data).is_empty());
}
