//! `ActivationCache`: which keys a spec selects (typed paths, layers, globs),
//! that memory stays bounded over many passes, gradient recording on an
//! autodiff backend, and `save` read back with `read_safetensors`.

use crate::common;

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn_hooks::experiments::{ActivationCache, CacheSpec, read_safetensors};
use common::{TempDir, host, load, record};
use hooks_core::{HookTree, path};
use hooks_model::backend::NdArray;
use hooks_model::{TokenBatch, TransformerHooks};

type B = NdArray;
type AD = Autodiff<NdArray>;

/// Two rows of six tokens for the tiny fixture (vocabulary 97).
fn batch() -> TokenBatch {
    TokenBatch::new(vec![
        vec![3, 14, 15, 92, 65, 35],
        vec![89, 79, 32, 38, 46, 26],
    ])
    .unwrap()
}

#[test]
fn typed_paths_and_layers_select_exactly_those_keys() {
    let model = load::<B>("tiny");
    let mut hooks = TransformerHooks::<B>::default();
    let probs = path!(TransformerHooks<NdArray>: attn.qk_probs);
    let post_mlp = path!(TransformerHooks<NdArray>: resid.torso.post_mlp);
    let logits = path!(TransformerHooks<NdArray>: logits);
    let spec = CacheSpec::new()
        .site(&probs)
        .site(&post_mlp)
        .site(&logits)
        .layers([1]);
    let cache = ActivationCache::install(&mut hooks, &spec).unwrap();
    assert_eq!(
        cache.sites(),
        ["attn.qk_probs", "resid.torso.post_mlp", "logits"]
    );

    for _ in 0..5 {
        model.forward(&batch(), &hooks).unwrap();
        // `logits` has no layer, so a layer filter never records it; and each
        // pass replaces the tensors of the last one.
        assert_eq!(
            cache.recorder().keys(),
            ["layers.1.attn.qk_probs", "layers.1.resid.torso.post_mlp"]
        );
        assert_eq!(cache.recorder().len(), 2);
    }
    assert_eq!(cache.at(&probs, Some(1)).unwrap().dims(), [2, 6, 6, 4]);
    assert_eq!(cache.at(&post_mlp, Some(1)).unwrap().dims(), [2, 6, 32]);
    assert!(cache.at(&probs, Some(0)).is_none());
    assert!(cache.at(&logits, None).is_none());
    // The string form reads the same tensor; a wrong rank reads nothing.
    assert!(cache.get::<4>("attn.qk_probs", Some(1)).is_some());
    assert!(cache.get::<3>("attn.qk_probs", Some(1)).is_none());

    cache.clear();
    assert!(cache.recorder().is_empty());
    model.forward(&batch(), &hooks).unwrap();
    assert_eq!(
        cache.recorder().len(),
        2,
        "hooks stay installed after clear"
    );
}

#[test]
fn recorded_values_are_what_the_model_computes() {
    let model = load::<B>("tiny");
    let mut hooks = TransformerHooks::<B>::default();
    let logits_path = path!(TransformerHooks<NdArray>: logits);
    let probs_path = path!(TransformerHooks<NdArray>: attn.qk_probs);
    let cache = ActivationCache::install(
        &mut hooks,
        &CacheSpec::new().site(&logits_path).site(&probs_path),
    )
    .unwrap();
    // An independent recording of the same site, by a closure appended after.
    let probs_calls = record(&mut hooks.attn.qk_probs);
    let logits = model.forward(&batch(), &hooks).unwrap();

    assert_eq!(
        host(cache.at(&logits_path, None).unwrap()),
        host(logits),
        "recorded logits equal the returned logits"
    );
    for layer in [0, 1] {
        let closure = common::at_layer(&probs_calls, Some(layer));
        let cached = cache.at(&probs_path, Some(layer)).unwrap();
        assert_eq!(cached.dims().to_vec(), closure.shape);
        assert_eq!(host(cached.clone()), closure.data);
        // Probabilities: every row sums to one over the keys.
        let sums = host(cached.sum_dim(2));
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
    }
    // No layer filter: both layers of probs, plus the logits.
    assert_eq!(
        cache.recorder().keys(),
        ["layers.0.attn.qk_probs", "layers.1.attn.qk_probs", "logits"]
    );
}

