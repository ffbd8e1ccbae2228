//! Building a store: the corpus's rows in batches through any hooked model,
//! the selected sites recorded, one shard at a time, the manifest rewritten
//! after each, so a killed run resumes where the manifest says and memory is
//! bounded by one shard.

use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;
use hooks_core::{HookTree, Record, Recorder, SiteInfo, record_key};
use hooks_model::finite::first_fault;
use hooks_model::tokenizer::Tokenizer;
use hooks_model::{HookedModel, ModelDims, NonFiniteSite, TokenBatch};
use sha2::{Digest, Sha256};

use super::StoreError;
use super::corpus::Corpus;
use super::manifest::{
    CorpusRecord, FORMAT, MANIFEST, Manifest, Slice, StoreDtype, StoredKey, VERSION,
};
use super::resume::ResumeCheck;
use super::shard::{ShardBuffer, shard_file};
use crate::site_order::{before_blocks, order};

/// How to build a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Site paths or globs (`mlp.post_act`, `resid.**`); at least one.
    pub sites: Vec<String>,
    /// Only these layers (and then no site outside the blocks).
    pub layers: Option<Vec<usize>>,
    /// Tokens per row.
    pub seq_len: usize,
    /// Rows per forward pass.
    pub batch: usize,
    /// About how large a shard may be.
    pub shard_bytes: u64,
    /// The stored element type.
    pub dtype: StoreDtype,
    /// The token after each document.
    pub separator: Option<u32>,
    /// Which part of the corpus.
    pub slice: Slice,
    /// Store non-finite values instead of stopping.
    pub allow_non_finite: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sites: Vec::new(),
            layers: None,
            seq_len: 64,
            batch: 8,
            shard_bytes: 256 << 20,
            dtype: StoreDtype::F32,
            separator: None,
            slice: Slice::WHOLE,
            allow_non_finite: false,
        }
    }
}

/// Where a store's model came from (recorded in its manifest).
#[derive(Clone, Debug)]
pub struct ModelRecord {
    /// The checkpoint folder.
    pub dir: PathBuf,
    /// Its `model_type`.
    pub model_type: String,
    /// The SHA-256 of its `config.json`.
    pub config_sha256: String,
}

impl ModelRecord {
    /// Reads `dir/config.json` to fingerprint the model.
    pub fn of(dir: &Path, model_type: &str) -> Result<Self, StoreError> {
        let config = dir.join("config.json");
        let bytes = hooks_model::inputs::read(&config).map_err(|e| StoreError::io(&config, e))?;
        Ok(ModelRecord {
            dir: dir.to_path_buf(),
            model_type: model_type.to_string(),
            config_sha256: super::shard::hex(&Sha256::digest(&bytes)),
        })
    }
}

/// How far a build is (passed to the progress callback after each batch).
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Tokens stored by this slice, earlier runs included.
    pub tokens: u64,
    /// Tokens stored by this run.
    pub new_tokens: u64,
    /// Corpus bytes read.
    pub bytes_read: u64,
    /// Corpus size.
    pub corpus_bytes: u64,
    /// Shards written by this slice.
    pub shards: usize,
}

/// What [`build_store`] did.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The store was built (or its build resumed and finished).
    Built {
        /// The final manifest.
        manifest: Manifest,
        /// Tokens this run stored.
        new_tokens: u64,
        /// Whether an earlier run's shards were kept.
        resumed: bool,
    },
    /// The folder already held this store, complete: nothing was done.
    AlreadyComplete(Manifest),
}

