//! Checkpoint loading and saving: broken copies of the fixtures give errors
//! that name the file, key and shapes; both fixture layouts load; save → load
//! is exact and writes the Hugging Face layout.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use common::{Entry, Expected, HostTensor, TempDir, fixture, host, read_entries, write_entries};
use hooks_model::backend::{Cpu, NdArray};
use hooks_model::checkpoint::{CONFIG_FILE, WEIGHTS_FILE, load_config};
use hooks_model::{Gpt2, Gpt2Config, LoadOptions, ModelError, TokenBatch};
use safetensors::tensor::Dtype;

/// Rewrites a temp copy's weights file through `f`.
fn edit_weights(dir: &TempDir, f: impl FnOnce(&mut BTreeMap<String, Entry>)) {
    let path = dir.join(WEIGHTS_FILE);
    let mut entries = read_entries(&path);
    f(&mut entries);
    write_entries(&path, &entries);
}

/// Rewrites a temp copy's config through `f`.
fn edit_config(dir: &TempDir, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join(CONFIG_FILE);
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(value.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

fn load_err(dir: &Path) -> ModelError {
    match Gpt2::<NdArray>::load(dir, &Default::default()) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_config_is_io_error_naming_the_file() {
    let dir = TempDir::copy_of("tiny");
    std::fs::remove_file(dir.join(CONFIG_FILE)).unwrap();
    let err = load_err(dir.path());
    let msg = err.to_string();
    match err {
        ModelError::Io { path, source } => {
            assert_eq!(path, dir.join(CONFIG_FILE));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(
        msg.contains(&dir.join(CONFIG_FILE).display().to_string()),
        "{msg}"
    );
}

#[test]
fn missing_weights_is_io_error_naming_the_file() {
    let dir = TempDir::copy_of("untied");
    std::fs::remove_file(dir.join(WEIGHTS_FILE)).unwrap();
    let err = load_err(dir.path());
    let msg = err.to_string();
    match err {
        ModelError::Io { path, source } => {
            assert_eq!(path, dir.join(WEIGHTS_FILE));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(msg.contains("model.safetensors"), "{msg}");
    // A folder that does not exist at all fails on the config first.
    let gone = dir.join("nope");
    assert!(
        matches!(load_err(&gone), ModelError::Io { path, .. } if path == gone.join(CONFIG_FILE))
    );
}

/// A named pipe or a device in place of a model file is refused by what it
/// is, without opening it (a pipe would block until something writes to it,
/// `/dev/zero` would read forever or look empty).
#[test]
fn pipes_and_devices_as_model_files_are_refused_without_blocking() {
    for file in [CONFIG_FILE, WEIGHTS_FILE] {
        let dir = TempDir::copy_of("tiny");
        std::fs::remove_file(dir.join(file)).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(dir.join(file))
            .status()
            .unwrap();
        assert!(made.success());
        let msg = load_err(dir.path()).to_string();
        assert!(msg.contains(file), "{msg}");
        assert!(
            msg.contains("a named pipe (FIFO), not a regular file"),
            "{msg}"
        );

        std::fs::remove_file(dir.join(file)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join(file)).unwrap();
        let msg = load_err(dir.path()).to_string();
        assert!(
            msg.contains("a character device, not a regular file"),
            "{msg}"
        );
    }
}

#[test]
fn truncated_weights_are_bad_safetensors() {
    let dir = TempDir::copy_of("tiny");
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    for keep in [bytes.len() - 1, bytes.len() / 2, 100, 5, 0] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = load_err(dir.path());
        let msg = err.to_string();
        match err {
            ModelError::BadSafetensors { path: p, reason } => {
                assert_eq!(p, path, "keep {keep}");
                assert!(!reason.is_empty());
            }
            other => panic!("keeping {keep} bytes: expected BadSafetensors, got {other:?}"),
        }
        assert!(
            msg.contains("not a valid safetensors file") && msg.contains("model.safetensors"),
            "{msg}"
        );
    }
}

#[test]
fn garbage_weights_are_bad_safetensors() {
    let dir = TempDir::copy_of("tiny");
    let path = dir.join(WEIGHTS_FILE);
    // Pseudo-random bytes, then a plausible header length followed by non-JSON.
    let mut x = 0x1234_5678_u32;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let mut fake_header = 16u64.to_le_bytes().to_vec();
    fake_header.extend_from_slice(b"this is not json");
    fake_header.extend_from_slice(&[0; 64]);
    for bytes in [garbage, fake_header, b"{}".to_vec()] {
        std::fs::write(&path, &bytes).unwrap();
        match load_err(dir.path()) {
            ModelError::BadSafetensors { path: p, .. } => assert_eq!(p, path),
            other => panic!("expected BadSafetensors, got {other:?}"),
        }
    }
}

#[test]
fn missing_key_is_named() {
    for (name, stored) in [
        ("tiny", "h.1.mlp.c_fc.bias"),
        ("untied", "transformer.h.1.mlp.c_fc.bias"),
    ] {
        let dir = TempDir::copy_of(name);
        edit_weights(&dir, |e| {
            assert!(e.remove(stored).is_some(), "{name} holds {stored}");
        });
        let err = load_err(dir.path());
        let msg = err.to_string();
        match err {
            ModelError::MissingKey {
                path,
                key,
                also_tried,
            } => {
                assert_eq!(key, "h.1.mlp.c_fc.bias");
                assert_eq!(path, dir.join(WEIGHTS_FILE));
                assert_eq!(also_tried, vec!["transformer.h.1.mlp.c_fc.bias"]);
            }
            other => panic!("{name}: expected MissingKey, got {other:?}"),
        }
        assert!(
            msg.contains("`h.1.mlp.c_fc.bias`") && msg.contains("transformer.h.1.mlp.c_fc.bias"),
            "{msg}"
        );
    }
}

#[test]
fn wrong_shape_names_key_and_both_shapes() {
    let dir = TempDir::copy_of("tiny");
    edit_weights(&dir, |e| {
        let w = e.get_mut("h.0.mlp.c_fc.weight").unwrap();
        assert_eq!(w.shape, vec![32, 128]);
        w.shape = vec![128, 32]; // same bytes, PyTorch Linear layout instead of Conv1D
    });
    let err = load_err(dir.path());
    let msg = err.to_string();
    match err {
        ModelError::WrongShape {
            path,
            key,
            expected,
            found,
        } => {
            assert_eq!(path, dir.join(WEIGHTS_FILE));
            assert_eq!(key, "h.0.mlp.c_fc.weight");
            assert_eq!(expected, vec![32, 128]);
            assert_eq!(found, vec![128, 32]);
        }
        other => panic!("expected WrongShape, got {other:?}"),
    }
    assert!(
        msg.contains("h.0.mlp.c_fc.weight")
            && msg.contains("[32, 128]")
            && msg.contains("[128, 32]"),
        "{msg}"
    );

    // With the prefix, the key is reported as stored; lm_head is checked too.
    let dir = TempDir::copy_of("untied");
    edit_weights(&dir, |e| {
        let w = e.get_mut("lm_head.weight").unwrap();
        assert_eq!(w.shape, vec![131, 48]);
        w.shape = vec![48, 131];
    });
    assert_wrong_shape(
        load_err(dir.path()),
        "lm_head.weight",
        &[131, 48],
        &[48, 131],
    );
    let dir = TempDir::copy_of("untied");
    edit_weights(&dir, |e| {
        let mut w = e.remove("transformer.wpe.weight").unwrap();
        w.shape = vec![12, 96];
        e.insert("transformer.wpe.weight".into(), w);
    });
    assert_wrong_shape(
        load_err(dir.path()),
        "transformer.wpe.weight",
        &[24, 48],
        &[12, 96],
    );
}

#[test]
fn wrong_dtype_is_named() {
    let dir = TempDir::copy_of("tiny");
    edit_weights(&dir, |e| {
        // F16 and BF16 load (converted to f32: checkpoint_formats.rs); I16 does not.
        let w = e.get_mut("h.0.ln_1.weight").unwrap();
        w.dtype = Dtype::I16;
        w.data.truncate(64);
    });
    match load_err(dir.path()) {
        ModelError::WrongDtype { key, dtype, .. } => {
            assert_eq!(key, "h.0.ln_1.weight");
            assert_eq!(dtype, "I16");
        }
        other => panic!("expected WrongDtype, got {other:?}"),
    }
}

#[test]
fn config_with_fewer_layers_than_weights_is_a_mismatch() {
    let dir = TempDir::copy_of("tiny");
    edit_config(&dir, |c| {
        c.insert("n_layer".into(), 1.into());
    });
    let err = load_err(dir.path());
    let msg = err.to_string();
    match err {
        ModelError::ConfigMismatch { path, reason } => {
            assert_eq!(path, dir.join(WEIGHTS_FILE));
            assert!(
                reason.contains("n_layer = 1")
                    && reason.contains("2 layers")
                    && reason.contains("h.1"),
                "{reason}"
            );
        }
        other => panic!("expected ConfigMismatch, got {other:?}"),
    }
    assert!(msg.contains("model.safetensors"), "{msg}");

    // With the prefix too.
    let dir = TempDir::copy_of("untied");
    edit_config(&dir, |c| {
        c.insert("n_layer".into(), 2.into());
    });
    assert!(
        matches!(load_err(dir.path()), ModelError::ConfigMismatch { reason, .. } if reason.contains("3 layers"))
    );

    // More layers than the weights hold: said before anything is read per layer.
    let dir = TempDir::copy_of("tiny");
    edit_config(&dir, |c| {
        c.insert("n_layer".into(), 3.into());
    });
    match load_err(dir.path()) {
        ModelError::ConfigMismatch { reason, .. } => assert_eq!(
            reason,
            "weights hold 2 layers (h.0 to h.1) but config.json says n_layer = 3"
        ),
        other => panic!("expected ConfigMismatch, got {other:?}"),
    }

    // A gap in the layers: the first missing layer is named.
    let dir = TempDir::copy_of("tiny");
    edit_config(&dir, |c| {
        c.insert("n_layer".into(), 3.into());
    });
    edit_weights(&dir, |e| {
        let moved: Vec<(String, Entry)> = e
            .iter()
            .filter(|(k, _)| k.starts_with("h.1."))
            .map(|(k, v)| (k.replacen("h.1.", "h.2.", 1), v.clone()))
            .collect();
        e.retain(|k, _| !k.starts_with("h.1."));
        e.extend(moved);
    });
    match load_err(dir.path()) {
        ModelError::ConfigMismatch { reason, .. } => assert_eq!(
            reason,
            "weights hold 2 layers (up to h.2, without h.1) but config.json says n_layer = 3"
        ),
        other => panic!("expected ConfigMismatch, got {other:?}"),
    }
}

/// The unembedding follows `tie_word_embeddings` as transformers does:
/// tied, a stored `lm_head.weight` is not read; untied, it is required.
#[test]
fn tie_word_embeddings_decides_the_unembedding() {
    let tokens = TokenBatch::single(vec![1, 2, 3]).unwrap();
    let logits = |dir: &Path| {
        let model = Gpt2::<NdArray>::load(dir, &Default::default()).unwrap();
        host(model.forward(&tokens, &Default::default()).unwrap())
    };
    let untied = TempDir::copy_of("untied");
    let own_head = logits(untied.path());
    edit_config(&untied, |c| {
        c.insert("tie_word_embeddings".into(), true.into());
    });
    let tied = logits(untied.path());
    assert_ne!(tied, own_head, "the fixture's lm_head differs from its wte");
    edit_weights(&untied, |w| {
        w.remove("lm_head.weight");
    });
    assert_eq!(logits(untied.path()), tied, "lm_head.weight was not read");

    let tiny = TempDir::copy_of("tiny");
    edit_config(&tiny, |c| {
        c.insert("tie_word_embeddings".into(), false.into());
    });
    assert!(
        matches!(load_err(tiny.path()), ModelError::MissingKey { key, .. } if key == "lm_head.weight")
    );
}

#[test]
fn bad_configs_are_bad_config() {
    let dir = TempDir::copy_of("tiny");
    edit_config(&dir, |c| {
        c.insert("n_head".into(), 5.into());
    });
    let err = load_err(dir.path());
    let msg = err.to_string();
    assert!(matches!(err, ModelError::BadConfig(_)), "{err:?}");
    assert!(
        msg.contains("n_embd (32)") && msg.contains("n_head (5)") && msg.contains("config.json"),
        "{msg}"
    );

    let edits: [(&str, serde_json::Value, &str); 7] = [
        ("activation_function", "relu".into(), "relu"),
        // Variants of the architecture the model does not implement.
        (
            "scale_attn_weights",
            false.into(),
            "scale_attn_weights = false is not supported",
        ),
        (
            "scale_attn_by_inverse_layer_idx",
            true.into(),
            "scale_attn_by_inverse_layer_idx = true is not supported",
        ),
        (
            "add_cross_attention",
            true.into(),
            "add_cross_attention = true is not supported",
        ),
        ("n_embd", 0.into(), "positive"),
        ("vocab_size", 0.into(), "positive"),
        (
            "n_layer",
            "two".into(),
            "n_layer must be a non-negative integer, not \"two\"",
        ),
    ];
    for (key, value, needle) in edits {
        let dir = TempDir::copy_of("tiny");
        edit_config(&dir, |c| {
            c.insert(key.into(), value.clone());
        });
        match load_err(dir.path()) {
            ModelError::BadConfig(why) => assert!(why.contains(needle), "{key}={value}: {why}"),
            other => panic!("{key}={value}: expected BadConfig, got {other:?}"),
        }
    }
    let dir = TempDir::copy_of("tiny");
    std::fs::write(dir.join(CONFIG_FILE), "{ not json").unwrap();
    assert!(
        matches!(load_err(dir.path()), ModelError::BadConfig(why) if why.contains("config.json"))
    );
    let dir = TempDir::copy_of("tiny");
    edit_config(&dir, |c| {
        c.remove("n_embd");
    });
    assert!(matches!(load_err(dir.path()), ModelError::BadConfig(why) if why.contains("n_embd")));
}

fn loads_fixture<B: Backend>(name: &str) {
    let dir = fixture(name);
    let file = read_entries(&dir.join(WEIGHTS_FILE));
    let model = Gpt2::<B>::load(&dir, &Default::default()).unwrap();
    let config = load_config(&dir).unwrap();
    assert_eq!(model.config, config);
    let (l, d, v, p) = match name {
        "tiny" => (2, 32, 97, 16),
        _ => (3, 48, 131, 24),
    };
    assert_eq!(
        (
            config.n_layer,
            config.n_embd,
            config.vocab_size,
            config.n_positions
        ),
        (l, d, v, p)
    );
    assert_eq!(model.blocks.len(), l);
    assert_eq!(model.unembed.val().dims(), [d, v]);

    let prefix = if name == "untied" { "transformer." } else { "" };
    let f32s = |key: &str| common::tensors::f32s(&file[key].data);
    // Weights land where they belong, in Conv1D layout.
    assert_eq!(host(model.wte.val()), f32s(&format!("{prefix}wte.weight")));
    assert_eq!(
        host(model.blocks[l - 1].attn.c_attn.weight.val()),
        f32s(&format!("{prefix}h.{}.attn.c_attn.weight", l - 1))
    );
    assert_eq!(
        host(model.ln_f.bias.val()),
        f32s(&format!("{prefix}ln_f.bias"))
    );
    let wte_t = host(model.wte.val().transpose());
    let unembed = host(model.unembed.val());
    if name == "tiny" {
        // Tied, and the legacy buffers (BOOL bias, 0-d masked_bias) are in the file and ignored.
        assert!(!file.contains_key("lm_head.weight"));
        assert_eq!(file["h.0.attn.bias"].dtype, Dtype::BOOL);
        assert_eq!(file["h.1.attn.bias"].dtype, Dtype::F32);
        assert_eq!(file["h.0.attn.masked_bias"].shape, Vec::<usize>::new());
        assert_eq!(unembed, wte_t, "tied unembedding");
    } else {
        assert!(
            file.keys()
                .all(|k| k.starts_with("transformer.") || k == "lm_head.weight")
        );
        let lm_head = HostTensor {
            shape: vec![v, d],
            data: f32s("lm_head.weight"),
        };
        let want: Vec<f32> = (0..d)
            .flat_map(|i| (0..v).map(move |j| (i, j)))
            .map(|(i, j)| lm_head.at(&[j, i]))
            .collect();
        assert_eq!(unembed, want, "untied unembedding is lm_head transposed");
        assert_ne!(unembed, wte_t);
    }
    // And the model computes the reference logits.
    let expected = Expected::of(name);
    let logits = model
        .forward(&expected.tokens(), &Default::default())
        .unwrap();
    expected.assert_near(
        &format!("{name} {}: logits", common::backend_name::<B>()),
        "logits",
        &HostTensor::of(logits),
    );
}

#[test]
fn both_fixtures_load_on_both_backends() {
    for name in ["tiny", "untied"] {
        loads_fixture::<Cpu>(name);
        loads_fixture::<NdArray>(name);
    }
}

/// The keys and shapes of a Hugging Face GPT-2 file, without prefix, with `lm_head`.
fn hf_layout(c: &Gpt2Config) -> BTreeMap<String, Vec<usize>> {
    let (d, f) = (c.n_embd, c.d_mlp());
    let mut m = BTreeMap::new();
    m.insert("wte.weight".to_string(), vec![c.vocab_size, d]);
    m.insert("wpe.weight".to_string(), vec![c.n_positions, d]);
    m.insert("lm_head.weight".to_string(), vec![c.vocab_size, d]);
    m.insert("ln_f.weight".to_string(), vec![d]);
    m.insert("ln_f.bias".to_string(), vec![d]);
    for i in 0..c.n_layer {
        for (name, shape) in [
            ("ln_1.weight", vec![d]),
            ("ln_1.bias", vec![d]),
            ("attn.c_attn.weight", vec![d, 3 * d]),
            ("attn.c_attn.bias", vec![3 * d]),
            ("attn.c_proj.weight", vec![d, d]),
            ("attn.c_proj.bias", vec![d]),
            ("ln_2.weight", vec![d]),
            ("ln_2.bias", vec![d]),
            ("mlp.c_fc.weight", vec![d, f]),
            ("mlp.c_fc.bias", vec![f]),
            ("mlp.c_proj.weight", vec![f, d]),
            ("mlp.c_proj.bias", vec![d]),
        ] {
            m.insert(format!("h.{i}.{name}"), shape);
        }
    }
    m
}

fn round_trip<B: Backend>(model: &Gpt2<B>, original_file: Option<&Path>) {
    let dir = TempDir::new("save");
    model.save(dir.path()).unwrap();
    let saved = read_entries(&dir.join(WEIGHTS_FILE));
    let layout: BTreeMap<String, Vec<usize>> = saved
        .iter()
        .map(|(k, e)| (k.clone(), e.shape.clone()))
        .collect();
    assert_eq!(layout, hf_layout(&model.config), "saved keys and shapes");
    assert!(saved.values().all(|e| e.dtype == Dtype::F32));
    if let Some(original) = original_file {
        // Every tensor is written byte for byte as it was read (prefix dropped).
        let orig = read_entries(original);
        for (k, e) in &saved {
            let src = orig
                .get(k)
                .or_else(|| orig.get(&format!("transformer.{k}")))
                .or_else(|| {
                    (k == "lm_head.weight")
                        .then(|| orig.get("wte.weight"))
                        .flatten()
                });
            let src = src.unwrap_or_else(|| panic!("{k} not in the original"));
            assert_eq!(e.data, src.data, "{k}");
        }
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(config["n_layer"], model.config.n_layer);
    assert_eq!(config["n_embd"], model.config.n_embd);
    assert_eq!(config["n_head"], model.config.n_head);
    assert_eq!(config["n_positions"], model.config.n_positions);
    assert_eq!(config["vocab_size"], model.config.vocab_size);
    assert_eq!(config["tie_word_embeddings"], false);

    let reloaded = Gpt2::<B>::load(dir.path(), &Default::default()).unwrap();
    let mut c = model.config.clone();
    c.tie_word_embeddings = false;
    assert_eq!(reloaded.config, c);
    let batch = TokenBatch::new(vec![vec![1, 2, 3, 4, 5], vec![6, 7, 8, 9, 10]]).unwrap();
    let a = host(model.forward(&batch, &Default::default()).unwrap());
    let b = host(reloaded.forward(&batch, &Default::default()).unwrap());
    assert_eq!(a, b, "identical logits after save and load");
}

#[test]
fn save_then_load_is_exact_and_hf_layout() {
    for name in ["tiny", "untied"] {
        let path = fixture(name);
        round_trip(
            &Gpt2::<NdArray>::load(&path, &Default::default()).unwrap(),
            Some(&path.join(WEIGHTS_FILE)),
        );
        round_trip(
            &Gpt2::<Cpu>::load(&path, &Default::default()).unwrap(),
            Some(&path.join(WEIGHTS_FILE)),
        );
    }
    let config = Gpt2Config::new(2, 16, 4, 8, 50);
    round_trip(
        &Gpt2::<NdArray>::init(&config, &Default::default()).unwrap(),
        None,
    );
}

/// Hugging Face defaults the bos/eos ids to 50256 and warns when a smaller
/// vocabulary does not hold it (checked with transformers 5.24): a saved
/// config says there are none, and GPT-2's own vocabulary keeps 50256.
#[test]
fn saved_config_names_special_tokens_inside_the_vocabulary() {
    let ids = |config: &Gpt2Config| {
        let v: serde_json::Value = serde_json::from_str(&config.to_json()).unwrap();
        (v["bos_token_id"].clone(), v["eos_token_id"].clone())
    };
    let small = Gpt2Config::new(2, 16, 4, 8, 128);
    assert_eq!(
        ids(&small),
        (serde_json::Value::Null, serde_json::Value::Null)
    );
    let gpt2 = Gpt2Config::gpt2_small();
    assert_eq!(ids(&gpt2), (50256.into(), 50256.into()));
    // And the saved file still loads as the same config.
    assert_eq!(Gpt2Config::from_json(&small.to_json()).unwrap(), small);
}

#[test]
fn saving_into_a_file_path_is_io_error() {
    let dir = TempDir::new("blocked");
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let model = Gpt2::<NdArray>::load(fixture("tiny"), &Default::default()).unwrap();
    match model.save(&blocker) {
        Err(ModelError::Io { path, .. }) => assert_eq!(path, blocker),
        other => panic!("expected Io, got {other:?}"),
    }
}

/// Asserts that `err` is `WrongShape` naming `key`, `expected` and `found`.
fn assert_wrong_shape(err: ModelError, key: &str, expected: &[usize], found: &[usize]) {
    match err {
        ModelError::WrongShape {
            key: k,
            expected: e,
            found: f,
            ..
        } => assert_eq!(
            (k.as_str(), e.as_slice(), f.as_slice()),
            (key, expected, found)
        ),
        other => panic!("expected WrongShape, got {other:?}"),
    }
}

#[test]
fn non_finite_weights_name_the_key_index_and_value() {
    for (value, shown) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let dir = TempDir::copy_of("tiny");
        common::edit_f32(dir.path(), "h.1.mlp.c_fc.bias", |v| {
            v[5] = value;
            v[9] = value;
        });
        let err = load_err(dir.path());
        let msg = err.to_string();
        match err {
            ModelError::NonFiniteWeight {
                path,
                key,
                index,
                value: found,
            } => {
                assert_eq!(path, dir.join(WEIGHTS_FILE));
                assert_eq!((key.as_str(), index), ("h.1.mlp.c_fc.bias", 5));
                assert_eq!(found.to_bits(), value.to_bits());
            }
            other => panic!("expected NonFiniteWeight, got {other:?}"),
        }
        assert!(
            msg.contains(&format!(
                "weight `h.1.mlp.c_fc.bias` holds a non-finite value, {shown}, at flat index 5"
            )) && msg.contains("LoadOptions::allow_non_finite"),
            "{msg}"
        );
    }
}

#[test]
fn allowed_non_finite_weights_load_and_the_first_bad_site_is_found() {
    let dir = TempDir::copy_of("tiny");
    // Row 1, column 52 of c_attn: k (columns 32..64), head 2, dimension 4.
    common::edit_f32(dir.path(), "h.1.attn.c_attn.weight", |v| {
        v[96 + 52] = f32::NAN
    });
    let options = LoadOptions::new().allow_non_finite(true);
    let model = Gpt2::<NdArray>::load_with(dir.path(), &Default::default(), options).unwrap();
    let batch = TokenBatch::single(vec![1, 2, 3]).unwrap();
    let site = model
        .first_non_finite(&batch, &Default::default())
        .unwrap()
        .expect("the NaN spreads");
    assert_eq!(
        (site.site.as_str(), site.layer, site.shape.as_slice()),
        ("attn.k", Some(1), [1, 3, 4, 8].as_slice())
    );
    assert!(site.value.is_nan());
    assert_eq!(site.coordinates(), [0, 0, 2, 4]);
    assert_eq!(site.key(), "layers.1.attn.k");
    assert_eq!(
        site.to_string(),
        "values went non-finite in the forward pass: first at layer 1, site `attn.k` \
         (key `layers.1.attn.k`): NaN at [0, 0, 2, 4] (flat index 20) of shape [1, 3, 4, 8]"
    );
    // The clean model has no bad site: the mask's -inf in qk_logits does not count.
    let clean = Gpt2::<NdArray>::load(fixture("tiny"), &Default::default()).unwrap();
    assert_eq!(
        clean.first_non_finite(&batch, &Default::default()).unwrap(),
        None
    );

    // Generation stops with the site instead of sampling from NaN logits.
    let config = hooks_model::sample::SampleConfig {
        max_new_tokens: 2,
        ..Default::default()
    };
    match hooks_model::sample::generate(&model, &[1, 2], &config, &Default::default()) {
        Err(ModelError::NonFinite(site)) => {
            assert_eq!((site.site.as_str(), site.layer), ("attn.k", Some(1)));
            assert_eq!(site.during, "generation of token 1 of 2");
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
}

#[test]
fn config_sizes_are_checked_without_overflow() {
    let small = Gpt2Config::gpt2_small();
    let sizes = small.sizes().unwrap();
    assert_eq!(sizes.parameters, 124_439_808, "GPT-2 small's weight count");
    assert_eq!((sizes.d_mlp, sizes.qkv, sizes.d_head), (3072, 2304, 64));
    let bad = |edit: &dyn Fn(&mut Gpt2Config)| {
        let mut c = Gpt2Config::new(2, 32, 4, 16, 97);
        edit(&mut c);
        match c.validate() {
            Err(ModelError::BadConfig(why)) => why,
            other => panic!("expected BadConfig, got {other:?}"),
        }
    };
    for (eps, shown) in [
        (-1e-5, "-1e-5"),
        (0.0, "0e0"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "inf"),
    ] {
        assert_eq!(
            bad(&|c| c.layer_norm_epsilon = eps),
            format!("layer_norm_epsilon must be a finite number > 0, not {shown}")
        );
    }
    assert_eq!(bad(&|c| c.n_layer = 0), "n_layer must be positive, not 0");
    assert_eq!(
        bad(&|c| c.n_inner = Some(0)),
        "n_inner must be positive, not 0"
    );
    let huge = usize::MAX / 2 + 1;
    assert!(
        bad(&|c| {
            c.n_embd = huge;
            c.n_head = 1;
        })
        .starts_with(
            "the attention's q, k, v width 3 · n_embd = 3 · n_embd (9223372036854775808) overflows"
        )
    );
    let quarter = usize::MAX / 4 + 1;
    let why = bad(&|c| {
        c.n_embd = quarter;
        c.n_head = 1;
    });
    assert!(why.starts_with("the MLP width 4 · n_embd"), "{why}");
    let why = bad(&|c| c.vocab_size = usize::MAX / 16);
    assert!(
        why.contains("vocab_size (1152921504606846975) · n_embd (32) overflows"),
        "{why}"
    );
    let why = bad(&|c| c.n_positions = usize::MAX / 16);
    assert!(why.contains("n_positions"), "{why}");
    let why = bad(&|c| c.n_layer = usize::MAX / 1000);
    assert!(why.contains("n_layer"), "{why}");
    // The accessors never overflow or divide by zero, even on a bad config.
    let mut c = Gpt2Config::new(2, usize::MAX, 0, 16, 97);
    assert_eq!((c.d_mlp(), c.d_head()), (usize::MAX, 0));
    c.n_inner = Some(7);
    assert_eq!(c.d_mlp(), 7);
}

#[test]
fn config_errors_name_the_file_once() {
    let dir = TempDir::copy_of("tiny");
    for text in ["{ not json", "[1, 2]", "{\"n_embd\": 32}"] {
        std::fs::write(dir.join(CONFIG_FILE), text).unwrap();
        let msg = load_err(dir.path()).to_string();
        assert_eq!(msg.matches("config.json").count(), 1, "{msg}");
        assert!(msg.starts_with("bad config: "), "{msg}");
    }
    std::fs::write(dir.join(CONFIG_FILE), "[1, 2]").unwrap();
    assert!(
        load_err(dir.path())
            .to_string()
            .ends_with("config.json: not a JSON object but a list")
    );
}

#[test]
fn safetensors_problems_are_in_words() {
    let dir = TempDir::copy_of("tiny");
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let reason = |data: &[u8]| {
        std::fs::write(&path, data).unwrap();
        match load_err(dir.path()) {
            ModelError::BadSafetensors { reason, .. } => reason,
            other => panic!("expected BadSafetensors, got {other:?}"),
        }
    };
    assert_eq!(
        reason(&bytes[..5]),
        "truncated: the file has 5 bytes; a safetensors file starts with an 8-byte header length"
    );
    assert_eq!(
        reason(&bytes[..100]),
        format!("truncated: the file has 100 bytes, the header needs {header_end}")
    );
    assert_eq!(
        reason(&bytes[..bytes.len() - 3]),
        format!(
            "truncated: the file has {} bytes, the header needs {}",
            bytes.len() - 3,
            bytes.len()
        )
    );
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 12]);
    assert_eq!(
        reason(&longer),
        format!(
            "12 bytes after the last tensor's data: the header accounts for {} of the file's {} bytes",
            bytes.len(),
            longer.len()
        )
    );
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(reason(&huge).starts_with("the header length field says 18446744073709551615 bytes"));
    let mut not_utf8 = bytes.clone();
    not_utf8[9] = 0xff;
    assert_eq!(
        reason(&not_utf8),
        "the header is not UTF-8 text (invalid byte at offset 9)"
    );
    for r in [
        reason(&bytes[..5]),
        reason(&bytes[..100]),
        reason(&not_utf8),
    ] {
        assert!(
            !r.contains("MetadataIncompleteBuffer") && !r.contains("Invalid"),
            "{r}"
        );
    }
}

#[test]
fn a_failed_atomic_write_keeps_the_old_file_and_no_temporary() {
    use hooks_model::files::write_atomic;
    let dir = TempDir::new("atomic");
    let file = dir.join("out.bin");
    std::fs::write(&file, b"old").unwrap();
    let err = write_atomic(&file, |w| {
        w.write_all(b"partial")?;
        Err::<(), _>(std::io::Error::from_raw_os_error(28))
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: No space left on device (os error 28)", file.display())
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"old");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // A link's target is replaced and the link kept.
    let link = dir.join("link");
    std::os::unix::fs::symlink("out.bin", &link).unwrap();
    write_atomic(&link, |w| w.write_all(b"new")).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"new");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // The model's own save goes through the same writer.
    match Gpt2::<NdArray>::load(fixture("tiny"), &Default::default())
        .unwrap()
        .save("/dev/full")
    {
        Err(ModelError::Io { .. }) => {}
        other => panic!("expected Io, got {other:?}"),
    }
}

/// The model has no dropout, and Hugging Face's GPT-2 defaults each of its
/// three dropout rates to 0.1: a saved config says 0, so transformers
/// training our files (as `train_induction_torch.py` does) computes what we
/// compute.
#[test]
fn saved_config_says_there_is_no_dropout() {
    let v: serde_json::Value =
        serde_json::from_str(&Gpt2Config::new(2, 16, 4, 8, 128).to_json()).unwrap();
    for field in ["attn_pdrop", "embd_pdrop", "resid_pdrop"] {
        assert_eq!(v[field].as_f64(), Some(0.0), "{field}");
    }
}
