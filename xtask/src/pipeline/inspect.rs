//! Looking at a pipeline without running it: `status`, `why`, `dag`,
//! `verify`, `gc` and `show`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use lineage::hash::short;
use lineage::key::diff_params;
use lineage::{Artifact, Manifest, Store, parquet_io, store::verify as verify_artifact};
use serde_json::Value;

use super::run::{fmt_value, request, resolve_inputs};
use super::spec::{Plan, PlannedStep};

/// Whether a step's artifact is in the store for the current code,
/// parameters and inputs.
#[derive(Debug, Clone)]
pub enum Freshness {
    Fresh(Box<Artifact>),
    /// It would run; the causes say why.
    Stale(Vec<String>),
}

/// Freshness of every step, in plan order.
pub fn freshness(store: &Store, plan: &Plan) -> Result<Vec<(String, Freshness)>> {
    let mut known: BTreeMap<String, Artifact> = BTreeMap::new();
    let mut out = Vec::new();
    for step in &plan.steps {
        let f = step_freshness(store, plan, step, &known)?;
        if let Freshness::Fresh(a) = &f {
            known.insert(step.name.clone(), (**a).clone());
        }
        out.push((step.name.clone(), f));
    }
    Ok(out)
}

fn step_freshness(
    store: &Store,
    plan: &Plan,
    step: &PlannedStep,
    known: &BTreeMap<String, Artifact>,
) -> Result<Freshness> {
    let inputs = resolve_inputs(step, known)?;
    let previous = store
        .get_ref(&plan.name, &step.name)
        .and_then(|r| store.get(&r.stage, &r.key).ok().flatten())
        .map(|a| a.manifest);
    let Some(inputs) = inputs else {
        // Some upstream step will rerun first.
        let mut causes = compare(plan, step, previous.as_ref(), None);
        for (name, refs) in &step.inputs {
            for r in refs.iter().filter(|r| !known.contains_key(&r.step)) {
                causes.push(format!("input `{name}`: upstream step `{}` will run first", r.step));
            }
        }
        return Ok(Freshness::Stale(causes));
    };
    let req = request(plan, step, inputs);
    let files = req.file_deps()?;
    let key = req.key()?;
    if let Some(a) = store.get(step.stage.name(), &key)? {
        return Ok(Freshness::Fresh(Box::new(a)));
    }
    let hashes: BTreeMap<String, Vec<String>> =
        req.inputs.iter().map(|(n, items)| (n.clone(), items.iter().map(|i| i.hash.clone()).collect())).collect();
    let mut causes = compare(plan, step, previous.as_ref(), Some(&hashes));
    if let Some(prev) = &previous {
        for f in &files {
            match prev.file_deps.iter().find(|p| p.path == f.path) {
                Some(p) if p.blake3 == f.blake3 => {}
                Some(p) => causes.push(format!("file {} {}.. -> {}..", f.path, short(&p.blake3), short(&f.blake3))),
                None => causes.push(format!("file {} is new", f.path)),
            }
        }
    }
    if causes.is_empty() {
        causes.push(format!("its artifact {} is not in the store (deleted, or moved aside as corrupt)", short(&key)));
    }
    Ok(Freshness::Stale(causes))
}

