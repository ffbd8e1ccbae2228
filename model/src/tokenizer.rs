//! Tokenizers: a checkpoint folder's Hugging Face `tokenizer.json` (through
//! the `tokenizers` crate), or GPT-2's byte-pair encoding from tiktoken's
//! bundled `r50k_base` ranks (no download) for GPT-2 folders without one.
//!
//! [`Tokenizer::encode`] gives the ids transformers' `tokenizer(text)` gives:
//! for a `tokenizer.json` that is `encode(text, add_special_tokens=True)`, so
//! the file's post-processor decides which special tokens are added (Llama 3
//! and Mistral prepend their begin-of-text token, Qwen2 and GPT-2 add
//! nothing), special tokens written in the text are matched as special
//! tokens, and no truncation or padding the file may configure is applied.
//! GPT-2's bundled BPE adds nothing and reads `<|endoftext|>` in the text as
//! ordinary text. [`Tokenizer::decode`] keeps special tokens, like
//! transformers' `tokenizer.decode(ids)`. `tokenizer_config.json` is not
//! read: a folder whose `add_bos_token` / `add_eos_token` there disagree
//! with its `tokenizer.json`'s post-processor (transformers rebuilds the
//! post-processor from them for Llama 2 and Mistral) gets the file's.

use std::path::{Path, PathBuf};

use tiktoken_rs::CoreBPE;

use crate::ModelError;

/// The vocabulary size of GPT-2's bundled BPE.
const GPT2_VOCAB: usize = 50257;

/// The tokenizer models the `tokenizers` crate implements (`model.type` in
/// a `tokenizer.json`).
const FILE_MODELS: [&str; 4] = ["BPE", "WordPiece", "WordLevel", "Unigram"];

/// A text tokenizer: GPT-2's bundled BPE, or a `tokenizer.json`.
pub struct Tokenizer {
    kind: Kind,
}

enum Kind {
    Gpt2(Box<CoreBPE>),
    File {
        inner: Box<tokenizers::Tokenizer>,
        /// The `tokenizer.json` it was read from, for messages.
        path: PathBuf,
        /// One more than the largest id, added tokens included.
        vocab_size: usize,
    },
}

impl Tokenizer {
    /// GPT-2's tokenizer, from the bundled ranks.
    pub fn gpt2() -> Self {
        Tokenizer {
            kind: Kind::Gpt2(Box::new(
                tiktoken_rs::r50k_base().expect("the bundled r50k_base ranks parse"),
            )),
        }
    }

