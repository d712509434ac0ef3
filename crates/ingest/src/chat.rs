//! Conversations: message lists (`[{role, content}]`, ShareGPT's
//! `[{from, value}]`), HH-RLHF transcripts, and how a multi-turn prompt
//! becomes one string.
//!
//! Multi-turn prompts (chat `messages`, TRL conversational pairs, HH-RLHF
//! transcripts) become one prompt string rendered with the chat markers the
//! tokenizer reserves: `u1<|assistant|>a1<|user|>u2`. A stage that frames a
//! prompt as `<|user|>{prompt}<|assistant|>{response}` then shows the model the
//! whole conversation. A leading system message is prepended as its text and a
//! blank line.

use serde_json::{Map, Value};

use crate::common::{ASSISTANT_TOKEN, USER_TOKEN};
use crate::fields::{Row, list_value, text};
use crate::quarantine::RowError;
use crate::read::kind_of;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

/// A message list: `[{role, content}]` (or ShareGPT's `[{from, value}]`),
/// given as a list or as JSON text (CSV).
pub fn turns(f: &Map<String, Value>, field: &str) -> Row<Vec<Turn>> {
    let list = list_value(f, field)?;
    if list.is_empty() {
        return Err(RowError::new(field, "empty message list"));
    }
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = |what: String| RowError::new(field, format!("message {}: {what}", i + 1));
        let Value::Object(m) = m else {
            return Err(at(format!("expected {{role, content}}, got {}", kind_of(m))));
        };
        let role =
            m.get("role").or_else(|| m.get("from")).and_then(Value::as_str).ok_or_else(|| at("no `role`".into()))?;
        let role = match role.to_ascii_lowercase().as_str() {
            "user" | "human" => Role::User,
            "assistant" | "gpt" | "bot" | "model" | "chatbot" => Role::Assistant,
            "system" => Role::System,
            other => return Err(at(format!("unknown role `{other}` (expected user, assistant or system)"))),
        };
        let content = m.get("content").or_else(|| m.get("value")).or_else(|| m.get("text"));
        let content = match content {
            Some(Value::String(s)) => s.trim().to_string(),
            // OpenAI-style content parts: keep the text parts.
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_string(),
            Some(other) => return Err(at(format!("`content` should be text, got {}", kind_of(other)))),
            None => return Err(at("no `content`".into())),
        };
        if content.is_empty() {
            return Err(at("empty `content`".into()));
        }
        out.push(Turn { role, content });
    }
    Ok(out)
}

/// Renders prompt turns into one string (see the module doc).
pub fn render(turns: &[Turn]) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut seen_user = false;
    for t in turns {
        match t.role {
            Role::System if !seen_user => {
                out.push_str(&t.content);
                out.push_str("\n\n");
            }
            Role::System => return Err("a system message after the conversation started".into()),
            Role::User => {
                if seen_user {
                    out.push_str(USER_TOKEN);
                }
                seen_user = true;
                out.push_str(&t.content);
            }
            Role::Assistant => {
                if !seen_user {
                    return Err("the conversation must start with a user message".into());
                }
                out.push_str(ASSISTANT_TOKEN);
                out.push_str(&t.content);
            }
        }
    }
    if !seen_user {
        return Err("no user message".into());
    }
    if turns.last().is_some_and(|t| t.role != Role::User) {
        return Err("the prompt must end with a user message".into());
    }
    Ok(out)
}

/// A prompt: text, or a message list (TRL conversational prompt).
pub fn prompt_field(f: &Map<String, Value>, field: &str) -> Row<String> {
    match f.get(field) {
        Some(Value::Array(items)) if items.first().is_some_and(Value::is_object) => {
            render(&turns(f, field)?).map_err(|e| RowError::new(field, e))
        }
        _ => text(f, field),
    }
}

/// A response: text, or a list holding one assistant message.
pub fn response_field(f: &Map<String, Value>, field: &str) -> Row<String> {
    match f.get(field) {
        Some(Value::Array(items)) if items.first().is_some_and(Value::is_object) => match turns(f, field)?.as_slice() {
            [one] if one.role == Role::Assistant => Ok(one.content.clone()),
            _ => Err(RowError::new(field, "expected one assistant message")),
        },
        _ => text(f, field),
    }
}

/// Splits `\n\nHuman: ... \n\nAssistant: ...` into turns.
pub fn hh_turns(s: &str) -> std::result::Result<Vec<Turn>, String> {
    const HUMAN: &str = "Human:";
    const ASSISTANT: &str = "Assistant:";
    let mut turns: Vec<Turn> = Vec::new();
    let mut rest = s.trim_start();
    if !rest.starts_with(HUMAN) {
        return Err("a transcript starts with `\\n\\nHuman:`".into());
    }
    while !rest.is_empty() {
        let (role, marker) = if rest.starts_with(HUMAN) {
            (Role::User, HUMAN)
        } else if rest.starts_with(ASSISTANT) {
            (Role::Assistant, ASSISTANT)
        } else {
            return Err("expected `Human:` or `Assistant:` after a blank line".into());
        };
        rest = &rest[marker.len()..];
        let next = [format!("\n\n{HUMAN}"), format!("\n\n{ASSISTANT}")]
            .iter()
            .filter_map(|m| rest.find(m.as_str()))
            .min()
            .unwrap_or(rest.len());
        turns.push(Turn { role, content: rest[..next].trim().to_string() });
        rest = rest[next..].trim_start_matches('\n');
    }
    Ok(turns)
}
