//! `cargo xtask bench`: the model's speed on this machine (training tokens/s, decode tokens/s with
//! the KV cache at batch 1 and 32, fp32 GEMM FLOP/s, and training MFU as a ratio of that GEMM
//! figure). A benchmark, not a test: every figure comes from one run, so ratios are comparable.

use anyhow::Result;
use clap::Args;
use model::Preset;
use model::bench::{BenchConfig, run};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model preset: smoke, tiny or small. The default pipeline builds its models from `tiny` with
    /// overrides (its largest, about 2M parameters, is `tiny` with hidden size 192), so `tiny` is the
    /// closest preset to them.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// `cpu` or `cuda:N` (needs `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 2048)]
    vocab_size: usize,
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Timed training steps.
    #[arg(long, default_value_t = 5)]
    train_steps: usize,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

pub fn main(args: BenchArgs) -> Result<()> {
    let preset: Preset = args.preset.parse()?;
    let cfg = BenchConfig {
        preset,
        device: args.device,
        vocab_size: args.vocab_size,
        seq_len: args.seq_len,
        batch_size: args.batch_size,
        train_steps: args.train_steps,
        ..BenchConfig::default()
    };
    if cfg!(debug_assertions) {
        eprintln!("note: xtask is a dev build; the model crate is optimised (opt-level 3) in it too");
    }
    let report = run(&cfg)?;
    println!("{report}");
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
        println!("written to {}", path.display());
    }
    Ok(())
}
