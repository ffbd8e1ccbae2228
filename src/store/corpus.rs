//! Corpora: text, JSON lines or flat token files, read as a stream of
//! documents and packed into rows of a fixed length, with memory bounded by
//! one document, whatever the corpus size.
//!
//! Formats, by file name:
//! - `.txt`: one document per line (empty lines are skipped), tokenized
//!   with the model's tokenizer;
//! - `.jsonl`: one JSON object per line, with a `"text"` string (tokenized)
//!   or a `"tokens"` array of ids; the first object decides which, and every
//!   line must then have that field;
//! - `.npy`: a NumPy array of integer token ids (any shape, C order; read
//!   flat);
//! - anything else (`.bin`, …): flat little-endian token ids, `u16`
//!   (nanoGPT's layout) unless [`TokenWidth::U32`] is asked for.
//!
//! Documents are concatenated (with an optional separator token after
//! each) and cut into rows of `seq_len` tokens; the tokens left over at the
//! end (fewer than a row) are dropped and counted.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use hooks_model::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// The width of each id in a flat binary token file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenWidth {
    /// Little-endian `u16` (nanoGPT's `.bin`).
    #[default]
    U16,
    /// Little-endian `u32`.
    U32,
}

/// How a corpus file is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorpusFormat {
    /// One document per line of text.
    Text,
    /// JSON lines with a `"text"` field.
    JsonlText,
    /// JSON lines with a `"tokens"` field.
    JsonlTokens,
    /// A NumPy array of ids; the element type as NumPy spells it (`<u2`).
    Npy,
    /// Flat little-endian ids of the given width.
    Binary(TokenWidth),
}

impl std::fmt::Display for TokenWidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenWidth::U16 => "u16",
            TokenWidth::U32 => "u32",
        })
    }
}

/// In words, for messages (a store made from one corpus refused for another
/// names both this way).
impl std::fmt::Display for CorpusFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorpusFormat::Text => f.write_str("text lines"),
            CorpusFormat::JsonlText => f.write_str("JSON lines of text"),
            CorpusFormat::JsonlTokens => f.write_str("JSON lines of token ids"),
            CorpusFormat::Npy => f.write_str("a NumPy array of token ids"),
            CorpusFormat::Binary(width) => write!(f, "flat {width} token ids"),
        }
    }
}

impl CorpusFormat {
    /// Whether documents are text the tokenizer turns into ids.
    pub fn needs_tokenizer(self) -> bool {
        matches!(self, CorpusFormat::Text | CorpusFormat::JsonlText)
    }
}

/// A corpus file and its format.
#[derive(Clone, Debug)]
pub struct Corpus {
    path: PathBuf,
    format: CorpusFormat,
    bytes: u64,
}

