//! Bounded property tests of the checkpoint loader against hostile files:
//! random byte mutations and truncations of the tiny fixture's
//! `model.safetensors` and `config.json`. The loader must return `Ok` (and
//! then run) or a typed [`ModelError`] whose message is plain text, never
//! panic. Seeds are fixed and iteration counts bounded (a few seconds each);
//! a panic reports the seed, the iteration and the mutation to replay.

use crate::common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use common::{TempDir, XorShift};
use hooks_model::backend::NdArray;
use hooks_model::checkpoint::{CONFIG_FILE, WEIGHTS_FILE};
use hooks_model::{Gpt2, LoadOptions, ModelError, TokenBatch};

/// What a load of a mutated checkpoint did.
enum Outcome {
    Loaded,
    Failed(ModelError),
}

/// Loads `dir` (allowing non-finite weights half of the time) and, when it
/// loads, runs a short forward pass; a panic is reported with `what`.
fn load_and_run(dir: &Path, allow_non_finite: bool, what: &str) -> Outcome {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let options = LoadOptions::new().allow_non_finite(allow_non_finite);
        match Gpt2::<NdArray>::load_with(dir, &Default::default(), options) {
            Ok(model) => {
                let n = model.config.n_positions.min(4);
                let v = model.config.vocab_size as u32;
                let batch = TokenBatch::single((0..n as u32).map(|t| t % v).collect()).unwrap();
                // A forward pass may fail only with a typed error too.
                let _ = model.forward(&batch, &Default::default());
                Outcome::Loaded
            }
            Err(e) => Outcome::Failed(e),
        }
    }));
    match result {
        Ok(outcome) => outcome,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("the loader panicked on {what}: {msg}")
        }
    }
}

/// An error message must be text for a terminal: no control characters,
/// no Rust debug forms of I/O or parser errors.
fn assert_plain(e: &ModelError, what: &str) {
    let msg = e.to_string();
    assert!(!msg.is_empty(), "{what}: empty message");
    assert!(
        !msg.chars().any(char::is_control),
        "{what}: control characters in {msg:?}"
    );
    for debug in ["Os {", "kind:", "MetadataIncompleteBuffer", "InvalidHeader"] {
        assert!(!msg.contains(debug), "{what}: debug form in {msg}");
    }
}

/// One random change to `bytes`, described for the report. Mutations aim at
/// the header (where parsing happens) more often than at the data.
fn mutate(rng: &mut XorShift, bytes: &mut Vec<u8>, header_end: usize) -> String {
    let region = |rng: &mut XorShift, len: usize| {
        if rng.one_in(4) || header_end >= len {
            rng.below(len.max(1))
        } else {
            rng.below(header_end.max(1))
        }
    };
    match rng.below(8) {
        0 => {
            let keep = rng.below(bytes.len() + 1);
            bytes.truncate(keep);
            format!("truncated to {keep} bytes")
        }
        1 => {
            let at = region(rng, bytes.len());
            let bit = rng.below(8);
            if let Some(b) = bytes.get_mut(at) {
                *b ^= 1 << bit;
            }
            format!("bit {bit} flipped at byte {at}")
        }
        2 => {
            let at = region(rng, bytes.len());
            let value = rng.next_u64() as u8;
            if let Some(b) = bytes.get_mut(at) {
                *b = value;
            }
            format!("byte {at} set to {value:#04x}")
        }
        3 => {
            // The 8-byte header length.
            let value = match rng.below(4) {
                0 => rng.next_u64(),
                1 => rng.next_u64() % (bytes.len() as u64 + 16),
                2 => u64::MAX,
                _ => (header_end as u64).saturating_sub(8) ^ (1 << rng.below(16)),
            };
            if bytes.len() >= 8 {
                bytes[..8].copy_from_slice(&value.to_le_bytes());
            }
            format!("header length set to {value}")
        }
        4 => {
            let at = region(rng, bytes.len());
            let n = 1 + rng.below(16);
            let end = (at + n).min(bytes.len());
            bytes.drain(at.min(end)..end);
            format!("{n} bytes removed at {at}")
        }
        5 => {
            let at = region(rng, bytes.len()).min(bytes.len());
            let junk: &[u8] = rng.pick::<&[u8]>(&[
                b"9999999999999999999999".as_slice(),
                b"-1",
                b"\"F16\"",
                b"[18446744073709551615,0]",
                b"{}",
                b"\x1b[31m",
                b"\xff\xfe",
                b"NaN",
                b"1e400",
                b",",
            ]);
            for (i, b) in junk.iter().enumerate() {
                bytes.insert(at + i, *b);
            }
            format!("{junk:?} inserted at {at}")
        }
        6 => {
            // A digit of the header changed: shapes and offsets.
            let digits: Vec<usize> = bytes[8.min(bytes.len())..header_end.min(bytes.len())]
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_ascii_digit())
                .map(|(i, _)| i + 8)
                .collect();
            if digits.is_empty() {
                return "no digit to change".into();
            }
            let at = *rng.pick(&digits);
            let d = b'0' + rng.below(10) as u8;
            bytes[at] = d;
            format!("header digit at {at} set to {}", d as char)
        }
        _ => {
            // A data value set to NaN, ±inf or a huge finite number.
            if bytes.len() < header_end + 4 {
                return "no data to change".into();
            }
            let at = header_end + rng.below((bytes.len() - header_end) / 4) * 4;
            let v = *rng.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, 1e30]);
            bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
            format!("value at byte {at} set to {v}")
        }
    }
}

