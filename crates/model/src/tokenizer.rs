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

    /// Loads `tokenizer.json` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.exists() {
            return Err(ModelError::checkpoint(dir, "no tokenizer.json in this directory"));
        }
        Self::from_file(&path)
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

    /// Where `self` and `other` map tokens to ids differently, the first such token in `self`'s id
    /// order, then any token only `other` has (`None` when they agree on every token, special
    /// tokens included). A model that reads one's ids reads the other's the same way only when this
    /// is `None`: an equal vocabulary size is not enough.
    pub fn id_mismatch(&self, other: &Tokenizer) -> Option<String> {
        let (ours, theirs) = (self.inner.get_vocab(true), other.inner.get_vocab(true));
        if ours == theirs {
            return None;
        }
        let mut differ: Vec<(u32, &String)> =
            ours.iter().filter(|&(t, id)| theirs.get(t) != Some(id)).map(|(t, &id)| (id, t)).collect();
        differ.sort();
        if let Some(&(id, t)) = differ.first() {
            let there = theirs.get(t).map_or("absent".to_string(), |o| format!("id {o}"));
            return Some(format!("token {t:?} is id {id} in this one, {there} in the other"));
        }
        // Every token of ours has the same id there: the other has tokens we lack.
        let (id, t) = theirs.iter().filter(|&(t, _)| !ours.contains_key(t)).map(|(t, &id)| (id, t)).min()?;
        Some(format!("token {t:?} is absent from this one, id {id} in the other"))
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

    /// Documents as one token stream, each followed by `eos` (how pretraining
    /// and held-out perplexity see text). Encodes in parallel; the result
    /// does not depend on the thread count.
    pub fn encode_documents(&self, texts: &[&str], eos: u32) -> Result<Vec<u32>> {
        let encodings = self.inner.encode_batch(texts.to_vec(), false).map_err(|e| tok_err("cannot encode", e))?;
        let mut out = Vec::with_capacity(encodings.iter().map(|e| e.len() + 1).sum());
        for e in &encodings {
            out.extend_from_slice(e.get_ids());
            out.push(eos);
        }
        Ok(out)
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
/// 1, 2). Byte-level means every string is encodable, whatever the training texts were.
pub fn train_byte_level_bpe(texts: &[&str], vocab_size: usize) -> Result<Tokenizer> {
    train_bpe(texts.iter(), vocab_size, &SPECIAL_TOKENS, 0)
}

/// Trains a byte-level BPE tokenizer (the `tokenizer.json` the pipeline uses) on `texts`.
///
/// `special_tokens` get the first ids, in order, and are never split (pass [`SPECIAL_TOKENS`], or
/// a list that contains them, so the instruction format works). `vocab_size` counts them and the
/// 256 byte symbols; merges with fewer than `min_frequency` occurrences are not learned. Training
/// is deterministic: the same texts give the same `tokenizer.json`.
pub fn train_bpe<I, S>(texts: I, vocab_size: usize, special_tokens: &[&str], min_frequency: u64) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::normalizers::NormalizerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, TokenizerBuilder};

    if vocab_size < 256 + special_tokens.len() {
        return Err(ModelError::Config(format!(
            "vocab_size {vocab_size} is too small: a byte-level BPE needs 256 byte tokens plus {} special tokens",
            special_tokens.len()
        )));
    }
    let specials: Vec<AddedToken> = special_tokens.iter().map(|s| AddedToken::from(s.to_string(), true)).collect();
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(min_frequency)
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
    tk.train(&mut trainer, texts).map_err(|e| tok_err("cannot train", e))?;
    let json = tk.to_string(false).map_err(|e| tok_err("cannot serialise", e))?;
    Tokenizer::from_json(&json)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXTS: [&str; 4] = [
        "how many legs does the dog have? the dog has four legs.",
        "how many legs does the bird have? the bird has two legs.",
        "name three colours: red, green and blue.",
        "the cat sat on the mat. the dog sat on the log.",
    ];

    #[test]
    fn special_tokens_come_first_and_stay_whole() {
        let tok = train_byte_level_bpe(&TEXTS, 300).unwrap();
        for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(tok.token_id(s), Some(i as u32));
        }
        let ids = tok.encode("<|user|>hi<|assistant|>").unwrap();
        assert_eq!(ids.first(), Some(&1));
        assert!(ids.contains(&2));
        assert!(tok.vocab_size() <= 300);
    }

    #[test]
    fn id_mismatch_finds_the_first_token_two_tokenizers_number_differently() {
        let a = train_byte_level_bpe(&TEXTS, 300).unwrap();
        assert_eq!(a.id_mismatch(&Tokenizer::from_json(&a.to_json().unwrap()).unwrap()), None);
        // Merges learnt from other text: the special tokens and bytes agree, the merges do not.
        let other = ["zebras quietly juggle vivid pixels; zebras juggle again and again."; 4];
        let b = train_byte_level_bpe(&other, 300).unwrap();
        let d = a.id_mismatch(&b).expect("different merges");
        assert!(d.contains(" in this one, ") && d.contains(" in the other"), "{d}");
        assert!(b.id_mismatch(&a).is_some());
        for s in SPECIAL_TOKENS {
            assert_eq!(a.token_id(s), b.token_id(s));
        }
    }

    #[test]
    fn training_is_deterministic_and_text_round_trips() {
        let a = train_byte_level_bpe(&TEXTS, 300).unwrap();
        let b = train_byte_level_bpe(&TEXTS, 300).unwrap();
        assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
        for text in ["the dog has four legs.", "Unseen wörds — and ünïcode ✓ 12", "  two  spaces\nnewline"] {
            let ids = a.encode(text).unwrap();
            assert_eq!(a.decode(&ids, false).unwrap(), text);
        }
    }

    #[test]
    fn the_instruction_format_masks_the_prompt_and_ends_with_eos() {
        let tok = train_byte_level_bpe(&TEXTS, 300).unwrap();
        let fmt = InstructionFormat::default();
        let pair = fmt.encode_pair(&tok, "how many legs?", "four legs.").unwrap();
        let eos = fmt.eos_id(&tok).unwrap();
        assert_eq!(pair.prompt, fmt.encode_prompt(&tok, "how many legs?").unwrap());
        assert_eq!(*pair.response.last().unwrap(), eos);
        let mask = pair.loss_mask();
        assert_eq!(mask.iter().filter(|&&m| m == 1).count(), pair.response.len());
        assert!(mask[..pair.prompt.len()].iter().all(|&m| m == 0));
        assert_eq!(fmt.decode_response(&tok, &pair.response).unwrap(), "four legs.");
        assert_eq!(
            tok.decode(&pair.ids(), false).unwrap(),
            "<|user|>how many legs?<|assistant|>four legs.<|endoftext|>"
        );
    }

    #[test]
    fn tokenizer_and_format_round_trip_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let tok = train_byte_level_bpe(&TEXTS, 280).unwrap();
        tok.save_to_dir(dir.path()).unwrap();
        let fmt =
            InstructionFormat { user_prefix: "Q: ".into(), assistant_prefix: "\nA: ".into(), eos_token: EOS.into() };
        fmt.save_to_dir(dir.path()).unwrap();
        let tok2 = Tokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok2.to_json().unwrap(), tok.to_json().unwrap());
        assert_eq!(InstructionFormat::load_from_dir(dir.path()).unwrap(), Some(fmt));
        assert!(train_bpe(TEXTS.iter(), 100, &SPECIAL_TOKENS, 0).is_err());
    }
}
