//! GPT-2's byte-pair encoding, from tiktoken's bundled `r50k_base` ranks (no
//! download).

use tiktoken_rs::CoreBPE;

use crate::ModelError;

/// GPT-2's tokenizer.
pub struct Tokenizer {
    bpe: CoreBPE,
}

impl Tokenizer {
    /// Builds the tokenizer from the bundled ranks.
    pub fn gpt2() -> Self {
        Tokenizer {
            bpe: tiktoken_rs::r50k_base().expect("the bundled r50k_base ranks parse"),
        }
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }

    /// Text of `tokens`; ids outside GPT-2's vocabulary are an error.
    pub fn decode(&self, tokens: &[u32]) -> Result<String, ModelError> {
        if let Some((position, &token)) = tokens.iter().enumerate().find(|(_, t)| **t >= 50257) {
            return Err(ModelError::TokenOutOfRange {
                token,
                row: 0,
                position,
                vocab_size: 50257,
            });
        }
        self.bpe
            .decode(tokens.to_vec())
            .map_err(|e| ModelError::BadBatch(format!("cannot decode tokens: {e}")))
    }
}

impl Default for Tokenizer {
    fn default() -> Self {
        Self::gpt2()
    }
}
