//! The labelling round-trip: `ingest.export_labels` writes the responses to
//! be ranked as files a labelling tool (or a spreadsheet) reads, and
//! `ingest.import_labels` reads the filled-in file back into rankings.
//!
//! Exported, per task (one prompt and its K responses, in a seeded shuffled
//! order so position does not hint at the sampler):
//!
//! - `label_tasks.jsonl`: `{"task_id", "prompt", "responses": [...], "ranks": [], "labeler_id": ""}`
//! - `label_tasks.csv`: `task_id, prompt, response_1 .. response_K, ranks, labeler_id`
//!
//! Filled in, `ranks` holds the rank of each response in the order shown (1 =
//! best, ties share a rank), as a list or as text like `2,1,3,4`; or columns
//! `rank_1 .. rank_K`. The import checks every task id against the exported
//! tasks (its input), and that the ranks are a ranking of that task's K
//! responses; responses found in the file must match the exported ones (a
//! spreadsheet that re-sorted them would otherwise attach ranks to the wrong
//! text).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use lineage::tables::{COMPARISONS, LABEL_TASKS, LabelTaskRow, QUARANTINE, RANKINGS, RankingRow, comparisons_of};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::check_bad;
use super::preferences::ranking_id;
use crate::common::{Format, MissingUser, check_columns, check_fraction, stable_id, unit_hash};
use crate::fields::{opt_id, rank_list, string_list, text};
use crate::formats::{Source, check_ranking, prepare};
use crate::quarantine::{Quarantine, RowError};
use crate::read::read_file;

pub struct ExportLabels;

/// Parameters of `ingest.export_labels`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportParams {
    /// Show each task's responses in a seeded random order.
    pub shuffle: bool,
}

impl Default for ExportParams {
    fn default() -> Self {
        ExportParams { shuffle: true }
    }
}

impl Validate for ExportParams {}

impl TypedStage for ExportLabels {
    type Params = ExportParams;
    const NAME: &'static str = "ingest.export_labels";
    const ABOUT: &'static str =
        "Responses to be ranked -> label_tasks table + label_tasks.jsonl / label_tasks.csv for a labelling tool.";
    const INPUTS: &'static [InputSpec] = &[InputSpec::one(
        "tasks",
        "Responses to rank: a label_tasks table, or a rankings-shaped table (its ranks are ignored).",
    )];
    const OUTPUTS: &'static [TableSpec] = &[LABEL_TASKS];
    const HEADLINE: Option<&'static str> = Some("tasks");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }
    fn run(ctx: &mut StageContext, p: &ExportParams) -> Result<()> {
        let input = ctx.input("tasks")?;
        let mut tasks: Vec<LabelTaskRow> = match input.read_rows::<LabelTaskRow>(&LABEL_TASKS) {
            Ok(rows) => rows,
            Err(as_tasks) => {
                let rankings: Vec<RankingRow> = input.read_rows(&RANKINGS).map_err(|as_rankings| {
                    anyhow!(
                        "input `tasks` is neither a label_tasks table ({as_tasks:#}) nor a rankings table ({as_rankings:#})"
                    )
                })?;
                tasks_of_rankings(rankings)
            }
        };
        let before = tasks.len();
        tasks.retain(|t| t.responses.len() >= 2);
        if tasks.len() < before {
            ctx.warn(format!("left out {} task(s) with fewer than 2 responses", before - tasks.len()));
        }
        let ids: BTreeSet<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        if ids.len() != tasks.len() {
            bail!("input `tasks` repeats task ids; each task must have its own id");
        }
        if p.shuffle {
            for t in &mut tasks {
                let key = |i: usize| unit_hash(ctx.seed, &format!("shuffle:{}", t.task_id), &i.to_string());
                let mut order: Vec<usize> = (0..t.responses.len()).collect();
                order.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
                t.responses = order.iter().map(|&i| t.responses[i].clone()).collect();
            }
        }
        ctx.write_rows(&LABEL_TASKS, &tasks)?;
        write_task_files(ctx, &tasks)?;
        let k: Vec<usize> = tasks.iter().map(|t| t.responses.len()).collect();
        ctx.metric("tasks", tasks.len() as f64);
        ctx.metric("min_k", k.iter().copied().min().unwrap_or(0) as f64);
        ctx.metric("max_k", k.iter().copied().max().unwrap_or(0) as f64);
        Ok(())
    }
}