impl Corpus {
    /// Opens `path`, deciding the format from its name (and, for `.jsonl`,
    /// its first object); `width` applies to flat binary files.
    pub fn open(path: &Path, width: TokenWidth) -> Result<Self, StoreError> {
        let meta = std::fs::metadata(path).map_err(|e| StoreError::io(path, e))?;
        if !meta.is_file() {
            return Err(corpus_error(path, "is not a regular file"));
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let format = match ext.as_deref() {
            Some("txt") => CorpusFormat::Text,
            Some("jsonl") => jsonl_kind(path)?,
            Some("npy") => CorpusFormat::Npy,
            _ => CorpusFormat::Binary(width),
        };
        Ok(Corpus {
            path: path.to_path_buf(),
            format,
            bytes: meta.len(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its format.
    pub fn format(&self) -> CorpusFormat {
        self.format
    }

    /// Its size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The rows of `seq_len` tokens, in corpus order. Text is tokenized with
    /// `tokenizer` (required for text formats); every id is checked against
    /// `vocab_size`; `separator` follows each document (not used by flat
    /// files, which are one stream).
    pub fn rows<'t>(
        &self,
        seq_len: usize,
        separator: Option<u32>,
        vocab_size: usize,
        tokenizer: Option<&'t Tokenizer>,
    ) -> Result<Rows<'t>, StoreError> {
        if seq_len == 0 {
            return Err(StoreError::Options("--seq-len must be at least 1".into()));
        }
        if self.format.needs_tokenizer() && tokenizer.is_none() {
            return Err(corpus_error(
                &self.path,
                "holds text but no tokenizer was given",
            ));
        }
        if let Some(s) = separator
            && s as usize >= vocab_size
        {
            return Err(StoreError::Options(format!(
                "the separator token {s} is outside the model's vocabulary (size {vocab_size})"
            )));
        }
        let file = File::open(&self.path).map_err(|e| StoreError::io(&self.path, e))?;
        let mut reader = Counting {
            inner: BufReader::with_capacity(1 << 16, file),
            read: 0,
        };
        let source = match self.format {
            CorpusFormat::Npy => {
                let header = npy_header(&mut reader, &self.path)?;
                check_npy_length(&header, self.bytes.saturating_sub(reader.read), &self.path)?;
                Source::Flat {
                    width: header.width,
                    signed: header.signed,
                    remaining: header.count,
                    index: 0,
                }
            }
            CorpusFormat::Binary(width) => {
                let size = match width {
                    TokenWidth::U16 => 2,
                    TokenWidth::U32 => 4,
                };
                if !self.bytes.is_multiple_of(size) {
                    return Err(corpus_error(
                        &self.path,
                        format!(
                            "is {} bytes, not a whole number of {}-byte token ids (a flat \
                             little-endian {width} file; pass --token-dtype if the ids are \
                             another width)",
                            self.bytes, size
                        ),
                    ));
                }
                Source::Flat {
                    width: size as usize,
                    signed: false,
                    remaining: self.bytes / size,
                    index: 0,
                }
            }
            _ => Source::Lines { line: 0 },
        };
        Ok(Rows {
            path: self.path.clone(),
            format: self.format,
            bytes: self.bytes,
            reader,
            source,
            tokenizer,
            seq_len,
            separator,
            vocab_size,
            pending: Vec::new(),
            start: 0,
            done: false,
            dropped: 0,
        })
    }
}

fn corpus_error(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corpus {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Which field a `.jsonl` corpus uses, from its first non-empty line.
fn jsonl_kind(path: &Path) -> Result<CorpusFormat, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => {
                corpus_error(path, format!("line {}: not UTF-8 text", i + 1))
            }
            _ => StoreError::io(path, e),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| corpus_error(path, format!("line {}: not JSON: {e}", i + 1)))?;
        if !value.is_object() {
            return Err(corpus_error(
                path,
                format!(
                    "line {}: not a JSON object (it is {})",
                    i + 1,
                    json_kind(&value)
                ),
            ));
        }
        return if value.get("tokens").is_some() {
            Ok(CorpusFormat::JsonlTokens)
        } else if value.get("text").is_some() {
            Ok(CorpusFormat::JsonlText)
        } else {
            Err(corpus_error(
                path,
                format!(
                    "line {}: an object with neither \"text\" nor \"tokens\"",
                    i + 1
                ),
            ))
        };
    }
    Err(corpus_error(path, "holds no documents"))
}

/// A reader counting the bytes taken from it (the progress bar's position).
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amount: usize) {
        self.read += amount as u64;
        self.inner.consume(amount);
    }
}

/// Where documents come from.
enum Source {
    /// One document per line.
    Lines { line: u64 },
    /// A flat stream of `remaining` ids of `width` bytes.
    Flat {
        width: usize,
        signed: bool,
        remaining: u64,
        index: u64,
    },
}

/// The packed rows of a corpus: an iterator of `Result<Vec<u32>>`, each row
/// `seq_len` ids.
pub struct Rows<'t> {
    path: PathBuf,
    format: CorpusFormat,
    bytes: u64,
    reader: Counting<BufReader<File>>,
    source: Source,
    tokenizer: Option<&'t Tokenizer>,
    seq_len: usize,
    separator: Option<u32>,
    vocab_size: usize,
    /// Tokens read but not yet in a row; `pending[start..]` are live.
    pending: Vec<u32>,
    start: usize,
    done: bool,
    dropped: u64,
}

/// Ids read from a flat file per refill.
const FLAT_CHUNK: u64 = 1 << 16;

