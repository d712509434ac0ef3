//! Small stages for testing the runner itself (`debug.*`).
//!
//! They are registered in every pipeline runner, cost nothing, and have two
//! hooks that are *not* part of their key, so a test can change how they run
//! without changing what they compute:
//!
//! - `INSTRUCTGPT_DEBUG_STALL=<step>` (or `*`): the step writes half of its
//!   output and then sleeps for an hour, so a test can kill it mid-step.
//! - `INSTRUCTGPT_DEBUG_SLEEP_MS=<n>`: every debug step sleeps n ms first, so
//!   concurrent runs overlap.
//! - `INSTRUCTGPT_DEBUG_RUNLOG=<file>`: every run of a debug stage appends
//!   `<step> <key>` to the file, so a test can count how often a step ran.

use std::io::Write;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::schema::{Col, ColType, TableSpec};
use crate::stage::{InputSpec, Stage, StageContext, TypedStage, Validate, stage};

pub const DEBUG_ITEMS: TableSpec = TableSpec {
    name: "items",
    doc: "Test rows of the debug stages.",
    columns: &[Col::new("idx", ColType::Int64, "Row number."), Col::new("text", ColType::Utf8, "Payload.")],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRow {
    pub idx: i64,
    pub text: String,
}

pub const STALL_ENV: &str = "INSTRUCTGPT_DEBUG_STALL";
pub const RUNLOG_ENV: &str = "INSTRUCTGPT_DEBUG_RUNLOG";
pub const SLEEP_ENV: &str = "INSTRUCTGPT_DEBUG_SLEEP_MS";

/// The debug stages.
pub fn stages() -> Vec<Box<dyn Stage>> {
    vec![stage::<Emit>(), stage::<Upper>(), stage::<Concat>()]
}

fn log_run(ctx: &StageContext) -> Result<()> {
    if let Some(path) = std::env::var_os(RUNLOG_ENV) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(f, "{} {}", ctx.step, ctx.key)?;
    }
    Ok(())
}

