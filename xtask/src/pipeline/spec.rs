//! Pipeline files (`pipelines/*.toml`): parsing, matrix expansion, command
//! line overrides, and resolution into a [`Plan`] of typed steps in
//! dependency order.
//!
//! ```toml
//! [pipeline]
//! name = "default"          # optional; defaults to the file's stem
//! seed = 1234
//! device = "cpu"            # or "cuda:0"
//!
//! [matrix]                  # optional named axes
//! size = ["tiny", "small"]
//!
//! [steps.pretrain]
//! stage = "sft.pretrain"
//! matrix = ["size"]         # expands to pretrain@tiny, pretrain@small
//! inputs = { text = "world.pretrain_text", tokenizer = "tokenizer" }
//! params = { model = "${size}", steps = 300 }
//! ```
//!
//! Inputs name `step` or `step.table`; a list input takes a list of them.
//! Inside a matrix step, `${axis}` is replaced in inputs and parameters, and
//! a reference to a step expanded over the same axes picks the same values.
//!
//! `extends = "default.toml"` in `[pipeline]` (a path relative to this file) starts from another
//! pipeline's steps and matrix: this file adds steps, and a step or axis of the same name replaces
//! the base's whole. The header (name, seed, device) is this file's own, so a pipeline that extends
//! another with the same seed shares its artifacts: only its own steps run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use lineage::{Arity, Stage};
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    pipeline: HeaderSpec,
    #[serde(default)]
    matrix: BTreeMap<String, Spanned<Vec<toml::Value>>>,
    #[serde(default)]
    steps: BTreeMap<String, Spanned<StepSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderSpec {
    name: Option<String>,
    #[serde(default = "default_seed")]
    seed: u64,
    #[serde(default = "default_device")]
    device: String,
    #[serde(default)]
    description: String,
    /// Another pipeline file whose steps and matrix this one starts from.
    extends: Option<String>,
}

/// How deep `extends` may chain (a guard against cycles).
const MAX_EXTENDS: usize = 8;

fn default_seed() -> u64 {
    1234
}

fn default_device() -> String {
    "cpu".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    stage: Spanned<String>,
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<InputSpecValue>>,
    #[serde(default)]
    params: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    matrix: Vec<String>,
    seed: Option<u64>,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum InputSpecValue {
    One(String),
    Many(Vec<String>),
}

/// A reference to an upstream step's artifact, or one of its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRef {
    pub step: String,
    pub table: Option<String>,
}

impl std::fmt::Display for InputRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.table {
            Some(t) => write!(f, "{}.{t}", self.step),
            None => write!(f, "{}", self.step),
        }
    }
}

/// One step, expanded and resolved.
pub struct PlannedStep<'r> {
    /// The step's name (`pretrain@tiny` for matrix expansions).
    pub name: String,
    pub stage: &'r dyn Stage,
    /// Resolved parameters: defaults, the file, then `-s` overrides.
    pub params: Value,
    pub seed: u64,
    pub inputs: BTreeMap<String, Vec<InputRef>>,
    pub description: String,
    /// Where it is defined: the file (0 for the deepest base of an `extends` chain, the last for
    /// the pipeline's own file) and the line in it.
    pub source: usize,
    pub line: usize,
}

/// A resolved pipeline: steps in dependency order.
pub struct Plan<'r> {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub device: String,
    pub steps: Vec<PlannedStep<'r>>,
}

impl<'r> Plan<'r> {
    /// The plan cut down to `targets` and every step they need, in the same order (`dvc repro
    /// TARGET`). A target is a step name, or a matrix step's base name for all its expansions
    /// (`pretrain` for `pretrain@tiny` and `pretrain@mini`). No targets: the whole plan.
    pub fn only(mut self, targets: &[String]) -> Result<Self> {
        if targets.is_empty() {
            return Ok(self);
        }
        let mut keep: BTreeSet<String> = BTreeSet::new();
        let mut stack = Vec::new();
        for t in targets {
            let matched: Vec<&str> = self
                .steps
                .iter()
                .map(|s| s.name.as_str())
                .filter(|n| *n == t || n.split_once('@').is_some_and(|(base, _)| base == t))
                .collect();
            if matched.is_empty() {
                self.step(t)?; // the error names the steps there are
            }
            stack.extend(matched.into_iter().map(str::to_string));
        }
        while let Some(name) = stack.pop() {
            if keep.insert(name.clone()) {
                let step = self.step(&name)?;
                stack.extend(step.inputs.values().flatten().map(|r| r.step.clone()));
            }
        }
        self.steps.retain(|s| keep.contains(&s.name));
        Ok(self)
    }