/// Field-level differences between the step's last artifact in this
/// pipeline and what it would be now.
fn compare(
    plan: &Plan,
    step: &PlannedStep,
    previous: Option<&Manifest>,
    inputs: Option<&BTreeMap<String, Vec<String>>>,
) -> Vec<String> {
    let Some(prev) = previous else {
        return vec![format!("never run in pipeline `{}` on this store", plan.name)];
    };
    let mut causes = Vec::new();
    let stage = step.stage;
    let base = step.name.split('@').next().unwrap_or(&step.name);
    if prev.stage != stage.name() {
        causes.push(format!("stage {} -> {}", prev.stage, stage.name()));
    }
    let code = stage.code();
    if prev.code.identity != code.identity {
        let now: BTreeMap<String, String> = serde_json::from_str(code.parts).unwrap_or_default();
        let changed: Vec<String> = now
            .iter()
            .filter(|(k, v)| prev.code.parts.get(*k) != Some(*v))
            .map(|(k, _)| k.trim_start_matches("crate:").to_string())
            .chain(prev.code.parts.keys().filter(|k| !now.contains_key(*k)).cloned())
            .collect();
        causes.push(format!("code changed ({})", if changed.is_empty() { "build".into() } else { changed.join(", ") }));
    }
    for (path, old, new) in diff_params(&prev.params, &step.params) {
        let show = |v: Option<Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "(absent)".into());
        causes.push(format!("{base}.{path} {} -> {}", show(old), show(new)));
    }
    if prev.seed != step.seed {
        causes.push(format!("seed {} -> {}", prev.seed, step.seed));
    }
    if stage.uses_device() && prev.device.as_deref() != Some(plan.device.as_str()) {
        causes.push(format!("device {} -> {}", prev.device.as_deref().unwrap_or("-"), plan.device));
    }
    if let Some(now) = inputs {
        let names: BTreeSet<&String> = now.keys().chain(prev.inputs.keys()).collect();
        for name in names {
            let old: Vec<String> =
                prev.inputs.get(name).map(|v| v.iter().map(|i| i.content_hash.clone()).collect()).unwrap_or_default();
            let new = now.get(name).cloned().unwrap_or_default();
            if old != new {
                let fmt = |v: &[String]| {
                    if v.is_empty() {
                        "(none)".to_string()
                    } else {
                        v.iter().map(|h| format!("{}..", short(h))).collect::<Vec<_>>().join(",")
                    }
                };
                causes.push(format!("input {name} {} -> {}", fmt(&old), fmt(&new)));
            }
        }
    }
    causes
}

pub fn print_status(store: &Store, plan: &Plan) -> Result<()> {
    let width = plan.steps.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    println!("pipeline {} ({})", plan.name, plan.file.display());
    for (name, f) in freshness(store, plan)? {
        match f {
            Freshness::Fresh(a) => {
                println!("  {name:<width$}  fresh    {}", short(&a.manifest.key))
            }
            Freshness::Stale(causes) => {
                let what = if causes.iter().any(|c| c.starts_with("never run")) { "missing" } else { "stale  " };
                println!("  {name:<width$}  {what}  {}", causes.join("; "));
            }
        }
    }
    Ok(())
}

/// Why `step` would rerun, following stale inputs upstream.
pub fn print_why(store: &Store, plan: &Plan, step: &str) -> Result<()> {
    plan.step(step)?;
    let all: BTreeMap<String, Freshness> = freshness(store, plan)?.into_iter().collect();
    let mut seen = BTreeSet::new();
    why_rec(plan, &all, step, 0, &mut seen);
    Ok(())
}

fn why_rec(plan: &Plan, all: &BTreeMap<String, Freshness>, step: &str, depth: usize, seen: &mut BTreeSet<String>) {
    let pad = "  ".repeat(depth);
    if !seen.insert(step.to_string()) {
        return;
    }
    match &all[step] {
        Freshness::Fresh(a) => {
            println!("{pad}{step}: fresh (artifact {}); nothing would rerun", short(&a.manifest.key))
        }
        Freshness::Stale(causes) => {
            println!("{pad}{step} would run because:");
            for c in causes {
                println!("{pad}  - {c}");
            }
            if let Ok(s) = plan.step(step) {
                for r in s.inputs.values().flatten() {
                    if matches!(all.get(&r.step), Some(Freshness::Stale(_))) {
                        why_rec(plan, all, &r.step, depth + 1, seen);
                    }
                }
            }
        }
    }
}