fn maybe_stall(ctx: &StageContext) -> Result<()> {
    if let Some(ms) = std::env::var(SLEEP_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    if let Ok(target) = std::env::var(STALL_ENV)
        && (target == "*" || target == ctx.step)
    {
        // Leave a half-written file behind, as a real crash would.
        std::fs::write(ctx.out_path("items.parquet")?, b"PAR1 half-written")?;
        eprintln!("{}: stalling as {STALL_ENV} asks", ctx.step);
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
    Ok(())
}

fn write_items(ctx: &mut StageContext, rows: &[ItemRow]) -> Result<()> {
    log_run(ctx)?;
    maybe_stall(ctx)?;
    ctx.metric("rows", rows.len() as f64);
    ctx.write_rows(&DEBUG_ITEMS, rows)
}

/// `debug.emit`: writes `rows` rows of `text`.
pub struct Emit;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmitParams {
    pub text: String,
    pub rows: u32,
    /// Enters the key but not the output: changing it reruns the step with
    /// identical output (for early-cutoff tests).
    pub note: String,
    /// Fail instead of writing.
    pub fail: bool,
    /// Read the rows from this text file (one per line) instead.
    pub from_file: Option<String>,
}

impl Default for EmitParams {
    fn default() -> Self {
        EmitParams { text: "hello".into(), rows: 3, note: String::new(), fail: false, from_file: None }
    }
}

impl Validate for EmitParams {
    fn validate(&self) -> Result<(), String> {
        if self.rows > 1_000_000 {
            return Err(format!("rows = {} is more than a test needs (at most 1000000)", self.rows));
        }
        Ok(())
    }
}

impl TypedStage for Emit {
    type Params = EmitParams;
    const NAME: &'static str = "debug.emit";
    const ABOUT: &'static str = "Test stage: writes a table of repeated text.";
    const INPUTS: &'static [InputSpec] = &[];
    const OUTPUTS: &'static [TableSpec] = &[DEBUG_ITEMS];
    const HEADLINE: Option<&'static str> = Some("rows");
    fn code() -> crate::CodeIdentity {
        crate::code_identity!()
    }
    fn file_deps(p: &EmitParams) -> Vec<std::path::PathBuf> {
        p.from_file.iter().map(std::path::PathBuf::from).collect()
    }
    fn run(ctx: &mut StageContext, p: &EmitParams) -> Result<()> {
        if p.fail {
            bail!("asked to fail (fail = true)");
        }
        if let Some(path) = &p.from_file {
            let text = std::fs::read_to_string(path)?;
            let rows: Vec<ItemRow> =
                text.lines().enumerate().map(|(i, l)| ItemRow { idx: i as i64, text: l.to_string() }).collect();
            return write_items(ctx, &rows);
        }
        let rows: Vec<ItemRow> =
            (0..p.rows).map(|i| ItemRow { idx: i as i64, text: format!("{} {i}", p.text) }).collect();
        write_items(ctx, &rows)
    }
}

/// `debug.upper`: upper-cases its input's text.
pub struct Upper;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpperParams {
    pub suffix: String,
}

impl Validate for UpperParams {}

impl TypedStage for Upper {
    type Params = UpperParams;
    const NAME: &'static str = "debug.upper";
    const ABOUT: &'static str = "Test stage: upper-cases the text of its input.";
    const INPUTS: &'static [InputSpec] = &[InputSpec::one("items", "A debug items table.")];
    const OUTPUTS: &'static [TableSpec] = &[DEBUG_ITEMS];
    const HEADLINE: Option<&'static str> = Some("rows");
    fn code() -> crate::CodeIdentity {
        crate::code_identity!()
    }
    fn run(ctx: &mut StageContext, p: &UpperParams) -> Result<()> {
        let rows: Vec<ItemRow> = ctx.read_rows("items", &DEBUG_ITEMS)?;
        let rows: Vec<ItemRow> = rows
            .into_iter()
            .map(|r| ItemRow { idx: r.idx, text: format!("{}{}", r.text.to_uppercase(), p.suffix) })
            .collect();
        write_items(ctx, &rows)
    }
}

/// `debug.concat`: concatenates a list of inputs.
pub struct Concat;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConcatParams {}

impl Validate for ConcatParams {}

impl TypedStage for Concat {
    type Params = ConcatParams;
    const NAME: &'static str = "debug.concat";
    const ABOUT: &'static str = "Test stage: concatenates its inputs, labelled by step.";
    const INPUTS: &'static [InputSpec] = &[InputSpec::many("parts", "Debug items tables.")];
    const OUTPUTS: &'static [TableSpec] = &[DEBUG_ITEMS];
    const HEADLINE: Option<&'static str> = Some("rows");
    fn code() -> crate::CodeIdentity {
        crate::code_identity!()
    }
    fn run(ctx: &mut StageContext, _: &ConcatParams) -> Result<()> {
        let mut out = Vec::new();
        for part in ctx.inputs("parts") {
            for r in part.read_rows::<ItemRow>(&DEBUG_ITEMS)? {
                out.push(ItemRow { idx: out.len() as i64, text: format!("{}: {}", part.label, r.text) });
            }
        }
        write_items(ctx, &out)
    }
}

/// Runs stages into a store as the pipeline runner would, for stage crates' own tests.
pub struct Harness {
    pub store: crate::Store,
    pub stages: Vec<Box<dyn Stage>>,
}

impl Harness {
    /// A store under `root` (usually a temporary directory) and the stages a test may run.
    pub fn new(root: &std::path::Path, stages: Vec<Box<dyn Stage>>) -> Result<Harness> {
        Ok(Harness { store: crate::Store::open(root.join("artifacts"))?, stages })
    }

    /// Runs `stage` as step `step` with `params` (resolved against its defaults) and inputs
    /// `(input name, artifact, table)`.
    pub fn run(
        &self,
        step: &str,
        stage: &str,
        params: serde_json::Value,
        inputs: &[(&str, &crate::Artifact, Option<&str>)],
        seed: u64,
    ) -> Result<(crate::Artifact, crate::Outcome)> {
        let Some(stage) = self.stages.iter().find(|s| s.name() == stage) else { bail!("no stage {stage}") };
        let params = stage.resolve_params(&params)?;
        let mut map: std::collections::BTreeMap<String, Vec<crate::InputArtifact>> = Default::default();
        for (name, artifact, table) in inputs {
            let input = crate::InputArtifact::new(
                artifact.manifest.step.clone(),
                (*artifact).clone(),
                table.map(String::from),
            )?;
            map.entry(name.to_string()).or_default().push(input);
        }
        let req = crate::StepRequest {
            pipeline: "test",
            step,
            stage: stage.as_ref(),
            params,
            seed,
            device: "cpu".into(),
            inputs: map,
        };
        let r = crate::execute(&self.store, &req, &crate::Progress::hidden())?;
        Ok((r.artifact, r.outcome))
    }
}

/// The rows of one of an artifact's tables.
pub fn rows<T: serde::de::DeserializeOwned>(a: &crate::Artifact, spec: &TableSpec) -> Result<Vec<T>> {
    crate::parquet_io::read_rows(&a.table_path(spec.name)?, spec)
}
