//! On resume, checking that the corpus rows an earlier run stored are the
//! corpus's rows now. The manifest records the corpus's size only, and a
//! document edited in place can keep it: each listed shard's `tokens` are
//! compared with the rows the corpus gives for its range as they stream by
//! (before any new shard is computed), reading only that tensor of the
//! shard.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::StoreError;
use super::manifest::ShardRecord;

/// The listed shards of a resumed run, checked against the corpus row by
/// row.
pub struct ResumeCheck<'a> {
    dir: &'a Path,
    corpus: PathBuf,
    shards: &'a [ShardRecord],
    seq_len: usize,
    /// The first shard not yet passed (rows come in order).
    next: usize,
    /// The shard being compared and its tokens.
    current: Option<(usize, Vec<i64>)>,
}

impl<'a> ResumeCheck<'a> {
    /// Checks `shards` (in `dir`, in corpus order) against `corpus`'s rows
    /// of `seq_len` tokens.
    pub fn new(dir: &'a Path, corpus: &Path, shards: &'a [ShardRecord], seq_len: usize) -> Self {
        ResumeCheck {
            dir,
            corpus: corpus.to_path_buf(),
            shards,
            seq_len,
            next: 0,
            current: None,
        }
    }

    /// Checks corpus row `r`, `row`, if a listed shard holds it (rows
    /// must come in corpus order).
    pub fn row(&mut self, r: u64, row: &[u32]) -> Result<(), StoreError> {
        while self.shards.get(self.next).is_some_and(|s| s.rows[1] <= r) {
            self.next += 1;
        }
        let i = self.next;
        if self.shards.get(i).is_none_or(|s| r < s.rows[0]) {
            return Ok(());
        }
        if self.current.as_ref().is_none_or(|(c, _)| *c != i) {
            let path = self.dir.join(&self.shards[i].file);
            let tokens = shard_tokens(&path)?;
            let expected = self.shards[i].n_tokens();
            if tokens.len() as u64 != expected {
                return Err(StoreError::Corrupt {
                    path,
                    what: format!(
                        "its `tokens` holds {} ids but the manifest records {expected} tokens",
                        tokens.len()
                    ),
                });
            }
            self.current = Some((i, tokens));
        }
        let (_, tokens) = self.current.as_ref().expect("loaded above");
        let shard = &self.shards[i];
        let start = (r - shard.rows[0]) as usize * self.seq_len;
        let stored = &tokens[start..start + self.seq_len];
        if let Some(p) = (0..self.seq_len).find(|&p| stored[p] != row[p] as i64) {
            return Err(self.changed(
                i,
                format!(
                    "at corpus row {r}, position {p}, the corpus now has token {} where the \
                     shard holds {}",
                    row[p], stored[p]
                ),
            ));
        }
        Ok(())
    }

    /// Checks, once the corpus has ended after `rows` rows, that it reached
    /// every listed row.
    pub fn end(&self, rows: u64) -> Result<(), StoreError> {
        match self.shards.iter().position(|s| s.rows[1] > rows) {
            Some(i) => Err(self.changed(
                i,
                format!(
                    "the corpus now ends after {rows} rows, but the shard holds rows {} to {}",
                    self.shards[i].rows[0],
                    self.shards[i].rows[1] - 1
                ),
            )),
            None => Ok(()),
        }
    }

    fn changed(&self, i: usize, what: String) -> StoreError {
        StoreError::CorpusChanged {
            corpus: self.corpus.clone(),
            shard: self.dir.join(&self.shards[i].file),
            what,
        }
    }
}

/// The `tokens` tensor of the shard at `path` (i64), read from its header's
/// offsets without reading the rest of the file.
fn shard_tokens(path: &Path) -> Result<Vec<i64>, StoreError> {
    let io = |e: std::io::Error| StoreError::io(path, e);
    let bad = |what: &str| StoreError::Corrupt {
        path: path.to_path_buf(),
        what: what.to_string(),
    };
    let mut file = hooks_model::inputs::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut n = [0u8; 8];
    file.read_exact(&mut n)
        .map_err(|_| bad("it is shorter than a safetensors header"))?;
    let n = u64::from_le_bytes(n);
    if n > len.saturating_sub(8) || n > 100 << 20 {
        return Err(bad("its safetensors header length is out of range"));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| bad("its safetensors header is not JSON"))?;
    let entry = &header["tokens"];
    let offsets = entry["data_offsets"]
        .as_array()
        .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)))
        .filter(|(a, b)| a <= b && entry["dtype"] == "I64" && (b - a) % 8 == 0)
        .ok_or_else(|| bad("it has no i64 `tokens` tensor"))?;
    let (start, end) = offsets;
    if 8 + n + end > len {
        return Err(bad("its `tokens` tensor lies past the end of the file"));
    }
    file.seek(SeekFrom::Start(8 + n + start)).map_err(io)?;
    let mut bytes = vec![0u8; (end - start) as usize];
    file.read_exact(&mut bytes).map_err(io)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect())
}
