//! A command line to run one stage by hand on explicit artifact directories,
//! outside any pipeline and store. Every stage crate's binary is this CLI
//! over that crate's stages:
//!
//! ```text
//! sft list
//! sft params sft.sft
//! sft run sft.sft --input base=artifacts/sft.pretrain/3fa2... \
//!     --input demonstrations=artifacts/ingest.world/9c1e...#demonstrations \
//!     -p epochs=2 --out /tmp/my-sft
//! ```
//!
//! The output directory is written the same way the store publishes: into a
//! temporary sibling, manifest last, then renamed into place.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::stage::{InputArtifact, Progress, Stage, StepRequest, run_into};
use crate::store::{Artifact, sync_dir};
use crate::{Manifest, hash::short};

#[derive(Parser)]
#[command(about = "Run a pipeline stage by hand on explicit artifact directories")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The stages of this crate, their inputs and outputs.
    List,
    /// A stage's parameters with their defaults (JSON).
    Params { stage: String },
    /// Run a stage.
    Run {
        stage: String,
        /// An input: NAME=ARTIFACT_DIR, or NAME=ARTIFACT_DIR#TABLE; repeat for list inputs.
        #[arg(long = "input", short = 'i')]
        inputs: Vec<String>,
        /// A parameter: KEY=VALUE (VALUE is JSON, or else a string).
        #[arg(long = "param", short = 'p')]
        params: Vec<String>,
        /// The artifact directory to create (must not exist).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1234)]
        seed: u64,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

/// Parses the process arguments and runs; for a stage crate's `main`.
pub fn main(stages: Vec<Box<dyn Stage>>) -> Result<()> {
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).try_init();
    run(Cli::parse(), &stages)
}

fn find<'a>(stages: &'a [Box<dyn Stage>], name: &str) -> Result<&'a dyn Stage> {
    stages.iter().find(|s| s.name() == name).map(|s| s.as_ref()).ok_or_else(|| {
        anyhow!("no stage `{name}` here; stages: {}", stages.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "))
    })
}

fn run(cli: Cli, stages: &[Box<dyn Stage>]) -> Result<()> {
    match cli.command {
        Command::List => {
            for s in stages {
                println!("{}  {}", s.name(), s.about());
                for i in s.inputs() {
                    println!("    input  {:<16} {:?}  {}", i.name, i.arity, i.doc);
                }
                for t in s.outputs() {
                    println!("    table  {:<16} {}", t.name, t.doc);
                }
            }
            Ok(())
        }
        Command::Params { stage } => {
            println!("{}", serde_json::to_string_pretty(&find(stages, &stage)?.default_params())?);
            Ok(())
        }
        Command::Run { stage, inputs, params, out, seed, device } => {
            let stage = find(stages, &stage)?;
            let given = parse_params(&params)?;
            let resolved = stage.resolve_params(&given).map_err(|e| anyhow!("stage {}: {e}", stage.name()))?;
            let mut map: BTreeMap<String, Vec<InputArtifact>> = BTreeMap::new();
            for spec in &inputs {
                let (name, rest) =
                    spec.split_once('=').ok_or_else(|| anyhow!("--input `{spec}`: expected NAME=DIR[#TABLE]"))?;
                let (dir, table) = match rest.split_once('#') {
                    Some((d, t)) => (PathBuf::from(d), Some(t.to_string())),
                    None => (PathBuf::from(rest), None),
                };
                let manifest = Manifest::read(&dir)
                    .with_context(|| format!("--input {name}: {} is not an artifact", dir.display()))?;
                let label = manifest.step.clone();
                map.entry(name.to_string()).or_default().push(InputArtifact::new(
                    label,
                    Artifact { dir, manifest },
                    table,
                )?);
            }
            let req =
                StepRequest { pipeline: "cli", step: stage.name(), stage, params: resolved, seed, device, inputs: map };
            req.check_inputs()?;
            if out.exists() {
                bail!("{} exists; choose a new --out directory", out.display());
            }
            let key = req.key()?;
            let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
            let parent = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            std::fs::create_dir_all(&parent)?;
            let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
            let scratch = parent.join(format!(".{name}.scratch-{}", short(&key)));
            std::fs::create_dir_all(&tmp)?;
            let manifest = match run_into(&req, &key, &tmp, &scratch, &Progress::hidden()) {
                Ok(m) => m,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(e);
                }
            };
            sync_dir(&tmp)?;
            std::fs::rename(&tmp, &out)?;
            sync_dir(&parent)?;
            let _ = std::fs::remove_dir_all(&scratch);
            println!(
                "{} -> {} (key {}, content {})",
                stage.name(),
                out.display(),
                short(&key),
                short(&manifest.content_hash)
            );
            for (k, v) in &manifest.metrics {
                println!("  {k} = {v}");
            }
            Ok(())
        }
    }
}

/// `KEY=VALUE` pairs -> a JSON object; VALUE is JSON, or else a string.
/// Dotted keys make nested objects.
pub fn parse_params(pairs: &[String]) -> Result<Value> {
    let mut root = serde_json::Map::new();
    for pair in pairs {
        let (key, raw) = pair.split_once('=').ok_or_else(|| anyhow!("parameter `{pair}`: expected KEY=VALUE"))?;
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("split yields one part");
        let mut node = &mut root;
        for p in parts {
            node = node
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(Default::default()))
                .as_object_mut()
                .ok_or_else(|| anyhow!("parameter `{key}`: `{p}` is not a table"))?;
        }
        node.insert(last.to_string(), value);
    }
    Ok(Value::Object(root))
}