/// The DAG as text, Graphviz dot, or Mermaid.
pub fn dag(plan: &Plan, format: &str) -> Result<String> {
    let mut out = String::new();
    let edges: Vec<(String, String, String)> = plan
        .steps
        .iter()
        .flat_map(|s| {
            s.inputs.iter().flat_map(move |(name, refs)| {
                refs.iter().map(move |r| {
                    let label = match &r.table {
                        Some(t) => format!("{name} ({t})"),
                        None => name.clone(),
                    };
                    (r.step.clone(), s.name.clone(), label)
                })
            })
        })
        .collect();
    let id = |s: &str| s.replace(['@', '-'], "_");
    match format {
        "text" => {
            out.push_str(&format!("pipeline {} ({})\n", plan.name, plan.file.display()));
            for s in &plan.steps {
                out.push_str(&format!("{} [{}]\n", s.name, s.stage.name()));
                for (name, refs) in &s.inputs {
                    for r in refs {
                        out.push_str(&format!("    <- {name}: {r}\n"));
                    }
                }
            }
        }
        "dot" => {
            out.push_str(&format!(
                "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
                plan.name
            ));
            for s in &plan.steps {
                out.push_str(&format!("  {} [label=\"{}\\n{}\"];\n", id(&s.name), s.name, s.stage.name()));
            }
            for (from, to, label) in &edges {
                out.push_str(&format!("  {} -> {} [label=\"{label}\"];\n", id(from), id(to)));
            }
            out.push_str("}\n");
        }
        "mermaid" => {
            out.push_str("graph LR\n");
            for s in &plan.steps {
                out.push_str(&format!("  {}[\"{}<br/><small>{}</small>\"]\n", id(&s.name), s.name, s.stage.name()));
            }
            for (from, to, label) in &edges {
                out.push_str(&format!("  {} -->|{label}| {}\n", id(from), id(to)));
            }
        }
        other => bail!("unknown DAG format `{other}`: use text, dot or mermaid"),
    }
    Ok(out)
}

/// Re-hashes every artifact in the store; an error if any is corrupt.
pub fn verify(store: &Store) -> Result<()> {
    let artifacts = store.list()?;
    let mut bad = 0;
    for a in &artifacts {
        let mismatches = verify_artifact(a);
        if mismatches.is_empty() {
            println!("ok       {:<14} {}", short(a.key()), a.manifest.stage);
        } else {
            bad += 1;
            println!("CORRUPT  {:<14} {}", short(a.key()), a.manifest.stage);
            for m in mismatches {
                println!("           {}: {}", m.path, m.problem);
            }
        }
    }
    println!("{} artifacts verified, {bad} corrupt", artifacts.len());
    if bad > 0 {
        bail!("{bad} corrupt artifact(s): `cargo xtask pipeline run` will move them aside and recompute them");
    }
    Ok(())
}

