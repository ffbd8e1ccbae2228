//! Checkpoint formats: BF16 and F16 weights (converted to f32 as they load)
//! and sharded folders (`model-0000i-of-0000n.safetensors` with
//! `model.safetensors.index.json`), made here from the committed f32
//! fixtures; every way an index and its shards can disagree, each error
//! naming the file and key; the streaming reader's chunks.

use crate::common;

use std::io::Write;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use common::formats::{copy_as, rounded, shard_name, sharded_copy};
use common::{TempDir, fixture, host, read_entries, write_entries};
use half::{bf16, f16};
use hooks_model::backend::{Cpu, CpuAutodiff, NdArray};
use hooks_model::checkpoint::{CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE};
use hooks_model::weights::{self, TensorSpec, WeightFiles};
use hooks_model::{Gpt2, ModelError, TokenBatch};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

fn index_json(dir: &TempDir) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(INDEX_FILE)).unwrap()).unwrap()
}

/// Rewrites a sharded copy's `weight_map` through `f`.
fn edit_weight_map(dir: &TempDir, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let mut index = index_json(dir);
    f(index["weight_map"].as_object_mut().unwrap());
    std::fs::write(dir.join(INDEX_FILE), index.to_string()).unwrap();
}

/// The shard file the index maps `key` to.
fn shard_of(dir: &TempDir, key: &str) -> String {
    index_json(dir)["weight_map"][key]
        .as_str()
        .unwrap()
        .to_string()
}

fn load_err(dir: &Path) -> ModelError {
    match Gpt2::<NdArray>::load(dir, &Default::default()) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e,
    }
}

/// The reason of a [`ModelError::BadCheckpoint`] about `path`.
fn bad_checkpoint(err: ModelError, path: &Path) -> String {
    let msg = err.to_string();
    match err {
        ModelError::BadCheckpoint { path: p, reason } => {
            assert_eq!(p, path, "{msg}");
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            reason
        }
        other => panic!("expected BadCheckpoint, got {other:?}"),
    }
}

/// Every float parameter's values, in the module's visiting order.
struct Values(Vec<Vec<f32>>);

impl<B: Backend> ModuleVisitor<B> for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(host(param.val()));
    }
}

fn params<B: Backend>(model: &Gpt2<B>) -> Vec<Vec<f32>> {
    let mut v = Values(Vec::new());
    model.visit(&mut v);
    v.0
}

fn batch() -> TokenBatch {
    TokenBatch::new(vec![
        vec![3, 9, 60, 61, 5, 17, 42, 11, 7, 3, 60, 61],
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
    ])
    .unwrap()
}

fn logits<B: Backend>(model: &Gpt2<B>) -> Vec<f32> {
    host(model.forward(&batch(), &Default::default()).unwrap())
}

/// The unit roundoff `u` of `dtype` (round to nearest: |fl(x) − x| ≤ u·|x|
/// for x in the normal range; `2^-p` for a significand of p bits, the
/// implicit one included) and the absolute error `a` of its subnormal
/// range (half the spacing of its subnormals).
fn roundoff(dtype: Dtype) -> (f64, f64) {
    match dtype {
        // 8 significand bits; f32's exponent range, so an f32 weight is
        // subnormal in BF16 only if it is subnormal in f32: 2^-134.
        Dtype::BF16 => (2f64.powi(-8), 2f64.powi(-134)),
        // 11 significand bits; subnormal below 2^-14, spacing 2^-24 there.
        Dtype::F16 => (2f64.powi(-11), 2f64.powi(-25)),
        _ => unreachable!(),
    }
}

/// Σ_i |∂z/∂W_i| · (u·|W_i| + a) over every weight W_i of the model:
/// the first-order worst case of |Δz| over all perturbations with
/// |δW_i| ≤ u·|W_i| + a.
struct FirstOrderBound<'g, B: AutodiffBackend> {
    grads: &'g B::Gradients,
    u: f64,
    a: f64,
    sum: f64,
    /// Σ_i (∂z/∂W_i)² · (u·|W_i| + a)², for the spread of random errors.
    sum_sq: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for FirstOrderBound<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let w = host(param.val());
        let Some(g) = param.val().grad(self.grads) else {
            return;
        };
        for (&g, &w) in host(g).iter().zip(&w) {
            let term = f64::from(g).abs() * (self.u * f64::from(w).abs() + self.a);
            self.sum += term;
            self.sum_sq += term * term;
        }
    }
}