/// The keys `options` selects in `M`'s tree, with their per-token shapes.
pub fn stored_keys<B: Backend, M: HookedModel<B>>(
    dims: &ModelDims,
    options: &StoreOptions,
) -> Result<Vec<StoredKey>, StoreError> {
    if options.sites.is_empty() {
        return Err(StoreError::Options(
            "choose the sites to store with --sites (e.g. `mlp.post_act`, `resid.torso.*`; see \
             `hooks sites`)"
                .into(),
        ));
    }
    let tree = M::Hooks::default();
    let full = tree.sites();
    let patterns: Vec<&str> = options.sites.iter().map(String::as_str).collect();
    let selected: Vec<SiteInfo> = order(tree.sites_matching(&patterns)?, &full);
    if let Some(layers) = &options.layers
        && let Some(bad) = layers.iter().find(|&&l| l >= dims.n_layer)
    {
        return Err(StoreError::Options(format!(
            "--layers {bad}: the model has {} layers (0 to {})",
            dims.n_layer,
            dims.n_layer - 1
        )));
    }
    // Forward order, as `hooks cache` keys are: the sites before the
    // blocks, then layer by layer, then the rest.
    let mut shaped = Vec::new();
    for site in &selected {
        shaped.push((site, per_token_shape(site, dims, options.seq_len)?));
    }
    let first_inside = shaped.iter().position(|(s, _)| s.per_layer);
    let (before, rest) = shaped.split_at(first_inside.unwrap_or(shaped.len()));
    let (inside, after): (Vec<_>, Vec<_>) = rest.iter().partition(|(s, _)| s.per_layer);
    let layers: Vec<usize> = match &options.layers {
        Some(layers) => layers.clone(),
        None => (0..dims.n_layer).collect(),
    };
    let outside = options.layers.is_none();
    let key = |site: &SiteInfo, shape: &Vec<usize>, layer: Option<usize>| StoredKey {
        key: record_key(&site.path, layer),
        site: site.path.clone(),
        layer,
        shape: shape.clone(),
    };
    let mut keys = Vec::new();
    if outside {
        keys.extend(before.iter().map(|(s, shape)| key(s, shape, None)));
    }
    for &layer in &layers {
        keys.extend(inside.iter().map(|(s, shape)| key(s, shape, Some(layer))));
    }
    if outside {
        keys.extend(after.iter().map(|(s, shape)| key(s, shape, None)));
    }
    if keys.is_empty() {
        return Err(StoreError::Options(format!(
            "--sites {} with --layers selects nothing: the sites are outside the blocks, which \
             have no layer",
            options.sites.join(",")
        )));
    }
    Ok(keys)
}

/// How many blocks a forward pass must run to compute every key: all of
/// them and the unembedding (`None`) when a key lies after the blocks (the
/// final norm, the logits); otherwise up to the last layer stored, so a
/// store of early layers skips the rest of the model.
pub fn blocks_needed<B: Backend, M: HookedModel<B>>(keys: &[StoredKey]) -> Option<usize> {
    let full = M::Hooks::default().sites();
    let after = keys
        .iter()
        .any(|k| k.layer.is_none() && !before_blocks(&k.site, &full));
    if after {
        return None;
    }
    Some(
        keys.iter()
            .filter_map(|k| k.layer)
            .max()
            .map_or(0, |l| l + 1),
    )
}

/// The shape of one token's value at `site`: its declared shape after
/// `B, S`, the key axis `K` being the row length.
fn per_token_shape(
    site: &SiteInfo,
    dims: &ModelDims,
    seq_len: usize,
) -> Result<Vec<usize>, StoreError> {
    let letters: Vec<&str> = site.dims().collect();
    // `K` (the key positions) is `S` without a KV cache: k and v are per
    // token too.
    let declared = match site.shape {
        Some(_) => format!("shape [{}]", letters.join(", ")),
        None => "no declared shape".to_string(),
    };
    let (["B", "S" | "K"], rest) = letters.split_at(letters.len().min(2)) else {
        return Err(StoreError::Options(format!(
            "site `{}` has {declared}, not [B, S, …]: it cannot be stored per token",
            site.path
        )));
    };
    rest.iter()
        .map(|&l| match l {
            "K" => Some(seq_len),
            l => dims.size_of(l),
        })
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| {
            StoreError::Options(format!(
                "site `{}` has {declared}, with a size this model does not define",
                site.path
            ))
        })
}

