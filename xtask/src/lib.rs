//! The pipeline runner and developer commands.
//!
//! Architecture invariant: this is the only crate that knows the DAG and
//! every stage. It links all stage crates, reads `pipelines/*.toml`, and runs
//! steps through `lineage`'s executor; stage crates never see each other.

pub mod bench;
pub mod compare;
pub mod pipeline;
pub mod progress_log;
pub mod report;

use std::io::Write;
use std::sync::OnceLock;

use anyhow::Result;
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressDrawTarget};
use lineage::{Progress, Stage};

/// Every stage the pipeline can run.
pub fn registry() -> Vec<Box<dyn Stage>> {
    let mut all = lineage::testing::stages();
    all.extend(ingest::stages());
    all.extend(sft::stages());
    all.extend(rm::stages());
    all.extend(rollout::stages());
    all.extend(ppo::stages());
    all.extend(eval::stages());
    all
}

#[derive(Parser)]
#[command(name = "cargo xtask", about = "instructgpt-rs pipeline runner and developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run or inspect a pipeline (default: run pipelines/default.toml).
    Pipeline(pipeline::PipelineArgs),
    /// Every stage: inputs, output tables and parameters with defaults.
    Stages,
    /// Two runs side by side: metrics, and what differs in their lineage.
    Compare(compare::CompareArgs),
    /// The path of the pipeline's evaluation report (report.html).
    Report(report::ReportArgs),
    /// Model speed on this machine: training and decode tokens/s, GEMM FLOP/s, MFU.
    Bench(bench::BenchArgs),
}

static MULTI: OnceLock<MultiProgress> = OnceLock::new();

/// Log lines go through the progress display so they do not tear its bars.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match MULTI.get() {
            // Only a terminal's bars need moving aside. In a log they are lines themselves, logged
            // from inside a redraw, which holds the bars' lock: test the terminal first, as even
            // `is_hidden` would wait for that lock.
            Some(m) if std::io::IsTerminal::is_terminal(&std::io::stderr()) && !m.is_hidden() => {
                m.suspend(|| std::io::stderr().write_all(buf))?
            }
            _ => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| LogWriter)
        .try_init();
}

/// Bars on a terminal; in a log file or pipe, bar lines logged every 30 s (see [`progress_log`]).
fn progress_target() -> MultiProgress {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return MultiProgress::new();
    }
    let target = match progress_log::interval_from_env() {
        Some(every) => ProgressDrawTarget::term_like_with_hz(Box::new(progress_log::LogLines::new(every)), 1),
        None => ProgressDrawTarget::hidden(),
    };
    MultiProgress::with_draw_target(target)
}

/// The `cargo xtask` entry point.
pub fn main() -> Result<()> {
    init_logging();
    let cli = Cli::parse();
    let registry = registry();
    let multi = MULTI.get_or_init(progress_target).clone();
    let progress = Progress::new(multi);
    match cli.command {
        Command::Pipeline(args) => pipeline::main(args, &registry, &progress),
        Command::Compare(args) => compare::main(args, &registry),
        Command::Report(args) => report::main(args, &registry),
        Command::Bench(args) => bench::main(args),
        Command::Stages => {
            for s in &registry {
                println!("{}  {}", s.name(), s.about());
                for i in s.inputs() {
                    println!("    input  {:<16} {:?}  {}", i.name, i.arity, i.doc);
                }
                for t in s.outputs() {
                    println!("    table  {:<16} {}", t.name, t.doc);
                }
                println!("    params {}", serde_json::to_string(&s.default_params())?);
            }
            Ok(())
        }
    }
}