/// The first-order bound on |Δ logits[j]| (flat index `j`) when every
/// weight of the f32 fixture `name` is rounded to `dtype`, and the standard
/// deviation the change would have with independent errors spread
/// uniformly over their bounds (`sqrt(Σ term² / 3)`).
fn logit_bound(name: &str, dtype: Dtype, j: usize) -> (f64, f64) {
    let model = common::load::<CpuAutodiff>(name);
    let z = model.forward(&batch(), &Default::default()).unwrap();
    let n = z.dims().iter().product::<usize>();
    let grads = z.reshape([n]).narrow(0, j, 1).sum().backward();
    let (u, a) = roundoff(dtype);
    let mut bound = FirstOrderBound::<CpuAutodiff> {
        grads: &grads,
        u,
        a,
        sum: 0.0,
        sum_sq: 0.0,
    };
    model.visit(&mut bound);
    (bound.sum, (bound.sum_sq / 3.0).sqrt())
}

/// The BF16 and F16 copies load as the f32 weights rounded to BF16 / F16,
/// exactly, and their logits stay within the rounding's first-order bound.
///
/// The bound: rounding to nearest changes each weight by
/// |δW_i| ≤ u·|W_i| + a (`roundoff`: u = 2^-8 for BF16, 2^-11 for F16; a
/// covers F16's subnormals, 2^-25, below 2^-14), so to first order a logit
/// z moves by at most B(z) = Σ_i |∂z/∂W_i|·(u·|W_i| + a), the worst case
/// over every such perturbation (all the errors lined up with the
/// gradient); computed here from the f32 model's gradient of z (one
/// backward pass). It is checked at the logit that moved most and at the
/// largest logit, plus a floor of 4·f32::EPSILON·max|z| for the f32
/// evaluation itself (both models round differently, as in
/// `common::assert_near_truth`). Second-order terms are smaller by another
/// factor of about u. The real errors have random signs, so the measured
/// change is far below B (0.2–2.3 % of it); the tighter check is that the
/// logit that moved most stays within 6 σ, σ = sqrt(Σ_i (∂z/∂W_i)² ·
/// (u·|W_i| + a)² / 3), the spread of Δz for independent errors uniform
/// over their bounds (for the maximum of a few thousand such logits, 6 σ
/// is far in the tail: an error beyond it is not rounding noise).
#[test]
fn bf16_and_f16_weights_load_as_the_f32_ones_rounded() {
    for name in ["tiny", "untied"] {
        let reference = common::load::<Cpu>(name);
        let ref_params = params(&reference);
        let ref_logits = logits(&reference);
        let scale = ref_logits.iter().fold(0.0f32, |m, z| m.max(z.abs()));
        for dtype in [Dtype::BF16, Dtype::F16] {
            let dir = copy_as(name, dtype);
            let stored = read_entries(&dir.join(WEIGHTS_FILE));
            let wte = if name == "tiny" {
                "wte.weight"
            } else {
                "transformer.wte.weight"
            };
            assert_eq!(stored[wte].dtype, dtype);
            let model = Gpt2::<Cpu>::load(dir.path(), &Default::default()).unwrap();
            let loaded = params(&model);
            assert_eq!(loaded.len(), ref_params.len());
            let (u, a) = roundoff(dtype);
            let mut changed = 0;
            for (i, (got, want)) in loaded.iter().zip(&ref_params).enumerate() {
                let want_rounded: Vec<f32> = want.iter().map(|&v| rounded(dtype, v)).collect();
                assert_eq!(got, &want_rounded, "{name} {dtype:?}: parameter {i}");
                for (&r, &w) in got.iter().zip(want) {
                    let err = (f64::from(r) - f64::from(w)).abs();
                    assert!(err <= u * f64::from(w).abs() + a, "{w} → {r}");
                }
                changed += usize::from(got != want);
            }
            assert!(changed > 0, "{name} {dtype:?}: rounding changed nothing");
            // NdArray loads the same values.
            let on_ndarray = Gpt2::<NdArray>::load(dir.path(), &Default::default()).unwrap();
            assert_eq!(params(&on_ndarray), loaded, "{name} {dtype:?} on NdArray");

            let low = logits(&model);
            let diff: Vec<f64> = low
                .iter()
                .zip(&ref_logits)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
                .collect();
            let worst = (0..diff.len())
                .max_by(|&i, &j| diff[i].total_cmp(&diff[j]))
                .unwrap();
            let largest = (0..diff.len())
                .max_by(|&i, &j| ref_logits[i].abs().total_cmp(&ref_logits[j].abs()))
                .unwrap();
            let floor = 4.0 * f64::from(f32::EPSILON) * f64::from(scale);
            for j in [worst, largest] {
                let (bound, sigma) = logit_bound(name, dtype, j);
                println!(
                    "{name} {dtype:?}: logit {j}: |Δ| {:.3e}, first-order bound {bound:.3e} \
                     ({:.1} % of it), {:.2} σ of random errors, max|z| {scale:.3}",
                    diff[j],
                    100.0 * diff[j] / bound,
                    diff[j] / sigma
                );
                assert!(
                    diff[j] <= bound + floor,
                    "{name} {dtype:?}: logit {j} moved {:e}, more than its first-order bound \
                     {bound:e} + {floor:e}",
                    diff[j]
                );
            }
            // The worst case is loose (errors do not line up): the change
            // of the logit that moved most is also within 6 σ of what
            // independent, unbiased rounding errors give (measured: 2.1 to
            // 2.3 σ, the largest of some 3000 logits).
            let (_, sigma) = logit_bound(name, dtype, worst);
            assert!(
                diff[worst] <= 6.0 * sigma + floor,
                "{name} {dtype:?}: logit {worst} moved {:e}, more than 6 σ = {:e} of unbiased \
                 rounding errors",
                diff[worst],
                6.0 * sigma
            );
        }
    }
}

