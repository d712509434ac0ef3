//! The stage interface, the context a stage runs in, and the executor that
//! turns a stage run into a published artifact.
//!
//! A stage is a pure function of its inputs' content, its resolved
//! parameters, its seed (and device, where it uses one) and its code. It reads
//! upstream artifacts and writes tables and files through a
//! [`StageContext`]; it never sees the store, the pipeline, or other stages.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::hash::{path_digest, short};
use crate::key::{InputHashes, KeyIngredients};
use crate::manifest::{
    CodeRecord, ColumnRecord, FORMAT_VERSION, FileDep, Headline, InputRecord, MANIFEST_FILE, Manifest, RunRecord,
    TableRecord, content_hash, host_facts,
};
use crate::parquet_io::{self, FileLineage};
use crate::schema::TableSpec;
use crate::store::{Artifact, Store, now_secs, record_files, write_atomic};

/// The code that runs a stage, as computed by its crate's build script
/// (see the `codeid` crate). Build one with [`code_identity!`](crate::code_identity).
#[derive(Debug, Clone, Copy)]
pub struct CodeIdentity {
    pub identity: &'static str,
    /// JSON object of per-part digests.
    pub parts: &'static str,
    pub rustc: &'static str,
    /// JSON object of the versions of notable dependencies.
    pub tools: &'static str,
}

/// The calling crate's [`CodeIdentity`]. The crate's `build.rs` must call
/// `codeid::emit()`.
#[macro_export]
macro_rules! code_identity {
    () => {
        $crate::CodeIdentity {
            identity: env!("CODE_IDENTITY"),
            parts: env!("CODE_IDENTITY_PARTS"),
            rustc: env!("CODE_RUSTC_VERSION"),
            tools: env!("CODE_TOOLS"),
        }
    };
}

impl CodeIdentity {
    pub fn record(&self) -> CodeRecord {
        CodeRecord { identity: self.identity.to_string(), parts: serde_json::from_str(self.parts).unwrap_or_default() }
    }
}

/// How many artifacts an input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Exactly one.
    One,
    /// Zero or one.
    Optional,
    /// A list (e.g. every model an evaluation compares).
    Many,
}

/// A declared input of a stage.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    pub name: &'static str,
    pub arity: Arity,
    pub doc: &'static str,
}

impl InputSpec {
    pub const fn one(name: &'static str, doc: &'static str) -> InputSpec {
        InputSpec { name, arity: Arity::One, doc }
    }
    pub const fn optional(name: &'static str, doc: &'static str) -> InputSpec {
        InputSpec { name, arity: Arity::Optional, doc }
    }
    pub const fn many(name: &'static str, doc: &'static str) -> InputSpec {
        InputSpec { name, arity: Arity::Many, doc }
    }
}

/// Why parameters were rejected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParamError {
    #[error("unknown parameter `{key}`; known parameters: {}", known.join(", "))]
    Unknown { key: String, known: Vec<String> },
    #[error("parameter `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("{0}")]
    Rule(String),
}

impl ParamError {
    /// The parameter the error is about, if one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ParamError::Unknown { key, .. } | ParamError::Invalid { key, .. } => Some(key),
            ParamError::Rule(_) => None,
        }
    }
}

