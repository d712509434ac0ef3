//! The stages, and the reading, checking and writing the row stages share.

pub mod demonstrations;
pub mod labels;
pub mod preferences;
pub mod prompts;
pub mod text;
pub mod tokenizer;
pub mod world;

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use lineage::StageContext;
use lineage::tables::{PromptRow, QUARANTINE};
use serde_json::json;

use crate::common::{Format, MissingUser, check_columns, check_dataset, check_fraction, check_split};
use crate::formats::{Example, Source, Want, detect, example, prepare};
use crate::hygiene::{self, Group, Hygiene, Report};
use crate::quarantine::Quarantine;
use crate::read::read_file;
use crate::stats::prompt_stats;

/// The settings the prompt-bearing stages share, taken from their parameters.
pub(crate) struct RowSettings {
    pub paths: Vec<String>,
    pub format: Format,
    pub columns: BTreeMap<String, String>,
    pub user_column: String,
    pub missing_user: MissingUser,
    pub max_bad_fraction: f64,
    pub hygiene: Hygiene,
}

impl RowSettings {
    /// Cross-field rules shared by the row stages' `validate`.
    pub fn validate(&self) -> Result<(), String> {
        if self.paths.is_empty() {
            return Err("`path` is required: the file (or list of files) to read".into());
        }
        check_columns(&self.columns)?;
        check_fraction("max_bad_fraction", self.max_bad_fraction)?;
        check_fraction("validation_fraction", self.hygiene.validation_fraction)?;
        check_fraction("test_fraction", self.hygiene.test_fraction)?;
        if self.hygiene.validation_fraction + self.hygiene.test_fraction > 1.0 {
            return Err(format!(
                "validation_fraction + test_fraction = {} leaves no training split; keep their sum at most 1",
                self.hygiene.validation_fraction + self.hygiene.test_fraction
            ));
        }
        check_dataset(&self.hygiene.dataset)?;
        check_split(&self.hygiene.split)?;
        if self.format == Format::Text {
            return Err("format = \"text\" is for ingest.text".into());
        }
        Ok(())
    }
}

/// What reading and hygiene leave.
pub(crate) struct Ingested {
    pub groups: Vec<Group>,
    pub quarantine: Quarantine,
    pub report: Report,
    /// file -> detected format.
    pub formats: BTreeMap<String, &'static str>,
}

/// Reads every file, converts rows, checks the bad fraction, applies hygiene.
pub(crate) fn ingest_rows(ctx: &mut StageContext, s: &RowSettings, want: Want) -> Result<Ingested> {
    let mut q = Quarantine::new();
    let mut examples: Vec<Example> = Vec::new();
    let mut formats = BTreeMap::new();
    for path in &s.paths {
        let bad_before = q.bad_count();
        let (container, mut records) = read_file(path, &mut q)?;
        let src = Source {
            path: path.clone(),
            format: s.format,
            columns: s.columns.clone(),
            user_column: s.user_column.clone(),
            missing_user: s.missing_user,
        };
        if records.is_empty() && q.bad_count() == bad_before {
            bail!("{path}: no rows");
        }
        prepare(&mut records, &src)?;
        let format = detect(&src, container, &records, want)?;
        formats.insert(path.clone(), format.name());
        for rec in &records {
            match example(rec, format, &src, want) {
                Ok(e) => examples.push(e),
                Err(err) => q.bad(&rec.origin, err),
            }
        }
    }
    check_bad(ctx, &q, s.max_bad_fraction)?;

    let h = &s.hygiene;
    let tokenizer = match ctx.optional_input("tokenizer") {
        Some(input) => Some(load_tokenizer(&input.model_dir().join("tokenizer.json"))?),
        None => None,
    };
    if (h.max_prompt_tokens > 0 || h.max_response_tokens > 0) && tokenizer.is_none() {
        bail!(
            "max_prompt_tokens / max_response_tokens need a tokenizer: give the step input tokenizer = \"<tokenizer step>\", or limit characters with max_prompt_chars / max_response_chars"
        );
    }
    let count = tokenizer.as_ref().map(|t| {
        move |text: &str| -> Result<usize, String> {
            t.encode(text, false).map(|e| e.len()).map_err(|e| format!("the tokenizer cannot encode it: {e}"))
        }
    });
    let tokens: Option<hygiene::TokenCount<'_>> = count.as_ref().map(|c| c as hygiene::TokenCount<'_>);
    let (groups, report) = hygiene::apply(examples, h, tokens, &mut q);
    // Rows whose tokens could not be counted are bad rows too.
    check_bad(ctx, &q, s.max_bad_fraction)?;
    if groups.is_empty() {
        ctx.warn("no prompts are left after hygiene; see the quarantine table");
    }
    Ok(Ingested { groups, quarantine: q, report, formats })
}