impl Rows<'_> {
    /// Bytes of the corpus read so far.
    pub fn bytes_read(&self) -> u64 {
        self.reader.read
    }

    /// About how many rows the corpus holds in all, for sizing buffers: an
    /// upper bound for flat files (exact) and `"tokens"` lines (each id
    /// takes at least two bytes, a digit and a comma or bracket); for text,
    /// one token per byte, a guess buffers may have to grow past.
    pub fn row_estimate(&self) -> u64 {
        let seq = self.seq_len as u64;
        let tokens = match (&self.source, self.format) {
            (
                Source::Flat {
                    remaining, index, ..
                },
                _,
            ) => remaining + index,
            (_, CorpusFormat::JsonlTokens) => self.bytes / 2,
            _ => self.bytes,
        };
        tokens / seq + 1
    }

    /// Tokens dropped at the end (fewer than a row); final once the
    /// iterator has ended.
    pub fn dropped_tokens(&self) -> u64 {
        self.dropped
    }

    /// Reads the next document (or flat chunk) into `pending`; false at the
    /// end of the corpus.
    fn refill(&mut self) -> Result<bool, StoreError> {
        match &mut self.source {
            Source::Lines { line } => loop {
                let mut text = String::new();
                let n = self
                    .reader
                    .read_line(&mut text)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::InvalidData => {
                            corpus_error(&self.path, format!("line {}: not UTF-8 text", *line + 1))
                        }
                        _ => StoreError::io(&self.path, e),
                    })?;
                if n == 0 {
                    return Ok(false);
                }
                *line += 1;
                let text = text.trim_end_matches(['\n', '\r']);
                if text.trim().is_empty() {
                    continue;
                }
                let ids = document(
                    self.format,
                    text,
                    *line,
                    self.tokenizer,
                    &self.path,
                    self.vocab_size,
                )?;
                if ids.is_empty() {
                    continue;
                }
                self.pending.extend(ids);
                self.pending.extend(self.separator);
                return Ok(true);
            },
            Source::Flat {
                width,
                signed,
                remaining,
                index,
            } => {
                if *remaining == 0 {
                    return Ok(false);
                }
                let n = (*remaining).min(FLAT_CHUNK);
                let mut bytes = vec![0u8; n as usize * *width];
                // The length was checked against the header: failing here
                // means the file shrank while it was read.
                self.reader.read_exact(&mut bytes).map_err(|e| {
                    corpus_error(
                        &self.path,
                        format!(
                            "ends early, within tokens {} to {} ({e}; did the file change while \
                             it was read?)",
                            *index,
                            *index + n - 1
                        ),
                    )
                })?;
                for (i, b) in bytes.chunks_exact(*width).enumerate() {
                    let id = flat_id(b, *signed);
                    let at = *index + i as u64;
                    match id {
                        Some(id) if (id as u64) < self.vocab_size as u64 => self.pending.push(id),
                        _ => {
                            return Err(corpus_error(
                                &self.path,
                                format!(
                                    "token {at}: id {} is outside the model's vocabulary (size {})",
                                    flat_display(b, *signed),
                                    self.vocab_size
                                ),
                            ));
                        }
                    }
                }
                *index += n;
                *remaining -= n;
                Ok(true)
            }
        }
    }
}

impl Iterator for Rows<'_> {
    type Item = Result<Vec<u32>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.pending.len() - self.start < self.seq_len {
            if self.done {
                return None;
            }
            // Keep the buffer small: drop what earlier rows took.
            self.pending.drain(..self.start);
            self.start = 0;
            match self.refill() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    self.dropped = (self.pending.len() - self.start) as u64;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let row = self.pending[self.start..self.start + self.seq_len].to_vec();
        self.start += self.seq_len;
        Some(Ok(row))
    }
}

/// The ids of one line-format document.
fn document(
    format: CorpusFormat,
    line_text: &str,
    line: u64,
    tokenizer: Option<&Tokenizer>,
    path: &Path,
    vocab_size: usize,
) -> Result<Vec<u32>, StoreError> {
    let at = |reason: String| corpus_error(path, format!("line {line}: {reason}"));
    let ids = match format {
        CorpusFormat::Text => encode(tokenizer, line_text).map_err(&at)?,
        CorpusFormat::JsonlText | CorpusFormat::JsonlTokens => {
            let value: serde_json::Value = serde_json::from_str(line_text)
                .map_err(|e| at(format!("not a JSON object: {e}")))?;
            if format == CorpusFormat::JsonlText {
                let text =
                    field(&value, "text", "a string", serde_json::Value::as_str).map_err(&at)?;
                encode(tokenizer, text).map_err(&at)?
            } else {
                let tokens = field(
                    &value,
                    "tokens",
                    "an array of token ids",
                    serde_json::Value::as_array,
                )
                .map_err(&at)?;
                tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        t.as_u64()
                            .filter(|&id| id <= u32::MAX as u64)
                            .map(|id| id as u32)
                            .ok_or_else(|| {
                                at(format!(
                                    "\"tokens\"[{i}] = {t} is not a token id (a non-negative \
                                     integer)"
                                ))
                            })
                    })
                    .collect::<Result<Vec<u32>, _>>()?
            }
        }
        _ => unreachable!("flat formats are not line documents"),
    };
    if let Some((i, id)) = ids
        .iter()
        .enumerate()
        .find(|(_, id)| **id as usize >= vocab_size)
    {
        return Err(at(format!(
            "token {id} (position {i} of the document) is outside the model's vocabulary (size \
             {vocab_size})"
        )));
    }
    Ok(ids)
}

/// The `name` field of a JSON line, as `get` reads it; the reason, in
/// words, when it is missing or of another type (`want`: "a string").
fn field<'v, T: ?Sized>(
    value: &'v serde_json::Value,
    name: &str,
    want: &str,
    get: impl Fn(&'v serde_json::Value) -> Option<&'v T>,
) -> Result<&'v T, String> {
    if !value.is_object() {
        return Err(format!("not a JSON object (it is {})", json_kind(value)));
    }
    let Some(found) = value.get(name) else {
        // The first line decided the field, so it has one.
        return Err(format!("no \"{name}\" field (the first line has one)"));
    };
    get(found).ok_or_else(|| format!("\"{name}\" is not {want} (it is {})", json_kind(found)))
}