/// 3 and 4 shards, f32 and BF16, both key layouts: the same weights and
/// bit-identical logits as the single file.
#[test]
fn sharded_checkpoints_load_exactly_as_one_file() {
    for name in ["tiny", "untied"] {
        for dtype in [Dtype::F32, Dtype::BF16] {
            let single = copy_as(name, dtype);
            let one = Gpt2::<Cpu>::load(single.path(), &Default::default()).unwrap();
            let (one_params, one_logits) = (params(&one), logits(&one));
            for n in [3, 4] {
                let dir = sharded_copy(name, dtype, n);
                let files = WeightFiles::open(dir.path()).unwrap();
                assert!(files.is_sharded());
                assert_eq!(files.source(), dir.join(INDEX_FILE));
                let names: Vec<String> = files
                    .files()
                    .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                    .collect();
                let want: Vec<String> = (1..=n).map(|i| shard_name(i, n)).collect();
                assert_eq!(names, want);
                let model = Gpt2::<Cpu>::load(dir.path(), &Default::default()).unwrap();
                assert_eq!(model.config, one.config);
                assert_eq!(params(&model), one_params, "{name} {dtype:?} {n} shards");
                assert_eq!(logits(&model), one_logits, "{name} {dtype:?} {n} shards");
            }
        }
    }
    // A single f32 file is exactly the fixture.
    let fixture_model = common::load::<Cpu>("tiny");
    let copy = copy_as("tiny", Dtype::F32);
    let model = Gpt2::<Cpu>::load(copy.path(), &Default::default()).unwrap();
    assert_eq!(logits(&model), logits(&fixture_model));
}