/// Rows per shard: as many as fit in `shard_bytes` (at least one).
pub fn rows_per_shard(keys: &[StoredKey], options: &StoreOptions) -> u64 {
    // Values, plus `tokens`, `row` and `position` (i64 each).
    let per_token: usize = keys
        .iter()
        .map(|k| k.width() * options.dtype.size())
        .sum::<usize>()
        + 24;
    let per_row = (per_token * options.seq_len) as u64;
    (options.shard_bytes / per_row).max(1)
}

/// Refuses an option whose products cannot be counted: a batch whose
/// tokens, or whose values' bytes, overflow 64 bits is no size a machine
/// can run (rather than a panic or an abort allocating it).
fn check_batch_size(keys: &[StoredKey], options: &StoreOptions) -> Result<(), StoreError> {
    let per_token: u64 = keys
        .iter()
        .map(|k| (k.width() * options.dtype.size()) as u64)
        .sum();
    let bytes = (options.batch as u64)
        .checked_mul(options.seq_len as u64)
        .and_then(|tokens| tokens.checked_mul(per_token.max(1)));
    if bytes.is_none() {
        return Err(StoreError::Options(format!(
            "--batch {} is too large: {} rows of {} tokens, {per_token} bytes each, overflow 64 \
             bits; give a batch of at most a few thousand rows",
            options.batch, options.batch, options.seq_len
        )));
    }
    Ok(())
}

/// Refuses an `out` that would overwrite an input: the corpus file itself,
/// a folder holding it, or the model's folder (or one holding it). A folder
/// that does not exist yet can be none of these.
fn check_out_spares_inputs(out: &Path, corpus: &Path, model: &Path) -> Result<(), StoreError> {
    let Ok(out_real) = std::fs::canonicalize(out) else {
        return Ok(());
    };
    let shown = hooks_model::shown;
    let real = |p: &Path| std::fs::canonicalize(p).ok();
    if let Some(c) = real(corpus) {
        if c == out_real {
            return Err(StoreError::Options(format!(
                "--out {} is the --dataset file itself: give a new folder for the store",
                shown(out)
            )));
        }
        if c.starts_with(&out_real) {
            return Err(StoreError::Options(format!(
                "--out {} holds the --dataset file {}: give a new folder for the store, so that \
                 no shard can overwrite the corpus",
                shown(out),
                shown(corpus)
            )));
        }
    }
    if let Some(m) = real(model)
        && m.starts_with(&out_real)
    {
        let what = if m == out_real {
            "is the model's folder"
        } else {
            "holds the model's folder"
        };
        return Err(StoreError::Options(format!(
            "--out {} {what} ({}): give a new folder for the store",
            shown(out),
            shown(model)
        )));
    }
    Ok(())
}

