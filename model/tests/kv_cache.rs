//! The KV cache and sampling: cached steps give the full forward's logits,
//! `attn.k`/`attn.v` see the whole cached length, greedy generation is the
//! argmax of repeated full forwards, seeded sampling is reproducible, and bad
//! requests fail before any work. Each runs on Flex and NdArray.

use crate::common;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use common::{HostTensor, assert_close, host, load, record};
use hooks_core::{FwdStage, HookTree, Record, Recorder};
use hooks_model::sample::{SampleConfig, SplitMix64, generate, pick};
use hooks_model::{Gpt2, KvCache, ModelError, TokenBatch, TransformerHooks};

on_both_backends!(
    cached_steps_match_full_forward,
    cached_k_v_hooks_see_whole_cached_length,
    padded_batch_through_cache_matches_full_forward,
    greedy_generation_is_repeated_argmax,
    seeded_sampling_is_reproducible,
    over_long_or_mismatched_requests_fail_before_work,
);

const TOKENS: [u32; 10] = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38];

/// Logits at position `s` of row `b`.
fn row(t: &HostTensor, b: usize, s: usize) -> Vec<f32> {
    (0..t.shape[2]).map(|i| t.at(&[b, s, i])).collect()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn full<B: Backend>(model: &Gpt2<B>, rows: Vec<Vec<u32>>) -> HostTensor {
    let batch = TokenBatch::new(rows).unwrap();
    HostTensor::of(model.forward(&batch, &Default::default()).unwrap())
}

fn cached_steps_match_full_forward<B: Backend>() {
    for fixture in ["tiny", "untied"] {
        let model = load::<B>(fixture);
        let want = full(&model, vec![TOKENS.to_vec()]);
        let hooks = TransformerHooks::<B>::default();
        let mut cache = KvCache::new(&model);
        assert!(cache.is_empty());
        let prompt = HostTensor::of(
            model
                .forward_cached(
                    &TokenBatch::single(TOKENS[..4].to_vec()).unwrap(),
                    &mut cache,
                    &hooks,
                )
                .unwrap(),
        );
        assert_eq!(prompt.shape, vec![1, 4, want.shape[2]]);
        assert_eq!(cache.len(), 4);
        for s in 0..4 {
            assert_close(
                &format!("{fixture}: prompt position {s}"),
                &row(&prompt, 0, s),
                &row(&want, 0, s),
                1e-4,
                0.0,
            );
        }
        for (s, &tok) in TOKENS.iter().enumerate().skip(4) {
            let step = HostTensor::of(
                model
                    .forward_cached(&TokenBatch::single(vec![tok]).unwrap(), &mut cache, &hooks)
                    .unwrap(),
            );
            assert_eq!(step.shape, vec![1, 1, want.shape[2]]);
            assert_eq!(cache.len(), s + 1);
            assert_close(
                &format!("{fixture}: step at position {s}"),
                &row(&step, 0, 0),
                &row(&want, 0, s),
                1e-4,
                0.0,
            );
        }
    }
}

fn cached_k_v_hooks_see_whole_cached_length<B: Backend>() {
    let model = load::<B>("tiny");
    let (h, d) = (4, 8);
    let mut hooks = TransformerHooks::<B>::default();
    let k = record(&mut hooks.attn.k);
    let v = record(&mut hooks.attn.v);
    let q = record(&mut hooks.attn.q);
    let logits = record(&mut hooks.attn.qk_logits);
    let v_out = record(&mut hooks.attn.v_out);
    let mut cache = KvCache::new(&model);
    model
        .forward_cached(
            &TokenBatch::single(TOKENS[..4].to_vec()).unwrap(),
            &mut cache,
            &hooks,
        )
        .unwrap();
    for &tok in &TOKENS[4..7] {
        model
            .forward_cached(&TokenBatch::single(vec![tok]).unwrap(), &mut cache, &hooks)
            .unwrap();
    }
    let dims = |calls: &common::Calls<B, 4>| -> Vec<(Option<usize>, [usize; 4])> {
        calls
            .lock()
            .unwrap()
            .iter()
            .map(|(l, t)| (*l, t.dims()))
            .collect()
    };
    let mut want_kv = Vec::new();
    let mut want_q = Vec::new();
    let mut want_logits = Vec::new();
    for (kk, s) in [(4, 4), (5, 1), (6, 1), (7, 1)] {
        for layer in 0..2 {
            want_kv.push((Some(layer), [1, kk, h, d]));
            want_q.push((Some(layer), [1, s, h, d]));
            want_logits.push((Some(layer), [1, s, kk, h]));
        }
    }
    assert_eq!(dims(&k), want_kv, "attn.k sees the whole cached length");
    assert_eq!(dims(&v), want_kv, "attn.v sees the whole cached length");
    assert_eq!(dims(&q), want_q, "queries cover only the new positions");
    assert_eq!(dims(&logits), want_logits);
    assert_eq!(dims(&v_out), want_q);

    // The cached keys and values are the ones a full forward computes.
    let mut full_hooks = TransformerHooks::<B>::default();
    let full_k = record(&mut full_hooks.attn.k);
    let full_v = record(&mut full_hooks.attn.v);
    model
        .forward(
            &TokenBatch::single(TOKENS[..7].to_vec()).unwrap(),
            &full_hooks,
        )
        .unwrap();
    for layer in 0..2 {
        let last = |calls: &common::Calls<B, 4>| {
            let c = calls.lock().unwrap();
            let (_, t) = c.iter().rev().find(|(l, _)| *l == Some(layer)).unwrap();
            host(t.clone())
        };
        let at = |calls: &common::Calls<B, 4>| host(calls.lock().unwrap()[layer].1.clone());
        assert_close(
            &format!("cached k layer {layer}"),
            &last(&k),
            &at(&full_k),
            1e-5,
            0.0,
        );
        assert_close(
            &format!("cached v layer {layer}"),
            &last(&v),
            &at(&full_v),
            1e-5,
            0.0,
        );
    }
}

fn padded_batch_through_cache_matches_full_forward<B: Backend>() {
    let model = load::<B>("tiny");
    let want_batch =
        TokenBatch::left_padded(vec![vec![5, 6, 7, 8, 9, 10], vec![11, 12, 13, 14]], 0).unwrap();
    let want = HostTensor::of(model.forward(&want_batch, &Default::default()).unwrap());
    let hooks = TransformerHooks::<B>::default();
    let mut cache = KvCache::new(&model);
    let prompt = TokenBatch::left_padded(vec![vec![5, 6, 7, 8], vec![11, 12]], 0).unwrap();
    let first = HostTensor::of(model.forward_cached(&prompt, &mut cache, &hooks).unwrap());
    for b in 0..2 {
        for s in 0..4 {
            assert_close(
                &format!("prompt row {b} position {s}"),
                &row(&first, b, s),
                &row(&want, b, s),
                1e-4,
                0.0,
            );
        }
    }
    for (i, pair) in [[9, 13], [10, 14]].into_iter().enumerate() {
        let step = TokenBatch::new(vec![vec![pair[0]], vec![pair[1]]]).unwrap();
        let got = HostTensor::of(model.forward_cached(&step, &mut cache, &hooks).unwrap());
        assert_eq!(got.shape, vec![2, 1, 97]);
        for b in 0..2 {
            assert_close(
                &format!("step {i} row {b}"),
                &row(&got, b, 0),
                &row(&want, b, 4 + i),
                1e-4,
                0.0,
            );
        }
    }
    assert_eq!(cache.len(), 6);
    // The padded row continues as if run alone.
    let alone = full(&model, vec![vec![11, 12, 13, 14]]);
    assert_close(
        "row 1 alone",
        &row(&want, 1, 5),
        &row(&alone, 0, 3),
        1e-4,
        0.0,
    );
}

fn greedy_generation_is_repeated_argmax<B: Backend>() {
    for fixture in ["tiny", "untied"] {
        let model = load::<B>(fixture);
        let prompt = vec![1, 2, 3];
        let config = SampleConfig {
            max_new_tokens: 8,
            ..SampleConfig::default()
        };
        assert_eq!(config.temperature, 0.0, "the default is greedy");
        let got = generate(&model, &prompt, &config, &Default::default()).unwrap();
        let mut seq = prompt.clone();
        for _ in 0..8 {
            let logits = full(&model, vec![seq.clone()]);
            seq.push(argmax(&row(&logits, 0, seq.len() - 1)));
        }
        assert_eq!(got, seq[3..].to_vec(), "{fixture}: greedy tokens");
        assert_eq!(got.len(), 8);
    }
}

fn seeded_sampling_is_reproducible<B: Backend>() {
    let model = load::<B>("tiny");
    let hooks = TransformerHooks::<B>::default();
    let sample = |temperature: f32, top_p: f32, seed: u64| {
        let config = SampleConfig {
            max_new_tokens: 10,
            temperature,
            top_p,
            seed,
        };
        generate(&model, &[7, 8], &config, &hooks).unwrap()
    };
    let a = sample(1.0, 0.9, 42);
    assert_eq!(a.len(), 10);
    assert_eq!(a, sample(1.0, 0.9, 42), "same seed, same tokens");
    assert!(a.iter().all(|&t| t < 97));
    // Different seeds at a high temperature give different sequences.
    let runs: Vec<Vec<u32>> = (0..6).map(|seed| sample(2.0, 1.0, seed)).collect();
    assert!(
        runs.iter().any(|r| *r != runs[0]),
        "seeds should matter: {runs:?}"
    );
    // A nucleus that keeps only the top token is greedy, whatever the seed or temperature.
    let greedy = sample(0.0, 1.0, 0);
    for seed in [0, 1, 99] {
        assert_eq!(sample(1.0, 1e-6, seed), greedy, "top_p 1e-6, seed {seed}");
        assert_eq!(
            sample(3.0, 1e-6, seed),
            greedy,
            "top_p 1e-6, temperature 3, seed {seed}"
        );
    }

    // `pick` on its own: greedy is the argmax, a nucleus below the top mass is the top token,
    // and the generator is reproducible.
    let logits = [0.5f32, 3.0, -1.0, 2.9];
    let mut rng = SplitMix64(7);
    let greedy_cfg = SampleConfig::default();
    assert_eq!(pick(&logits, &greedy_cfg, &mut rng), 1);
    let nucleus = SampleConfig {
        temperature: 1.0,
        top_p: 0.3,
        ..SampleConfig::default()
    };
    for _ in 0..20 {
        assert_eq!(pick(&logits, &nucleus, &mut rng), 1);
    }
    let two = SampleConfig {
        temperature: 1.0,
        top_p: 0.6,
        ..SampleConfig::default()
    };
    let picks: Vec<u32> = (0..200).map(|_| pick(&logits, &two, &mut rng)).collect();
    assert!(
        picks.iter().all(|&t| t == 1 || t == 3),
        "only the two top tokens"
    );
    assert!(picks.contains(&1) && picks.contains(&3));
    let (mut r1, mut r2) = (SplitMix64(5), SplitMix64(5));
    assert_eq!(r1.next_u64(), r2.next_u64());
    assert!((0..1000).all(|_| (0.0..1.0).contains(&r1.next_f64())));
}

fn over_long_or_mismatched_requests_fail_before_work<B: Backend>() {
    let model = load::<B>("tiny");
    let rec = Recorder::<B>::new();
    let mut hooks = TransformerHooks::<B>::default();
    hooks.append_all(FwdStage::Fwd, Record::into(&rec));
    let prompt: Vec<u32> = (1..=10).collect();
    let config = SampleConfig {
        max_new_tokens: 7,
        ..SampleConfig::default()
    };
    match generate(&model, &prompt, &config, &hooks) {
        Err(ModelError::TooLong {
            row,
            len,
            n_positions,
        }) => assert_eq!((row, len, n_positions), (0, 17, 16)),
        other => panic!("expected TooLong, got {other:?}"),
    }
    for (temperature, top_p) in [(-1.0, 1.0), (f32::NAN, 1.0), (1.0, 0.0), (1.0, 1.5)] {
        let bad = SampleConfig {
            max_new_tokens: 2,
            temperature,
            top_p,
            seed: 0,
        };
        let err = generate(&model, &prompt, &bad, &hooks).unwrap_err();
        assert!(
            matches!(err, ModelError::BadBatch(_)),
            "t={temperature} p={top_p}: {err}"
        );
    }
    let short = SampleConfig {
        max_new_tokens: 2,
        ..SampleConfig::default()
    };
    let oov = generate(&model, &[1, 200], &short, &hooks).unwrap_err();
    assert!(
        matches!(
            oov,
            ModelError::TokenOutOfRange {
                token: 200,
                row: 0,
                position: 1,
                vocab_size: 97
            }
        ),
        "{oov}"
    );
    assert!(
        rec.is_empty(),
        "no site ran for refused requests: {:?}",
        rec.keys()
    );

    // Exactly the window is fine: 10 + 6 = 16.
    let ok = SampleConfig {
        max_new_tokens: 6,
        ..SampleConfig::default()
    };
    assert_eq!(
        generate(&model, &prompt, &ok, &Default::default())
            .unwrap()
            .len(),
        6
    );

    // A cache that would overflow the window refuses the step and stays as it was.
    let mut cache = KvCache::new(&model);
    let plain = TransformerHooks::<B>::default();
    model
        .forward_cached(
            &TokenBatch::single(vec![3; 15]).unwrap(),
            &mut cache,
            &plain,
        )
        .unwrap();
    let two = TokenBatch::single(vec![4, 5]).unwrap();
    match model.forward_cached(&two, &mut cache, &hooks) {
        Err(ModelError::TooLong {
            len, n_positions, ..
        }) => assert_eq!((len, n_positions), (17, 16)),
        other => panic!(
            "expected TooLong, got {:?}",
            other.map(|t: Tensor<B, 3>| t.dims())
        ),
    }
    assert_eq!(cache.len(), 15);
    let rows2 = TokenBatch::new(vec![vec![4], vec![5]]).unwrap();
    let err = model
        .forward_cached(&rows2, &mut cache, &hooks)
        .unwrap_err();
    assert!(matches!(err, ModelError::BadBatch(_)), "{err}");
    assert_eq!(cache.len(), 15);
    assert!(rec.is_empty());
    // The last position still fits.
    let last = model
        .forward_cached(&TokenBatch::single(vec![4]).unwrap(), &mut cache, &hooks)
        .unwrap();
    assert_eq!(last.dims(), [1, 1, 97]);
    assert_eq!(cache.len(), 16);
}
