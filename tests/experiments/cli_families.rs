//! The `hooks` tool on every family: it picks the model from `config.json`'s
//! `model_type`, uses the folder's `tokenizer.json` for `--prompt`, and its
//! keys and shapes come from the family's own tree.

use hooks_model::backend::Cpu;
use hooks_model::{Llama, LlamaConfig};

use crate::cli::hooks;
use crate::common::{TempDir, Tensors, fixture};

/// Runs `hooks`, requiring success; returns stdout.
pub(crate) fn ok(args: &[&str]) -> String {
    let o = hooks(args);
    assert!(
        o.status.success(),
        "hooks {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The tokenizer fixture's ids for a text (from Python's `tokenizers`).
fn python_ids(text: &str) -> Vec<u32> {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer/expected.json")).unwrap())
            .unwrap();
    let case = expected["encode"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["text"] == text)
        .expect("a recorded text");
    case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// A random Qwen2 with the tokenizer fixture's vocabulary, saved with that
/// `tokenizer.json` beside it.
pub(crate) fn qwen2_with_tokenizer() -> TempDir {
    let dir = TempDir::new("qwen2-tok");
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer/expected.json")).unwrap())
            .unwrap();
    let vocab = tok["vocab_size"].as_u64().unwrap() as usize;
    let config = LlamaConfig::new("qwen2", 2, 32, 4, 2, 64, vocab);
    let device = Default::default();
    Llama::<Cpu>::init(&config, &device)
        .unwrap()
        .save(dir.path())
        .unwrap();
    std::fs::copy(
        fixture("tokenizer/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    dir
}

#[test]
fn sites_lists_the_llama_tree_with_its_shapes_and_layers() {
    let dir = fixture("llama/qwen2");
    let out = ok(&["sites", "--model", dir.to_str().unwrap()]);
    assert!(out.contains("(qwen2)"), "{out}");
    assert!(out.contains("Hkv 2"), "{out}");
    for site in [
        "mlp.up",
        "resid.torso.ln_attn.post_scale",
        "attn.qk_probs",
        "attn.v_out",
    ] {
        assert!(out.contains(site), "{site} missing:\n{out}");
    }
    // GPT-2-only sites are not offered.
    assert!(!out.contains("post_mean_subtraction"), "{out}");
    assert!(!out.contains("qk_softmax_denominator"), "{out}");
}

#[test]
fn cache_records_llama_keys_per_layer_with_the_sites_layouts() {
    let dir = fixture("llama/llama");
    let tmp = TempDir::new("llama-cache");
    let out = tmp.join("cache.safetensors");
    ok(&[
        "cache",
        "--model",
        dir.to_str().unwrap(),
        "--tokens",
        "1,2,3,4,5",
        "--sites",
        "attn.k",
        "--sites",
        "mlp.*",
        "--sites",
        "logits",
        "--grad-target",
        "7",
        "--out",
        out.to_str().unwrap(),
    ]);
    let st = Tensors::read(&out);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let kv = config["num_key_value_heads"].as_u64().unwrap() as usize;
    let d = config["hidden_size"].as_u64().unwrap() as usize
        / config["num_attention_heads"].as_u64().unwrap() as usize;
    let f = config["intermediate_size"].as_u64().unwrap() as usize;
    let v = config["vocab_size"].as_u64().unwrap() as usize;
    for layer in 0..2 {
        assert_eq!(st.shape(&format!("layers.{layer}.attn.k")), [1, 5, kv, d]);
        for site in ["mlp.pre_act", "mlp.up", "mlp.post_act"] {
            let key = format!("layers.{layer}.{site}");
            assert_eq!(st.shape(&key), [1, 5, f], "{key}");
            assert!(st.keys().contains(&format!("{key}.grad")), "{key}.grad");
        }
    }
    assert_eq!(st.shape("logits"), [1, 5, v]);
    assert!(st.keys().contains(&"logits.grad".to_string()));
    // Nothing outside the selection (4 sites in each of 2 layers, logits;
    // each with its gradient), and no unlayered copy of a block site.
    assert_eq!(st.keys().len(), (2 * 4 + 1) * 2);
    assert!(!st.keys().contains(&"attn.k".to_string()));
}

#[test]
fn prompts_use_the_folders_tokenizer_json() {
    let dir = qwen2_with_tokenizer();
    let tmp = TempDir::new("prompt");
    let out = tmp.join("cache.safetensors");
    ok(&[
        "cache",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt",
        "Hello world",
        "--sites",
        "logits",
        "--out",
        out.to_str().unwrap(),
    ]);
    let tokens = Tensors::read(&out).metadata()["tokens"].clone();
    assert_eq!(tokens, format!("{:?}", [python_ids("Hello world")]));

    let text = ok(&[
        "generate",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt",
        "Hello world",
        "-n",
        "3",
    ]);
    assert!(text.starts_with("Hello world"), "{text}");
}

#[test]
fn a_llama_folder_without_a_tokenizer_cannot_take_a_prompt() {
    let dir = fixture("llama/mistral");
    let o = hooks(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_eq!(o.status.code(), Some(4));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("tokenizer.json"), "{err}");
    // Token ids still work.
    ok(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--tokens",
        "1,2,3",
        "-n",
        "2",
    ]);
}

#[test]
fn an_unknown_model_type_names_it_and_the_supported_ones() {
    let tmp = TempDir::new("bert");
    std::fs::write(
        tmp.join("config.json"),
        r#"{"model_type": "bert", "hidden_size": 8}"#,
    )
    .unwrap();
    for command in ["sites", "cache", "generate"] {
        let mut args = vec![command, "--model", tmp.path().to_str().unwrap()];
        if command != "sites" {
            args.extend(["--tokens", "1", "--out", "x.safetensors"]);
        }
        if command == "generate" {
            args.truncate(5);
        }
        let o = hooks(&args);
        assert_eq!(o.status.code(), Some(4), "{command}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("model_type `bert` is not supported")
                && err.contains("gpt2, llama, qwen2, mistral"),
            "{command}: {err}"
        );
        assert!(!err.contains("n_embd"), "{err}");
    }
}