    pub fn step(&self, name: &str) -> Result<&PlannedStep<'r>> {
        self.steps.iter().find(|s| s.name == name).ok_or_else(|| {
            anyhow!(
                "{}: no step `{name}`; steps: {}",
                self.file.display(),
                self.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// Parses, expands and resolves a pipeline file.
pub fn load<'r>(path: &Path, registry: &'r [Box<dyn Stage>], overrides: &[String]) -> Result<Plan<'r>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading pipeline file {}", path.display()))?;
    parse(&text, path, registry, overrides)
}

/// A located error: `file:line: message`.
fn at(file: &Path, text: &str, offset: usize, msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{}:{}: {msg}", file.display(), line_of(text, offset))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// An expanded (but unresolved) step.
struct Expanded {
    name: String,
    base: String,
    stage: Spanned<String>,
    inputs: BTreeMap<String, (Vec<String>, usize)>,
    params: BTreeMap<String, (Value, usize)>,
    seed: Option<u64>,
    description: String,
    offset: usize,
    /// Which source file defines it (an index into the `extends` chain).
    src: usize,
    /// axis -> value string, for matrix expansions.
    axes: BTreeMap<String, String>,
}

/// The chain of files a pipeline file extends, deepest base first and `file` itself last, each
/// with its text and parsed spec.
fn sources(text: &str, file: &Path) -> Result<Vec<(PathBuf, String, FileSpec)>> {
    let mut chain: Vec<(PathBuf, String, FileSpec)> = Vec::new();
    let (mut path, mut text) = (file.to_path_buf(), text.to_string());
    loop {
        let spec: FileSpec = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let next = spec.pipeline.extends.as_ref().map(|b| path.parent().unwrap_or(Path::new("")).join(b));
        chain.push((path.clone(), text, spec));
        let Some(next) = next else { break };
        if chain.len() >= MAX_EXTENDS || chain.iter().any(|(p, _, _)| p == &next) {
            bail!(
                "{}: `extends` goes {} -> {}: a cycle, or deeper than {MAX_EXTENDS} files",
                file.display(),
                chain.iter().map(|(p, _, _)| p.display().to_string()).collect::<Vec<_>>().join(" -> "),
                next.display()
            );
        }
        text = std::fs::read_to_string(&next)
            .with_context(|| format!("{}: reading the pipeline it extends, {}", path.display(), next.display()))?;
        path = next;
    }
    chain.reverse();
    Ok(chain)
}

pub fn parse<'r>(text: &str, file: &Path, registry: &'r [Box<dyn Stage>], overrides: &[String]) -> Result<Plan<'r>> {
    let chain = sources(text, file)?;
    let spec = &chain.last().expect("the file itself").2;
    let mut seed = spec.pipeline.seed;
    let mut device = spec.pipeline.device.clone();
    // Steps and axes along the chain: a later file's replace an earlier one's of the same name.
    let mut all_steps: BTreeMap<&String, (usize, &Spanned<StepSpec>)> = BTreeMap::new();
    let mut all_axes: BTreeMap<&String, &Spanned<Vec<toml::Value>>> = BTreeMap::new();
    for (i, (_, _, s)) in chain.iter().enumerate() {
        all_steps.extend(s.steps.iter().map(|(k, v)| (k, (i, v))));
        all_axes.extend(s.matrix.iter());
    }

    // Matrix expansion.
    let mut expanded: Vec<Expanded> = Vec::new();
    let mut matrix_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (&base, &(src, step)) in &all_steps {
        let (file, text) = (chain[src].0.as_path(), chain[src].1.as_str());
        if base.contains(['@', '.', ' ']) {
            bail!(at(file, text, step.span().start, format!("step name `{base}` may not contain `@`, `.` or spaces")));
        }
        let s = step.get_ref();
        let mut combos: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
        let mut typed: BTreeMap<String, BTreeMap<String, toml::Value>> = BTreeMap::new();
        for axis in &s.matrix {
            let values = all_axes.get(axis).ok_or_else(|| {
                at(
                    file,
                    text,
                    step.span().start,
                    format!("step `{base}` expands over `{axis}`, but [matrix] has no `{axis}`"),
                )
            })?;
            let mut next = Vec::new();
            for combo in &combos {
                for v in values.get_ref() {
                    let name = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    typed.entry(axis.clone()).or_default().insert(name.clone(), v.clone());
                    let mut c = combo.clone();
                    c.insert(axis.clone(), name);
                    next.push(c);
                }
            }
            combos = next;
        }
        for axes in combos {
            let name = if axes.is_empty() {
                base.clone()
            } else {
                format!("{base}@{}", axes.values().cloned().collect::<Vec<_>>().join("-"))
            };
            let subst = |s: &str| axes.iter().fold(s.to_string(), |acc, (k, v)| acc.replace(&format!("${{{k}}}"), v));
            let inputs = s
                .inputs
                .iter()
                .map(|(k, v)| {
                    let refs = match v.get_ref() {
                        InputSpecValue::One(r) => vec![subst(r)],
                        InputSpecValue::Many(rs) => rs.iter().map(|r| subst(r)).collect(),
                    };
                    (k.clone(), (refs, v.span().start))
                })
                .collect();
            let params = s
                .params
                .iter()
                .map(|(k, v)| {
                    let value = substitute(&toml_to_json(v.get_ref()), &axes, &typed);
                    (k.clone(), (value, v.span().start))
                })
                .collect();
            matrix_of.entry(base.clone()).or_default().push(name.clone());
            expanded.push(Expanded {
                name,
                base: base.clone(),
                stage: s.stage.clone(),
                inputs,
                params,
                seed: s.seed,
                description: s.description.clone(),
                offset: step.span().start,
                src,
                axes: axes.clone(),
            });
        }
    }

    // Command-line overrides: `pipeline.seed=..`, `pipeline.device=..`,
    // `STEP.PARAM=..` where STEP is a step or an expanded step.
    for o in overrides {
        let (key, raw) = o.split_once('=').ok_or_else(|| anyhow!("-s {o}: expected STEP.PARAM=VALUE"))?;
        let value = parse_value(raw);
        let (target, param) = key.split_once('.').ok_or_else(|| anyhow!("-s {o}: expected STEP.PARAM=VALUE"))?;
        if target == "pipeline" {
            match param {
                "seed" => seed = value.as_u64().ok_or_else(|| anyhow!("-s {o}: the seed is a whole number"))?,
                "device" => device = value.as_str().map(str::to_string).unwrap_or_else(|| raw.to_string()),
                _ => bail!("-s {o}: the pipeline has settings `seed` and `device`, not `{param}`"),
            }
            continue;
        }
        let hits: Vec<&mut Expanded> = expanded.iter_mut().filter(|e| e.name == target || e.base == target).collect();
        if hits.is_empty() {
            bail!(
                "-s {o}: {} has no step `{target}`; steps: {}",
                file.display(),
                all_steps.keys().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        for e in hits {
            e.params.insert(param.to_string(), (value.clone(), usize::MAX));
        }
    }

    // Resolve stages, parameters and input references.
    let names: BTreeSet<String> = expanded.iter().map(|e| e.name.clone()).collect();
    let mut steps = Vec::new();
    for e in &expanded {
        let (file, text) = (chain[e.src].0.as_path(), chain[e.src].1.as_str());
        let stage = registry.iter().find(|s| s.name() == e.stage.get_ref()).ok_or_else(|| {
            at(
                file,
                text,
                e.stage.span().start,
                format!(
                    "step `{}`: unknown stage `{}`; stages: {}",
                    e.base,
                    e.stage.get_ref(),
                    registry.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let given = unflatten(Value::Object(e.params.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect()));
        let params = stage.resolve_params(&given).map_err(|err| {
            let where_ = |key: Option<&str>| -> String {
                let top = key.map(|k| k.split('.').next().unwrap_or(k).to_string());
                match top.as_deref().and_then(|k| e.params.get(k)) {
                    Some((_, usize::MAX)) => {
                        format!("-s {}.{} (command line)", e.base, top.unwrap_or_default())
                    }
                    Some((_, off)) => format!("{}:{}", file.display(), line_of(text, *off)),
                    None => format!("{}:{}", file.display(), line_of(text, e.offset)),
                }
            };
            anyhow!("{}: step `{}` (stage {}): {err}", where_(err.key()), e.name, stage.name())
        })?;

        let mut inputs = BTreeMap::new();
        for (input, (refs, off)) in &e.inputs {
            let Some(decl) = stage.inputs().iter().find(|i| i.name == input) else {
                bail!(at(
                    file,
                    text,
                    *off,
                    format!(
                        "step `{}`: stage {} has no input `{input}`; its inputs: {}",
                        e.base,
                        stage.name(),
                        stage.inputs().iter().map(|i| i.name).collect::<Vec<_>>().join(", ")
                    )
                ));
            };
            if decl.arity != Arity::Many && refs.len() != 1 {
                bail!(at(file, text, *off, format!("step `{}`: input `{input}` takes one artifact", e.base)));
            }
            let mut resolved = Vec::new();
            for r in refs {
                resolved.push(
                    resolve_ref(r, e, &names, &matrix_of)
                        .map_err(|m| at(file, text, *off, format!("step `{}`: {m}", e.base)))?,
                );
            }
            inputs.insert(input.clone(), resolved);
        }
        for decl in stage.inputs() {
            if decl.arity == Arity::One && !inputs.contains_key(decl.name) {
                bail!(at(
                    file,
                    text,
                    e.offset,
                    format!("step `{}`: stage {} needs input `{}` ({})", e.base, stage.name(), decl.name, decl.doc)
                ));
            }
        }
        steps.push(PlannedStep {
            name: e.name.clone(),
            stage: stage.as_ref(),
            params,
            seed: e.seed.unwrap_or(seed),
            inputs,
            description: e.description.clone(),
            source: e.src,
            line: line_of(text, e.offset),
        });
    }

    let steps = topo_order(steps, file)?;
    let name = spec.pipeline.name.clone().unwrap_or_else(|| {
        file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pipeline".into())
    });
    Ok(Plan { name, file: file.to_path_buf(), description: spec.pipeline.description.clone(), device, steps })
}

/// Turns `{"a.b": 1}` into `{"a": {"b": 1}}` (dotted override keys).
fn unflatten(v: Value) -> Value {
    let Value::Object(map) = v else { return v };
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        let mut parts: Vec<&str> = k.split('.').collect();
        let last = parts.pop().expect("one part");
        let mut node = &mut out;
        for p in parts {
            let entry = node.entry(p.to_string()).or_insert_with(|| Value::Object(Default::default()));
            if !entry.is_object() {
                *entry = Value::Object(Default::default());
            }
            node = entry.as_object_mut().expect("object");
        }
        match (node.get_mut(last), v) {
            (Some(Value::Object(existing)), Value::Object(new)) => existing.extend(new),
            (_, v) => {
                node.insert(last.to_string(), v);
            }
        }
    }
    Value::Object(out)
}

fn resolve_ref(
    r: &str,
    from: &Expanded,
    names: &BTreeSet<String>,
    matrix_of: &BTreeMap<String, Vec<String>>,
) -> std::result::Result<InputRef, String> {
    if r.contains("${") {
        return Err(format!("`{r}` uses a matrix axis the step does not expand over"));
    }
    let (step, table) = match r.split_once('.') {
        Some((s, t)) => (s.to_string(), Some(t.to_string())),
        None => (r.to_string(), None),
    };
    if names.contains(&step) {
        return Ok(InputRef { step, table });
    }
    if let Some(expansions) = matrix_of.get(&step) {
        // A step expanded over the axes this one has: pick the same values.
        let suffix = from.axes.values().cloned().collect::<Vec<_>>().join("-");
        let same = format!("{step}@{suffix}");
        if !from.axes.is_empty() && expansions.contains(&same) {
            return Ok(InputRef { step: same, table });
        }
        return Err(format!("step `{step}` is expanded over a matrix; name one of: {}", expansions.join(", ")));
    }
    Err(format!("input `{r}` names no step; steps: {}", names.iter().cloned().collect::<Vec<_>>().join(", ")))
}

/// Orders steps so every step comes after its inputs; among ready steps,
/// file order (an extended file's steps first). A cycle is an error naming its steps.
fn topo_order<'r>(steps: Vec<PlannedStep<'r>>, file: &Path) -> Result<Vec<PlannedStep<'r>>> {
    let mut remaining: Vec<PlannedStep<'r>> = steps;
    remaining.sort_by(|a, b| (a.source, a.line, &a.name).cmp(&(b.source, b.line, &b.name)));
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    while !remaining.is_empty() {
        let ready = remaining
            .iter()
            .position(|s| s.inputs.values().flatten().all(|r| done.contains(&r.step)))
            .ok_or_else(|| {
                anyhow!(
                    "{}: the steps {} depend on each other in a cycle",
                    file.display(),
                    remaining.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", ")
                )
            })?;
        let s = remaining.remove(ready);
        done.insert(s.name.clone());
        out.push(s);
    }
    Ok(out)
}

/// `${axis}` substitution in parameter values: a string that is exactly
/// `${axis}` takes the axis value with its type.
fn substitute(
    v: &Value,
    axes: &BTreeMap<String, String>,
    typed: &BTreeMap<String, BTreeMap<String, toml::Value>>,
) -> Value {
    match v {
        Value::String(s) => {
            for (axis, value) in axes {
                if s == &format!("${{{axis}}}") {
                    return typed
                        .get(axis)
                        .and_then(|m| m.get(value))
                        .map(toml_to_json)
                        .unwrap_or_else(|| Value::String(value.clone()));
                }
            }
            Value::String(axes.iter().fold(s.clone(), |acc, (k, val)| acc.replace(&format!("${{{k}}}"), val)))
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| substitute(i, axes, typed)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, i)| (k.clone(), substitute(i, axes, typed))).collect()),
        other => other.clone(),
    }
}

pub fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

/// A command-line value: TOML syntax (`0.05`, `true`, `"x"`, `[1, 2]`), or
/// else a bare string.
pub fn parse_value(raw: &str) -> Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(t) => t.get("v").map(toml_to_json).unwrap_or(Value::Null),
        Err(_) => Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Vec<Box<dyn Stage>> {
        lineage::testing::stages()
    }