#[test]
fn globs_select_the_right_sites() {
    let model = load::<B>("tiny");
    let hooks = TransformerHooks::<B>::default();

    let spec = CacheSpec::new().glob("attn.q*");
    assert_eq!(
        spec.resolve(&hooks).unwrap(),
        [
            "attn.q",
            "attn.qk_logits",
            "attn.qk_softmax_denominator",
            "attn.qk_probs"
        ]
    );

    let mut hooks = TransformerHooks::<B>::default();
    let cache = ActivationCache::install(&mut hooks, &CacheSpec::new().glob("**.scale")).unwrap();
    assert_eq!(
        cache.sites(),
        [
            "resid.torso.ln_attn.scale",
            "resid.torso.ln_mlp.scale",
            "resid.ln_f.scale"
        ]
    );
    model.forward(&batch(), &hooks).unwrap();
    let mut keys = cache.recorder().keys();
    keys.sort();
    assert_eq!(
        keys,
        [
            "layers.0.resid.torso.ln_attn.scale",
            "layers.0.resid.torso.ln_mlp.scale",
            "layers.1.resid.torso.ln_attn.scale",
            "layers.1.resid.torso.ln_mlp.scale",
            "resid.ln_f.scale",
        ],
        "2 * n_layer + 1 norm scales"
    );
    for (_, t) in cache.recorder().entries() {
        assert_eq!(t.shape(), [2, 6, 1]);
    }

    // A collection name selects everything under it; an empty spec, everything.
    let hooks = TransformerHooks::<B>::default();
    assert_eq!(
        CacheSpec::new().glob("mlp").resolve(&hooks).unwrap(),
        ["mlp.pre_act", "mlp.post_act"]
    );
    assert_eq!(CacheSpec::new().resolve(&hooks).unwrap().len(), 27);
    // The softmax denominator is only called when hooked: recording it works.
    let mut hooks = TransformerHooks::<B>::default();
    let cache = ActivationCache::install(
        &mut hooks,
        &CacheSpec::new()
            .glob("attn.qk_softmax_denominator")
            .layers([0]),
    )
    .unwrap();
    model.forward(&batch(), &hooks).unwrap();
    assert_eq!(
        cache
            .get::<4>("attn.qk_softmax_denominator", Some(0))
            .unwrap()
            .dims(),
        [2, 6, 1, 4]
    );
}

#[test]
fn a_bad_glob_errors_with_a_suggestion() {
    let mut hooks = TransformerHooks::<B>::default();
    let err = ActivationCache::install(&mut hooks, &CacheSpec::new().glob("attn.qk_prob"))
        .err()
        .expect("a misspelt site is an error")
        .to_string();
    assert!(err.contains("did you mean `qk_probs`?"), "{err}");

    let err = ActivationCache::install(&mut hooks, &CacheSpec::new().glob("atn.*"))
        .err()
        .expect("a misspelt collection is an error")
        .to_string();
    assert!(err.contains("did you mean `attn`?"), "{err}");
    assert!(hooks.is_empty(), "a failed install appends nothing");
}