#[test]
fn an_index_that_leaves_out_a_shard_is_refused() {
    let dir = sharded_copy("tiny", Dtype::BF16, 4);
    let third = shard_name(3, 4);
    edit_weight_map(&dir, |m| {
        m.retain(|_, v| v.as_str() != Some(third.as_str()))
    });
    let reason = bad_checkpoint(load_err(dir.path()), &dir.join(INDEX_FILE));
    assert_eq!(
        reason,
        "the index maps no tensor to `model-00003-of-00004.safetensors`, shard 3 of the 4 its \
         shard names count (an incomplete index?)"
    );
    // Even with the file gone too.
    std::fs::remove_file(dir.join(&third)).unwrap();
    let reason = bad_checkpoint(load_err(dir.path()), &dir.join(INDEX_FILE));
    assert!(
        reason.contains("`model-00003-of-00004.safetensors`"),
        "{reason}"
    );
    // A shard numbered past the count.
    let dir = sharded_copy("tiny", Dtype::F32, 3);
    edit_weight_map(&dir, |m| {
        m.insert(
            "wte.weight".into(),
            "model-00004-of-00003.safetensors".into(),
        );
    });
    let reason = bad_checkpoint(load_err(dir.path()), &dir.join(INDEX_FILE));
    assert!(
        reason.contains("`model-00004-of-00003.safetensors`, shard 4 of 3"),
        "{reason}"
    );
}

#[test]
fn a_key_mapped_to_a_shard_without_it_is_named() {
    let dir = sharded_copy("untied", Dtype::BF16, 4);
    let key = "transformer.h.0.attn.c_attn.weight";
    let holder = shard_of(&dir, key);
    let other = shard_name(4, 4);
    assert_ne!(holder, other);
    edit_weight_map(&dir, |m| {
        m.insert(key.into(), other.clone().into());
    });
    let reason = bad_checkpoint(load_err(dir.path()), &dir.join(INDEX_FILE));
    assert_eq!(
        reason,
        format!("the index maps `{key}` to `{other}`, which does not hold it (`{holder}` does)")
    );
    // A key no shard holds at all.
    let dir = sharded_copy("tiny", Dtype::F32, 3);
    edit_weight_map(&dir, |m| {
        m.insert("h.7.mlp.c_fc.bias".into(), shard_name(2, 3).into());
    });
    let reason = bad_checkpoint(load_err(dir.path()), &dir.join(INDEX_FILE));
    assert_eq!(
        reason,
        "the index maps `h.7.mlp.c_fc.bias` to `model-00002-of-00003.safetensors`, which does \
         not hold it (no shard does)"
    );
}

#[test]
fn a_key_in_two_shards_is_named() {
    let dir = sharded_copy("tiny", Dtype::BF16, 4);
    let key = "h.0.ln_1.weight";
    let holder = shard_of(&dir, key);
    assert_eq!(holder, shard_name(1, 4));
    let second = dir.join(&shard_name(2, 4));
    let mut entries = read_entries(&second);
    entries.insert(key.into(), read_entries(&dir.join(&holder))[key].clone());
    write_entries(&second, &entries);
    let reason = bad_checkpoint(load_err(dir.path()), &dir.join(INDEX_FILE));
    assert_eq!(
        reason,
        "`h.0.ln_1.weight` is in two shards, `model-00001-of-00004.safetensors` and \
         `model-00002-of-00004.safetensors` (the index maps it to \
         `model-00001-of-00004.safetensors`)"
    );
}

#[test]
fn a_shard_tensor_the_index_does_not_list_is_named() {
    let dir = sharded_copy("tiny", Dtype::F32, 3);
    let holder = shard_of(&dir, "h.1.mlp.c_proj.bias");
    edit_weight_map(&dir, |m| {
        m.remove("h.1.mlp.c_proj.bias");
    });
    let reason = bad_checkpoint(load_err(dir.path()), &dir.join(INDEX_FILE));
    assert_eq!(
        reason,
        format!("`{holder}` holds `h.1.mlp.c_proj.bias`, which the index does not list")
    );
    // Removed from both: the model's missing weight, named against the index.
    let dir = sharded_copy("tiny", Dtype::F32, 3);
    let holder = dir.join(&shard_of(&dir, "h.1.mlp.c_proj.bias"));
    edit_weight_map(&dir, |m| {
        m.remove("h.1.mlp.c_proj.bias");
    });
    let mut entries = read_entries(&holder);
    entries.remove("h.1.mlp.c_proj.bias");
    write_entries(&holder, &entries);
    match load_err(dir.path()) {
        ModelError::MissingKey { path, key, .. } => {
            assert_eq!(path, dir.join(INDEX_FILE));
            assert_eq!(key, "h.1.mlp.c_proj.bias");
        }
        other => panic!("expected MissingKey, got {other:?}"),
    }
}

