//! Running a plan: each step in dependency order, cached steps skipped, a
//! progress display, and a summary table at the end.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Result, bail};
use indicatif::ProgressStyle;
use lineage::hash::short;
use lineage::{Artifact, InputArtifact, Outcome, Progress, StepRequest, Store, execute};
use serde_json::json;

use super::spec::{Plan, PlannedStep};

/// What happened to one step.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Cached,
    Ran,
    /// Another run on the same store computed it while this one waited.
    Waited,
    Failed(String),
    /// Not run because an upstream step failed.
    Skipped,
}

impl Status {
    fn label(&self) -> &'static str {
        match self {
            Status::Cached => "cached",
            Status::Ran => "ran",
            Status::Waited => "waited",
            Status::Failed(_) => "FAILED",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StepReport {
    pub step: String,
    pub stage: String,
    pub key: Option<String>,
    pub status: Status,
    pub wall_s: f64,
    pub headline: Option<(String, f64)>,
}

/// The input artifacts of `step`, if every upstream step has one.
pub fn resolve_inputs(
    step: &PlannedStep,
    done: &BTreeMap<String, Artifact>,
) -> Result<Option<BTreeMap<String, Vec<InputArtifact>>>> {
    let mut out = BTreeMap::new();
    for (name, refs) in &step.inputs {
        let mut items = Vec::new();
        for r in refs {
            let Some(artifact) = done.get(&r.step) else {
                return Ok(None);
            };
            items.push(InputArtifact::new(r.step.clone(), artifact.clone(), r.table.clone())?);
        }
        out.insert(name.clone(), items);
    }
    Ok(Some(out))
}

pub fn request<'a>(
    plan: &'a Plan,
    step: &'a PlannedStep,
    inputs: BTreeMap<String, Vec<InputArtifact>>,
) -> StepRequest<'a> {
    StepRequest {
        pipeline: &plan.name,
        step: &step.name,
        stage: step.stage,
        params: step.params.clone(),
        seed: step.seed,
        device: plan.device.clone(),
        inputs,
    }
}

/// Runs every step of `plan`; returns the per-step reports (and an error if
/// any step failed, after running every step that did not depend on it).
pub fn run(store: &Store, plan: &Plan, progress: &Progress) -> Result<Vec<StepReport>> {
    let clock = Instant::now();
    let top = progress.bar(plan.steps.len() as u64, &plan.name);
    top.set_style(
        ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} steps  {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    top.set_prefix(format!("pipeline {}", plan.name));
    let mut done: BTreeMap<String, Artifact> = BTreeMap::new();
    let mut reports = Vec::new();
    for step in &plan.steps {
        top.set_message(step.name.clone());
        let report = run_step(store, plan, step, progress, &mut done);
        if let Status::Failed(e) = &report.status {
            tracing::error!("step `{}` failed: {e}", step.name);
        }
        reports.push(report);
        top.inc(1);
    }
    top.finish_and_clear();
    let total = clock.elapsed().as_secs_f64();
    print_summary(plan, &reports, total);
    let record = json!({
        "pipeline": plan.name,
        "file": plan.file.display().to_string(),
        "wall_time_s": total,
        "steps": reports.iter().map(|r| json!({
            "step": r.step, "stage": r.stage, "key": r.key, "status": r.status.label(),
            "wall_time_s": r.wall_s, "headline": r.headline,
        })).collect::<Vec<_>>(),
    });
    store.record_run(&plan.name, &record)?;
    let failed: Vec<&str> =
        reports.iter().filter(|r| matches!(r.status, Status::Failed(_))).map(|r| r.step.as_str()).collect();
    if !failed.is_empty() {
        bail!("{} step(s) failed: {}; the errors are above", failed.len(), failed.join(", "));
    }
    Ok(reports)
}

fn run_step(
    store: &Store,
    plan: &Plan,
    step: &PlannedStep,
    progress: &Progress,
    done: &mut BTreeMap<String, Artifact>,
) -> StepReport {
    let mut report = StepReport {
        step: step.name.clone(),
        stage: step.stage.name().to_string(),
        key: None,
        status: Status::Skipped,
        wall_s: 0.0,
        headline: None,
    };
    let inputs = match resolve_inputs(step, done) {
        Ok(Some(i)) => i,
        Ok(None) => {
            tracing::warn!("step `{}` skipped: an upstream step failed", step.name);
            return report;
        }
        Err(e) => {
            report.status = Status::Failed(format!("{e:#}"));
            return report;
        }
    };
    let req = request(plan, step, inputs);
    let key = match req.key() {
        Ok(k) => k,
        Err(e) => {
            report.status = Status::Failed(format!("{e:#}"));
            return report;
        }
    };
    report.key = Some(key.clone());
    match execute(store, &req, progress) {
        Ok(result) => {
            report.status = match result.outcome {
                Outcome::Cached => Status::Cached,
                Outcome::Ran => Status::Ran,
                Outcome::Waited => Status::Waited,
            };
            report.wall_s = result.wall.as_secs_f64();
            report.headline = result.artifact.manifest.headline.as_ref().map(|h| (h.name.clone(), h.value));
            if result.outcome != Outcome::Cached {
                tracing::info!(
                    "{}: {} in {:.1}s (key {})",
                    step.name,
                    report.status.label(),
                    report.wall_s,
                    short(&key)
                );
            }
            if let Err(e) = store.set_ref(&plan.name, &step.name, &result.artifact.manifest) {
                tracing::warn!("could not record the ref of `{}`: {e:#}", step.name);
            }
            done.insert(step.name.clone(), result.artifact);
        }
        Err(e) => report.status = Status::Failed(format!("{e:#}")),
    }
    report
}

fn print_summary(plan: &Plan, reports: &[StepReport], total: f64) {
    let width = reports.iter().map(|r| r.step.len()).max().unwrap_or(4).max(4);
    let swidth = reports.iter().map(|r| r.stage.len()).max().unwrap_or(5).max(5);
    println!();
    println!("{:<width$}  {:<swidth$}  {:<12}  {:<7}  {:>8}  headline", "step", "stage", "key", "status", "wall");
    for r in reports {
        let key = r.key.as_deref().map(short).unwrap_or("-");
        let headline = r.headline.as_ref().map(|(n, v)| format!("{n} = {}", fmt_value(*v))).unwrap_or_default();
        println!(
            "{:<width$}  {:<swidth$}  {:<12}  {:<7}  {:>7.1}s  {headline}",
            r.step,
            r.stage,
            key,
            r.status.label(),
            r.wall_s
        );
    }
    let count = |s: &str| reports.iter().filter(|r| r.status.label() == s).count();
    println!(
        "pipeline {}: {} steps, {} ran, {} cached, {} failed, {} skipped in {:.1}s",
        plan.name,
        reports.len(),
        count("ran") + count("waited"),
        count("cached"),
        count("FAILED"),
        count("skipped"),
        total
    );
}

/// A metric for a table cell: 4 significant digits.
pub fn fmt_value(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{:.4}", v).trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
