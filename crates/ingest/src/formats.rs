//! What the columns of a row mean: format detection, column mapping, and the
//! conversion of one row into an [`Example`] (a prompt, its user, and a
//! demonstration or a ranking) or a document.
//!
//! Message lists and transcripts are read in [`crate::chat`], single fields
//! in [`crate::fields`].

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use serde_json::{Map, Value};

use crate::chat::{Role, Turn, hh_turns, prompt_field, render, response_field, turns};
use crate::common::{DATASETS, Format, MissingUser, normalize, stable_id};
use crate::fields::{Row, opt_id, opt_text, rank_list, string_list, text};
use crate::quarantine::{Origin, RowError};
use crate::read::{Container, Record};

/// How to read one file: where it is, its format and column names, and
/// where user ids come from.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: String,
    pub format: Format,
    /// canonical column -> the file's column.
    pub columns: BTreeMap<String, String>,
    /// The column holding user ids (`""`: `user_id`, else `user`).
    pub user_column: String,
    pub missing_user: MissingUser,
}

/// A prompt with what came with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub origin: Origin,
    pub prompt: String,
    pub user_id: String,
    /// The row's own `dataset` column, if it has one.
    pub dataset: Option<String>,
    /// The row's task family (use case), if it has a `family` column.
    pub family: Option<String>,
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A prompt alone.
    Prompt,
    Demonstration {
        response: String,
        labeler_id: String,
    },
    /// K responses and their ranks (1 = best; ties share a rank).
    Ranking {
        responses: Vec<String>,
        ranks: Vec<i32>,
        labeler_id: String,
    },
}

impl Payload {
    /// The responses, for length limits and PII scrubbing.
    pub fn responses_mut(&mut self) -> Vec<&mut String> {
        match self {
            Payload::Prompt => Vec::new(),
            Payload::Demonstration { response, .. } => vec![response],
            Payload::Ranking { responses, .. } => responses.iter_mut().collect(),
        }
    }

    pub fn responses(&self) -> Vec<&str> {
        match self {
            Payload::Prompt => Vec::new(),
            Payload::Demonstration { response, .. } => vec![response.as_str()],
            Payload::Ranking { responses, .. } => responses.iter().map(String::as_str).collect(),
        }
    }

    /// Two rows of one prompt with equal keys are duplicates.
    pub fn dedup_key(&self) -> String {
        match self {
            Payload::Prompt => String::new(),
            Payload::Demonstration { response, .. } => normalize(response),
            Payload::Ranking { responses, ranks, labeler_id } => {
                let mut s = labeler_id.clone();
                for (r, k) in responses.iter().zip(ranks) {
                    s.push_str(&format!("\u{0}{k}\u{0}{}", normalize(r)));
                }
                s
            }
        }
    }
}

/// A pretraining document.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub origin: Origin,
    pub text: String,
    pub kind: Option<String>,
}

/// What a stage reads, for detection and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Prompts,
    Demonstrations,
    Preferences,
    Text,
}

impl Want {
    pub fn accepts(self) -> &'static [Format] {
        use Format::*;
        match self {
            Want::Prompts => {
                &[Prompt, PromptCompletion, Alpaca, Messages, Pairs, PairsConversational, HhRlhf, Rankings]
            }
            Want::Demonstrations => &[PromptCompletion, Alpaca, Messages],
            Want::Preferences => &[Pairs, PairsConversational, HhRlhf, Rankings],
            Want::Text => &[Text],
        }
    }

    fn stage(self) -> &'static str {
        match self {
            Want::Prompts => "ingest.prompts",
            Want::Demonstrations => "ingest.demonstrations",
            Want::Preferences => "ingest.preferences",
            Want::Text => "ingest.text",
        }
    }
}