/// Cross-field rules of a parameter struct.
pub trait Validate {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A stage as the runner sees it (object-safe). Implement [`TypedStage`]
/// instead and wrap it with [`stage`].
pub trait Stage: Send + Sync {
    /// `crate.stage`, e.g. `sft.sft`.
    fn name(&self) -> &'static str;
    fn about(&self) -> &'static str;
    fn code(&self) -> CodeIdentity;
    fn inputs(&self) -> &'static [InputSpec];
    /// The tables it writes (for documentation and `dag`).
    fn outputs(&self) -> &'static [TableSpec];
    /// Whether the device (CPU/GPU) enters its key.
    fn uses_device(&self) -> bool;
    /// The metric shown in the run summary.
    fn headline(&self) -> Option<&'static str>;
    /// Every parameter with its default value.
    fn default_params(&self) -> Value;
    /// Files outside the store the stage will read, given its resolved
    /// parameters; their content enters the key.
    fn file_deps(&self, params: &Value) -> Vec<PathBuf>;
    /// Given parameters (a JSON object) -> fully resolved parameters, or the
    /// reason they are unacceptable.
    fn resolve_params(&self, given: &Value) -> Result<Value, ParamError>;
    fn run(&self, ctx: &mut StageContext, params: &Value) -> Result<()>;
}

/// A stage with typed parameters: a serde struct with defaults,
/// `#[serde(deny_unknown_fields, default)]`, and [`Validate`] for
/// cross-field rules.
pub trait TypedStage: Send + Sync + 'static {
    type Params: Serialize + DeserializeOwned + Default + Validate;
    const NAME: &'static str;
    const ABOUT: &'static str;
    const INPUTS: &'static [InputSpec];
    const OUTPUTS: &'static [TableSpec];
    const USES_DEVICE: bool = false;
    const HEADLINE: Option<&'static str> = None;
    fn code() -> CodeIdentity;
    /// Files outside the store that the stage reads (user data, a base
    /// model): their content enters the key.
    fn file_deps(_params: &Self::Params) -> Vec<PathBuf> {
        Vec::new()
    }
    fn run(ctx: &mut StageContext, params: &Self::Params) -> Result<()>;
}

struct Typed<T>(std::marker::PhantomData<T>);

/// Wraps a [`TypedStage`] for the runner.
pub fn stage<T: TypedStage>() -> Box<dyn Stage> {
    Box::new(Typed::<T>(std::marker::PhantomData))
}

impl<T: TypedStage> Stage for Typed<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn about(&self) -> &'static str {
        T::ABOUT
    }
    fn code(&self) -> CodeIdentity {
        T::code()
    }
    fn inputs(&self) -> &'static [InputSpec] {
        T::INPUTS
    }
    fn outputs(&self) -> &'static [TableSpec] {
        T::OUTPUTS
    }
    fn uses_device(&self) -> bool {
        T::USES_DEVICE
    }
    fn headline(&self) -> Option<&'static str> {
        T::HEADLINE
    }
    fn default_params(&self) -> Value {
        serde_json::to_value(T::Params::default()).expect("parameters serialise")
    }
    fn file_deps(&self, params: &Value) -> Vec<PathBuf> {
        serde_json::from_value::<T::Params>(params.clone()).map(|p| T::file_deps(&p)).unwrap_or_default()
    }
    fn resolve_params(&self, given: &Value) -> Result<Value, ParamError> {
        let defaults = self.default_params();
        let known: Vec<String> = defaults.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        let parsed: T::Params = match serde_json::from_value(given.clone()) {
            Ok(p) => p,
            Err(e) => {
                let message = e.to_string();
                if message.starts_with("unknown field") {
                    let key = message.split('`').nth(1).unwrap_or_default().to_string();
                    return Err(ParamError::Unknown { key, known });
                }
                // serde_json does not name the field of a type error: find the
                // given field that fails on its own, over the defaults.
                let key = given
                    .as_object()
                    .into_iter()
                    .flatten()
                    .find(|(k, v)| {
                        let mut probe = defaults.clone();
                        probe[k.as_str()] = (*v).clone();
                        serde_json::from_value::<T::Params>(probe).is_err()
                    })
                    .map(|(k, _)| k.clone())
                    .unwrap_or_default();
                return Err(ParamError::Invalid { key, message });
            }
        };
        parsed.validate().map_err(ParamError::Rule)?;
        Ok(serde_json::to_value(parsed).expect("parameters serialise"))
    }
    fn run(&self, ctx: &mut StageContext, params: &Value) -> Result<()> {
        let p: T::Params = serde_json::from_value(params.clone()).context("resolved parameters do not parse")?;
        T::run(ctx, &p)
    }
}

