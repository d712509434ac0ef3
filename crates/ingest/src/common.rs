//! Small pieces every stage shares: parameter types, ids, text normalisation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The chat markers a multi-turn prompt is rendered with (see [`crate::formats`]).
pub const USER_TOKEN: &str = "<|user|>";
pub const ASSISTANT_TOKEN: &str = "<|assistant|>";
pub const END_OF_TEXT: &str = "<|endoftext|>";
pub const PAD_TOKEN: &str = "<|pad|>";

/// The datasets a prompt can belong to.
pub const DATASETS: &[&str] = &["sft", "rm", "ppo", "eval"];
/// The splits of the prompts table.
pub const SPLITS: &[&str] = &["train", "validation", "test"];

/// One file, or a list of files, as a parameter: `path = "a.jsonl"` or
/// `path = ["a.jsonl", "b.jsonl"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Paths {
    One(String),
    Many(Vec<String>),
}

impl Default for Paths {
    fn default() -> Self {
        Paths::One(String::new())
    }
}

impl Paths {
    pub fn list(&self) -> Vec<String> {
        match self {
            Paths::One(p) if p.is_empty() => Vec::new(),
            Paths::One(p) => vec![p.clone()],
            Paths::Many(ps) => ps.clone(),
        }
    }

    pub fn path_bufs(&self) -> Vec<PathBuf> {
        self.list().into_iter().map(PathBuf::from).collect()
    }

    pub fn check(&self) -> Result<(), String> {
        if self.list().is_empty() {
            return Err("`path` is required: the file (or list of files) to read".into());
        }
        if self.list().iter().any(String::is_empty) {
            return Err("`path` has an empty file name".into());
        }
        Ok(())
    }
}

/// How the rows of a file are laid out. `auto` decides from the file's
/// extension and column names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Auto,
    /// A `prompt` column only.
    Prompt,
    /// `prompt` and `completion` (or `response`).
    PromptCompletion,
    /// `instruction`, optional `input`, `output` (Stanford Alpaca).
    Alpaca,
    /// `messages`: a list of `{role, content}` (also ShareGPT's `conversations` of `{from, value}`).
    Messages,
    /// TRL's standard preference form: `prompt`, `chosen`, `rejected` as text.
    Pairs,
    /// TRL's conversational preference form: `chosen`, `rejected` (and optionally `prompt`) as message lists.
    PairsConversational,
    /// Anthropic HH-RLHF: `chosen`, `rejected` as full `\n\nHuman: ... \n\nAssistant: ...` transcripts.
    HhRlhf,
    /// K-way rankings: `prompt`, `responses` (list), `ranks` (list, 1 = best).
    Rankings,
    /// Documents: a `text` column, or a `.txt` file of blank-line-separated blocks.
    Text,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Prompt => "prompt",
            Format::PromptCompletion => "prompt_completion",
            Format::Alpaca => "alpaca",
            Format::Messages => "messages",
            Format::Pairs => "pairs",
            Format::PairsConversational => "pairs_conversational",
            Format::HhRlhf => "hh_rlhf",
            Format::Rankings => "rankings",
            Format::Text => "text",
        }
    }
}

/// Where a row's user id comes from when it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingUser {
    /// The file is one user (`file:<name>`): its rows never straddle splits.
    #[default]
    File,
    /// Each prompt is its own user: splits are by prompt.
    Row,
}

/// The canonical column names a `columns = { canonical = "theirs" }` mapping may name.
pub const CANONICAL_COLUMNS: &[&str] = &[
    "prompt",
    "completion",
    "instruction",
    "input",
    "output",
    "messages",
    "chosen",
    "rejected",
    "responses",
    "ranks",
    "labeler_id",
    "user_id",
    "dataset",
    "text",
    "kind",
    "family",
    "task_id",
];

/// Checks a column mapping's keys.
pub fn check_columns(columns: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in columns {
        if !CANONICAL_COLUMNS.contains(&k.as_str()) {
            return Err(format!(
                "columns: `{k}` is not a column this stage knows; map one of {} to your column names, e.g. columns = {{ prompt = \"question\" }}",
                CANONICAL_COLUMNS.join(", ")
            ));
        }
        if v.is_empty() {
            return Err(format!("columns: `{k}` maps to an empty column name"));
        }
    }
    Ok(())
}

pub fn check_fraction(name: &str, v: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&v) || v.is_nan() {
        return Err(format!("{name} = {v} is not a fraction between 0 and 1"));
    }
    Ok(())
}

pub fn check_dataset(v: &str) -> Result<(), String> {
    if !v.is_empty() && !DATASETS.contains(&v) {
        return Err(format!("dataset = \"{v}\" is not one of {}", DATASETS.join(", ")));
    }
    Ok(())
}

pub fn check_split(v: &str) -> Result<(), String> {
    if !v.is_empty() && !SPLITS.contains(&v) {
        return Err(format!("split = \"{v}\" is not one of {} (or \"\" to split by user id)", SPLITS.join(", ")));
    }
    Ok(())
}

/// A short stable id: `prefix` + 16 hex digits of blake3 over the parts.
pub fn stable_id(prefix: &str, parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    format!("{prefix}{}", &h.finalize().to_hex()[..16])
}

/// A number in [0, 1) from a seed and a string (splits, caps, shuffles).
pub fn unit_hash(seed: u64, purpose: &str, s: &str) -> f64 {
    let h = blake3::hash(format!("{seed}\u{0}{purpose}\u{0}{s}").as_bytes());
    let x = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The text as duplicates are compared: lower case, whitespace runs collapsed, trimmed.
pub fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_collapses_case_and_space() {
        assert_eq!(normalize("  Hello\n\tWORLD  again "), "hello world again");
    }

    #[test]
    fn unit_hash_is_stable_and_in_range() {
        let a = unit_hash(1, "split", "u1");
        assert_eq!(a, unit_hash(1, "split", "u1"));
        assert_ne!(a, unit_hash(2, "split", "u1"));
        assert!((0.0..1.0).contains(&a));
    }

    #[test]
    fn paths_accept_one_or_many() {
        let one: Paths = serde_json::from_value(serde_json::json!("a.jsonl")).unwrap();
        let many: Paths = serde_json::from_value(serde_json::json!(["a", "b"])).unwrap();
        assert_eq!(one.list(), vec!["a.jsonl"]);
        assert_eq!(many.list(), vec!["a", "b"]);
        assert!(Paths::default().check().is_err());
    }
}
