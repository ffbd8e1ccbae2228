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

impl Tokenizer {
    /// Text of `tokens`; never fails: bytes that do not form UTF-8 (a sampled
    /// token can end in the middle of a character) become U+FFFD, and ids
    /// beyond GPT-2's vocabulary print as `<|id|>`.
    pub fn decode_lossy(&self, tokens: &[u32]) -> String {
        if let Ok(text) = self.decode(tokens) {
            return text;
        }
        let mut bytes = Vec::new();
        for &t in tokens {
            if t < 50257 {
                bytes.extend(self.bpe._decode_native_and_split(vec![t]).flatten());
            } else {
                bytes.extend(format!("<|{t}|>").into_bytes());
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Default for Tokenizer {
    fn default() -> Self {
        Self::gpt2()
    }
}
