//! `cargo xtask pipeline`: run and inspect a pipeline of stages.

pub mod inspect;
pub mod run;
pub mod spec;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use lineage::{Progress, Stage, Store};

#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The pipeline file.
    #[arg(long, short = 'c', global = true, default_value = "pipelines/default.toml")]
    pub config: PathBuf,
    /// The artifact store.
    #[arg(long, global = true, env = lineage::store::STORE_ENV, default_value = "artifacts")]
    pub store: PathBuf,
    /// Override a parameter: STEP.PARAM=VALUE (VALUE in TOML syntax), or
    /// pipeline.seed=N / pipeline.device=cuda:0.
    #[arg(long = "set", short = 's', global = true)]
    pub overrides: Vec<String>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run every step whose artifact is not in the store (the default).
    Run {
        /// Only these steps and the steps they need (a matrix step's base name means all its
        /// expansions). None: every step.
        steps: Vec<String>,
    },
    /// Each step: fresh, stale or missing, and why.
    Status,
    /// The steps and what feeds what.
    Dag {
        /// text, dot (Graphviz) or mermaid.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Why a step would rerun, field by field, following stale inputs upstream.
    Why { step: String },
    /// Re-hash every stored artifact against its manifest.
    Verify,
    /// Remove artifacts that the given pipelines (--config, repeatable
    /// with --keep) do not reference.
    Gc {
        #[arg(long)]
        dry_run: bool,
        /// More pipeline files whose artifacts to keep.
        #[arg(long)]
        keep: Vec<PathBuf>,
    },
    /// An artifact's manifest, table schemas, statistics and first rows.
    Show {
        /// A step name of the pipeline, or a key prefix.
        what: String,
        #[arg(long, default_value_t = 3)]
        rows: usize,
    },
    /// Every artifact in the store.
    Ls,
}

pub fn main(args: PipelineArgs, registry: &[Box<dyn Stage>], progress: &Progress) -> Result<()> {
    let c = &args.common;
    let store = Store::open(&c.store)?;
    let load = |path: &PathBuf| spec::load(path, registry, &c.overrides);
    match args.command.unwrap_or(Command::Run { steps: Vec::new() }) {
        Command::Run { steps } => run::run(&store, &load(&c.config)?.only(&steps)?, progress).map(|_| ()),
        Command::Status => inspect::print_status(&store, &load(&c.config)?),
        Command::Dag { format } => {
            print!("{}", inspect::dag(&load(&c.config)?, &format)?);
            Ok(())
        }
        Command::Why { step } => inspect::print_why(&store, &load(&c.config)?, &step),
        Command::Verify => inspect::verify(&store),
        Command::Gc { dry_run, keep } => {
            let mut plans = vec![load(&c.config)?];
            for k in &keep {
                plans.push(load(k)?);
            }
            inspect::gc(&store, &plans, dry_run)
        }
        Command::Show { what, rows } => {
            let plan = load(&c.config).ok();
            let artifact = inspect::find(&store, plan.as_ref(), &what)?;
            inspect::show(&artifact, rows)
        }
        Command::Ls => {
            for a in store.list()? {
                let m = &a.manifest;
                let headline = m
                    .headline
                    .as_ref()
                    .map(|h| format!("{} = {}", h.name, run::fmt_value(h.value)))
                    .unwrap_or_default();
                println!("{}  {:<20} {:<16} {headline}", lineage::hash::short(&m.key), m.stage, m.step);
            }
            Ok(())
        }
    }
}