#[test]
fn mutated_weights_load_or_fail_with_a_typed_error() {
    let dir = TempDir::copy_of("tiny");
    let path = dir.join(WEIGHTS_FILE);
    let original = std::fs::read(&path).unwrap();
    let header_end = 8 + u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let (mut loaded, mut failed) = (0, 0);
    for seed in [1u64, 2, 3] {
        let mut rng = XorShift::new(seed);
        for iteration in 0..120 {
            let mut bytes = original.clone();
            let mut what = Vec::new();
            for _ in 0..1 + rng.below(3) {
                what.push(mutate(&mut rng, &mut bytes, header_end));
            }
            std::fs::write(&path, &bytes).unwrap();
            let what = format!(
                "model.safetensors (seed {seed}, iteration {iteration}: {})",
                what.join("; ")
            );
            match load_and_run(dir.path(), rng.one_in(2), &what) {
                Outcome::Loaded => loaded += 1,
                Outcome::Failed(e) => {
                    assert_plain(&e, &what);
                    failed += 1;
                }
            }
        }
    }
    // Both outcomes occur: the mutations reach past the first check.
    assert!(loaded > 0 && failed > 0, "{loaded} loaded, {failed} failed");
}

#[test]
fn mutated_configs_load_or_fail_with_a_typed_error() {
    let dir = TempDir::copy_of("tiny");
    let path = dir.join(CONFIG_FILE);
    let original = std::fs::read_to_string(&path).unwrap();
    let values: [&str; 16] = [
        "0",
        "1",
        "2",
        "8",
        "-1",
        "1e-300",
        "-1e-5",
        "1e308",
        "1e400",
        "100000000",
        "4611686018427387904",
        "18446744073709551615",
        "18446744073709551616",
        "null",
        "\"two\"",
        "\"\\u001b[31m\"",
    ];
    let fields = [
        "n_embd",
        "n_layer",
        "n_head",
        "n_positions",
        "vocab_size",
        "n_inner",
        "layer_norm_epsilon",
        "activation_function",
        "tie_word_embeddings",
    ];
    let (mut loaded, mut failed) = (0, 0);
    for seed in [11u64, 12] {
        let mut rng = XorShift::new(seed);
        for iteration in 0..150 {
            let mut what = Vec::new();
            let mut raw: Vec<(String, &str)> = Vec::new();
            let text = if rng.one_in(3) {
                // Raw byte damage.
                let mut bytes = original.clone().into_bytes();
                let header_end = bytes.len();
                what.push(mutate(&mut rng, &mut bytes, header_end));
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                // A field set to a hostile value (or removed).
                let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
                let map = config.as_object_mut().unwrap();
                for _ in 0..1 + rng.below(2) {
                    let field = *rng.pick(&fields);
                    if rng.one_in(8) {
                        map.remove(field);
                        what.push(format!("{field} removed"));
                    } else {
                        let value = *rng.pick(&values);
                        // A placeholder, replaced by the raw text below (1e400
                        // is not a serde_json value).
                        map.insert(field.into(), format!("@{field}@").into());
                        raw.push((format!("\"@{field}@\""), value));
                        what.push(format!("{field} = {value}"));
                    }
                }
                let mut text = serde_json::to_string_pretty(&config).unwrap();
                for (placeholder, value) in &raw {
                    text = text.replace(placeholder, value);
                }
                text
            };
            std::fs::write(&path, &text).unwrap();
            let what = format!(
                "config.json (seed {seed}, iteration {iteration}: {})",
                what.join("; ")
            );
            match load_and_run(dir.path(), false, &what) {
                Outcome::Loaded => loaded += 1,
                Outcome::Failed(e) => {
                    assert_plain(&e, &what);
                    failed += 1;
                }
            }
        }
    }
    assert!(loaded > 0 && failed > 0, "{loaded} loaded, {failed} failed");
}

#[test]
fn raw_out_of_range_numbers_in_config_are_bad_config() {
    let dir = TempDir::copy_of("tiny");
    let path = dir.join(CONFIG_FILE);
    let original = std::fs::read_to_string(&path).unwrap();
    for (from, to, needle) in [
        (
            "\"layer_norm_epsilon\": 1e-05",
            "\"layer_norm_epsilon\": 1e400",
            "number out of range",
        ),
        (
            "\"n_layer\": 2",
            "\"n_layer\": 1e3",
            "n_layer must be a non-negative integer, not 1000.0",
        ),
        (
            "\"n_embd\": 32",
            "\"n_embd\": 18446744073709551616",
            "n_embd",
        ),
    ] {
        assert!(original.contains(from), "{from}");
        std::fs::write(&path, original.replace(from, to)).unwrap();
        match load_and_run(dir.path(), false, to) {
            Outcome::Failed(ModelError::BadConfig(why)) => {
                assert!(why.contains(needle), "{to}: {why}");
                assert_eq!(why.matches("config.json").count(), 1, "{why}");
            }
            Outcome::Failed(other) => panic!("{to}: expected BadConfig, got {other:?}"),
            Outcome::Loaded => panic!("{to} loaded"),
        }
    }
}