    fn plan_err(text: &str, overrides: &[&str]) -> String {
        let reg = registry();
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        match parse(text, Path::new("pipelines/t.toml"), &reg, &o) {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    const GOOD: &str = r#"
[pipeline]
seed = 7

[matrix]
size = ["a", "b"]

[steps.down]
stage = "debug.upper"
matrix = ["size"]
inputs = { items = "up" }

[steps.up]
stage = "debug.emit"
matrix = ["size"]
params = { text = "x-${size}", rows = 2 }

[steps.all]
stage = "debug.concat"
inputs = { parts = ["down@a", "down@b.items"] }
"#;

    #[test]
    fn expands_and_orders() {
        let reg = registry();
        let plan = parse(GOOD, Path::new("pipelines/t.toml"), &reg, &[]).unwrap();
        let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["up@a", "down@a", "up@b", "down@b", "all"]);
        let up = plan.step("up@b").unwrap();
        assert_eq!(up.params["text"], "x-b");
        assert_eq!(up.params["rows"], 2);
        assert_eq!(up.params["note"], "", "defaults are filled in");
        assert_eq!(up.seed, 7);
        assert_eq!(plan.step("down@b").unwrap().inputs["items"][0].step, "up@b");
        let all = &plan.step("all").unwrap().inputs["parts"];
        assert_eq!(all[1], InputRef { step: "down@b".into(), table: Some("items".into()) });
        assert_eq!(plan.name, "t");
    }

    #[test]
    fn only_keeps_targets_and_what_they_need_in_order() {
        let reg = registry();
        let plan = |targets: &[&str]| {
            let t: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
            let p = parse(GOOD, Path::new("pipelines/t.toml"), &reg, &[]).unwrap().only(&t);
            p.map(|p| p.steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
        };
        assert_eq!(plan(&[]).unwrap(), vec!["up@a", "down@a", "up@b", "down@b", "all"]);
        assert_eq!(plan(&["down@b"]).unwrap(), vec!["up@b", "down@b"]);
        assert_eq!(plan(&["up"]).unwrap(), vec!["up@a", "up@b"], "a matrix base name means every expansion");
        assert_eq!(plan(&["all"]).unwrap(), vec!["up@a", "down@a", "up@b", "down@b", "all"]);
        assert_eq!(plan(&["up@a", "down@a"]).unwrap(), vec!["up@a", "down@a"]);
        let e = format!("{:#}", plan(&["nope"]).unwrap_err());
        assert!(e.contains("no step `nope`") && e.contains("down@a"), "{e}");
    }

    #[test]
    fn overrides_apply_to_all_expansions_or_one() {
        let reg = registry();
        let plan = parse(
            GOOD,
            Path::new("t.toml"),
            &reg,
            &["up.rows=5".into(), "up@a.text=\"z\"".into(), "pipeline.seed=9".into()],
        )
        .unwrap();
        assert_eq!(plan.step("up@a").unwrap().params["rows"], 5);
        assert_eq!(plan.step("up@b").unwrap().params["rows"], 5);
        assert_eq!(plan.step("up@a").unwrap().params["text"], "z");
        assert_eq!(plan.step("up@b").unwrap().params["text"], "x-b");
        assert_eq!(plan.step("all").unwrap().seed, 9);
    }

    #[test]
    fn unknown_parameter_names_file_line_and_key() {
        let text = "[pipeline]\n\n[steps.up]\nstage = \"debug.emit\"\nparams = { rowz = 3 }\n";
        let e = plan_err(text, &[]);
        assert!(e.contains("pipelines/t.toml:5") && e.contains("`rowz`") && e.contains("rows"), "{e}");
        let e = plan_err("[pipeline]\n[steps.up]\nstage = \"debug.emit\"\n", &["up.rowz=3"]);
        assert!(e.contains("-s up.rowz") && e.contains("`rowz`"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_parameter() {
        let e = plan_err("[pipeline]\n[steps.up]\nstage = \"debug.emit\"\n\nparams = { rows = \"many\" }\n", &[]);
        assert!(e.contains("t.toml:5") && e.contains("rows"), "{e}");
    }

    #[test]
    fn malformed_toml_names_file_and_line() {
        let e = plan_err("[pipeline]\n\n[steps.up\nstage = 1\n", &[]);
        assert!(e.contains("pipelines/t.toml") && e.contains("line 3"), "{e}");
        let e = plan_err("[pipeline]\n[steps.up]\nstgae = \"debug.emit\"\n", &[]);
        assert!(e.contains("line 3") && e.contains("stgae"), "{e}");
    }

    #[test]
    fn bad_references_are_located() {
        let e = plan_err("[pipeline]\n[steps.d]\nstage = \"debug.upper\"\ninputs = { items = \"nope\" }\n", &[]);
        assert!(e.contains("t.toml:4") && e.contains("`nope`"), "{e}");
        let e = plan_err("[pipeline]\n[steps.d]\nstage = \"debug.nope\"\n", &[]);
        assert!(e.contains("t.toml:3") && e.contains("unknown stage"), "{e}");
        let e = plan_err("[pipeline]\n[steps.d]\nstage = \"debug.upper\"\n", &[]);
        assert!(e.contains("needs input `items`"), "{e}");
        let cyc = "[pipeline]\n[steps.a]\nstage = \"debug.upper\"\ninputs = { items = \"b\" }\n[steps.b]\nstage = \"debug.upper\"\ninputs = { items = \"a\" }\n";
        assert!(plan_err(cyc, &[]).contains("cycle"));
        let e = plan_err(GOOD, &["nope.x=1"]);
        assert!(e.contains("no step `nope`"), "{e}");
    }

    #[test]
    fn extends_adds_and_replaces_steps_and_locates_errors_in_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = "[pipeline]\nseed = 3\n\n[steps.up]\nstage = \"debug.emit\"\nparams = { rows = 2 }\n\n\
                    [steps.down]\nstage = \"debug.upper\"\ninputs = { items = \"up\" }\n";
        std::fs::write(dir.path().join("base.toml"), base).unwrap();
        let child = "[pipeline]\nextends = \"base.toml\"\nseed = 3\n\n[steps.extra]\nstage = \"debug.upper\"\n\
                     inputs = { items = \"down\" }\n\n[steps.up]\nstage = \"debug.emit\"\nparams = { rows = 5 }\n";
        let path = dir.path().join("child.toml");
        std::fs::write(&path, child).unwrap();
        let reg = registry();
        let plan = load(&path, &reg, &[]).unwrap();
        assert_eq!(plan.name, "child");
        // The base's steps first, in its order; `up` is the child's (rows = 5), `down` the base's.
        let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["up", "down", "extra"]);
        assert_eq!(plan.step("up").unwrap().params["rows"], 5);
        assert_eq!(plan.step("down").unwrap().seed, 3);
        // The same steps as the base's, with the same parameters and seed, are the same artifacts.
        let base_plan = load(&dir.path().join("base.toml"), &reg, &[]).unwrap();
        assert_eq!(base_plan.step("down").unwrap().params, plan.step("down").unwrap().params);
        // An error in the base names the base file and its line.
        std::fs::write(dir.path().join("base.toml"), base.replace("rows = 2", "rowz = 2")).unwrap();
        std::fs::write(&path, child.replace("[steps.up]", "[steps.up2]")).unwrap();
        let e = format!("{:#}", load(&path, &reg, &[]).err().expect("rowz"));
        assert!(e.contains("base.toml:6") && e.contains("`rowz`"), "{e}");
        // A missing base and a cycle are errors naming the files.
        std::fs::write(&path, child.replace("base.toml", "nope.toml")).unwrap();
        let e = format!("{:#}", load(&path, &reg, &[]).err().expect("missing"));
        assert!(e.contains("child.toml") && e.contains("nope.toml"), "{e}");
        std::fs::write(&path, child.replace("base.toml", "child.toml")).unwrap();
        let e = format!("{:#}", load(&path, &reg, &[]).err().expect("cycle"));
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn every_shipped_pipeline_resolves_against_the_real_stages() {
        let reg = crate::registry();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        assert!(files.iter().any(|f| f.ends_with("default.toml")), "{files:?}");
        for f in &files {
            let plan = load(f, &reg, &[]).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(!plan.steps.is_empty(), "{}", f.display());
        }
        // The controls pipeline is the default plus its controls, and the reward-model ceiling the
        // controls plus its variants, each with its base's steps unchanged (so a store reuses them).
        let [default, controls, ceiling] =
            ["default", "controls", "rm-ceiling"].map(|n| load(&dir.join(format!("{n}.toml")), &reg, &[]).unwrap());
        for (base, child) in [(&default, &controls), (&controls, &ceiling)] {
            for s in &base.steps {
                let c = child.step(&s.name).unwrap();
                assert_eq!((&c.params, c.seed, &c.inputs), (&s.params, s.seed, &s.inputs), "{}", s.name);
            }
            assert!(child.steps.len() > base.steps.len());
        }
        assert!(controls.step("ppo_oracle_tiny").is_ok() && controls.step("ppo_null_tiny").is_ok());
        // Each reward-model variant copies a default step's settings but for what it varies, so
        // its measured difference is that one change.
        for (variant, original, varied) in [
            ("samples_half", "samples", &["max_prompts"][..]),
            ("samples_onpolicy", "samples", &[]),
            ("rm_half", "rm", &[]),
            ("rm_onpolicy", "rm", &[]),
            ("rm_medium", "rm", &[]),
            ("rm_long", "rm", &[]),
            ("rm_no_likelihood", "rm", &["likelihood_term"]),
            ("pretrain_small_long", "pretrain_small", &["steps", "checkpoint_every"]),
            ("sft_small_long", "sft_small", &[]),
            ("pretrain_small_x4", "pretrain_small", &["steps", "checkpoint_every"]),
            ("sft_small_x4", "sft_small", &[]),
            ("rm_x4", "rm", &[]),
            ("sft_medium", "sft_small", &[]),
            ("sft_best_small_by_rm_long", "sft_best_small", &[]),
            ("ppo_ptx_small_rm_long", "ppo_ptx_small", &[]),
        ] {
            let without = |name: &str| {
                let mut p = ceiling.step(name).unwrap().params.clone();
                for k in varied {
                    p.as_object_mut().unwrap().remove(*k);
                }
                p
            };
            assert_eq!(without(variant), without(original), "{variant} against {original}");
        }
    }

    #[test]
    fn values_parse_as_toml() {
        assert_eq!(parse_value("0.05"), serde_json::json!(0.05));
        assert_eq!(parse_value("true"), serde_json::json!(true));
        assert_eq!(parse_value("cuda:0"), serde_json::json!("cuda:0"));
        assert_eq!(parse_value("[1, 2]"), serde_json::json!([1, 2]));
    }
}
