//! Tokenizers: `tokenizer.json` fixtures (tests/fixtures/tokenizer*, from
//! tests/fixtures/gen_tokenizer_fixture.py) give Python's ids and decodes;
//! `for_model_dir` picks the file, falls back to GPT-2's BPE only for GPT-2;
//! broken files are errors naming them; GPT-2's BPE is unchanged.

use crate::common;

use std::path::{Path, PathBuf};

use common::{TempDir, fixture};
use hooks_model::ModelError;
use hooks_model::tokenizer::Tokenizer;
use serde_json::Value;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, SplitDelimiterBehavior,
};

/// The byte-level BPE laid out like Llama 3's.
const BYTE_LEVEL: &str = "tokenizer";
/// The SentencePiece-style BPE laid out like Mistral 7B's.
const SPM: &str = "tokenizer-spm";

fn expected(name: &str) -> Value {
    let path = fixture(name).join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn load(name: &str) -> Tokenizer {
    Tokenizer::from_file(fixture(name).join("tokenizer.json")).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap()
}

/// The error of loading `path`, which must not load.
fn load_err(path: &Path) -> ModelError {
    match Tokenizer::from_file(path) {
        Ok(_) => panic!("{} should not load", path.display()),
        Err(e) => e,
    }
}

fn dir_err(dir: &Path, model_type: &str) -> ModelError {
    match Tokenizer::for_model_dir(dir, model_type) {
        Ok(_) => panic!("{} ({model_type}) should have no tokenizer", dir.display()),
        Err(e) => e,
    }
}

/// A temp folder holding `text` as `tokenizer.json`.
fn with_tokenizer_json(tag: &str, text: &[u8]) -> (TempDir, PathBuf) {
    let dir = TempDir::new(tag);
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name).join("tokenizer.json")).unwrap()
}