#[test]
fn a_shard_not_in_the_folder_is_named() {
    let dir = sharded_copy("untied", Dtype::BF16, 3);
    let gone = shard_name(2, 3);
    let mapped: Vec<String> = index_json(&dir)["weight_map"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.as_str() == Some(gone.as_str()))
        .map(|(k, _)| k.clone())
        .collect();
    std::fs::remove_file(dir.join(&gone)).unwrap();
    let reason = bad_checkpoint(load_err(dir.path()), &dir.join(INDEX_FILE));
    assert_eq!(
        reason,
        format!(
            "the index maps `{}` (and {} other keys) to `{gone}`, which is not in the folder",
            mapped[0],
            mapped.len() - 1
        )
    );
    // A folder in its place is not a shard.
    std::fs::create_dir(dir.join(&gone)).unwrap();
    let reason = bad_checkpoint(load_err(dir.path()), &dir.join(INDEX_FILE));
    assert!(
        reason.ends_with(&format!(
            "to `{gone}`, which is a folder, not a regular file"
        )),
        "{reason}"
    );
}

#[test]
fn an_index_that_is_not_json_or_not_an_index_is_refused() {
    let dir = sharded_copy("tiny", Dtype::F32, 3);
    let index = dir.join(INDEX_FILE);
    let cases: [(&str, &str); 8] = [
        ("{ not json", "the index is not JSON: "),
        ("", "the index is not JSON: "),
        ("[1, 2]", "the index is not a JSON object"),
        ("{\"metadata\": {}}", "the index has no `weight_map`"),
        (
            "{\"weight_map\": []}",
            "the index's `weight_map` is not an object",
        ),
        ("{\"weight_map\": {}}", "the index's `weight_map` is empty"),
        (
            "{\"weight_map\": {\"wte.weight\": 3}}",
            "the index maps `wte.weight` to 3, not to a file name",
        ),
        (
            "{\"weight_map\": {\"wte.weight\": \"../model-00001-of-00003.safetensors\"}}",
            "the index maps `wte.weight` to `../model-00001-of-00003.safetensors`, which is \
             not the name of a file in this folder",
        ),
    ];
    for (text, start) in cases {
        std::fs::write(&index, text).unwrap();
        let err = load_err(dir.path());
        let msg = err.to_string();
        let reason = bad_checkpoint(err, &index);
        assert!(reason.starts_with(start), "{text:?}: {reason}");
        assert!(msg.contains(INDEX_FILE), "{msg}");
    }
    std::fs::write(&index, "{\"metadata\": 3, \"weight_map\": {}}").unwrap();
    let reason = bad_checkpoint(load_err(dir.path()), &index);
    assert_eq!(reason, "the index's `metadata` is not an object");
}