/// Fails the step when too many rows are bad, saving the rejected rows in the
/// step's scratch directory (kept after a failure) for the user to inspect.
pub(crate) fn check_bad(ctx: &mut StageContext, q: &Quarantine, max_bad_fraction: f64) -> Result<()> {
    if q.check(max_bad_fraction, None).is_ok() {
        return Ok(());
    }
    let saved = ctx.scratch_dir().ok().map(|d| d.join("quarantine.jsonl"));
    let saved = saved.filter(|p| std::fs::write(p, q.to_jsonl()).is_ok());
    q.check(max_bad_fraction, saved.as_deref())
}

pub(crate) fn load_tokenizer(path: &std::path::Path) -> Result<tokenizers::Tokenizer> {
    tokenizers::Tokenizer::from_file(path).map_err(|e| anyhow!("{}: not a loadable tokenizer: {e}", path.display()))
}

/// The prompts table of the groups.
pub(crate) fn prompt_rows(groups: &[Group]) -> Vec<PromptRow> {
    groups
        .iter()
        .map(|g| PromptRow {
            prompt_id: g.prompt_id.clone(),
            text: g.text.clone(),
            user_id: g.user_id.clone(),
            split: g.split.clone(),
            dataset: g.dataset.clone(),
            family: g.examples.first().and_then(|e| e.family.clone()).unwrap_or_else(|| "unknown".into()),
            meta: "{}".into(),
            source: g.source.clone(),
        })
        .collect()
}

/// Writes the quarantine table, and the metrics and statistics of reading and hygiene.
pub(crate) fn finish(ctx: &mut StageContext, ingested: &Ingested, prompts: &[PromptRow]) -> Result<()> {
    let q = &ingested.quarantine;
    ctx.write_rows(&QUARANTINE, q.rows())?;
    ctx.metric("rows_read", q.rows_read() as f64);
    ctx.metric("rows_bad", q.bad_count() as f64);
    ctx.metric("prompts", prompts.len() as f64);
    ctx.metric("users", ingested.report.users as f64);
    for class in ["duplicate_exact", "duplicate_prefix", "over_cap", "too_long"] {
        let n = q.removed_counts().get(class).copied().unwrap_or(0);
        ctx.metric(format!("removed_{class}"), n as f64);
    }
    ctx.metric("pii_emails_scrubbed", ingested.report.scrubbed.emails as f64);
    ctx.metric("pii_phones_scrubbed", ingested.report.scrubbed.phones as f64);
    for split in crate::common::SPLITS {
        let n = prompts.iter().filter(|p| p.split == *split).count();
        ctx.metric(format!("prompts_{split}"), n as f64);
    }
    let mut stats = prompt_stats(prompts).context("computing prompt statistics")?;
    stats["formats"] = json!(ingested.formats);
    stats["removed"] = json!(q.removed_counts());
    stats["pii_scrubbed"] =
        json!({ "emails": ingested.report.scrubbed.emails, "phones": ingested.report.scrubbed.phones });
    for (k, v) in stats.as_object().cloned().unwrap_or_default() {
        ctx.stat(k, v);
    }
    Ok(())
}