/// Builds (or resumes) the store in `out` from `corpus` through `model`.
///
/// `tokenizer` is needed for text corpora. `progress` is called after each
/// batch. Each finished shard is written atomically and then recorded in the
/// manifest (also written atomically), so a run killed at any point leaves
/// every listed shard whole; rerunning the same command resumes after the
/// last listed shard. A folder holding a different store, or files that are
/// not a store's, is refused and left as it was.
pub fn build_store<B: Backend, M: HookedModel<B>>(
    model: &M,
    corpus: &Corpus,
    tokenizer: Option<&Tokenizer>,
    record: &ModelRecord,
    options: &StoreOptions,
    out: &Path,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Outcome, StoreError> {
    let dims = model.dims();
    if options.seq_len == 0 || options.seq_len > dims.n_ctx {
        return Err(StoreError::Options(format!(
            "--seq-len {} must be between 1 and the model's context window, {}",
            options.seq_len, dims.n_ctx
        )));
    }
    if options.batch == 0 {
        return Err(StoreError::Options("--batch must be at least 1".into()));
    }
    if options.shard_bytes == 0 {
        return Err(StoreError::Options(
            "the shard size must be positive (--shard-mb at least 1)".into(),
        ));
    }
    let keys = stored_keys::<B, M>(&dims, options)?;
    check_batch_size(&keys, options)?;
    let rows_per_shard = rows_per_shard(&keys, options);
    let blocks = blocks_needed::<B, M>(&keys);
    let fresh = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        model: record.dir.clone(),
        model_type: record.model_type.clone(),
        config_sha256: record.config_sha256.clone(),
        corpus: CorpusRecord {
            path: corpus.path().to_path_buf(),
            format: corpus.format(),
            bytes: corpus.bytes(),
            separator: options.separator,
        },
        sites: options.sites.clone(),
        layers: options.layers.clone(),
        keys: keys.clone(),
        dtype: options.dtype,
        seq_len: options.seq_len,
        rows_per_shard,
        slice: options.slice,
        next_block: options.slice.index as u64,
        complete: false,
        tokens: 0,
        corpus_rows: None,
        dropped_tokens: None,
        shards: Vec::new(),
    };
    let manifest_path = out.join(options.slice.manifest_name());
    check_out_spares_inputs(out, corpus.path(), &record.dir)?;
    let Some(mut manifest) = prepare_folder(out, &manifest_path, fresh)? else {
        return Ok(Outcome::AlreadyComplete(Manifest::read(&manifest_path)?));
    };
    let resumed = !manifest.shards.is_empty();
    if !resumed {
        // The folder is marked as this store (and its options recorded)
        // before any work.
        manifest.write(&manifest_path)?;
    }

    let mut rows = corpus.rows(
        options.seq_len,
        options.separator,
        dims.vocab_size,
        tokenizer,
    )?;
    let recorder = Recorder::<B>::new();
    let mut hooks = M::Hooks::default();
    let mut sites: Vec<&str> = keys.iter().map(|k| k.site.as_str()).collect();
    sites.dedup();
    for site in sites {
        hooks.append_to_path(
            &format!("{site}.fwd"),
            Record::into(&recorder).at_layers(options.layers.clone()),
        )?;
    }

    let pass = Pass {
        model,
        hooks: &hooks,
        recorder: &recorder,
        keys: &keys,
        options,
        blocks,
    };
    let tokens_at_start = manifest.tokens;
    let seq = options.seq_len as u64;
    // Buffers are sized by what the corpus can fill, not by the options
    // alone: a batch never holds more than a shard's rows (it is run at each
    // shard's end) nor more than the corpus's.
    let corpus_rows = rows.row_estimate();
    let mut shard: Option<ShardBuffer> = None;
    let batch_rows = (options.batch as u64).min(rows_per_shard).min(corpus_rows);
    let mut batch: Vec<Vec<u32>> = Vec::with_capacity(batch_rows as usize);
    let mut row_index = 0u64;
    // The rows earlier runs stored must be the corpus's rows now.
    let listed = manifest.shards.clone();
    let mut stored = ResumeCheck::new(out, corpus.path(), &listed, options.seq_len);
    let report = |manifest: &Manifest, shard: &Option<ShardBuffer>, bytes_read: u64| {
        let buffered = shard.as_ref().map_or(0, |s| s.n_rows() * seq);
        Progress {
            tokens: manifest.tokens + buffered,
            new_tokens: manifest.tokens - tokens_at_start + buffered,
            bytes_read,
            corpus_bytes: corpus.bytes(),
            shards: manifest.shards.len(),
        }
    };
    while let Some(row) = rows.next() {
        let row = row?;
        let r = row_index;
        row_index += 1;
        let block = r / rows_per_shard;
        if !options.slice.owns(block) || block < manifest.next_block {
            stored.row(r, &row)?;
            if r.is_multiple_of(1024) {
                progress(&report(&manifest, &shard, rows.bytes_read()));
            }
            continue;
        }
        let buffer = shard.get_or_insert_with(|| {
            let first = block * rows_per_shard;
            ShardBuffer::new(
                block,
                first,
                &keys,
                options.seq_len,
                options.dtype,
                rows_per_shard.min(corpus_rows.saturating_sub(first).max(1)),
            )
        });
        batch.push(row);
        let last_of_block = (r + 1).is_multiple_of(rows_per_shard);
        if batch.len() == options.batch || last_of_block {
            pass.run(&mut batch, buffer)?;
            if last_of_block {
                let done = shard.take().expect("a shard is being filled");
                finish_shard(&done, out, &keys, &mut manifest, &manifest_path)?;
            }
            progress(&report(&manifest, &shard, rows.bytes_read()));
        }
    }
    stored.end(row_index)?;
    if let Some(mut last) = shard.take() {
        if !batch.is_empty() {
            pass.run(&mut batch, &mut last)?;
        }
        finish_shard(&last, out, &keys, &mut manifest, &manifest_path)?;
    }
    manifest.complete = true;
    manifest.corpus_rows = Some(row_index);
    manifest.dropped_tokens = Some(rows.dropped_tokens());
    manifest.write(&manifest_path)?;
    progress(&report(&manifest, &None, corpus.bytes()));
    Ok(Outcome::Built {
        new_tokens: manifest.tokens - tokens_at_start,
        manifest,
        resumed,
    })
}

