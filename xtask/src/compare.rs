//! `cargo xtask compare A B`: two runs side by side.
//!
//! Each side is a pipeline file (in the store given by `--store`) or a store
//! directory (with the pipeline given by `--config`), optionally with its own
//! `-s` overrides (`--set-a`, `--set-b`). For every step of either side it
//! prints the metrics of both artifacts and what differs in their lineage:
//! parameters, inputs, code, seed, device.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use lineage::hash::short;
use lineage::key::diff_params;
use lineage::{Manifest, Stage, Store};

use crate::pipeline::inspect::{Freshness, freshness};
use crate::pipeline::run::fmt_value;
use crate::pipeline::spec;

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// A pipeline file, or a store directory.
    pub a: PathBuf,
    /// A pipeline file, or a store directory.
    pub b: PathBuf,
    /// The pipeline for sides given as store directories.
    #[arg(long, short = 'c', default_value = "pipelines/default.toml")]
    pub config: PathBuf,
    /// The store for sides given as pipeline files.
    #[arg(long, env = lineage::store::STORE_ENV, default_value = "artifacts")]
    pub store: PathBuf,
    /// Overrides for side A (STEP.PARAM=VALUE).
    #[arg(long = "set-a")]
    pub set_a: Vec<String>,
    /// Overrides for side B.
    #[arg(long = "set-b")]
    pub set_b: Vec<String>,
}

/// One side's artifact for each step: (manifest, whether it is current).
struct Side {
    label: String,
    steps: BTreeMap<String, (Manifest, bool)>,
    order: Vec<String>,
}

fn load_side(path: &Path, args: &CompareArgs, overrides: &[String], registry: &[Box<dyn Stage>]) -> Result<Side> {
    let (config, store_dir) = if path.is_dir() {
        (args.config.clone(), path.to_path_buf())
    } else {
        (path.to_path_buf(), args.store.clone())
    };
    if !config.is_file() {
        bail!("{}: no such pipeline file", config.display());
    }
    let store = Store::open(&store_dir)?;
    let plan = spec::load(&config, registry, overrides)?;
    let mut steps = BTreeMap::new();
    let mut order = Vec::new();
    for (name, f) in freshness(&store, &plan)? {
        order.push(name.clone());
        match f {
            Freshness::Fresh(a) => {
                steps.insert(name, (a.manifest, true));
            }
            Freshness::Stale(_) => {
                if let Some(r) = store.get_ref(&plan.name, &name)
                    && let Some(a) = store.get(&r.stage, &r.key)?
                {
                    steps.insert(name, (a.manifest, false));
                }
            }
        }
    }
    let mut label = format!("{} @ {}", config.display(), store_dir.display());
    if !overrides.is_empty() {
        label.push_str(&format!(" -s {}", overrides.join(" -s ")));
    }
    Ok(Side { label, steps, order })
}

pub fn main(args: CompareArgs, registry: &[Box<dyn Stage>]) -> Result<()> {
    let a = load_side(&args.a, &args, &args.set_a, registry)?;
    let b = load_side(&args.b, &args, &args.set_b, registry)?;
    print!("{}", render(&a, &b));
    Ok(())
}

fn render(a: &Side, b: &Side) -> String {
    let mut out = String::new();
    out.push_str(&format!("A: {}\nB: {}\n", a.label, b.label));
    let mut names: Vec<String> = a.order.clone();
    for n in &b.order {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let mut identical = 0;
    for name in &names {
        let (ma, mb) = (a.steps.get(name), b.steps.get(name));
        let key = |m: Option<&(Manifest, bool)>| match m {
            Some((m, true)) => short(&m.key).to_string(),
            Some((m, false)) => format!("{} (stale)", short(&m.key)),
            None => "-".into(),
        };
        if let (Some((x, _)), Some((y, _))) = (ma, mb)
            && x.key == y.key
        {
            identical += 1;
            out.push_str(&format!("\n{name}: same artifact {}\n", short(&x.key)));
            continue;
        }
        out.push_str(&format!("\n{name}: A {}  B {}\n", key(ma), key(mb)));
        let (Some((x, _)), Some((y, _))) = (ma, mb) else { continue };
        for line in lineage_diff(x, y) {
            out.push_str(&format!("  differs: {line}\n"));
        }
        let metrics: BTreeSet<&String> = x.metrics.keys().chain(y.metrics.keys()).collect();
        for m in metrics {
            let (va, vb) = (x.metrics.get(m), y.metrics.get(m));
            let f = |v: Option<&f64>| v.map(|v| fmt_value(*v)).unwrap_or_else(|| "-".into());
            let delta = match (va, vb) {
                (Some(p), Some(q)) if p != q => format!("{:+.4}", q - p),
                _ => String::new(),
            };
            out.push_str(&format!("  {m:<36} {:>12} {:>12} {delta:>12}\n", f(va), f(vb)));
        }
    }
    out.push_str(&format!("\n{} steps, {identical} identical\n", names.len()));
    out
}

/// What differs between the lineage of two artifacts of one step.
pub fn lineage_diff(a: &Manifest, b: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    if a.stage != b.stage {
        out.push(format!("stage {} vs {}", a.stage, b.stage));
    }
    for (path, x, y) in diff_params(&a.params, &b.params) {
        let s = |v: Option<serde_json::Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "(absent)".into());
        out.push(format!("param {path}: {} vs {}", s(x), s(y)));
    }
    if a.seed != b.seed {
        out.push(format!("seed {} vs {}", a.seed, b.seed));
    }
    if a.device != b.device {
        out.push(format!("device {:?} vs {:?}", a.device, b.device));
    }
    if a.code.identity != b.code.identity {
        let parts: BTreeSet<&String> = a.code.parts.keys().chain(b.code.parts.keys()).collect();
        let changed: Vec<String> = parts
            .into_iter()
            .filter(|p| a.code.parts.get(*p) != b.code.parts.get(*p))
            .map(|p| p.trim_start_matches("crate:").to_string())
            .collect();
        out.push(format!("code ({})", changed.join(", ")));
    }
    let inputs: BTreeSet<&String> = a.inputs.keys().chain(b.inputs.keys()).collect();
    for name in inputs {
        let h = |m: &Manifest| -> Vec<String> {
            m.inputs
                .get(name)
                .map(|v| v.iter().map(|i| format!("{}:{}", i.step, short(&i.content_hash))).collect())
                .unwrap_or_default()
        };
        let (x, y) = (h(a), h(b));
        if x != y {
            out.push(format!("input {name}: {} vs {}", x.join(","), y.join(",")));
        }
    }
    for f in &a.file_deps {
        match b.file_deps.iter().find(|g| g.path == f.path) {
            Some(g) if g.blake3 == f.blake3 => {}
            Some(g) => out.push(format!("file {}: {} vs {}", f.path, short(&f.blake3), short(&g.blake3))),
            None => out.push(format!("file {} only in A", f.path)),
        }
    }
    for g in b.file_deps.iter().filter(|g| !a.file_deps.iter().any(|f| f.path == g.path)) {
        out.push(format!("file {} only in B", g.path));
    }
    out
}