#[test]
fn gradients_are_recorded_and_saved() {
    const T: usize = 7;
    let model = load::<AD>("tiny");
    let mut hooks = TransformerHooks::<AD>::default();
    let post_attn = path!(TransformerHooks<AD>: resid.torso.post_attn);
    let logits_path = path!(TransformerHooks<AD>: logits);
    let cache = ActivationCache::install_with_grads(
        &mut hooks,
        &CacheSpec::new().site(&post_attn).site(&logits_path),
    )
    .unwrap();
    let logits = model.forward(&batch(), &hooks).unwrap();
    let expected_logits = host(logits.clone());
    // metric = logits[0, -1, T]: its gradient at `logits` is one-hot.
    let metric: Tensor<AD, 1> = logits.slice([0..1, 5..6, T..T + 1]).reshape([1]);
    metric.backward();

    let grads = cache.grads().expect("installed with gradients");
    let mut grad_keys = grads.keys();
    grad_keys.sort();
    assert_eq!(
        grad_keys,
        [
            "layers.0.resid.torso.post_attn",
            "layers.1.resid.torso.post_attn",
            "logits"
        ]
    );
    let g = host(cache.grad::<3>("logits", None).unwrap());
    let mut one_hot = vec![0.0f32; 2 * 6 * 97];
    one_hot[5 * 97 + T] = 1.0;
    assert_eq!(g, one_hot);
    // Row 1 never reaches the metric.
    let g1 = host(cache.grad::<3>("resid.torso.post_attn", Some(1)).unwrap());
    assert!(g1[6 * 32..].iter().all(|&x| x == 0.0));
    assert!(g1[5 * 32..6 * 32].iter().any(|&x| x != 0.0));

    let dir = TempDir::new("cache");
    let file = dir.join("cache.safetensors");
    cache.save(&file).unwrap();
    let read = read_safetensors(&file).unwrap();
    let summary: Vec<(&str, &[usize])> = read
        .iter()
        .map(|(k, s, _)| (k.as_str(), s.as_slice()))
        .collect();
    assert_eq!(
        summary,
        [
            ("layers.0.resid.torso.post_attn", &[2, 6, 32][..]),
            ("layers.0.resid.torso.post_attn.grad", &[2, 6, 32][..]),
            ("layers.1.resid.torso.post_attn", &[2, 6, 32][..]),
            ("layers.1.resid.torso.post_attn.grad", &[2, 6, 32][..]),
            ("logits", &[2, 6, 97][..]),
            ("logits.grad", &[2, 6, 97][..]),
        ]
    );
    let values = |key: &str| read.iter().find(|(k, _, _)| k == key).unwrap().2.clone();
    assert_eq!(values("logits"), expected_logits);
    assert_eq!(values("logits.grad"), one_hot);
    assert_eq!(values("layers.1.resid.torso.post_attn.grad"), g1);
}

#[test]
fn forward_only_cache_saves_no_grad_keys() {
    let model = load::<B>("tiny");
    let mut hooks = TransformerHooks::<B>::default();
    let post_emb = path!(TransformerHooks<NdArray>: resid.post_emb);
    let cache = ActivationCache::install(&mut hooks, &CacheSpec::new().site(&post_emb)).unwrap();
    model.forward(&batch(), &hooks).unwrap();
    let dir = TempDir::new("cache-fwd");
    let file = dir.join("fwd.safetensors");
    cache.save(&file).unwrap();
    let read = read_safetensors(&file).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].0, "resid.post_emb");
    assert_eq!(read[0].1, [2, 6, 32]);
    assert_eq!(read[0].2, host(cache.at(&post_emb, None).unwrap()));
}

#[test]
fn written_safetensors_are_byte_reproducible() {
    use burn::tensor::TensorData;
    use burn_hooks::experiments::{read_safetensors, write_safetensors_with_metadata};
    use std::collections::HashMap;
    let dir = TempDir::new("repro");
    let entries: Vec<(String, TensorData)> = (0..20)
        .map(|i| (format!("t{i}"), TensorData::new(vec![i as f32; 3], [3])))
        .collect();
    let mut files = Vec::new();
    for round in 0..4 {
        // Fresh hash maps: a different iteration order each time.
        let meta: HashMap<String, String> = (0..30)
            .map(|i| (format!("key{}", (i * 7 + round) % 30), format!("v{i}")))
            .collect();
        let meta: HashMap<String, String> = meta.keys().map(|k| (k.clone(), k.clone())).collect();
        let file = dir.join(&format!("{round}.safetensors"));
        let mut shuffled = entries.clone();
        shuffled.rotate_left(round * 3);
        write_safetensors_with_metadata(&shuffled, Some(meta), &file).unwrap();
        files.push(std::fs::read(&file).unwrap());
    }
    assert!(files.windows(2).all(|w| w[0] == w[1]));
    let back = read_safetensors(dir.join("0.safetensors")).unwrap();
    assert_eq!(back.len(), 20);
    assert_eq!(back[0], ("t0".to_string(), vec![3], vec![0.0; 3]));
    // The header is what the safetensors crate reads too.
    let st = safetensors::SafeTensors::deserialize(&files[0]).unwrap();
    assert_eq!(st.tensor("t7").unwrap().shape(), [3]);
}
