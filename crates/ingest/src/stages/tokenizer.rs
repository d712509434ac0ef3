//! `ingest.tokenizer`: a byte-level BPE tokenizer trained on a
//! `pretrain_text` table, or a user's `tokenizer.json` checked and copied;
//! written as `model/tokenizer.json` (Hugging Face format) with
//! `model/special_tokens.json` naming the token each special role uses.
//!
//! Training is deterministic: the trainer breaks ties between equally
//! frequent pairs by token id, and ids of the initial alphabet are assigned
//! in sorted order, so the same text gives the same `tokenizer.json` bytes
//! (checked by a test).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use lineage::tables::{PRETRAIN_TEXT, PretrainTextRow};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::load_tokenizer;
use crate::common::{ASSISTANT_TOKEN, END_OF_TEXT, PAD_TOKEN, USER_TOKEN};

pub struct TokenizerStage;

/// Parameters of `ingest.tokenizer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerParams {
    /// The vocabulary size to train to (the 256 byte symbols and the special tokens included).
    pub vocab_size: usize,
    /// Pairs seen fewer times are never merged.
    pub min_frequency: u64,
    /// Special tokens, added first (ids 0, 1, ...).
    pub special_tokens: Vec<String>,
    /// A user's `tokenizer.json` to check and copy instead of training (`""`: train).
    pub path: String,
    /// For a user's tokenizer: our special token -> the token it uses instead,
    /// e.g. `{ "<|endoftext|>" = "</s>" }`.
    pub map_special_tokens: BTreeMap<String, String>,
    /// For a user's tokenizer: add the special tokens it lacks (the model's
    /// embedding matrix must then grow) instead of failing.
    pub add_missing_special_tokens: bool,
}

impl Default for TokenizerParams {
    fn default() -> Self {
        TokenizerParams {
            vocab_size: 2048,
            min_frequency: 2,
            special_tokens: [END_OF_TEXT, USER_TOKEN, ASSISTANT_TOKEN, PAD_TOKEN].map(String::from).to_vec(),
            path: String::new(),
            map_special_tokens: BTreeMap::new(),
            add_missing_special_tokens: false,
        }
    }
}

impl Validate for TokenizerParams {
    fn validate(&self) -> Result<(), String> {
        let unique: HashSet<&String> = self.special_tokens.iter().collect();
        if unique.len() != self.special_tokens.len() || self.special_tokens.iter().any(String::is_empty) {
            return Err("special_tokens must be distinct and non-empty".into());
        }
        let min = 256 + self.special_tokens.len();
        if self.path.is_empty() && self.vocab_size < min {
            return Err(format!(
                "vocab_size = {} is below the 256 byte symbols plus {} special tokens; use at least {min}",
                self.vocab_size,
                self.special_tokens.len()
            ));
        }
        if let Some(k) = self.map_special_tokens.keys().find(|k| !self.special_tokens.contains(k)) {
            return Err(format!("map_special_tokens maps `{k}`, which is not in special_tokens"));
        }
        if self.path.is_empty() && (!self.map_special_tokens.is_empty() || self.add_missing_special_tokens) {
            return Err("map_special_tokens and add_missing_special_tokens apply to a user's tokenizer (`path`)".into());
        }
        Ok(())
    }
}

impl TypedStage for TokenizerStage {
    type Params = TokenizerParams;
    const NAME: &'static str = "ingest.tokenizer";
    const ABOUT: &'static str = "Trains a byte-level BPE tokenizer on pretraining text (or checks a user's tokenizer.json) -> model/tokenizer.json.";
    const INPUTS: &'static [InputSpec] = &[InputSpec::optional(
        "text",
        "A pretrain_text table to train on (and to measure compression on); needed unless `path` is set.",
    )];
    const OUTPUTS: &'static [TableSpec] = &[];
    const HEADLINE: Option<&'static str> = Some("chars_per_token");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }
    fn file_deps(p: &TokenizerParams) -> Vec<PathBuf> {
        if p.path.is_empty() { Vec::new() } else { vec![PathBuf::from(&p.path)] }
    }
    fn run(ctx: &mut StageContext, p: &TokenizerParams) -> Result<()> {
        let docs: Option<Vec<PretrainTextRow>> = match ctx.optional_input("text") {
            Some(input) => Some(input.read_rows(&PRETRAIN_TEXT).context("reading input `text`")?),
            None => None,
        };
        let (tokenizer, json_text, roles) = if p.path.is_empty() {
            let Some(docs) = &docs else {
                bail!(
                    "ingest.tokenizer trains on input `text` (a pretrain_text table), or set `path` to a tokenizer.json"
                );
            };
            let tokenizer = train(docs, p)?;
            let json_text = tokenizer.to_string(false).map_err(|e| anyhow!("serialising the tokenizer: {e}"))?;
            let roles = p.special_tokens.iter().map(|s| (s.clone(), s.clone())).collect();
            (tokenizer, json_text, roles)
        } else {
            user_tokenizer(ctx, p)?
        };
        std::fs::write(ctx.out_path("model/tokenizer.json")?, &json_text)?;
        let specials: BTreeMap<&String, serde_json::Value> = roles
            .iter()
            .map(|(ours, theirs): (&String, &String)| {
                (ours, json!({ "token": theirs, "id": tokenizer.token_to_id(theirs) }))
            })
            .collect();
        std::fs::write(ctx.out_path("model/special_tokens.json")?, serde_json::to_string_pretty(&specials)? + "\n")?;
        ctx.stat("special_tokens", json!(specials));

        ctx.metric("vocab_size", tokenizer.get_vocab_size(true) as f64);
        if let Some(docs) = &docs {
            // Measure on held-out documents when there are any.
            let held_out: Vec<&PretrainTextRow> = docs.iter().filter(|d| d.split == "validation").collect();
            let measured: Vec<&PretrainTextRow> = if held_out.is_empty() { docs.iter().collect() } else { held_out };
            let mut tokens = 0usize;
            let mut chars = 0usize;
            for d in &measured {
                let enc =
                    tokenizer.encode(d.text.as_str(), false).map_err(|e| anyhow!("encoding {}: {e}", d.doc_id))?;
                tokens += enc.len();
                chars += d.text.chars().count();
            }
            let n = measured.len().max(1) as f64;
            ctx.metric("documents_measured", measured.len() as f64);
            ctx.metric("mean_tokens_per_doc", tokens as f64 / n);
            ctx.metric("chars_per_token", if tokens == 0 { 0.0 } else { chars as f64 / tokens as f64 });
        }
        Ok(())
    }
}