/// Applies the column mapping and the usual aliases to every record, so
/// later code sees canonical names only.
pub fn prepare(records: &mut [Record], src: &Source) -> Result<()> {
    let present: BTreeSet<String> = records.iter().flat_map(|r| r.fields.keys().cloned()).collect();
    let mut mapping: Vec<(String, String)> = Vec::new();
    for (canonical, theirs) in &src.columns {
        if !present.contains(theirs) {
            bail!(
                "{}: columns maps `{canonical}` to `{theirs}`, but the file has no column `{theirs}`; its columns: {}",
                src.path,
                present.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        mapping.push((canonical.clone(), theirs.clone()));
    }
    if !src.user_column.is_empty() {
        if !present.contains(&src.user_column) {
            bail!(
                "{}: user_column = \"{}\", but the file has no such column; its columns: {}",
                src.path,
                src.user_column,
                present.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        mapping.push(("user_id".into(), src.user_column.clone()));
    }
    const ALIASES: &[(&str, &[&str])] = &[
        ("completion", &["response"]),
        ("messages", &["conversations", "conversation"]),
        ("labeler_id", &["labeler", "annotator", "annotator_id", "worker_id"]),
        ("user_id", &["user"]),
    ];
    for r in records.iter_mut() {
        for (canonical, theirs) in &mapping {
            if let Some(v) = r.fields.remove(theirs) {
                r.fields.insert(canonical.clone(), v);
            }
        }
        for (canonical, aliases) in ALIASES {
            if r.fields.contains_key(*canonical) || src.columns.contains_key(*canonical) {
                continue;
            }
            if *canonical == "user_id" && !src.user_column.is_empty() {
                continue;
            }
            if let Some(alias) = aliases.iter().find(|a| r.fields.contains_key(**a)) {
                let v = r.fields.remove(*alias).expect("present");
                r.fields.insert(canonical.to_string(), v);
            }
        }
        gather_numbered(&mut r.fields, "response_", "responses");
        gather_numbered(&mut r.fields, "rank_", "ranks");
    }
    Ok(())
}

/// `response_1`, `response_2`, ... (wide CSV) -> a `responses` list, empty
/// trailing cells left out.
fn gather_numbered(fields: &mut Map<String, Value>, prefix: &str, into: &str) {
    if fields.get(into).is_some_and(|v| !is_blank(v)) {
        return;
    }
    let mut numbered: Vec<(usize, String)> = fields
        .keys()
        .filter_map(|k| k.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok()).map(|n| (n, k.clone())))
        .collect();
    if numbered.is_empty() {
        return;
    }
    numbered.sort();
    fields.remove(into);
    let mut values: Vec<Value> = numbered.iter().map(|(_, k)| fields.remove(k).expect("present")).collect();
    while values.last().is_some_and(is_blank) {
        values.pop();
    }
    fields.insert(into.to_string(), Value::Array(values));
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// The format of a file: the one set, or else detected from the container
/// and the columns, checked against what the stage reads.
pub fn detect(src: &Source, container: Container, records: &[Record], want: Want) -> Result<Format> {
    let columns: BTreeSet<&str> =
        records.iter().flat_map(|r| r.fields.iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k.as_str())).collect();
    let listing = || columns.iter().copied().collect::<Vec<_>>().join(", ");
    let format = if src.format != Format::Auto {
        src.format
    } else if container == Container::Txt {
        Format::Text
    } else {
        let has = |c: &str| columns.contains(c);
        let first_is_list = |c: &str| {
            records
                .iter()
                .filter_map(|r| r.fields.get(c))
                .find(|v| !v.is_null())
                .is_some_and(|v| v.is_array() || v.as_str().is_some_and(|s| s.trim_start().starts_with("[{")))
        };
        if has("chosen") && has("rejected") {
            if first_is_list("chosen") {
                Format::PairsConversational
            } else if has("prompt") {
                Format::Pairs
            } else {
                Format::HhRlhf
            }
        } else if has("responses") && has("ranks") {
            Format::Rankings
        } else if has("messages") {
            Format::Messages
        } else if has("instruction") && has("output") {
            Format::Alpaca
        } else if has("prompt") && has("completion") {
            Format::PromptCompletion
        } else if has("prompt") && want != Want::Text {
            Format::Prompt
        } else if has("text") && want == Want::Text {
            Format::Text
        } else {
            bail!(
                "{}: cannot tell the format from its columns ({}); {} reads {}. Set format = \"...\", or map your \
                 column names with columns = {{ prompt = \"your_column\", ... }}",
                src.path,
                listing(),
                want.stage(),
                want.accepts().iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
            );
        }
    };
    if !want.accepts().contains(&format) {
        bail!(
            "{}: the file is in format `{}` (columns {}), which {} does not read; it reads {}. Use the stage for that \
             format, or set format = \"...\" and columns = {{...}}",
            src.path,
            format.name(),
            listing(),
            want.stage(),
            want.accepts().iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(format)
}

/// Converts one record into an example of the stage's kind.
pub fn example(rec: &Record, format: Format, src: &Source, want: Want) -> Row<Example> {
    let f = &rec.fields;
    let (prompt, payload) = match format {
        Format::Prompt => (prompt_field(f, "prompt")?, Payload::Prompt),
        Format::PromptCompletion => {
            let prompt = prompt_field(f, "prompt")?;
            (prompt, demonstration(f, "completion", want)?)
        }
        Format::Alpaca => {
            let instruction = text(f, "instruction")?;
            let prompt = match opt_text(f, "input")? {
                Some(input) => format!("{instruction}\n\n{input}"),
                None => instruction,
            };
            (prompt, demonstration(f, "output", want)?)
        }
        Format::Messages => {
            let turns = turns(f, "messages")?;
            let (prompt_turns, response) = match turns.last() {
                Some(t) if t.role == Role::Assistant => (&turns[..turns.len() - 1], Some(t.content.clone())),
                _ => (&turns[..], None),
            };
            let prompt = render(prompt_turns).map_err(|r| RowError::new("messages", r))?;
            let payload = match (want, response) {
                (Want::Demonstrations, None) => {
                    return Err(RowError::new("messages", "the last message must be the assistant's response"));
                }
                (Want::Demonstrations, Some(response)) => {
                    Payload::Demonstration { response, labeler_id: opt_id(f, "labeler_id")?.unwrap_or_default() }
                }
                _ => Payload::Prompt,
            };
            (prompt, payload)
        }
        Format::Pairs | Format::PairsConversational => pair(f, want)?,
        Format::HhRlhf => hh_pair(f, want)?,
        Format::Rankings => ranking(f, want)?,
        Format::Text | Format::Auto => return Err(RowError::row(format!("format `{}` has no prompts", format.name()))),
    };
    let dataset = match opt_text(f, "dataset")? {
        Some(d) if DATASETS.contains(&d.as_str()) => Some(d),
        Some(d) => return Err(RowError::new("dataset", format!("`{d}` is not one of {}", DATASETS.join(", ")))),
        None => None,
    };
    let user_id = match opt_id(f, "user_id")? {
        Some(u) => u,
        None => match src.missing_user {
            MissingUser::File => format!("file:{}", src.path),
            MissingUser::Row => stable_id("row:", &[&normalize(&prompt)]),
        },
    };
    let family = opt_text(f, "family")?;
    Ok(Example { origin: rec.origin.clone(), prompt, user_id, dataset, family, payload })
}

/// Converts one record into a document.
pub fn doc(rec: &Record) -> Row<Doc> {
    let text = text(&rec.fields, "text")?;
    let kind = opt_text(&rec.fields, "kind")?;
    Ok(Doc { origin: rec.origin.clone(), text, kind })
}

fn demonstration(f: &Map<String, Value>, field: &str, want: Want) -> Row<Payload> {
    if want != Want::Demonstrations {
        return Ok(Payload::Prompt);
    }
    let response = response_field(f, field)?;
    Ok(Payload::Demonstration { response, labeler_id: opt_id(f, "labeler_id")?.unwrap_or_default() })
}

/// TRL pairs, standard (text) or conversational (message lists), with or
/// without a separate prompt.
fn pair(f: &Map<String, Value>, want: Want) -> Row<(String, Payload)> {
    let (prompt, chosen, rejected) = if f.get("prompt").is_some_and(|v| !v.is_null()) {
        (prompt_field(f, "prompt")?, response_field(f, "chosen")?, response_field(f, "rejected")?)
    } else {
        let chosen = turns(f, "chosen")?;
        let rejected = turns(f, "rejected")?;
        let shared = chosen.iter().zip(&rejected).take_while(|(a, b)| a == b).count();
        let last = |t: &[Turn], field: &str| match t {
            [one] if one.role == Role::Assistant => Ok(one.content.clone()),
            _ => Err(RowError::new(
                field,
                "after the part shared with the other response, expected exactly one assistant message",
            )),
        };
        let c = last(&chosen[shared..], "chosen")?;
        let r = last(&rejected[shared..], "rejected")?;
        (render(&chosen[..shared]).map_err(|e| RowError::new("chosen", e))?, c, r)
    };
    pair_payload(f, prompt, chosen, rejected, want)
}

fn pair_payload(
    f: &Map<String, Value>,
    prompt: String,
    chosen: String,
    rejected: String,
    want: Want,
) -> Row<(String, Payload)> {
    if want != Want::Preferences {
        return Ok((prompt, Payload::Prompt));
    }
    if chosen == rejected {
        return Err(RowError::new("rejected", "identical to `chosen`: a pair must differ"));
    }
    let labeler_id = opt_id(f, "labeler_id")?.unwrap_or_default();
    Ok((prompt, Payload::Ranking { responses: vec![chosen, rejected], ranks: vec![1, 2], labeler_id }))
}

/// Anthropic HH-RLHF: two full transcripts; the turns before the last
/// assistant turn are the prompt and must be the same in both.
fn hh_pair(f: &Map<String, Value>, want: Want) -> Row<(String, Payload)> {
    let chosen = hh_turns(&text(f, "chosen")?).map_err(|e| RowError::new("chosen", e))?;
    let rejected = hh_turns(&text(f, "rejected")?).map_err(|e| RowError::new("rejected", e))?;
    let split = |t: &[Turn], field: &str| -> Row<(Vec<Turn>, String)> {
        match t.split_last() {
            Some((last, before)) if last.role == Role::Assistant => Ok((before.to_vec(), last.content.clone())),
            _ => Err(RowError::new(field, "the transcript must end with an `Assistant:` turn")),
        }
    };
    let (prompt_c, c) = split(&chosen, "chosen")?;
    let (prompt_r, r) = split(&rejected, "rejected")?;
    if prompt_c != prompt_r {
        return Err(RowError::new(
            "rejected",
            "the conversation before the last `Assistant:` turn differs from `chosen`",
        ));
    }
    if c.is_empty() || r.is_empty() {
        let field = if c.is_empty() { "chosen" } else { "rejected" };
        return Err(RowError::new(field, "the last `Assistant:` turn is empty"));
    }
    let prompt = render(&prompt_c).map_err(|e| RowError::new("chosen", e))?;
    pair_payload(f, prompt, c, r, want)
}

fn ranking(f: &Map<String, Value>, want: Want) -> Row<(String, Payload)> {
    let prompt = prompt_field(f, "prompt")?;
    if want != Want::Preferences {
        return Ok((prompt, Payload::Prompt));
    }
    let responses = string_list(f, "responses")?;
    let ranks = rank_list(f, "ranks")?;
    check_ranking(&responses, &ranks)?;
    let labeler_id = opt_id(f, "labeler_id")?.unwrap_or_default();
    Ok((prompt, Payload::Ranking { responses, ranks, labeler_id }))
}

/// A valid ranking of K >= 2 responses: K ranks, each in 1..=K, the best
/// being 1. Ties share a rank.
pub fn check_ranking(responses: &[String], ranks: &[i32]) -> Row<()> {
    if responses.len() < 2 {
        return Err(RowError::new("responses", format!("needs at least 2 responses, has {}", responses.len())));
    }
    if let Some(i) = responses.iter().position(|r| r.trim().is_empty()) {
        return Err(RowError::new("responses", format!("response {} is empty", i + 1)));
    }
    let k = responses.len() as i32;
    if ranks.len() != responses.len() {
        return Err(RowError::new("ranks", format!("{} ranks for {} responses", ranks.len(), responses.len())));
    }
    if let Some(r) = ranks.iter().find(|&&r| r < 1 || r > k) {
        return Err(RowError::new("ranks", format!("rank {r} is outside 1..={k}")));
    }
    if !ranks.contains(&1) {
        return Err(RowError::new("ranks", "no response has rank 1 (the best)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        Record {
            origin: Origin { file: "f".into(), line: 1, raw: v.to_string() },
            fields: v.as_object().unwrap().clone(),
        }
    }

    fn src() -> Source {
        Source {
            path: "f.jsonl".into(),
            format: Format::Auto,
            columns: BTreeMap::new(),
            user_column: String::new(),
            missing_user: MissingUser::File,
        }
    }

    fn one(v: Value, want: Want) -> Row<Example> {
        let mut records = vec![rec(v)];
        prepare(&mut records, &src()).unwrap();
        let format = detect(&src(), Container::Jsonl, &records, want).map_err(|e| RowError::row(e.to_string()))?;
        example(&records[0], format, &src(), want)
    }

    #[test]
    fn hh_transcripts_split_at_the_last_assistant_turn() {
        let e = one(
            json!({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell a joke\n\nAssistant: A good one.",
                   "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell a joke\n\nAssistant: No."}),
            Want::Preferences,
        )
        .unwrap();
        assert_eq!(e.prompt, "Hi<|assistant|>Hello!<|user|>Tell a joke");
        assert_eq!(
            e.payload,
            Payload::Ranking {
                responses: vec!["A good one.".into(), "No.".into()],
                ranks: vec![1, 2],
                labeler_id: String::new()
            }
        );
        assert_eq!(e.user_id, "file:f.jsonl");
    }

    #[test]
    fn conversational_pairs_with_implicit_prompt() {
        let u = json!({"role": "user", "content": "2+2?"});
        let e = one(
            json!({"chosen": [u, {"role": "assistant", "content": "4"}],
                   "rejected": [u, {"role": "assistant", "content": "5"}]}),
            Want::Preferences,
        )
        .unwrap();
        assert_eq!(e.prompt, "2+2?");
        assert!(matches!(e.payload, Payload::Ranking { ref responses, .. } if responses == &["4", "5"]));
    }

    #[test]
    fn alpaca_joins_instruction_and_input() {
        let e =
            one(json!({"instruction": "Translate", "input": "chat", "output": "cat", "user": 7}), Want::Demonstrations)
                .unwrap();
        assert_eq!(e.prompt, "Translate\n\nchat");
        assert_eq!(e.user_id, "7");
    }

    #[test]
    fn messages_take_the_last_assistant_turn_as_response() {
        let e = one(
            json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello"}]}),
            Want::Demonstrations,
        )
        .unwrap();
        assert_eq!(e.prompt, "Be brief.\n\nHi");
        let e = one(json!({"messages": [{"role": "user", "content": "Hi"}]}), Want::Demonstrations).unwrap_err();
        assert!(e.reason.contains("last message"), "{e:?}");
    }

    #[test]
    fn rankings_validate_ranks() {
        let ok = json!({"prompt": "p", "responses": ["a", "b", "c"], "ranks": "2,1,3"});
        assert!(one(ok, Want::Preferences).is_ok());
        for (ranks, needle) in [
            (json!([1, 2]), "2 ranks for 3"),
            (json!([1, 4, 2]), "outside 1..=3"),
            (json!([2, 2, 3]), "rank 1"),
            (json!(["x", 1, 2]), "whole-number"),
        ] {
            let e = one(json!({"prompt": "p", "responses": ["a", "b", "c"], "ranks": ranks}), Want::Preferences)
                .unwrap_err();
            assert!(e.reason.contains(needle), "{e:?} should say {needle}");
            assert_eq!(e.field, "ranks");
        }
    }

    #[test]
    fn wrong_types_and_missing_fields_name_the_field() {
        let e = one(json!({"prompt": 42, "completion": "x"}), Want::Demonstrations).unwrap_err();
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("prompt", "expected text, got a number"));
        let r = rec(json!({"prompt": "p", "chosen": "a", "rejected": null}));
        let e = example(&r, Format::Pairs, &src(), Want::Preferences).unwrap_err();
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("rejected", "missing"));
    }

    #[test]
    fn detection_refuses_formats_the_stage_does_not_read() {
        let records = vec![rec(json!({"prompt": "p", "chosen": "a", "rejected": "b"}))];
        let e = detect(&src(), Container::Jsonl, &records, Want::Demonstrations).unwrap_err().to_string();
        assert!(e.contains("format `pairs`") && e.contains("ingest.demonstrations"), "{e}");
    }

    #[test]
    fn column_mapping_renames_and_checks() {
        let mut s = src();
        s.columns.insert("prompt".into(), "question".into());
        s.columns.insert("completion".into(), "answer".into());
        let mut records = vec![rec(json!({"question": "q", "answer": "a"}))];
        prepare(&mut records, &s).unwrap();
        assert_eq!(detect(&s, Container::Jsonl, &records, Want::Demonstrations).unwrap(), Format::PromptCompletion);
        s.columns.insert("labeler_id".into(), "who".into());
        let mut records = vec![rec(json!({"question": "q", "answer": "a"}))];
        let e = prepare(&mut records, &s).unwrap_err().to_string();
        assert!(e.contains("no column `who`"), "{e}");
    }
}
