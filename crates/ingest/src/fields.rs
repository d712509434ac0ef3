//! Reading one field of a row: text, ids, lists and ranks, with the
//! reason a value is rejected.

use serde_json::{Map, Value};

use crate::quarantine::RowError;
use crate::read::kind_of;

/// A value, or why the row is rejected.
pub type Row<T> = std::result::Result<T, RowError>;

/// Required non-empty text, trimmed.
pub fn text(f: &Map<String, Value>, field: &str) -> Row<String> {
    match f.get(field) {
        None | Some(Value::Null) => Err(RowError::missing(field)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(RowError::new(field, "empty")),
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        Some(other) => Err(RowError::new(field, format!("expected text, got {}", kind_of(other)))),
    }
}

/// Optional text: absent, null and blank are all `None`.
pub fn opt_text(f: &Map<String, Value>, field: &str) -> Row<Option<String>> {
    match f.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(other) => Err(RowError::new(field, format!("expected text, got {}", kind_of(other)))),
    }
}

/// An optional id: text or a whole number.
pub fn opt_id(f: &Map<String, Value>, field: &str) -> Row<Option<String>> {
    match f.get(field) {
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        _ => opt_text(f, field),
    }
}

/// A list, given as a list or as JSON text (CSV cells).
pub fn list_value(f: &Map<String, Value>, field: &str) -> Row<Vec<Value>> {
    match f.get(field) {
        None | Some(Value::Null) => Err(RowError::missing(field)),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(Value::String(s)) if s.trim_start().starts_with('[') => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(items)) => Ok(items),
            _ => Err(RowError::new(field, "text that looks like a list but is not valid JSON")),
        },
        Some(Value::String(s)) if s.trim().is_empty() => Err(RowError::new(field, "empty")),
        Some(other) => Err(RowError::new(field, format!("expected a list, got {}", kind_of(other)))),
    }
}

pub fn string_list(f: &Map<String, Value>, field: &str) -> Row<Vec<String>> {
    list_value(f, field)?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.trim().to_string()),
            other => Err(RowError::new(field, format!("item {} should be text, got {}", i + 1, kind_of(other)))),
        })
        .collect()
}

/// Ranks: a list of whole numbers, or text like `2,1,3` (CSV).
pub fn rank_list(f: &Map<String, Value>, field: &str) -> Row<Vec<i32>> {
    let items = match f.get(field) {
        Some(Value::String(s)) if !s.trim_start().starts_with('[') => {
            if s.trim().is_empty() {
                return Err(RowError::new(field, "empty"));
            }
            s.split([',', ' ', ';']).filter(|p| !p.is_empty()).map(|p| Value::String(p.to_string())).collect()
        }
        _ => list_value(f, field)?,
    };
    items
        .iter()
        .map(|v| {
            let n = match v {
                Value::Number(n) => n.as_i64().filter(|_| n.is_i64() || n.is_u64()),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            n.and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| RowError::new(field, format!("`{}` is not a whole-number rank", plain(v))))
        })
        .collect()
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