/// Trains on the training documents (all of them when none is marked `train`).
fn train(docs: &[PretrainTextRow], p: &TokenizerParams) -> Result<Tokenizer> {
    let train_docs: Vec<&str> = docs.iter().filter(|d| d.split == "train").map(|d| d.text.as_str()).collect();
    let texts: Vec<&str> =
        if train_docs.is_empty() { docs.iter().map(|d| d.text.as_str()).collect() } else { train_docs };
    if texts.is_empty() {
        bail!("input `text` has no documents to train a tokenizer on");
    }
    let byte_level = ByteLevel::new(false, true, true);
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainer::builder()
            .vocab_size(p.vocab_size)
            .min_frequency(p.min_frequency)
            .show_progress(false)
            .special_tokens(p.special_tokens.iter().map(|s| AddedToken::from(s.clone(), true)).collect())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    let mut tokenizer = Tokenizer::new(ModelWrapper::BPE(BPE::default()));
    tokenizer.with_pre_tokenizer(Some(byte_level)).with_post_processor(Some(byte_level)).with_decoder(Some(byte_level));
    tokenizer.train(&mut trainer, texts.into_iter()).map_err(|e| anyhow!("training the tokenizer: {e}"))?;
    Ok(tokenizer)
}

/// A user's tokenizer: loads, has (or maps, or gains) the special tokens.
fn user_tokenizer(
    ctx: &mut StageContext,
    p: &TokenizerParams,
) -> Result<(Tokenizer, String, BTreeMap<String, String>)> {
    let path = std::path::Path::new(&p.path);
    let original = std::fs::read_to_string(path).with_context(|| format!("reading {}", p.path))?;
    let mut tokenizer = load_tokenizer(path)?;
    let mut roles = BTreeMap::new();
    let mut missing = Vec::new();
    for ours in &p.special_tokens {
        let theirs = p.map_special_tokens.get(ours).unwrap_or(ours);
        if tokenizer.token_to_id(theirs).is_some() {
            roles.insert(ours.clone(), theirs.clone());
        } else {
            missing.push((ours.clone(), theirs.clone()));
        }
    }
    if missing.is_empty() {
        return Ok((tokenizer, original, roles));
    }
    if !p.add_missing_special_tokens {
        bail!(
            "{}: the tokenizer has no token {}; map them to tokens it has, e.g. map_special_tokens = {{ \"{}\" = \"</s>\" }}, \
             or set add_missing_special_tokens = true to add them (the base model's embeddings must then grow)",
            p.path,
            missing.iter().map(|(_, t)| format!("`{t}`")).collect::<Vec<_>>().join(", "),
            missing[0].0
        );
    }
    let added: Vec<AddedToken> = missing.iter().map(|(ours, _)| AddedToken::from(ours.clone(), true)).collect();
    tokenizer.add_special_tokens(added).map_err(|e| anyhow!("adding special tokens: {e}"))?;
    for (ours, _) in &missing {
        roles.insert(ours.clone(), ours.clone());
    }
    ctx.warn(format!(
        "added {} special token(s) to {} ({}): the vocabulary is now {}, so a base model's embeddings must grow to match",
        missing.len(),
        p.path,
        missing.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>().join(", "),
        tokenizer.get_vocab_size(true)
    ));
    let json_text = tokenizer.to_string(false).map_err(|e| anyhow!("serialising the tokenizer: {e}"))?;
    Ok((tokenizer, json_text, roles))
}