/// Both layouts in one folder are refused (which is the model cannot be
/// told), and saving into a sharded folder is too.
#[test]
fn both_layouts_in_one_folder_are_refused() {
    let dir = sharded_copy("tiny", Dtype::BF16, 3);
    std::fs::copy(fixture("tiny").join(WEIGHTS_FILE), dir.join(WEIGHTS_FILE)).unwrap();
    let reason = bad_checkpoint(load_err(dir.path()), dir.path());
    assert_eq!(
        reason,
        "the folder holds both `model.safetensors` and `model.safetensors.index.json` (one \
         file and shards); which of them is the model is ambiguous, so neither is loaded: \
         remove or rename one"
    );
    std::fs::remove_file(dir.join(WEIGHTS_FILE)).unwrap();
    let model = Gpt2::<NdArray>::load(dir.path(), &Default::default()).unwrap();
    let reason = bad_checkpoint(model.save(dir.path()).unwrap_err(), &dir.join(INDEX_FILE));
    assert!(
        reason.starts_with("the folder holds a sharded checkpoint"),
        "{reason}"
    );
    assert!(!dir.join(WEIGHTS_FILE).exists());
    // Neither layout: the single file is reported missing, and the index mentioned.
    let empty = TempDir::new("no-weights");
    std::fs::copy(fixture("tiny").join(CONFIG_FILE), empty.join(CONFIG_FILE)).unwrap();
    let err = load_err(empty.path());
    let msg = err.to_string();
    assert!(
        matches!(&err, ModelError::Io { path, source }
            if *path == empty.join(WEIGHTS_FILE) && source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(msg.contains(INDEX_FILE), "{msg}");
}

/// A BF16 file cut in the middle of a tensor is refused by its header
/// check, before any tensor is read, naming the file; the same for a shard.
#[test]
fn truncated_bf16_files_name_the_file() {
    let dir = copy_as("tiny", Dtype::BF16);
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..header_end]).unwrap();
    let [start, end] = [0, 1]
        .map(|i| header_end + header["wte.weight"]["data_offsets"][i].as_u64().unwrap() as usize);
    let cut = start + (end - start) / 2 + 1; // mid-element, mid-tensor
    std::fs::write(&path, &bytes[..cut]).unwrap();
    let err = load_err(dir.path());
    let msg = err.to_string();
    match err {
        ModelError::BadSafetensors { path: p, reason } => {
            assert_eq!(p, path);
            assert_eq!(
                reason,
                format!(
                    "truncated: the file has {cut} bytes, the header needs {}",
                    bytes.len()
                )
            );
        }
        other => panic!("expected BadSafetensors, got {other:?}"),
    }
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");

    let dir = sharded_copy("untied", Dtype::BF16, 4);
    let shard = dir.join(&shard_name(2, 4));
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
    match load_err(dir.path()) {
        ModelError::BadSafetensors { path, reason } => {
            assert_eq!(path, shard);
            assert!(reason.starts_with("truncated: "), "{reason}");
        }
        other => panic!("expected BadSafetensors, got {other:?}"),
    }
}

/// A shape, dtype or key problem anywhere is found from the headers before
/// any data is read: a NaN in `wte` (read first) does not hide a wrong
/// shape in the last shard. Shape and dtype errors name the shard.
#[test]
fn header_problems_are_found_before_any_data_is_read() {
    let dir = sharded_copy("tiny", Dtype::BF16, 3);
    let wte_shard = dir.join(&shard_of(&dir, "wte.weight"));
    let mut entries = read_entries(&wte_shard);
    let wte = entries.get_mut("wte.weight").unwrap();
    wte.data[0..2].copy_from_slice(&bf16::NAN.to_le_bytes());
    write_entries(&wte_shard, &entries);
    assert!(matches!(
        load_err(dir.path()),
        ModelError::NonFiniteWeight { ref key, index: 0, ref path, .. }
            if key == "wte.weight" && *path == wte_shard
    ));
    let key = "h.1.mlp.c_fc.weight";
    let holder = dir.join(&shard_of(&dir, key));
    let mut entries = read_entries(&holder);
    entries.get_mut(key).unwrap().shape = vec![128, 32];
    write_entries(&holder, &entries);
    match load_err(dir.path()) {
        ModelError::WrongShape {
            path,
            key: k,
            expected,
            found,
        } => {
            assert_eq!((path, k.as_str()), (holder.clone(), key));
            assert_eq!((expected, found), (vec![32, 128], vec![128, 32]));
        }
        other => panic!("expected WrongShape, got {other:?}"),
    }
    // An unsupported dtype lists the supported ones.
    let mut entries = read_entries(&holder);
    let e = entries.get_mut(key).unwrap();
    e.shape = vec![32, 128];
    e.dtype = Dtype::F64;
    e.data = vec![0; 32 * 128 * 8];
    write_entries(&holder, &entries);
    let err = load_err(dir.path());
    let msg = err.to_string();
    match err {
        ModelError::WrongDtype {
            path,
            key: k,
            dtype,
            expected,
        } => {
            assert_eq!(
                (path, k.as_str(), dtype.as_str()),
                (holder.clone(), key, "F64")
            );
            assert_eq!(expected, "F32, BF16 or F16");
        }
        other => panic!("expected WrongDtype, got {other:?}"),
    }
    assert!(
        msg.ends_with("weight `h.1.mlp.c_fc.weight` has dtype F64; expected F32, BF16 or F16"),
        "{msg}"
    );
}

