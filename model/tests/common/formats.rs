//! Checkpoint formats made from the committed f32 fixtures: the same
//! weights in BF16 or F16, in one file or as Hugging Face shards.

use half::{bf16, f16};
use hooks_model::checkpoint::{CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE};
use safetensors::tensor::Dtype;

use super::tensors::f32s;
use super::{Entries, Entry, TempDir, fixture, read_entries, write_entries};

/// `v` rounded to `dtype` (to nearest, ties to even) and back.
pub fn rounded(dtype: Dtype, v: f32) -> f32 {
    match dtype {
        Dtype::BF16 => bf16::from_f32(v).to_f32(),
        Dtype::F16 => f16::from_f32(v).to_f32(),
        _ => v,
    }
}

pub fn encode(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Every F32 tensor converted to `dtype` (the BOOL and 0-d legacy buffers
/// as they are).
pub fn convert(entries: &Entries, dtype: Dtype) -> Entries {
    entries
        .iter()
        .map(|(k, e)| {
            let e = if e.dtype == Dtype::F32 {
                Entry {
                    dtype,
                    shape: e.shape.clone(),
                    data: encode(dtype, &f32s(&e.data)),
                }
            } else {
                e.clone()
            };
            (k.clone(), e)
        })
        .collect()
}

/// A copy of fixture `name` with its weights in `dtype`, in one file.
pub fn copy_as(name: &str, dtype: Dtype) -> TempDir {
    let dir = TempDir::copy_of(name);
    let path = dir.join(WEIGHTS_FILE);
    write_entries(&path, &convert(&read_entries(&path), dtype));
    dir
}

pub fn shard_name(i: usize, n: usize) -> String {
    format!("model-{i:05}-of-{n:05}.safetensors")
}

/// A copy of fixture `name` as `n` shards in `dtype` with Hugging Face's
/// index (keys split in name order into `n` runs of about equal count), and
/// no `model.safetensors`.
pub fn sharded_copy(name: &str, dtype: Dtype, n: usize) -> TempDir {
    let dir = TempDir::new(&format!("{name}-shards"));
    std::fs::copy(fixture(name).join(CONFIG_FILE), dir.join(CONFIG_FILE)).unwrap();
    let entries = convert(&read_entries(&fixture(name).join(WEIGHTS_FILE)), dtype);
    let keys: Vec<&String> = entries.keys().collect();
    let per = keys.len().div_ceil(n);
    let mut weight_map = serde_json::Map::new();
    let mut total = 0;
    for (i, run) in keys.chunks(per).enumerate() {
        assert!(i < n, "{} keys in {n} shards", keys.len());
        let file = shard_name(i + 1, n);
        let shard: Entries = run
            .iter()
            .map(|&k| (k.clone(), entries[k].clone()))
            .collect();
        write_entries(&dir.join(&file), &shard);
        for (k, e) in &shard {
            weight_map.insert(k.clone(), file.clone().into());
            total += e.data.len();
        }
    }
    let index = serde_json::json!({
        "metadata": {"total_size": total},
        "weight_map": weight_map,
    });
    std::fs::write(
        dir.join(INDEX_FILE),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
    dir
}
