//! The tokenizer and THE instruction format.
//!
//! Every stage (SFT, RM, rollouts, PPO, eval) turns a (prompt, response) pair into token ids through
//! [`InstructionFormat`], and only there: `user_prefix + prompt + assistant_prefix` is the prompt a
//! policy answers, and `response + eos` is what it is trained to produce. The prompt and the
//! response are tokenized separately, so the boundary between them is a token boundary and the ids a
//! policy generates after the prompt are exactly the ids training scores. A model directory carries
//! its format in `instruction_format.json`, so a model saved with one template is never prompted
//! with another.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::fsutil;

/// File name of the tokenizer in a model directory (the HF name).
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// File name of the instruction format in a model directory (ours).
pub const FORMAT_FILE: &str = "instruction_format.json";

/// A `tokenizer.json` tokenizer (any model the `tokenizers` crate reads).
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({} tokens)", self.vocab_size())
    }
}

fn tok_err(what: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(format!("{what}: {e}"))
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| tok_err(&format!("cannot load {}", path.display()), e))?;
        Ok(Tokenizer { inner })
    }

    pub fn from_json(json: &str) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes()).map_err(|e| tok_err("cannot parse", e))?;
        Ok(Tokenizer { inner })
    }

    pub fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        Tokenizer { inner }
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| tok_err("cannot serialise", e))
    }

    /// Writes `tokenizer.json` into `dir` atomically.
    pub fn save_to_dir(&self, dir: &Path) -> Result<()> {
        fsutil::write_atomic(&dir.join(TOKENIZER_FILE), self.to_json()?.as_bytes())
    }

    /// Number of tokens including added (special) tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids of `text`; special tokens written in the text (e.g. `<|user|>`) become their ids, and no
    /// template tokens (BOS, ...) are added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| tok_err("cannot encode", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; special tokens are dropped when `skip_special` is set.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| tok_err("cannot decode", e))
    }
}

/// How a prompt and its response are laid out as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionFormat {
    /// Text before the prompt.
    pub user_prefix: String,
    /// Text between the prompt and the response: the cue to answer.
    pub assistant_prefix: String,
    /// The token that ends a response; generation stops when it is sampled.
    pub eos_token: String,
}

impl Default for InstructionFormat {
    /// The format of our own tokenizers (see [`SPECIAL_TOKENS`]).
    fn default() -> Self {
        InstructionFormat {
            user_prefix: USER.to_string(),
            assistant_prefix: ASSISTANT.to_string(),
            eos_token: EOS.to_string(),
        }
    }
}

/// Our special tokens: end of text (also the padding id), user turn, assistant turn.
pub const EOS: &str = "<|endoftext|>";
pub const USER: &str = "<|user|>";
pub const ASSISTANT: &str = "<|assistant|>";
pub const SPECIAL_TOKENS: [&str; 3] = [EOS, USER, ASSISTANT];

/// A prompt and response as token ids: `prompt` ends with the assistant prefix, `response` ends with
/// the end-of-sequence id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedPair {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
}

impl EncodedPair {
    /// `prompt ++ response`.
    pub fn ids(&self) -> Vec<u32> {
        let mut v = self.prompt.clone();
        v.extend_from_slice(&self.response);
        v
    }

    /// 1 on response tokens (EOS included), 0 on the prompt: the tokens that carry the SFT loss.
    pub fn loss_mask(&self) -> Vec<u8> {
        let mut m = vec![0u8; self.prompt.len()];
        m.resize(self.prompt.len() + self.response.len(), 1);
        m
    }