/// Removes artifacts the named pipelines do not reference.
pub fn gc(store: &Store, plans: &[Plan], dry_run: bool) -> Result<()> {
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for plan in plans {
        for step in &plan.steps {
            if let Some(r) = store.get_ref(&plan.name, &step.name) {
                keep.insert(r.key);
            }
        }
        for (_, f) in freshness(store, plan)? {
            if let Freshness::Fresh(a) = f {
                keep.insert(a.manifest.key);
            }
        }
    }
    let mut freed = 0u64;
    let mut removed = 0;
    for a in store.list()? {
        if keep.contains(a.key()) {
            continue;
        }
        let Some(_lock) = store.try_lock(a.key())? else {
            continue;
        };
        let bytes: u64 = a.manifest.files.iter().map(|f| f.bytes).sum();
        println!(
            "{} {:<14} {:<20} {:>10} bytes",
            if dry_run { "would remove" } else { "removing" },
            short(a.key()),
            a.manifest.stage,
            bytes
        );
        if !dry_run {
            store.remove(&a)?;
        }
        freed += bytes;
        removed += 1;
    }
    store.for_each_leftover(|dirs| {
        for dir in dirs {
            println!("{} leftover {}", if dry_run { "would remove" } else { "removing" }, dir.display());
            if !dry_run {
                std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
            }
        }
        Ok(())
    })?;
    println!(
        "{} {removed} artifacts ({freed} bytes); kept {} referenced by {}",
        if dry_run { "would remove" } else { "removed" },
        keep.len(),
        plans.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// Finds an artifact by step name (in `plan`) or key prefix.
pub fn find(store: &Store, plan: Option<&Plan>, what: &str) -> Result<Artifact> {
    if let Some(plan) = plan
        && plan.steps.iter().any(|s| s.name == what)
    {
        for (name, f) in freshness(store, plan)? {
            if name == what {
                if let Freshness::Fresh(a) = f {
                    return Ok(*a);
                }
                if let Some(r) = store.get_ref(&plan.name, what)
                    && let Some(a) = store.get(&r.stage, &r.key)?
                {
                    println!("(step `{what}` is stale; showing its last artifact)");
                    return Ok(a);
                }
                bail!("step `{what}` of pipeline `{}` has no artifact yet; run the pipeline first", plan.name);
            }
        }
    }
    store.find(what)
}

/// Prints an artifact: manifest, tables (schema, statistics, first rows).
pub fn show(artifact: &Artifact, rows: usize) -> Result<()> {
    let m = &artifact.manifest;
    println!("artifact  {}", artifact.dir.display());
    println!("stage     {} (step `{}`)", m.stage, m.step);
    println!("key       {}", m.key);
    println!("content   {}", m.content_hash);
    println!("code      {}", m.code.identity);
    println!("seed      {}{}", m.seed, m.device.as_ref().map(|d| format!("   device {d}")).unwrap_or_default());
    println!(
        "run       {:.1}s on {} ({}, {} threads), {}",
        m.run.wall_time_s,
        m.run.host,
        m.run.cpu,
        m.run.threads,
        m.run.tools.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    );
    if !m.inputs.is_empty() {
        println!("inputs");
        for (name, items) in &m.inputs {
            for i in items {
                let table = i.table.as_ref().map(|t| format!(".{t}")).unwrap_or_default();
                println!(
                    "  {name:<16} {}{table} [{}] key {} content {}",
                    i.step,
                    i.stage,
                    short(&i.key),
                    short(&i.content_hash)
                );
            }
        }
    }
    println!("params    {}", serde_json::to_string_pretty(&m.params)?.replace('\n', "\n          "));
    if !m.metrics.is_empty() {
        println!("metrics");
        for (k, v) in &m.metrics {
            println!("  {k:<32} {}", fmt_value(*v));
        }
    }
    for w in &m.warnings {
        println!("warning   {w}");
    }
    for (name, stat) in &m.stats {
        println!("stats {name}");
        println!("  {}", serde_json::to_string_pretty(stat)?.replace('\n', "\n  "));
    }
    println!("files");
    for f in &m.files {
        println!(
            "  {:<40} {:>10} bytes  {}{}",
            f.path,
            f.bytes,
            short(&f.blake3),
            if f.volatile { "  (volatile)" } else { "" }
        );
    }
    for t in &m.tables {
        println!("\ntable {} ({} rows, schema {})", t.name, t.rows, t.schema_fingerprint);
        for c in &t.columns {
            println!("  {:<16} {}{}", c.name, c.ty, if c.nullable { " (nullable)" } else { "" });
        }
        print_rows(&artifact.dir.join(&t.file), rows)?;
    }
    Ok(())
}

/// The first `n` rows of a Parquet file, one field per line, long values cut.
fn print_rows(path: &Path, n: usize) -> Result<()> {
    let batches = parquet_io::read_batches(path, None)?;
    let options = FormatOptions::default();
    let mut shown = 0;
    for b in &batches {
        let formatters: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<_, _>>()?;
        for row in 0..b.num_rows() {
            if shown == n {
                return Ok(());
            }
            println!("  row {shown}");
            for (field, f) in b.schema().fields().iter().zip(&formatters) {
                let mut v = f.value(row).to_string().replace('\n', "\\n");
                if v.chars().count() > 100 {
                    v = format!("{}...", v.chars().take(100).collect::<String>());
                }
                println!("    {:<14} {v}", field.name());
            }
            shown += 1;
        }
    }
    Ok(())
}