/// Where a stage's progress bars go.
#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    pub fn hidden() -> Progress {
        Progress { multi: None }
    }
    pub fn new(multi: MultiProgress) -> Progress {
        Progress { multi: Some(multi) }
    }
    pub fn multi(&self) -> Option<&MultiProgress> {
        self.multi.as_ref()
    }
    /// A bar of `len` steps, drawn where `multi` draws (xtask: a terminal, or log lines); hidden
    /// without one.
    pub fn bar(&self, len: u64, message: impl Into<String>) -> ProgressBar {
        let bar = match &self.multi {
            Some(m) => m.add(ProgressBar::new(len)),
            None => ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden()),
        };
        bar.set_style(
            ProgressStyle::with_template("  {msg:<28} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(message.into());
        bar
    }
}

/// One upstream artifact as a stage sees it.
#[derive(Debug, Clone)]
pub struct InputArtifact {
    /// The upstream step's name (labels items of list inputs).
    pub label: String,
    pub artifact: Artifact,
    /// The table the pipeline named (`step.table`), if any.
    pub table: Option<String>,
    /// The hash that enters the key: the table's content digest when a table
    /// is named, else the artifact's content hash.
    pub hash: String,
}

impl InputArtifact {
    pub fn new(label: impl Into<String>, artifact: Artifact, table: Option<String>) -> Result<InputArtifact> {
        let hash = match &table {
            None => artifact.manifest.content_hash.clone(),
            Some(t) => {
                let rec = artifact.manifest.table(t).ok_or_else(|| {
                    anyhow!(
                        "artifact {} ({}) has no table `{t}`; it has: {}",
                        short(&artifact.manifest.key),
                        artifact.manifest.stage,
                        artifact.manifest.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })?;
                artifact.manifest.file(&rec.file).map(|f| f.content.clone()).unwrap_or_default()
            }
        };
        Ok(InputArtifact { label: label.into(), artifact, table, hash })
    }

    pub fn dir(&self) -> &Path {
        &self.artifact.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.artifact.manifest
    }

    /// The `model/` directory of a model artifact.
    pub fn model_dir(&self) -> PathBuf {
        self.artifact.dir.join("model")
    }

    /// Reads the table the pipeline named, or else the one called `spec.name`,
    /// checking it against `spec`.
    pub fn read_rows<R: DeserializeOwned>(&self, spec: &TableSpec) -> Result<Vec<R>> {
        let name = self.table.as_deref().unwrap_or(spec.name);
        parquet_io::read_rows(&self.artifact.table_path(name)?, spec)
    }

    /// Whether the artifact has a table of that name.
    pub fn has_table(&self, name: &str) -> bool {
        self.artifact.manifest.table(name).is_some()
    }
}

/// Everything a running stage may touch.
pub struct StageContext {
    pub step: String,
    pub stage: &'static str,
    pub key: String,
    pub seed: u64,
    /// `cpu` or `cuda:N`.
    pub device: String,
    inputs: BTreeMap<String, Vec<InputArtifact>>,
    out_dir: PathBuf,
    scratch_dir: PathBuf,
    lineage: FileLineage,
    tables: Vec<TableRecord>,
    volatile: BTreeSet<String>,
    metrics: BTreeMap<String, f64>,
    stats: BTreeMap<String, Value>,
    warnings: Vec<String>,
    progress: Progress,
}

impl StageContext {
    /// The single artifact of a declared input.
    pub fn input(&self, name: &str) -> Result<&InputArtifact> {
        match self.inputs.get(name).map(Vec::as_slice) {
            Some([one]) => Ok(one),
            Some([]) | None => bail!("stage {} needs input `{name}`, but the pipeline gave none", self.stage),
            Some(_) => bail!("input `{name}` of stage {} takes one artifact", self.stage),
        }
    }

    pub fn optional_input(&self, name: &str) -> Option<&InputArtifact> {
        self.inputs.get(name).and_then(|v| v.first())
    }