    /// Reads a Hugging Face `tokenizer.json`. A file that cannot be read,
    /// is not JSON (a truncated download), is not the `tokenizers` layout or
    /// holds a tokenizer model the crate does not implement is an error
    /// naming the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let bytes = crate::inputs::read(path).map_err(|e| ModelError::io(path, e))?;
        let mut inner =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| load_error(path, &bytes, &*e))?;
        // transformers applies a file's truncation and padding only when a
        // call asks for them.
        inner
            .with_truncation(None)
            .map_err(|e| bad(path, format!("cannot turn truncation off: {e}")))?;
        inner.with_padding(None);
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&id| id as usize + 1);
        if vocab_size == 0 {
            return Err(bad(path, "the vocabulary is empty".into()));
        }
        Ok(Tokenizer {
            kind: Kind::File {
                inner: Box::new(inner),
                path: path.to_path_buf(),
                vocab_size,
            },
        })
    }

    /// The tokenizer of the checkpoint folder `dir` whose config says
    /// `model_type`: its `tokenizer.json` when there is one (an entry of
    /// that name that cannot be read is an error, never a silent fallback);
    /// otherwise GPT-2's bundled BPE for `gpt2`, and an error naming the
    /// folder for any other type.
    pub fn for_model_dir(dir: impl AsRef<Path>, model_type: &str) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let file = dir.join(crate::checkpoint::TOKENIZER_FILE);
        match file.symlink_metadata() {
            Ok(_) => Self::from_file(&file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if model_type == "gpt2" {
                    Ok(Self::gpt2())
                } else {
                    Err(ModelError::NoTokenizer {
                        dir: dir.to_path_buf(),
                        model_type: model_type.to_owned(),
                    })
                }
            }
            Err(e) => Err(ModelError::io(file, e)),
        }
    }

    /// The `tokenizer.json` this tokenizer was read from; `None` for GPT-2's
    /// bundled BPE.
    pub fn path(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Gpt2(_) => None,
            Kind::File { path, .. } => Some(path),
        }
    }

    /// The number of ids: one more than the largest, special tokens included
    /// (50257 for GPT-2).
    pub fn vocab_size(&self) -> usize {
        match &self.kind {
            Kind::Gpt2(_) => GPT2_VOCAB,
            Kind::File { vocab_size, .. } => *vocab_size,
        }
    }

    /// Token ids of `text`, with the special tokens transformers'
    /// `tokenizer(text)` adds (see the module doc): [`encode_with`] with
    /// `add_special_tokens` true.
    ///
    /// [`encode_with`]: Tokenizer::encode_with
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.encode_with(text, true)
    }

    /// Token ids of `text`; `add_special_tokens` is transformers' argument
    /// of that name: whether a `tokenizer.json`'s post-processor adds its
    /// special tokens (false: a continuation without Llama 3's
    /// `<|begin_of_text|>`); special tokens written in the text are matched
    /// either way. GPT-2's BPE adds none, matches none in the text and never
    /// fails; a `tokenizer.json` fails only where the `tokenizers` crate does
    /// (an error naming the file).
    pub fn encode_with(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, ModelError> {
        match &self.kind {
            Kind::Gpt2(bpe) => Ok(bpe.encode_ordinary(text)),
            Kind::File { inner, path, .. } => inner
                .encode_fast(text, add_special_tokens)
                .map(|encoding| encoding.get_ids().to_vec())
                .map_err(|e| bad(path, format!("cannot encode the text: {e}"))),
        }
    }

    /// Text of `tokens`, special tokens included; an id outside the
    /// vocabulary is an error. GPT-2's BPE refuses bytes that do not form
    /// UTF-8; a `tokenizer.json` decodes as its decoder does (byte-level
    /// and byte-fallback decoders write U+FFFD for them, as transformers
    /// does).
    pub fn decode(&self, tokens: &[u32]) -> Result<String, ModelError> {
        let out_of_range = |position: usize, token: u32| ModelError::TokenOutOfRange {
            token,
            row: 0,
            position,
            vocab_size: self.vocab_size(),
        };
        match &self.kind {
            Kind::Gpt2(bpe) => {
                if let Some((position, &token)) = tokens
                    .iter()
                    .enumerate()
                    .find(|(_, t)| **t as usize >= GPT2_VOCAB)
                {
                    return Err(out_of_range(position, token));
                }
                bpe.decode(tokens.to_vec())
                    .map_err(|e| ModelError::BadBatch(format!("cannot decode tokens: {e}")))
            }
            Kind::File { inner, path, .. } => {
                if let Some((position, &token)) = tokens
                    .iter()
                    .enumerate()
                    .find(|(_, t)| inner.id_to_token(**t).is_none())
                {
                    return Err(out_of_range(position, token));
                }
                inner
                    .decode(tokens, false)
                    .map_err(|e| bad(path, format!("cannot decode tokens {tokens:?}: {e}")))
            }
        }
    }

    /// Text of `tokens`; never fails: bytes that do not form UTF-8 (a sampled
    /// token can end in the middle of a character) become U+FFFD, and ids
    /// outside the vocabulary print as `<|id|>` (with a `tokenizer.json`,
    /// the runs of known ids between them are decoded one by one).
    pub fn decode_lossy(&self, tokens: &[u32]) -> String {
        if let Ok(text) = self.decode(tokens) {
            return text;
        }
        match &self.kind {
            Kind::Gpt2(bpe) => {
                let mut bytes = Vec::new();
                for &t in tokens {
                    if (t as usize) < GPT2_VOCAB {
                        bytes.extend(bpe._decode_native_and_split(vec![t]).flatten());
                    } else {
                        bytes.extend(format!("<|{t}|>").into_bytes());
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Kind::File { inner, .. } => {
                let mut text = String::new();
                for run in tokens.chunk_by(|a, b| {
                    inner.id_to_token(*a).is_some() == inner.id_to_token(*b).is_some()
                }) {
                    if inner.id_to_token(run[0]).is_none() {
                        for t in run {
                            text.push_str(&format!("<|{t}|>"));
                        }
                    } else {
                        match inner.decode(run, false) {
                            Ok(piece) => text.push_str(&piece),
                            // No decoder of the crate fails on known ids;
                            // the raw tokens are the next best thing.
                            Err(_) => {
                                for &t in run {
                                    text.push_str(&inner.id_to_token(t).unwrap_or_default());
                                }
                            }
                        }
                    }
                }
                text
            }
        }
    }
}

impl Default for Tokenizer {
    fn default() -> Self {
        Self::gpt2()
    }
}

fn bad(path: &Path, reason: String) -> ModelError {
    ModelError::BadTokenizer {
        path: path.to_path_buf(),
        reason,
    }
}

/// Why `bytes`, read from `path`, is not a `tokenizer.json` the crate loads:
/// serde's message for the typed layout is often only "data did not match
/// any variant of untagged enum", so the JSON and its `model.type` are
/// looked at first.
fn load_error(path: &Path, bytes: &[u8], error: &dyn std::error::Error) -> ModelError {
    let reason = match serde_json::from_slice::<serde_json::Value>(bytes) {
        Err(_) if bytes.is_empty() => "not JSON: the file is empty".into(),
        Err(e) if e.is_eof() => format!("not JSON: the file ends early, {e} (truncated?)"),
        Err(e) => format!("not JSON: {e}"),
        Ok(value) => match value.get("model").map(|m| m.get("type")) {
            None => "not a Hugging Face tokenizer.json: no `model` section".into(),
            Some(Some(serde_json::Value::String(kind)))
                if !FILE_MODELS.contains(&kind.as_str()) =>
            {
                format!(
                    "unsupported tokenizer model `{kind}` (the `tokenizers` crate reads {})",
                    FILE_MODELS.join(", ")
                )
            }
            Some(_) => format!("not a tokenizer.json the `tokenizers` crate can read: {error}"),
        },
    };
    bad(path, reason)
}
