//! `ingest.text`: plain text (`.txt`: one document per blank-line-separated
//! block) or a `text` column -> `pretrain_text`, `quarantine`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{Result, bail};
use lineage::tables::{PRETRAIN_TEXT, PretrainTextRow, QUARANTINE};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use serde::{Deserialize, Serialize};

use super::check_bad;
use crate::common::{Format, MissingUser, Paths, check_columns, check_fraction, normalize, stable_id, unit_hash};
use crate::formats::{Source, Want, detect, doc, prepare};
use crate::pii::{Scrubbed, scrub};
use crate::quarantine::{Quarantine, RowError};
use crate::read::read_file;

pub struct Text;

/// Parameters of `ingest.text`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextParams {
    /// The file, or a list of files (.txt, or .jsonl/.json/.csv/.parquet with a `text` column).
    pub path: Paths,
    /// `auto` or `text`.
    pub format: Format,
    /// e.g. `{ text = "content" }`.
    pub columns: BTreeMap<String, String>,
    /// The `kind` of every document (`""`: the row's `kind` column, else `text`).
    pub kind: String,
    /// The held-out fraction (split `validation`), by a seeded hash of the document.
    pub validation_fraction: f64,
    /// Shorter documents are dropped.
    pub min_chars: usize,
    /// Longer documents are dropped (0: no limit).
    pub max_chars: usize,
    /// Drop exact duplicates (after case and whitespace normalisation).
    pub dedup: bool,
    /// Replace e-mail addresses and phone numbers in the training split.
    pub scrub_pii: bool,
    pub max_bad_fraction: f64,
}

impl Default for TextParams {
    fn default() -> Self {
        TextParams {
            path: Paths::default(),
            format: Format::Auto,
            columns: BTreeMap::new(),
            kind: String::new(),
            validation_fraction: 0.05,
            min_chars: 1,
            max_chars: 0,
            dedup: true,
            scrub_pii: false,
            max_bad_fraction: 0.1,
        }
    }
}

impl Validate for TextParams {
    fn validate(&self) -> Result<(), String> {
        self.path.check()?;
        check_columns(&self.columns)?;
        check_fraction("validation_fraction", self.validation_fraction)?;
        check_fraction("max_bad_fraction", self.max_bad_fraction)?;
        if !matches!(self.format, Format::Auto | Format::Text) {
            return Err(format!("format = \"{}\": ingest.text reads `text` (or `auto`)", self.format.name()));
        }
        if self.max_chars > 0 && self.max_chars < self.min_chars {
            return Err(format!("max_chars = {} is below min_chars = {}", self.max_chars, self.min_chars));
        }
        Ok(())
    }
}

impl TypedStage for Text {
    type Params = TextParams;
    const NAME: &'static str = "ingest.text";
    const ABOUT: &'static str = "Plain text or a text column -> pretrain_text (train/validation), quarantine.";
    const INPUTS: &'static [InputSpec] = &[];
    const OUTPUTS: &'static [TableSpec] = &[PRETRAIN_TEXT, QUARANTINE];
    const HEADLINE: Option<&'static str> = Some("documents");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }
    fn file_deps(p: &TextParams) -> Vec<PathBuf> {
        p.path.path_bufs()
    }
    fn run(ctx: &mut StageContext, p: &TextParams) -> Result<()> {
        let mut q = Quarantine::new();
        let mut docs = Vec::new();
        for path in p.path.list() {
            let bad_before = q.bad_count();
            let (container, mut records) = read_file(&path, &mut q)?;
            if records.is_empty() && q.bad_count() == bad_before {
                bail!("{path}: no documents");
            }
            let src = Source {
                path: path.clone(),
                format: p.format,
                columns: p.columns.clone(),
                user_column: String::new(),
                missing_user: MissingUser::File,
            };
            prepare(&mut records, &src)?;
            detect(&src, container, &records, Want::Text)?;
            for rec in &records {
                match doc(rec) {
                    Ok(d) => docs.push(d),
                    Err(e) => q.bad(&rec.origin, e),
                }
            }
        }
        check_bad(ctx, &q, p.max_bad_fraction)?;

        let mut rows = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut scrubbed = Scrubbed::default();
        for d in docs {
            let n = d.text.chars().count();
            if n < p.min_chars {
                q.removed(
                    &d.origin,
                    "too_short",
                    RowError::new("text", format!("too short: {n} characters, minimum {}", p.min_chars)),
                );
                continue;
            }
            if p.max_chars > 0 && n > p.max_chars {
                q.removed(
                    &d.origin,
                    "too_long",
                    RowError::new("text", format!("too long: {n} characters, limit {}", p.max_chars)),
                );
                continue;
            }
            let norm = normalize(&d.text);
            let doc_id = stable_id("d", &[&norm]);
            if p.dedup {
                if let Some(first) = seen.get(&norm) {
                    q.removed(&d.origin, "duplicate_exact", RowError::new("text", format!("duplicate of {first}")));
                    continue;
                }
                seen.insert(norm, doc_id.clone());
            }
            let split =
                if unit_hash(ctx.seed, "text-split", &doc_id) < p.validation_fraction { "validation" } else { "train" };
            let mut text = d.text;
            if p.scrub_pii && split == "train" {
                let (t, n) = scrub(&text);
                text = t;
                scrubbed += n;
            }
            let kind = if p.kind.is_empty() { d.kind.unwrap_or_else(|| "text".into()) } else { p.kind.clone() };
            rows.push(PretrainTextRow { doc_id, text, kind, split: split.into(), source: d.origin.file });
        }
        if rows.is_empty() {
            ctx.warn("no documents are left; see the quarantine table");
        }
        ctx.write_rows(&PRETRAIN_TEXT, &rows)?;
        ctx.write_rows(&QUARANTINE, q.rows())?;
        let chars: usize = rows.iter().map(|r| r.text.chars().count()).sum();
        ctx.metric("documents", rows.len() as f64);
        ctx.metric("characters", chars as f64);
        ctx.metric("rows_read", q.rows_read() as f64);
        ctx.metric("rows_bad", q.bad_count() as f64);
        for class in ["duplicate_exact", "too_short", "too_long"] {
            ctx.metric(format!("removed_{class}"), q.removed_counts().get(class).copied().unwrap_or(0) as f64);
        }
        ctx.metric("pii_emails_scrubbed", scrubbed.emails as f64);
        ctx.metric("pii_phones_scrubbed", scrubbed.phones as f64);
        let mut per_split: BTreeMap<&str, u64> = BTreeMap::new();
        let mut per_kind: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &rows {
            *per_split.entry(r.split.as_str()).or_default() += 1;
            *per_kind.entry(r.kind.as_str()).or_default() += 1;
        }
        ctx.stat("rows_per_split", serde_json::json!(per_split));
        ctx.stat("rows_per_kind", serde_json::json!(per_kind));
        ctx.stat("removed", serde_json::json!(q.removed_counts()));
        Ok(())
    }
}