/// NaN and infinity are found after conversion, in BF16 and F16, at their
/// flat index; allowed, they load as such.
#[test]
fn non_finite_half_precision_weights_are_named() {
    for (dtype, bits) in [
        (Dtype::BF16, bf16::INFINITY.to_le_bytes()),
        (Dtype::F16, f16::NAN.to_le_bytes()),
        (Dtype::F16, f16::NEG_INFINITY.to_le_bytes()),
    ] {
        let dir = copy_as("untied", dtype);
        let path = dir.join(WEIGHTS_FILE);
        let key = "transformer.h.2.attn.c_proj.bias";
        let mut entries = read_entries(&path);
        entries.get_mut(key).unwrap().data[14..16].copy_from_slice(&bits);
        write_entries(&path, &entries);
        match load_err(dir.path()) {
            ModelError::NonFiniteWeight {
                path: p,
                key: k,
                index,
                value,
            } => {
                assert_eq!((p, k.as_str(), index), (path.clone(), key, 7));
                assert!(!value.is_finite());
            }
            other => panic!("{dtype:?}: expected NonFiniteWeight, got {other:?}"),
        }
        let options = hooks_model::LoadOptions::new().allow_non_finite(true);
        let model = Gpt2::<NdArray>::load_with(dir.path(), &Default::default(), options).unwrap();
        let bias = host(model.blocks[2].attn.c_proj.bias.as_ref().unwrap().val());
        assert!(!bias[7].is_finite());
    }
}

/// Tensors larger than the reader's chunk (2^18 elements) stream in
/// several chunks: the values, their transpose and a non-finite value's
/// flat index in a later chunk all come out right. Written by the project's
/// own writer, in every float dtype, read back by the safetensors crate too.
#[test]
fn large_tensors_stream_in_chunks() {
    let (rows, cols) = (700, 1001); // 700 700 elements: 3 chunks, rows split across none
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 10007) as f32 / 1000.0 - 5.0)
        .collect();
    let dir = TempDir::new("chunks");
    for dtype in [Dtype::F32, Dtype::BF16, Dtype::F16] {
        let path = dir.join("model.safetensors");
        let specs = [
            TensorSpec {
                name: "big".into(),
                dtype,
                shape: vec![rows, cols],
            },
            TensorSpec {
                name: "small".into(),
                dtype,
                shape: vec![3],
            },
        ];
        let mut file = std::fs::File::create(&path).unwrap();
        weights::write_safetensors_with(
            &mut file,
            &specs,
            &Default::default(),
            &mut |i: usize, w: &mut dyn Write| {
                let mut bytes = Vec::new();
                let vals: &[f32] = if i == 0 { &values } else { &[1.0, 2.0, 3.0] };
                assert!(weights::encode_f32(dtype, vals, &mut bytes));
                w.write_all(&bytes)
            },
        )
        .unwrap();
        drop(file);
        let want: Vec<f32> = values.iter().map(|&v| rounded(dtype, v)).collect();
        let st_bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&st_bytes).unwrap();
        assert_eq!(st.tensor("big").unwrap().dtype(), dtype);
        assert_eq!(
            weights::to_f32(dtype, st.tensor("big").unwrap().data()).unwrap(),
            want
        );

        let files = WeightFiles::open(dir.path()).unwrap();
        assert!(!files.is_sharded());
        assert_eq!(files.read_f32("big", true).unwrap(), want);
        assert_eq!(files.read_f32("small", true).unwrap(), [1.0, 2.0, 3.0]);
        let t = files.read_f32_transposed("big", true).unwrap();
        assert_eq!(t, weights::transpose_f32(&want, rows, cols));
        assert_eq!(t[5 * rows + 600], want[600 * cols + 5]);
        drop(files);

        // A NaN in the third chunk, found at its flat index.
        let at = 600_001;
        let header_end = 8 + u64::from_le_bytes(st_bytes[..8].try_into().unwrap()) as usize;
        let size = dtype.size();
        let mut broken = st_bytes.clone();
        let nan: Vec<u8> = match dtype {
            Dtype::F32 => f32::NAN.to_le_bytes().to_vec(),
            Dtype::BF16 => bf16::NAN.to_le_bytes().to_vec(),
            _ => f16::NAN.to_le_bytes().to_vec(),
        };
        broken[header_end + at * size..header_end + (at + 1) * size].copy_from_slice(&nan);
        std::fs::write(&path, &broken).unwrap();
        let files = WeightFiles::open(dir.path()).unwrap();
        for err in [
            files.read_f32("big", true).unwrap_err(),
            files.read_f32_transposed("big", true).unwrap_err(),
        ] {
            match err {
                ModelError::NonFiniteWeight {
                    key,
                    index,
                    path: p,
                    ..
                } => assert_eq!((key.as_str(), index, p), ("big", at, path.clone())),
                other => panic!("{dtype:?}: expected NonFiniteWeight, got {other:?}"),
            }
        }
        assert!(files.read_f32("big", false).unwrap()[at].is_nan());
        assert!(matches!(
            files.check("big", &[cols, rows]),
            Err(ModelError::WrongShape { .. })
        ));
        assert!(matches!(
            files.check("nope", &[1]),
            Err(ModelError::MissingKey { ref path, .. }) if *path == dir.join(WEIGHTS_FILE)
        ));
    }
}