/// What kind of JSON value `v` is, in words.
fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn encode(tokenizer: Option<&Tokenizer>, text: &str) -> Result<Vec<u32>, String> {
    tokenizer
        .expect("checked when the rows were made")
        .encode(text)
        .map_err(|e| e.to_string())
}

/// A little-endian id of 1, 2, 4 or 8 bytes; `None` when negative or above
/// `u32::MAX`.
fn flat_id(b: &[u8], signed: bool) -> Option<u32> {
    let mut raw = [0u8; 8];
    raw[..b.len()].copy_from_slice(b);
    let negative = signed && b.last().is_some_and(|x| x & 0x80 != 0);
    if negative {
        return None;
    }
    u32::try_from(u64::from_le_bytes(raw)).ok()
}

fn flat_display(b: &[u8], signed: bool) -> String {
    let mut raw = [0u8; 8];
    raw[..b.len()].copy_from_slice(b);
    if signed && b.last().is_some_and(|x| x & 0x80 != 0) {
        raw[b.len()..].fill(0xff);
        return i64::from_le_bytes(raw).to_string();
    }
    u64::from_le_bytes(raw).to_string()
}

/// Checks that the `data` bytes after a `.npy` header hold every id the
/// header promises, so a truncated file is refused before any work, saying
/// how much of it is there.
fn check_npy_length(header: &NpyHeader, data: u64, path: &Path) -> Result<(), StoreError> {
    let width = header.width as u64;
    let whole = data / width;
    if whole >= header.count {
        return Ok(());
    }
    let ids = if whole == 1 { "id" } else { "ids" };
    let partial = match data % width {
        0 => String::new(),
        1 => " and 1 byte of another".to_string(),
        n => format!(" and {n} bytes of another"),
    };
    Err(corpus_error(
        path,
        format!(
            "ends early: its header promises {} token ids of {width} bytes each, but the file \
             holds only {whole} whole {ids}{partial} (is it truncated?)",
            header.count
        ),
    ))
}

/// What a `.npy` header says of its data.
struct NpyHeader {
    width: usize,
    signed: bool,
    count: u64,
}

/// Reads and checks a NumPy `.npy` header (versions 1–3): integer ids,
/// little-endian (or one byte), C order.
fn npy_header(reader: &mut impl Read, path: &Path) -> Result<NpyHeader, StoreError> {
    let bad = |reason: String| corpus_error(path, format!("not a NumPy token file: {reason}"));
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .map_err(|_| bad("shorter than the .npy magic".into()))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(bad("no .npy magic (\\x93NUMPY)".into()));
    }
    let len = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            reader
                .read_exact(&mut b)
                .map_err(|_| bad("truncated header".into()))?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            reader
                .read_exact(&mut b)
                .map_err(|_| bad("truncated header".into()))?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(bad(format!("unknown .npy version {v}"))),
    };
    if len > 1 << 20 {
        return Err(bad(format!("header of {len} bytes")));
    }
    let mut text = vec![0u8; len];
    reader
        .read_exact(&mut text)
        .map_err(|_| bad("truncated header".into()))?;
    let text = String::from_utf8_lossy(&text);
    let field = |name: &str| -> Option<String> {
        let at = text.find(&format!("'{name}'"))? + name.len() + 2;
        let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest.to_string())
    };
    let descr = field("descr")
        .and_then(|r| {
            let r = r.strip_prefix('\'')?;
            Some(r[..r.find('\'')?].to_string())
        })
        .ok_or_else(|| bad("no 'descr' in the header".into()))?;
    let (width, signed) = match descr.as_str() {
        "|u1" | "<u1" => (1, false),
        "|i1" | "<i1" => (1, true),
        "<u2" => (2, false),
        "<i2" => (2, true),
        "<u4" => (4, false),
        "<i4" => (4, true),
        "<u8" => (8, false),
        "<i8" => (8, true),
        other => {
            return Err(bad(format!(
                "element type {other:?}; token ids must be little-endian integers (<u2, <i4, <i8, …)"
            )));
        }
    };
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(bad("Fortran order; save it in C order".into()));
    }
    let shape = field("shape")
        .and_then(|r| {
            let r = r.strip_prefix('(')?;
            Some(r[..r.find(')')?].to_string())
        })
        .ok_or_else(|| bad("no 'shape' in the header".into()))?;
    let mut count: u64 = 1;
    for dim in shape.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let dim: u64 = dim.parse().map_err(|_| bad(format!("shape ({shape})")))?;
        count = count
            .checked_mul(dim)
            .ok_or_else(|| bad(format!("shape ({shape}) overflows")))?;
    }
    Ok(NpyHeader {
        width,
        signed,
        count,
    })
}