/// One task per distinct (prompt, responses) of a rankings table: several
/// labelers' rankings of the same responses are one task.
fn tasks_of_rankings(rankings: Vec<RankingRow>) -> Vec<LabelTaskRow> {
    let mut seen = HashSet::new();
    let mut tasks = Vec::new();
    for r in rankings {
        let mut parts = vec![r.prompt_id.as_str()];
        parts.extend(r.responses.iter().map(String::as_str));
        let task_id = stable_id("t", &parts);
        if seen.insert(task_id.clone()) {
            tasks.push(LabelTaskRow {
                task_id,
                prompt_id: r.prompt_id,
                prompt: r.prompt,
                responses: r.responses,
                split: r.split,
                source: r.source,
            });
        }
    }
    tasks
}

fn write_task_files(ctx: &mut StageContext, tasks: &[LabelTaskRow]) -> Result<()> {
    let mut jsonl = String::new();
    for t in tasks {
        let row = json!({
            "task_id": t.task_id, "prompt": t.prompt, "responses": t.responses, "ranks": [], "labeler_id": "",
        });
        jsonl.push_str(&row.to_string());
        jsonl.push('\n');
    }
    std::fs::write(ctx.out_path("label_tasks.jsonl")?, jsonl)?;

    let k = tasks.iter().map(|t| t.responses.len()).max().unwrap_or(0);
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["task_id".to_string(), "prompt".to_string()];
    header.extend((1..=k).map(|i| format!("response_{i}")));
    header.extend(["ranks".to_string(), "labeler_id".to_string()]);
    w.write_record(&header)?;
    for t in tasks {
        let mut row = vec![t.task_id.clone(), t.prompt.clone()];
        row.extend((0..k).map(|i| t.responses.get(i).cloned().unwrap_or_default()));
        row.extend([String::new(), String::new()]);
        w.write_record(&row)?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow!("writing label_tasks.csv: {e}"))?;
    std::fs::write(ctx.out_path("label_tasks.csv")?, bytes)?;
    Ok(())
}

pub struct ImportLabels;

/// Parameters of `ingest.import_labels`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportParams {
    /// The filled-in file: .jsonl, .json, .csv, .tsv or .parquet.
    pub path: String,
    /// Canonical column -> the file's column (task_id, ranks, labeler_id, responses).
    pub columns: BTreeMap<String, String>,
    /// The labeler of rows without a `labeler_id` (`""`: left empty).
    pub labeler_id: String,
    /// Accept tied ranks (ties yield no comparison).
    pub allow_ties: bool,
    pub max_bad_fraction: f64,
}

impl Default for ImportParams {
    fn default() -> Self {
        ImportParams {
            path: String::new(),
            columns: BTreeMap::new(),
            labeler_id: String::new(),
            allow_ties: true,
            max_bad_fraction: 0.1,
        }
    }
}

impl Validate for ImportParams {
    fn validate(&self) -> Result<(), String> {
        if self.path.is_empty() {
            return Err("`path` is required: the filled-in label file".into());
        }
        check_columns(&self.columns)?;
        check_fraction("max_bad_fraction", self.max_bad_fraction)
    }
}