/// Bounded property test: random damage to a sharded folder's index (bytes
/// changed, removed, inserted; entries remapped to other or odd names) loads
/// or fails with a typed error in plain text, never a panic.
#[test]
fn mutated_indexes_load_or_fail_with_a_typed_error() {
    let dir = sharded_copy("tiny", Dtype::BF16, 3);
    let path = dir.join(INDEX_FILE);
    let original = std::fs::read(&path).unwrap();
    let names = [
        shard_name(1, 3),
        shard_name(3, 3),
        shard_name(4, 3),
        "model-00001-of-00002.safetensors".into(),
        "config.json".into(),
        "..".into(),
        "a/b".into(),
        "\u{1b}[31m".into(),
        String::new(),
    ];
    let mut rng = common::XorShift::new(7);
    let (mut loaded, mut failed) = (0, 0);
    for iteration in 0..150 {
        let mut bytes = original.clone();
        let what = match rng.below(4) {
            0 => {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next_u64() as u8;
                format!("byte {at} changed")
            }
            1 => {
                let at = rng.below(bytes.len());
                let n = 1 + rng.below(8);
                bytes.drain(at..(at + n).min(bytes.len()));
                format!("{n} bytes removed at {at}")
            }
            2 => {
                let keep = rng.below(bytes.len());
                bytes.truncate(keep);
                format!("truncated to {keep}")
            }
            _ => {
                let mut index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let map = index["weight_map"].as_object_mut().unwrap();
                let keys: Vec<String> = map.keys().cloned().collect();
                let key = rng.pick(&keys).clone();
                let name = rng.pick(&names).clone();
                map.insert(key.clone(), name.clone().into());
                bytes = index.to_string().into_bytes();
                format!("`{key}` mapped to {name:?}")
            }
        };
        std::fs::write(&path, &bytes).unwrap();
        let result = std::panic::catch_unwind(|| {
            Gpt2::<NdArray>::load(dir.path(), &Default::default()).map(|_| ())
        });
        match result {
            Ok(Ok(())) => loaded += 1,
            Ok(Err(e)) => {
                let msg = e.to_string();
                assert!(
                    !msg.is_empty() && !msg.chars().any(char::is_control),
                    "iteration {iteration} ({what}): {msg:?}"
                );
                failed += 1;
            }
            Err(_) => panic!("iteration {iteration} ({what}): the loader panicked"),
        }
    }
    assert!(loaded > 0 && failed > 0, "{loaded} loaded, {failed} failed");
}