/// One forward pass per batch, recording the stored keys.
struct Pass<'a, B: Backend, M: HookedModel<B>> {
    model: &'a M,
    hooks: &'a M::Hooks,
    recorder: &'a Recorder<B>,
    keys: &'a [StoredKey],
    options: &'a StoreOptions,
    /// Blocks to run, when the keys need no more ([`blocks_needed`]).
    blocks: Option<usize>,
}

impl<B: Backend, M: HookedModel<B>> Pass<'_, B, M> {
    /// Runs `batch` through the model, appends the recorded values to
    /// `shard` and empties the batch.
    fn run(&self, batch: &mut Vec<Vec<u32>>, shard: &mut ShardBuffer) -> Result<(), StoreError> {
        let (model, hooks, recorder, keys, options) = (
            self.model,
            self.hooks,
            self.recorder,
            self.keys,
            self.options,
        );
        let blocks = self.blocks;
        let first_row = shard.next_row();
        let tokens = TokenBatch::new(std::mem::take(batch))?;
        match blocks {
            Some(blocks) => model.forward_blocks(&tokens, hooks, blocks)?,
            None => model.forward(&tokens, hooks)?,
        };
        let mut recorded: std::collections::HashMap<String, _> =
            recorder.entries().into_iter().collect();
        recorder.clear();
        let rows = tokens.batch_size();
        let mut values: Vec<TensorData> = Vec::with_capacity(keys.len());
        for key in keys {
            let tensor = recorded.remove(&key.key).ok_or_else(|| {
                StoreError::Options(format!(
                    "the model never computed `{}` (is the site skipped on a plain forward pass?)",
                    key.key
                ))
            })?;
            let data = tensor.to_data();
            let expected: Vec<usize> = [rows, options.seq_len]
                .into_iter()
                .chain(key.shape.iter().copied())
                .collect();
            if data.shape.as_slice() != expected.as_slice() {
                return Err(StoreError::Options(format!(
                    "`{}` has shape {:?}, not the {:?} its declared shape gives",
                    key.key, data.shape, expected
                )));
            }
            if !options.allow_non_finite
                && let Some((index, value)) = first_fault(&key.site, data.iter::<f32>())
            {
                let per_row = expected[1..].iter().product::<usize>();
                return Err(StoreError::NonFinite {
                    site: Box::new(NonFiniteSite {
                        during: "forward pass".into(),
                        site: key.site.clone(),
                        layer: key.layer,
                        index,
                        value,
                        shape: expected,
                    }),
                    row: first_row + (index / per_row) as u64,
                });
            }
            values.push(data);
        }
        shard.append(tokens.rows(), keys, &values, options.allow_non_finite)
    }
}