    /// All artifacts of a list input, in pipeline order.
    pub fn inputs(&self, name: &str) -> &[InputArtifact] {
        self.inputs.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Reads the table of input `input` declared by `spec`.
    pub fn read_rows<R: DeserializeOwned>(&self, input: &str, spec: &TableSpec) -> Result<Vec<R>> {
        self.input(input)?.read_rows(spec).with_context(|| format!("reading input `{input}`"))
    }

    /// Writes a table into the artifact, with lineage in its metadata.
    pub fn write_rows<R: Serialize>(&mut self, spec: &TableSpec, rows: &[R]) -> Result<()> {
        self.write_table(spec, rows, false)
    }

    /// Writes a table that differs between identical runs (timings): kept and
    /// verified, but left out of the content hash so it cannot defeat caching.
    pub fn write_rows_volatile<R: Serialize>(&mut self, spec: &TableSpec, rows: &[R]) -> Result<()> {
        self.write_table(spec, rows, true)
    }

    fn write_table<R: Serialize>(&mut self, spec: &TableSpec, rows: &[R], volatile: bool) -> Result<()> {
        let file = spec.file_name();
        if self.tables.iter().any(|t| t.name == spec.name) {
            bail!("stage {} wrote table `{}` twice", self.stage, spec.name);
        }
        let written = parquet_io::write_rows(&self.out_dir.join(&file), spec, rows, &self.lineage)?;
        if volatile {
            self.volatile.insert(file.clone());
        }
        self.tables.push(TableRecord {
            name: spec.name.to_string(),
            file,
            rows: written.rows,
            schema_fingerprint: spec.fingerprint(),
            columns: spec
                .columns
                .iter()
                .map(|c| ColumnRecord {
                    name: c.name.to_string(),
                    ty: format!("{:?}", c.ty.data_type()),
                    nullable: c.nullable,
                })
                .collect(),
        });
        Ok(())
    }

    /// A path inside the artifact for files the stage writes itself (model
    /// files go under `model/`). Parent directories are created.
    pub fn out_path(&self, rel: &str) -> Result<PathBuf> {
        let path = self.out_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(path)
    }

    /// Marks a file written through [`out_path`](Self::out_path) as volatile.
    pub fn mark_volatile(&mut self, rel: &str) {
        self.volatile.insert(rel.to_string());
    }

    /// A directory that survives an interrupted run of this same key: keep
    /// resumable checkpoints here. Removed once the artifact is published.
    pub fn scratch_dir(&self) -> Result<&Path> {
        std::fs::create_dir_all(&self.scratch_dir)?;
        Ok(&self.scratch_dir)
    }

    pub fn metric(&mut self, name: impl Into<String>, value: f64) {
        self.metrics.insert(name.into(), value);
    }

    pub fn metrics(&self) -> &BTreeMap<String, f64> {
        &self.metrics
    }

    /// Structured statistics (rows per split, mixes, ...) for `show`.
    pub fn stat(&mut self, name: impl Into<String>, value: Value) {
        self.stats.insert(name.into(), value);
    }

    /// A warning, printed now and recorded in the manifest.
    pub fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!("{}: {message}", self.step);
        self.warnings.push(message);
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// A seed for one purpose within this step, derived from the step's seed.
    pub fn derive_seed(&self, purpose: &str) -> u64 {
        derive_seed(self.seed, purpose)
    }
}

/// A seed for `purpose` derived from `seed`.
pub fn derive_seed(seed: u64, purpose: &str) -> u64 {
    let h = blake3::hash(format!("{seed}:{purpose}").as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A fully resolved request to run one step.
pub struct StepRequest<'a> {
    pub pipeline: &'a str,
    pub step: &'a str,
    pub stage: &'a dyn Stage,
    /// Resolved parameters (see [`Stage::resolve_params`]).
    pub params: Value,
    pub seed: u64,
    pub device: String,
    pub inputs: BTreeMap<String, Vec<InputArtifact>>,
}

impl StepRequest<'_> {
    /// The external files the step reads, hashed now.
    pub fn file_deps(&self) -> Result<Vec<FileDep>> {
        self.stage
            .file_deps(&self.params)
            .into_iter()
            .map(|p| {
                let (blake3, bytes) = path_digest(&p)
                    .with_context(|| format!("step `{}` reads {}, which cannot be read", self.step, p.display()))?;
                Ok(FileDep { path: p.display().to_string(), blake3, bytes })
            })
            .collect()
    }

    /// The artifact key (hashes the external files the step reads).
    pub fn key(&self) -> Result<String> {
        let files: Vec<(String, String)> = self.file_deps()?.into_iter().map(|f| (f.path, f.blake3)).collect();
        Ok(self.key_with(&files))
    }

    fn key_with(&self, files: &[(String, String)]) -> String {
        let code = self.stage.code();
        KeyIngredients {
            stage: self.stage.name(),
            code_identity: code.identity,
            params: &self.params,
            seed: self.seed,
            device: self.stage.uses_device().then_some(self.device.as_str()),
            inputs: self
                .stage
                .inputs()
                .iter()
                .filter_map(|spec| {
                    let items = self.inputs.get(spec.name)?;
                    let hashes = match spec.arity {
                        Arity::Many => {
                            InputHashes::Many(items.iter().map(|i| (i.label.as_str(), i.hash.as_str())).collect())
                        }
                        _ => InputHashes::One(items.first()?.hash.as_str()),
                    };
                    Some((spec.name, hashes))
                })
                .collect(),
            files,
        }
        .key()
    }

    /// Checks the inputs against the stage's declaration.
    pub fn check_inputs(&self) -> Result<()> {
        for spec in self.stage.inputs() {
            let n = self.inputs.get(spec.name).map_or(0, Vec::len);
            match (spec.arity, n) {
                (Arity::One, 1) | (Arity::Optional, 0 | 1) | (Arity::Many, _) => {}
                (Arity::One, 0) => bail!(
                    "step `{}` (stage {}) needs input `{}`: {}",
                    self.step,
                    self.stage.name(),
                    spec.name,
                    spec.doc
                ),
                _ => bail!(
                    "step `{}`: input `{}` of stage {} takes one artifact, got {n}",
                    self.step,
                    spec.name,
                    self.stage.name()
                ),
            }
        }
        if let Some(extra) = self.inputs.keys().find(|k| !self.stage.inputs().iter().any(|s| s.name == k.as_str())) {
            bail!(
                "step `{}`: stage {} has no input `{extra}`; its inputs are: {}",
                self.step,
                self.stage.name(),
                self.stage.inputs().iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            );
        }
        Ok(())
    }
}

/// How a step's artifact was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Already in the store.
    Cached,
    /// Computed now.
    Ran,
    /// Computed meanwhile by another run sharing the store.
    Waited,
}

pub struct StepResult {
    pub outcome: Outcome,
    pub artifact: Artifact,
    pub wall: Duration,
}

/// Runs a step unless its key is already in the store, and publishes the
/// result atomically. Holds the key's lock while computing, so concurrent
/// runs on one store compute each key once.
pub fn execute(store: &Store, req: &StepRequest, progress: &Progress) -> Result<StepResult> {
    let started = Instant::now();
    req.check_inputs()?;
    let key = req.key()?;
    let stage = req.stage.name();
    if let Some(artifact) = store.get_verified(stage, &key)? {
        return Ok(StepResult { outcome: Outcome::Cached, artifact, wall: started.elapsed() });
    }
    let lock = store.lock(&key)?;
    if let Some(artifact) = store.get_verified(stage, &key)? {
        let outcome = if lock.waited { Outcome::Waited } else { Outcome::Cached };
        return Ok(StepResult { outcome, artifact, wall: started.elapsed() });
    }
    store.clear_stale_tmp(&key)?;
    let tmp = store.new_tmp_dir(&key)?;
    let scratch = store.scratch_dir(&key);
    let result = run_into(req, &key, &tmp, &scratch, progress);
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let dir = store.publish(&tmp, stage, &key)?;
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    }
    drop(lock);
    Ok(StepResult { outcome: Outcome::Ran, artifact: Artifact { dir, manifest }, wall: started.elapsed() })
}

