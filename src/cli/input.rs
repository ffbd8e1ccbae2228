//! Token input: `--tokens` rows or a `--prompt`, checked against the model's
//! config before the weights are loaded.

use std::path::Path;

use super::args::InputArgs;
use super::error::CliError;
use hooks_model::tokenizer::Tokenizer;
use hooks_model::{AnyConfig, ModelDims, TokenBatch};

/// Parses one `--tokens` value (`464,3290,318`; spaces allowed).
pub fn parse_row(row: usize, text: &str) -> Result<Vec<u32>, CliError> {
    let ids: Vec<&str> = text.split(',').map(str::trim).collect();
    if ids.iter().all(|s| s.is_empty()) {
        return Err(CliError::Input(format!("--tokens row {row} is empty")));
    }
    ids.iter()
        .enumerate()
        .map(|(position, id)| {
            id.parse::<u32>().map_err(|_| {
                CliError::Input(format!(
                    "--tokens row {row}, position {position}: `{id}` is not a token id \
                     (expected comma-separated non-negative integers, e.g. 464,3290,318)"
                ))
            })
        })
        .collect()
}

/// The tokenizer of the checkpoint folder `dir`: its `tokenizer.json`, or
/// GPT-2's bundled BPE for a GPT-2 folder without one
/// ([`Tokenizer::for_model_dir`]); a missing or broken file is a model-files
/// error naming it.
pub fn tokenizer(dir: &Path, config: &AnyConfig) -> Result<Tokenizer, CliError> {
    Tokenizer::for_model_dir(dir, config.model_type()).map_err(|e| CliError::model_files(dir, e))
}

/// The batch `input` describes, checked against `config` (vocabulary,
/// context window, equal row lengths); a prompt is tokenized with the
/// tokenizer of the folder `dir`.
pub fn batch(input: &InputArgs, dir: &Path, config: &AnyConfig) -> Result<TokenBatch, CliError> {
    let dims = config.dims();
    let rows = match &input.prompt {
        Some(text) => vec![prompt_tokens(&tokenizer(dir, config)?, text, &dims)?],
        None => input
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| parse_row(i, t))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if let Some(first) = rows.first()
        && let Some((i, row)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != first.len())
    {
        return Err(CliError::Input(format!(
            "--tokens rows must have equal lengths: row 0 has {} tokens, row {i} has {}",
            first.len(),
            row.len()
        )));
    }
    let batch = TokenBatch::new(rows)?;
    batch.check(&dims, 0)?;
    Ok(batch)
}

/// Tokenizes a prompt; an empty prompt, or a token outside the model's
/// vocabulary (a small model holds only the first GPT-2 ids), is an error
/// naming the token.
pub fn prompt_tokens(
    tokenizer: &Tokenizer,
    text: &str,
    dims: &ModelDims,
) -> Result<Vec<u32>, CliError> {
    let tokens = tokenizer.encode(text)?;
    if tokens.is_empty() {
        return Err(CliError::Input("the prompt is empty".into()));
    }
    if let Some((position, &token)) = tokens
        .iter()
        .enumerate()
        .find(|(_, t)| **t as usize >= dims.vocab_size)
    {
        let piece = tokenizer.decode(&[token]).unwrap_or_else(|_| "?".into());
        return Err(CliError::Input(format!(
            "prompt token {token} ({piece:?}) at position {position} is outside the model's \
             vocabulary (size {}); the prompt tokenizes to {tokens:?}",
            dims.vocab_size
        )));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows() {
        assert_eq!(parse_row(0, "464, 3290,318").unwrap(), [464, 3290, 318]);
        assert!(parse_row(0, "").unwrap_err().to_string().contains("empty"));
        let err = parse_row(1, "1,x").unwrap_err().to_string();
        assert!(err.contains("`x`") && err.contains("row 1"), "{err}");
        assert!(parse_row(0, "-1").is_err());
    }

    #[test]
    fn lossy() {
        let tok = Tokenizer::gpt2();
        // id 94 is the single byte 0xA1: not UTF-8 on its own.
        assert_eq!(tok.decode_lossy(&[64, 94]), "a\u{FFFD}");
        assert_eq!(tok.decode_lossy(&[64, 60000]), "a<|60000|>");
    }
}
