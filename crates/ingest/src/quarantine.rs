//! Where rejected rows go, and the rule that fails a step with too many.
//!
//! Two kinds of rows land in quarantine: *bad* rows (unreadable, not UTF-8, a
//! field missing or of the wrong type, an invalid ranking, text the tokenizer
//! cannot encode), which count against
//! `max_bad_fraction`, and rows *removed* by hygiene (duplicates, over the
//! per-user cap, too long), which are the method working as intended and
//! count only in the metrics. Nothing read is ever silently lost.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use anyhow::{Result, bail};
use lineage::tables::QuarantineRow;
use regex::Regex;

/// Where a row came from, kept with it until it is written or rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub file: String,
    /// 1-based line (JSONL, CSV, text) or row (JSON array, Parquet).
    pub line: i64,
    /// The row as read.
    pub raw: String,
}

/// Why one row was rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub field: String,
    pub reason: String,
}

impl RowError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> RowError {
        RowError { field: field.into(), reason: reason.into() }
    }

    pub fn missing(field: &str) -> RowError {
        RowError::new(field, "missing")
    }

    pub fn row(reason: impl Into<String>) -> RowError {
        RowError::new("", reason)
    }
}

#[derive(Debug, Default, Clone)]
struct FileCount {
    rows: u64,
    bad: u64,
}

/// Collects rejected rows and per-file counts.
#[derive(Debug, Default)]
pub struct Quarantine {
    rows: Vec<QuarantineRow>,
    bad_rows: Vec<usize>,
    files: BTreeMap<String, FileCount>,
    /// Removal reason class (`duplicate_exact`, `over_cap`, ...) -> count.
    removed: BTreeMap<String, u64>,
}

impl Quarantine {
    pub fn new() -> Quarantine {
        Quarantine::default()
    }

    /// Counts rows read from a file (good and bad), for the bad fraction.
    pub fn count_rows(&mut self, file: &str, rows: u64) {
        self.files.entry(file.to_string()).or_default().rows += rows;
    }

    /// A malformed row: counts against `max_bad_fraction`.
    pub fn bad(&mut self, origin: &Origin, err: RowError) {
        self.files.entry(origin.file.clone()).or_default().bad += 1;
        self.bad_rows.push(self.rows.len());
        self.push(origin, err);
    }

    /// A row removed by hygiene, with its class for the metrics.
    pub fn removed(&mut self, origin: &Origin, class: &str, err: RowError) {
        *self.removed.entry(class.to_string()).or_default() += 1;
        self.push(origin, err);
    }

    fn push(&mut self, origin: &Origin, err: RowError) {
        self.rows.push(QuarantineRow {
            source_file: origin.file.clone(),
            line: origin.line,
            field: err.field,
            reason: err.reason,
            raw: origin.raw.clone(),
        });
    }

    pub fn rows(&self) -> &[QuarantineRow] {
        &self.rows
    }

    pub fn bad_count(&self) -> u64 {
        self.files.values().map(|f| f.bad).sum()
    }

    pub fn rows_read(&self) -> u64 {
        self.files.values().map(|f| f.rows).sum()
    }

    /// Removal class -> count.
    pub fn removed_counts(&self) -> &BTreeMap<String, u64> {
        &self.removed
    }

    /// Fails if any file has more than `max_bad_fraction` of its rows bad,
    /// naming the file, the first bad row, the most common reasons, and
    /// (when given) where the rejected rows were saved.
    pub fn check(&self, max_bad_fraction: f64, saved_at: Option<&Path>) -> Result<()> {
        for (file, count) in &self.files {
            if count.rows == 0 || count.bad == 0 {
                continue;
            }
            let fraction = count.bad as f64 / count.rows as f64;
            if fraction <= max_bad_fraction {
                continue;
            }
            let bad: Vec<&QuarantineRow> =
                self.bad_rows.iter().map(|&i| &self.rows[i]).filter(|r| &r.source_file == file).collect();
            let first = bad.iter().min_by_key(|r| r.line).map(|r| describe(r)).unwrap_or_default();
            let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
            for r in &bad {
                *reasons.entry(reason_class(r)).or_default() += 1;
            }
            let mut reasons: Vec<(String, u64)> = reasons.into_iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let common = if reasons.first().is_some_and(|(_, n)| *n > 1) {
                let top = reasons.iter().take(3).map(|(r, n)| format!("{r} ({n})")).collect::<Vec<_>>();
                format!(" Most common: {}.", top.join("; "))
            } else {
                String::new()
            };
            let saved = saved_at.map(|p| format!(" The rejected rows are in {}.", p.display())).unwrap_or_default();
            bail!(
                "{file}: {} of {} rows ({:.0}%) rejected, more than max_bad_fraction {max_bad_fraction}; the first: {first}.\
                 {common}{saved} Fix the file, set columns = {{...}} if its column names differ, \
                 or raise max_bad_fraction to accept the loss.",
                count.bad,
                count.rows,
                100.0 * fraction,
            );
        }
        Ok(())
    }

    /// The rejected rows as JSON lines, for a failed step's scratch directory.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for r in &self.rows {
            let v = serde_json::json!({
                "source_file": r.source_file, "line": r.line, "field": r.field, "reason": r.reason, "raw": r.raw,
            });
            out.push_str(&v.to_string());
            out.push('\n');
        }
        out
    }
}

fn describe(r: &QuarantineRow) -> String {
    let field = if r.field.is_empty() { String::new() } else { format!(", field `{}`", r.field) };
    format!("line {}{field}: {}", r.line, r.reason)
}

/// A reason with its particulars (quoted values, numbers) blanked, so that
/// rows rejected for the same reason group together.
fn reason_class(r: &QuarantineRow) -> String {
    static QUOTED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"`[^`]*`|\d+").expect("valid"));
    let reason: String = QUOTED
        .replace_all(&r.reason, |c: &regex::Captures| if c[0].starts_with('`') { "`…`" } else { "N" })
        .chars()
        .take(80)
        .collect();
    if r.field.is_empty() { reason } else { format!("`{}`: {reason}", r.field) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(line: i64) -> Origin {
        Origin { file: "datasets/x.jsonl".into(), line, raw: "{}".into() }
    }

    #[test]
    fn fails_past_the_fraction_naming_file_and_first_row() {
        let mut q = Quarantine::new();
        q.count_rows("datasets/x.jsonl", 10);
        q.bad(&origin(4), RowError::missing("chosen"));
        q.check(0.1, None).unwrap();
        q.bad(&origin(7), RowError::missing("chosen"));
        q.removed(&origin(8), "duplicate_exact", RowError::new("prompt", "duplicate of p1"));
        let e = q.check(0.1, Some(Path::new("/s/quarantine.jsonl"))).unwrap_err().to_string();
        assert!(e.starts_with("datasets/x.jsonl: 2 of 10 rows (20%) rejected, more than max_bad_fraction 0.1"), "{e}");
        assert!(e.contains("the first: line 4, field `chosen`: missing"), "{e}");
        assert!(e.contains("/s/quarantine.jsonl"), "{e}");
        assert_eq!(q.bad_count(), 2);
        assert_eq!(q.rows().len(), 3);
        assert_eq!(q.removed_counts()["duplicate_exact"], 1);
    }
}