/// Writes `shard` and records it in the manifest.
fn finish_shard(
    shard: &ShardBuffer,
    out: &Path,
    keys: &[StoredKey],
    manifest: &mut Manifest,
    manifest_path: &Path,
) -> Result<(), StoreError> {
    let record = shard.write(out, keys)?;
    manifest.tokens += record.n_tokens();
    manifest.next_block = shard.block() + manifest.slice.count as u64;
    manifest.shards.push(record);
    manifest.write(manifest_path)
}

/// Gets `out` ready for `fresh`'s build: creates it, or checks that what it
/// holds is this store (to resume) or nothing foreign. Returns the manifest
/// to continue from, or `None` when the store is already complete.
fn prepare_folder(
    out: &Path,
    manifest_path: &Path,
    fresh: Manifest,
) -> Result<Option<Manifest>, StoreError> {
    match std::fs::metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(|e| StoreError::io(out, e))?;
            return Ok(Some(fresh));
        }
        Err(e) => return Err(StoreError::io(out, e)),
        Ok(m) if !m.is_dir() => {
            return Err(StoreError::store(
                out,
                "--out must be a folder (it is created if missing)",
            ));
        }
        Ok(_) => {}
    }
    let slice = fresh.slice;
    if slice.count > 1 && out.join(MANIFEST).exists() {
        return Err(StoreError::store(
            out,
            "holds a whole (or merged) store, manifest.json: a slice cannot be added to it",
        ));
    }
    if slice.count == 1
        && !out.join(MANIFEST).exists()
        && !super::merge::slice_manifests(out)?.is_empty()
    {
        return Err(StoreError::store(
            out,
            "holds the slices of a store split with --shard i/n: finish each slice with its own \
             command and join them with `hooks merge-manifests`",
        ));
    }
    let entries = std::fs::read_dir(out).map_err(|e| StoreError::io(out, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(out, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_store_file(&name) {
            return Err(StoreError::store(
                out,
                format!(
                    "is not empty and holds `{}`, which is not part of an activation store; \
                     give a new or empty folder",
                    hooks_model::shown(Path::new(&name))
                ),
            ));
        }
        // A temporary file of a run that was killed, for one of this slice's
        // shards or its manifest: never listed, safe to remove.
        if let Some(stem) = name.strip_prefix('.')
            && let Some((target, _)) = stem.split_once(".partial-")
            && (target == slice.manifest_name() || owned_shard(target, slice))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if !manifest_path.exists() {
        return Ok(Some(fresh));
    }
    let existing = Manifest::read(manifest_path)?;
    if existing.shards.is_empty() && !existing.complete {
        // Started, nothing stored yet (e.g. a corpus error, since fixed):
        // nothing to keep.
        return Ok(Some(fresh));
    }
    if let Some((field, found, wanted)) = existing.differences(&fresh) {
        return Err(StoreError::Mismatch {
            path: manifest_path.to_path_buf(),
            field,
            found,
            wanted,
        });
    }
    if existing.keys != fresh.keys {
        return Err(StoreError::Mismatch {
            path: manifest_path.to_path_buf(),
            field: "set of stored keys",
            found: existing.keys.len().to_string(),
            wanted: fresh.keys.len().to_string(),
        });
    }
    for shard in &existing.shards {
        shard.check_file(out)?;
    }
    if existing.complete {
        return Ok(None);
    }
    Ok(Some(existing))
}

/// Whether `name` is a file a store's folder holds: manifests, shards and
/// the temporary files they are written through.
fn is_store_file(name: &str) -> bool {
    let name = name
        .strip_prefix('.')
        .and_then(|n| n.split_once(".partial-").map(|(t, _)| t))
        .unwrap_or(name);
    let manifest = name == MANIFEST || (name.starts_with("manifest-") && name.ends_with(".json"));
    let shard = name.starts_with("shard-") && name.ends_with(".safetensors");
    manifest || shard
}

/// Whether `name` is the shard file of a block `slice` owns.
fn owned_shard(name: &str, slice: Slice) -> bool {
    name.strip_prefix("shard-")
        .and_then(|n| n.strip_suffix(".safetensors"))
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|block| slice.owns(block) && shard_file(block) == name)
}