#[test]
fn ids_and_decodes_match_python() {
    for name in [BYTE_LEVEL, SPM] {
        let tok = load(name);
        let expected = expected(name);
        assert_eq!(
            tok.vocab_size() as u64,
            expected["vocab_size"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            tok.path(),
            Some(fixture(name).join("tokenizer.json").as_path())
        );
        let cases = expected["encode"].as_array().unwrap();
        assert!(cases.len() >= 19, "{name}: {} cases", cases.len());
        for case in cases {
            let text = str_of(&case["text"]);
            let want = ids(&case["ids"]);
            assert_eq!(tok.encode(text).unwrap(), want, "{name}: encode({text:?})");
            assert_eq!(
                tok.encode_with(text, false).unwrap(),
                ids(&case["ids_without_special"]),
                "{name}: encode_with({text:?}, false)"
            );
            assert_eq!(
                tok.decode(&want).unwrap(),
                str_of(&case["decoded"]),
                "{name}: decode of {text:?}"
            );
            assert_eq!(tok.decode_lossy(&want), str_of(&case["decoded"]), "{name}");
        }
        for case in expected["decode"].as_array().unwrap() {
            let tokens = ids(&case["ids"]);
            assert_eq!(
                tok.decode(&tokens).unwrap(),
                str_of(&case["decoded"]),
                "{name}: decode({tokens:?})"
            );
        }
    }
}

#[test]
fn the_post_processor_adds_begin_of_text() {
    // Llama 3 style: `<|begin_of_text|>` first, and only with special tokens
    // on; written in the text it is matched as the special token.
    let tok = load(BYTE_LEVEL);
    let bos = 384;
    assert_eq!(tok.decode(&[bos]).unwrap(), "<|begin_of_text|>");
    assert_eq!(tok.encode("").unwrap(), [bos]);
    assert_eq!(tok.encode_with("", false).unwrap(), Vec::<u32>::new());
    let text = "Hello world";
    let mut with_bos = vec![bos];
    with_bos.extend(tok.encode_with(text, false).unwrap());
    assert_eq!(tok.encode(text).unwrap(), with_bos);
    assert_eq!(
        tok.encode("<|begin_of_text|>x").unwrap()[..2],
        [bos, bos],
        "the special token in the text is one id"
    );
    // Mistral style: `<s>` (id 1).
    let spm = load(SPM);
    assert_eq!(spm.encode("hi").unwrap()[0], 1);
    assert_ne!(spm.encode_with("hi", false).unwrap()[0], 1);
}

#[test]
fn byte_level_round_trips_every_text() {
    let tok = load(BYTE_LEVEL);
    for case in expected(BYTE_LEVEL)["encode"].as_array().unwrap() {
        let text = str_of(&case["text"]);
        let bare = tok.encode_with(text, false).unwrap();
        assert_eq!(tok.decode(&bare).unwrap(), text);
        assert_eq!(
            tok.decode(&tok.encode(text).unwrap()).unwrap(),
            format!("<|begin_of_text|>{text}")
        );
    }
}

/// The file's `Split` regex swapped for Qwen2's and Mistral Nemo's: the
/// pieces the pre-tokenizer cuts (fancy-regex here, oniguruma in Python)
/// and the ids are Python's.
#[test]
fn pre_tokenizer_regexes_match_python() {
    let expected = expected(BYTE_LEVEL);
    let texts: Vec<&str> = expected["encode"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| str_of(&c["text"]))
        .collect();
    let file: Value = serde_json::from_slice(&fixture_bytes(BYTE_LEVEL)).unwrap();
    let patterns = expected["patterns"].as_array().unwrap();
    assert_eq!(patterns.len(), 3);
    let mut differ = 0;
    for pattern in patterns {
        let name = str_of(&pattern["name"]);
        let regex = str_of(&pattern["regex"]);
        for (text, want) in texts.iter().zip(pattern["pieces"].as_array().unwrap()) {
            let split = Split::new(
                SplitPattern::Regex(regex.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .unwrap();
            let mut pre = PreTokenizedString::from(*text);
            split.pre_tokenize(&mut pre).unwrap();
            let pieces: Vec<&str> = pre
                .get_splits(OffsetReferential::Original, OffsetType::Byte)
                .into_iter()
                .map(|(piece, _, _)| piece)
                .collect();
            let want: Vec<&str> = want.as_array().unwrap().iter().map(str_of).collect();
            assert_eq!(pieces, want, "{name}: pieces of {text:?}");
        }
        let mut swapped = file.clone();
        let split = &mut swapped["pre_tokenizer"]["pretokenizers"][0];
        assert_eq!(split["type"], "Split");
        if split["pattern"]["Regex"] != regex {
            differ += 1;
        }
        split["pattern"]["Regex"] = regex.into();
        let (_dir, path) = with_tokenizer_json(
            &format!("tok-{name}"),
            &serde_json::to_vec(&swapped).unwrap(),
        );
        let tok = Tokenizer::from_file(&path).unwrap();
        for (text, want) in texts.iter().zip(pattern["ids"].as_array().unwrap()) {
            assert_eq!(
                tok.encode(text).unwrap(),
                ids(want),
                "{name}: encode({text:?})"
            );
        }
    }
    assert_eq!(differ, 2, "two of the patterns are not the file's own");
}

#[test]
fn out_of_vocabulary_ids() {
    let tok = load(BYTE_LEVEL);
    let size = tok.vocab_size();
    let past = size as u32;
    match tok.decode(&[72, past]) {
        Err(ModelError::TokenOutOfRange {
            token,
            position,
            vocab_size,
            ..
        }) => assert_eq!((token, position, vocab_size), (past, 1, size)),
        other => panic!("expected TokenOutOfRange, got {other:?}"),
    }
    let h = tok.decode(&[72]).unwrap();
    assert_eq!(
        tok.decode_lossy(&[72, past, 72]),
        format!("{h}<|{past}|>{h}")
    );
    // Half a character decodes to U+FFFD, as in Python.
    assert_eq!(tok.decode_lossy(&[160]), "\u{FFFD}");
}

#[test]
fn for_model_dir_prefers_tokenizer_json() {
    let (dir, path) = with_tokenizer_json("tok-dir", &fixture_bytes(BYTE_LEVEL));
    for model_type in ["gpt2", "llama"] {
        let tok = Tokenizer::for_model_dir(dir.path(), model_type).unwrap();
        assert_eq!(tok.path(), Some(path.as_path()), "{model_type}");
        assert_eq!(
            tok.encode("Hello world").unwrap(),
            load(BYTE_LEVEL).encode("Hello world").unwrap()
        );
    }
}

#[test]
fn for_model_dir_falls_back_to_gpt2_only_for_gpt2() {
    let dir = TempDir::new("tok-none");
    let tok = Tokenizer::for_model_dir(dir.path(), "gpt2").unwrap();
    assert_eq!(tok.path(), None);
    assert_eq!(tok.encode("Hello world").unwrap(), [15496, 995]);
    // The bundled GPT-2 checkpoint has no tokenizer.json.
    let tok = Tokenizer::for_model_dir(fixture("tiny"), "gpt2").unwrap();
    assert_eq!(tok.vocab_size(), 50257);
    for model_type in ["llama", "qwen2", "mistral"] {
        let e = dir_err(dir.path(), model_type);
        assert!(matches!(e, ModelError::NoTokenizer { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&dir.path().display().to_string())
                && msg.contains("tokenizer.json")
                && msg.contains(&format!("`{model_type}`")),
            "{msg}"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_dangling_tokenizer_json_is_an_error_not_a_fallback() {
    // Hugging Face's cache links snapshot files to blobs; a missing blob must
    // not silently become GPT-2's BPE.
    let dir = TempDir::new("tok-dangling");
    let path = dir.join("tokenizer.json");
    std::os::unix::fs::symlink(dir.join("missing-blob"), &path).unwrap();
    let e = dir_err(dir.path(), "gpt2");
    assert!(matches!(e, ModelError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

#[test]
fn broken_files_are_errors_naming_them() {
    let good = fixture_bytes(BYTE_LEVEL);
    let mut unsupported: Value = serde_json::from_slice(&good).unwrap();
    unsupported["model"]["type"] = "Mystery".into();
    let mut bad_field: Value = serde_json::from_slice(&good).unwrap();
    bad_field["model"]["vocab"] = "not a map".into();
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("truncated", good[..good.len() / 2].to_vec(), "ends early"),
        ("empty", Vec::new(), "not JSON: the file is empty"),
        (
            "not-json",
            b"<html>rate limited</html>".to_vec(),
            "not JSON",
        ),
        (
            "no-model",
            br#"{"version": "1.0"}"#.to_vec(),
            "no `model` section",
        ),
        (
            "unsupported",
            serde_json::to_vec(&unsupported).unwrap(),
            "unsupported tokenizer model `Mystery`",
        ),
        (
            "bad-field",
            serde_json::to_vec(&bad_field).unwrap(),
            "not a tokenizer.json the `tokenizers` crate can read",
        ),
    ];
    for (tag, bytes, words) in cases {
        let (dir, path) = with_tokenizer_json(&format!("tok-{tag}"), &bytes);
        for e in [load_err(&path), dir_err(dir.path(), "gpt2")] {
            assert!(matches!(e, ModelError::BadTokenizer { .. }), "{tag}: {e:?}");
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{}: ", path.display())) && msg.contains(words),
                "{tag}: {msg}"
            );
        }
    }
    let missing = TempDir::new("tok-missing").join("tokenizer.json");
    let e = load_err(&missing);
    assert!(matches!(e, ModelError::Io { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
}

#[test]
fn gpt2_bpe_is_unchanged() {
    let tok = Tokenizer::gpt2();
    assert_eq!(tok.path(), None);
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.encode("Hello world").unwrap(), [15496, 995]);
    // No special tokens added, none matched in the text.
    assert_eq!(tok.encode_with("Hello world", true).unwrap(), [15496, 995]);
    assert_ne!(tok.encode("<|endoftext|>").unwrap(), [50256]);
    assert_eq!(tok.decode(&[15496, 995]).unwrap(), "Hello world");
    assert_eq!(tok.decode(&[50256]).unwrap(), "<|endoftext|>");
    let text = "  Café 🙂\n\n1234567 it's";
    assert_eq!(tok.decode(&tok.encode(text).unwrap()).unwrap(), text);
    assert!(matches!(
        tok.decode(&[50257]),
        Err(ModelError::TokenOutOfRange {
            token: 50257,
            position: 0,
            vocab_size: 50257,
            ..
        })
    ));
    // id 94 is the single byte 0xA1: an error strictly, U+FFFD lossily.
    assert!(tok.decode(&[64, 94]).is_err());
    assert_eq!(tok.decode_lossy(&[64, 94]), "a\u{FFFD}");
    assert_eq!(tok.decode_lossy(&[64, 60000]), "a<|60000|>");
}