/// Runs the stage with outputs in `out_dir` and writes the manifest there
/// (last). Used by the store executor and by the stand-alone stage CLIs.
pub fn run_into(
    req: &StepRequest,
    key: &str,
    out_dir: &Path,
    scratch_dir: &Path,
    progress: &Progress,
) -> Result<Manifest> {
    let started_at = now_secs();
    let clock = Instant::now();
    let stage = req.stage;
    let mut ctx = StageContext {
        step: req.step.to_string(),
        stage: stage.name(),
        key: key.to_string(),
        seed: req.seed,
        device: req.device.clone(),
        inputs: req.inputs.clone(),
        out_dir: out_dir.to_path_buf(),
        scratch_dir: scratch_dir.to_path_buf(),
        lineage: FileLineage {
            artifact_key: key.to_string(),
            stage: stage.name().to_string(),
            step: req.step.to_string(),
            inputs: req
                .inputs
                .iter()
                .flat_map(|(name, items)| {
                    items.iter().map(move |i| {
                        let n = if items.len() > 1 { format!("{name}[{}]", i.label) } else { name.clone() };
                        (n, i.hash.clone())
                    })
                })
                .collect(),
        },
        tables: Vec::new(),
        volatile: BTreeSet::new(),
        metrics: BTreeMap::new(),
        stats: BTreeMap::new(),
        warnings: Vec::new(),
        progress: progress.clone(),
    };
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| stage.run(&mut ctx, &req.params)));
    match run {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(e.context(format!("step `{}` (stage {}) failed", req.step, stage.name())));
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            bail!("step `{}` (stage {}) panicked: {msg}", req.step, stage.name());
        }
    }

    let files = record_files(out_dir, &ctx.volatile)?;
    let code = stage.code();
    let (host, cpu, threads) = host_facts();
    let mut tools: BTreeMap<String, String> = serde_json::from_str(code.tools).unwrap_or_default();
    tools.insert("rustc".into(), code.rustc.to_string());
    tools.insert("instructgpt-rs".into(), env!("CARGO_PKG_VERSION").to_string());
    let headline =
        stage.headline().and_then(|name| ctx.metrics.get(name).map(|v| Headline { name: name.to_string(), value: *v }));
    let manifest = Manifest {
        format: FORMAT_VERSION,
        stage: stage.name().to_string(),
        step: req.step.to_string(),
        key: key.to_string(),
        content_hash: content_hash(&files),
        file_deps: req.file_deps()?,
        inputs: req
            .inputs
            .iter()
            .map(|(name, items)| {
                let recs = items
                    .iter()
                    .map(|i| InputRecord {
                        step: i.label.clone(),
                        stage: i.artifact.manifest.stage.clone(),
                        key: i.artifact.manifest.key.clone(),
                        content_hash: i.hash.clone(),
                        table: i.table.clone(),
                    })
                    .collect();
                (name.clone(), recs)
            })
            .collect(),
        params: req.params.clone(),
        seed: req.seed,
        device: stage.uses_device().then(|| req.device.clone()),
        code: code.record(),
        files,
        tables: ctx.tables,
        metrics: ctx.metrics,
        stats: ctx.stats,
        headline,
        warnings: ctx.warnings,
        run: RunRecord {
            started_at,
            wall_time_s: clock.elapsed().as_secs_f64(),
            host,
            cpu,
            threads,
            device: req.device.clone(),
            tools,
        },
    };
    write_atomic(&out_dir.join(MANIFEST_FILE), serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    Ok(manifest)
}