impl TypedStage for ImportLabels {
    type Params = ImportParams;
    const NAME: &'static str = "ingest.import_labels";
    const ABOUT: &'static str =
        "A filled-in label file -> rankings, comparisons, quarantine (checked against the exported tasks).";
    const INPUTS: &'static [InputSpec] =
        &[InputSpec::one("tasks", "The export_labels step whose files were labelled (its label_tasks table).")];
    const OUTPUTS: &'static [TableSpec] = &[RANKINGS, COMPARISONS, QUARANTINE];
    const HEADLINE: Option<&'static str> = Some("comparisons");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }
    fn file_deps(p: &ImportParams) -> Vec<PathBuf> {
        vec![PathBuf::from(&p.path)]
    }
    fn run(ctx: &mut StageContext, p: &ImportParams) -> Result<()> {
        let tasks: Vec<LabelTaskRow> = ctx.read_rows("tasks", &LABEL_TASKS)?;
        let by_id: HashMap<&str, &LabelTaskRow> = tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
        let mut q = Quarantine::new();
        let (_, mut records) = read_file(&p.path, &mut q)?;
        let src = Source {
            path: p.path.clone(),
            format: Format::Rankings,
            columns: p.columns.clone(),
            user_column: String::new(),
            missing_user: MissingUser::File,
        };
        prepare(&mut records, &src).with_context(|| format!("reading labels from {}", p.path))?;

        let mut rankings: Vec<RankingRow> = Vec::new();
        let mut seen: HashMap<(String, String), String> = HashMap::new();
        let mut labelled: BTreeSet<&str> = BTreeSet::new();
        for rec in &records {
            let f = &rec.fields;
            let parsed = (|| -> std::result::Result<Option<RankingRow>, RowError> {
                let task_id = text(f, "task_id")?;
                let task = by_id.get(task_id.as_str()).ok_or_else(|| {
                    RowError::new(
                        "task_id",
                        format!("unknown task `{task_id}`: not among the {} exported tasks", tasks.len()),
                    )
                })?;
                let blank = match f.get("ranks") {
                    None | Some(serde_json::Value::Null) => true,
                    Some(serde_json::Value::String(s)) => s.trim().is_empty() || s.trim() == "[]",
                    Some(serde_json::Value::Array(a)) => a.is_empty(),
                    _ => false,
                };
                if blank {
                    return Ok(None);
                }
                let ranks = rank_list(f, "ranks")?;
                check_ranking(&task.responses, &ranks)?;
                if !p.allow_ties && ranks.iter().collect::<BTreeSet<_>>().len() != ranks.len() {
                    return Err(RowError::new("ranks", "tied ranks, and allow_ties = false"));
                }
                if f.contains_key("responses") {
                    let shown = string_list(f, "responses")?;
                    let nonblank = shown.iter().any(|s| !s.is_empty());
                    if nonblank && shown.iter().map(|s| s.trim()).ne(task.responses.iter().map(|s| s.trim())) {
                        return Err(RowError::new(
                            "responses",
                            "differ from the exported task (re-sorted or edited?); the ranks would refer to other responses",
                        ));
                    }
                }
                let labeler_id = opt_id(f, "labeler_id")?.unwrap_or_else(|| p.labeler_id.clone());
                Ok(Some(RankingRow {
                    ranking_id: ranking_id(&task.prompt_id, &labeler_id, &task.responses, &ranks),
                    prompt_id: task.prompt_id.clone(),
                    prompt: task.prompt.clone(),
                    responses: task.responses.clone(),
                    ranks,
                    labeler_id,
                    split: task.split.clone(),
                    source: p.path.clone(),
                }))
            })();
            match parsed {
                Err(e) => q.bad(&rec.origin, e),
                Ok(None) => q.removed(&rec.origin, "unranked", RowError::new("ranks", "not ranked yet")),
                Ok(Some(r)) => {
                    let task_id = text(f, "task_id").unwrap_or_default();
                    let key = (task_id.clone(), r.labeler_id.clone());
                    if let Some(first) = seen.get(&key) {
                        let reason =
                            format!("duplicate of {first} (task `{task_id}` ranked twice by `{}`)", r.labeler_id);
                        q.removed(&rec.origin, "duplicate", RowError::new("task_id", reason));
                        continue;
                    }
                    seen.insert(key, r.ranking_id.clone());
                    if let Some(t) = by_id.get(task_id.as_str()) {
                        labelled.insert(t.task_id.as_str());
                    }
                    rankings.push(r);
                }
            }
        }
        check_bad(ctx, &q, p.max_bad_fraction)?;
        let comparisons: Vec<_> = rankings.iter().flat_map(comparisons_of).collect();
        ctx.write_rows(&RANKINGS, &rankings)?;
        ctx.write_rows(&COMPARISONS, &comparisons)?;
        ctx.write_rows(&QUARANTINE, q.rows())?;
        let labelers: BTreeSet<&str> = rankings.iter().map(|r| r.labeler_id.as_str()).collect();
        ctx.metric("rankings", rankings.len() as f64);
        ctx.metric("comparisons", comparisons.len() as f64);
        ctx.metric("tasks_labelled", labelled.len() as f64);
        ctx.metric("tasks_unlabelled", (tasks.len() - labelled.len()) as f64);
        ctx.metric("labelers", labelers.len() as f64);
        ctx.metric("rows_read", q.rows_read() as f64);
        ctx.metric("rows_bad", q.bad_count() as f64);
        for class in ["unranked", "duplicate"] {
            ctx.metric(format!("removed_{class}"), q.removed_counts().get(class).copied().unwrap_or(0) as f64);
        }
        Ok(())
    }
}
