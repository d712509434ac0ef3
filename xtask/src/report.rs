//! `cargo xtask report`: where a pipeline's evaluation report is.
//!
//! The report is the `report.html` of the pipeline's `eval.report` step.
//! The step is found the way `pipeline status` finds it: the artifact for
//! the current code, parameters and inputs if the store has it, else the
//! step's last artifact in this pipeline (`_refs/<pipeline>/<step>.json`),
//! with a warning that it is out of date.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use lineage::{Stage, Store};

use crate::pipeline::inspect::{Freshness, freshness};
use crate::pipeline::spec::{self, Plan};

/// The stage whose artifact holds the report.
pub const REPORT_STAGE: &str = "eval.report";

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// The pipeline file.
    #[arg(long, short = 'c', default_value = "pipelines/default.toml")]
    pub config: PathBuf,
    /// The artifact store.
    #[arg(long, env = lineage::store::STORE_ENV, default_value = "artifacts")]
    pub store: PathBuf,
}

pub fn main(args: ReportArgs, registry: &[Box<dyn Stage>]) -> Result<()> {
    let plan = spec::load(&args.config, registry, &[])?;
    let store = Store::open(&args.store)?;
    for found in locate(&store, &plan)? {
        if let Some(why) = &found.stale {
            eprintln!(
                "warning: the report of step `{}` is out of date ({why}); `cargo xtask pipeline -c {}` updates it",
                found.step,
                plan.file.display()
            );
        }
        println!("{}", found.path.display());
    }
    Ok(())
}

/// A report of one `eval.report` step.
#[derive(Debug, Clone)]
pub struct Found {
    pub step: String,
    pub path: PathBuf,
    /// Why the stored report is not the one the pipeline would make now.
    pub stale: Option<String>,
}

/// The report of every `eval.report` step of `plan`.
pub fn locate(store: &Store, plan: &Plan) -> Result<Vec<Found>> {
    let steps: Vec<&str> =
        plan.steps.iter().filter(|s| s.stage.name() == REPORT_STAGE).map(|s| s.name.as_str()).collect();
    if steps.is_empty() {
        bail!(
            "{}: no step runs stage {REPORT_STAGE}, so this pipeline makes no report; add a step with \
             `stage = \"{REPORT_STAGE}\"` whose `models` are its eval.model steps",
            plan.file.display()
        );
    }
    let fresh = freshness(store, plan)?;
    let mut out = Vec::new();
    for step in steps {
        let state = fresh.iter().find(|(name, _)| name == step).map(|(_, f)| f);
        let (artifact, stale) = match state {
            Some(Freshness::Fresh(a)) => ((**a).clone(), None),
            Some(Freshness::Stale(causes)) => {
                let last = store.get_ref(&plan.name, step).and_then(|r| store.get(&r.stage, &r.key).ok().flatten());
                match last {
                    Some(a) => (a, Some(causes.join("; "))),
                    None => bail!(
                        "step `{step}` of pipeline `{}` has no report in store {}: run `cargo xtask pipeline -c {}` first",
                        plan.name,
                        store.root().display(),
                        plan.file.display()
                    ),
                }
            }
            None => bail!("step `{step}` is not in the plan"),
        };
        let path = artifact.dir.join("report.html");
        if !path.exists() {
            bail!("artifact {} of step `{step}` has no report.html", artifact.dir.display());
        }
        out.push(Found { step: step.to_string(), path, stale });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn error(text: &str) -> String {
        let registry = crate::registry();
        let plan = spec::parse(text, Path::new("pipelines/t.toml"), &registry, &[]).unwrap();
        // An empty store (xtask has no tempfile dependency).
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("xtask-report-{}-{nanos}", std::process::id()));
        let store = Store::open(dir.join("artifacts")).unwrap();
        let e = format!("{:#}", locate(&store, &plan).unwrap_err());
        let _ = std::fs::remove_dir_all(&dir);
        e
    }

    #[test]
    fn a_pipeline_without_a_report_step_says_so() {
        let e = error("[pipeline]\nname = \"t\"\n[steps.emit]\nstage = \"debug.emit\"\n");
        assert!(e.contains("no step runs stage eval.report"), "{e}");
    }

    #[test]
    fn a_pipeline_not_run_says_what_to_run() {
        let e = error(
            "[pipeline]\nname = \"t\"\n[steps.emit]\nstage = \"debug.emit\"\n\
             [steps.report]\nstage = \"eval.report\"\ninputs = { models = [\"emit\"], baseline = \"emit\" }\n",
        );
        assert!(
            e.contains("step `report` of pipeline `t` has no report") && e.contains("cargo xtask pipeline -c"),
            "{e}"
        );
    }
}
