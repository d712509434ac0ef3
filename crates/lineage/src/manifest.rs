//! The manifest: what an artifact is, what made it, and what it holds.
//!
//! `manifest.json` is the last file written into an artifact directory, and
//! an artifact directory is only ever renamed into place with it; so its
//! presence in the store means "complete".

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    /// The stage that made it, e.g. `sft.sft`.
    pub stage: String,
    /// The pipeline step that first made it (informational: the same key can
    /// serve several steps and pipelines).
    pub step: String,
    /// Known before running: blake3 over stage, code, parameters, seed,
    /// device and the inputs' content hashes.
    pub key: String,
    /// Known after running: blake3 over the output files' content digests.
    pub content_hash: String,
    /// Input name -> the artifacts that fed it (one, or several for list inputs).
    pub inputs: BTreeMap<String, Vec<InputRecord>>,
    /// Files outside the store that entered the key.
    #[serde(default)]
    pub file_deps: Vec<FileDep>,
    /// The fully resolved parameters, defaults included.
    pub params: serde_json::Value,
    pub seed: u64,
    /// The device for stages that use one (`cpu`, `cuda:0`); part of the key.
    pub device: Option<String>,
    pub code: CodeRecord,
    pub files: Vec<FileRecord>,
    pub tables: Vec<TableRecord>,
    /// Scalar results (validation loss, accuracy, win rate, ...).
    pub metrics: BTreeMap<String, f64>,
    /// Structured statistics per table or topic (rows per split, mixes, ...).
    pub stats: BTreeMap<String, serde_json::Value>,
    pub headline: Option<Headline>,
    pub warnings: Vec<String>,
    pub run: RunRecord,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputRecord {
    /// The upstream step's name in the pipeline that ran this.
    pub step: String,
    pub stage: String,
    pub key: String,
    /// The hash that entered this artifact's key: the upstream artifact's
    /// content hash, or the table's content digest when a table was named.
    pub content_hash: String,
    pub table: Option<String>,
}

/// A file or directory outside the store that a stage reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileDep {
    /// As the parameters name it.
    pub path: String,
    /// blake3 of the file, or of a directory's sorted (path, digest) list.
    pub blake3: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CodeRecord {
    pub identity: String,
    /// Per-part digests (one per workspace crate, registry deps, features, rustc).
    pub parts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileRecord {
    /// Path relative to the artifact directory, `/`-separated.
    pub path: String,
    pub bytes: u64,
    /// blake3 of the bytes (checked by `verify`).
    pub blake3: String,
    /// Digest entering the content hash (see [`crate::hash`]).
    pub content: String,
    /// Volatile files (timings) are verified but not part of the content hash.
    pub volatile: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableRecord {
    pub name: String,
    pub file: String,
    pub rows: u64,
    pub schema_fingerprint: String,
    pub columns: Vec<ColumnRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub nullable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Headline {
    pub name: String,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    pub wall_time_s: f64,
    pub host: String,
    pub cpu: String,
    pub threads: usize,
    pub device: String,
    pub tools: BTreeMap<String, String>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a valid manifest", path.display()))
    }

    pub fn table(&self, name: &str) -> Option<&TableRecord> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn file(&self, path: &str) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// Content hash of an artifact: blake3 over (path, content digest) of every
/// non-volatile file, in path order.
pub fn content_hash(files: &[FileRecord]) -> String {
    let mut sorted: Vec<&FileRecord> = files.iter().filter(|f| !f.volatile).collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = blake3::Hasher::new();
    for f in sorted {
        h.update(f.path.as_bytes()).update(b"\0").update(f.content.as_bytes()).update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// Facts about this machine for the run record.
pub fn host_facts() -> (String, String, usize) {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (host, cpu, threads)
}