    pub fn len(&self) -> usize {
        self.prompt.len() + self.response.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fits the pair into `max_len` tokens: keeps at most `max_prompt` prompt tokens (the end of the
    /// prompt, which holds the question and the assistant cue), then cuts the response. A cut
    /// response loses its EOS, which is what the model should learn for a truncated answer.
    pub fn truncate(&mut self, max_prompt: usize, max_len: usize) {
        if self.prompt.len() > max_prompt {
            self.prompt.drain(..self.prompt.len() - max_prompt);
        }
        let room = max_len.saturating_sub(self.prompt.len());
        self.response.truncate(room);
    }
}

impl InstructionFormat {
    /// Reads `instruction_format.json` from a model directory, if there is one.
    pub fn load_from_dir(dir: &Path) -> Result<Option<Self>> {
        let p = dir.join(FORMAT_FILE);
        if p.exists() { Ok(Some(fsutil::read_json(&p)?)) } else { Ok(None) }
    }

    pub fn save_to_dir(&self, dir: &Path) -> Result<()> {
        fsutil::write_json(&dir.join(FORMAT_FILE), self)
    }

    /// The prompt text a policy is asked to answer.
    pub fn prompt_text(&self, prompt: &str) -> String {
        format!("{}{}{}", self.user_prefix, prompt, self.assistant_prefix)
    }

    /// The end-of-sequence id; an error if the tokenizer lacks the token.
    pub fn eos_id(&self, tok: &Tokenizer) -> Result<u32> {
        tok.token_id(&self.eos_token).ok_or_else(|| {
            ModelError::Tokenizer(format!(
                "the tokenizer has no token {:?}: add it as a special token or change the instruction format",
                self.eos_token
            ))
        })
    }

    /// Checks that the tokenizer knows the EOS token.
    pub fn validate(&self, tok: &Tokenizer) -> Result<()> {
        self.eos_id(tok).map(|_| ())
    }

    /// Ids of the prompt for generation (ends with the assistant prefix).
    pub fn encode_prompt(&self, tok: &Tokenizer, prompt: &str) -> Result<Vec<u32>> {
        tok.encode(&self.prompt_text(prompt))
    }

    /// Ids of a (prompt, response) pair for training: the response is tokenized on its own and
    /// followed by EOS.
    pub fn encode_pair(&self, tok: &Tokenizer, prompt: &str, response: &str) -> Result<EncodedPair> {
        let prompt = self.encode_prompt(tok, prompt)?;
        let mut resp = tok.encode(response)?;
        resp.push(self.eos_id(tok)?);
        Ok(EncodedPair { prompt, response: resp })
    }

    /// Text of generated response ids, up to (not including) the first EOS.
    pub fn decode_response(&self, tok: &Tokenizer, ids: &[u32]) -> Result<String> {
        let eos = self.eos_id(tok)?;
        let end = ids.iter().position(|&t| t == eos).unwrap_or(ids.len());
        tok.decode(&ids[..end], true)
    }
}

/// Builds a small byte-level BPE tokenizer from `texts`, with our [`SPECIAL_TOKENS`] first (ids 0,
/// 1, 2). Byte-level means every string is encodable, whatever the training texts were. Meant for
/// tests and tiny experiments; the pipeline trains its tokenizer in the ingest stage.
pub fn train_byte_level_bpe(texts: &[&str], vocab_size: usize) -> Result<Tokenizer> {
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::normalizers::NormalizerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, TokenizerBuilder};

    let specials: Vec<AddedToken> = SPECIAL_TOKENS.iter().map(|s| AddedToken::from(s.to_string(), true)).collect();
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(0)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect::<HashSet<char>>())
        .special_tokens(specials)
        .build();
    let mut tk = TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
        .with_model(BPE::default())
        .with_normalizer(None)
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_post_processor(Some(ByteLevel::default().trim_offsets(false)))
        .with_decoder(Some(ByteLevel::default()))
        .build()
        .map_err(|e| tok_err("cannot build", e))?;
    tk.train(&mut trainer, texts.iter()).map_err(|e| tok_err("cannot train", e))?;
    let json = tk.to_string(false).map_err(|e| tok_err("cannot serialise", e))?;
    Tokenizer::from_json(&json)
}
