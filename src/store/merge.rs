//! Joining the manifests of `--shard i/n` runs into one `manifest.json`.
//!
//! Slices write into one folder (a shared file system, or shards copied
//! together afterwards): their shards are named by block, so they never
//! collide, and each slice keeps its own `manifest-<i>-of-<n>.json`.

use std::path::{Path, PathBuf};

use hooks_model::shown;

use super::StoreError;
use super::integrity::check_shard;
use super::manifest::{MANIFEST, Manifest, Slice};

/// The slice manifests (`manifest-<i>-of-<n>.json`) in `dir`, sorted.
pub fn slice_manifests(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("manifest-") && name.ends_with(".json") {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Merges the slice manifests in `dir` into `dir/manifest.json` and returns
/// it. Every slice `0..n` must be there, complete, and made by the same
/// command (model, corpus, sites, layout); the merged shards must cover the
/// corpus's rows without a gap. An existing `manifest.json` is replaced only
/// by an identical one (merging twice is harmless); anything else is
/// refused and nothing is written.
pub fn merge_manifests(dir: &Path) -> Result<Manifest, StoreError> {
    let paths = slice_manifests(dir)?;
    if paths.is_empty() {
        return Err(StoreError::store(
            dir,
            "holds no slice manifests (manifest-<i>-of-<n>.json, written by `hooks cache \
             --dataset … --shard i/n`)",
        ));
    }
    let slices: Vec<(PathBuf, Manifest)> = paths
        .into_iter()
        .map(|p| Manifest::read(&p).map(|m| (p, m)))
        .collect::<Result<_, _>>()?;
    let (first_path, first) = &slices[0];
    let count = first.slice.count;
    for (path, m) in &slices {
        if m.slice.count != count {
            return Err(StoreError::store(
                path,
                format!(
                    "is a slice of {} but {} is a slice of {count}",
                    m.slice.count,
                    shown(first_path)
                ),
            ));
        }
        if let Some((field, found, wanted)) = m.differences(first) {
            return Err(StoreError::SliceMismatch {
                path: path.clone(),
                other: first_path.clone(),
                field,
                found,
                wanted,
            });
        }
        if !m.complete {
            return Err(StoreError::store(
                path,
                format!(
                    "slice {}/{count} is not complete (rerun its command to finish it)",
                    m.slice.index
                ),
            ));
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|i| !slices.iter().any(|(_, m)| m.slice.index == *i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(StoreError::store(
            dir,
            format!("slice(s) {} are missing", missing.join(", ")),
        ));
    }
    // Complete slices (checked above) know the corpus's rows.
    let rows_of = |m: &Manifest| m.corpus_rows.unwrap_or(0);
    let corpus_rows = rows_of(first);
    if let Some((path, m)) = slices.iter().find(|(_, m)| rows_of(m) != corpus_rows) {
        return Err(StoreError::store(
            path,
            format!(
                "counts {} corpus rows, {} counts {corpus_rows}: the slices read different \
                 corpora",
                rows_of(m),
                shown(first_path)
            ),
        ));
    }
    let mut shards: Vec<_> = slices
        .iter()
        .flat_map(|(_, m)| m.shards.iter().cloned())
        .collect();
    shards.sort_by_key(|s| s.block);
    let mut next_row = 0u64;
    for s in &shards {
        if s.rows[0] != next_row {
            return Err(StoreError::store(
                dir,
                format!(
                    "the shards leave corpus rows {next_row}..{} uncovered (before {})",
                    s.rows[0], s.file
                ),
            ));
        }
        next_row = s.rows[1];
    }
    if next_row != corpus_rows {
        return Err(StoreError::store(
            dir,
            format!("the shards end at row {next_row} but the corpus has {corpus_rows} rows"),
        ));
    }
    // Every shard whole, before the merged manifest vouches for it: the
    // one pass that reads them all.
    for s in &shards {
        check_shard(dir, s)?;
    }
    let merged = Manifest {
        slice: Slice::WHOLE,
        next_block: shards.last().map_or(0, |s| s.block + 1),
        tokens: shards.iter().map(|s| s.n_tokens()).sum(),
        shards,
        ..first.clone()
    };
    let out = dir.join(MANIFEST);
    if out.exists() {
        let existing = Manifest::read(&out)?;
        if existing != merged {
            return Err(StoreError::store(
                &out,
                "exists and differs from the merge of the slices; move it away to merge again",
            ));
        }
        return Ok(merged);
    }
    merged.write(&out)?;
    Ok(merged)
}
