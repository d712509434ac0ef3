//! The artifact store: a directory of complete, verified artifacts.
//!
//! Layout (`root` is `./artifacts` unless `--store` or `INSTRUCTGPT_STORE`
//! says otherwise):
//!
//! ```text
//! <stage>/<key>/manifest.json   complete artifacts (the manifest is written last)
//! <stage>/<key>/...             their tables and model files
//! _tmp/<key>.<pid>/             outputs being written; renamed into place when complete
//! _tmp/<key>.gc-<time>/         an artifact `gc` is removing (renamed out of the store first)
//! _scratch/<key>/               resumable checkpoints of an interrupted step
//! _locks/<key>.lock             one lock per key: two runs never compute one key twice
//! _refs/<pipeline>/<step>.json  which key each step of each pipeline last produced
//! _runs/                        run summaries
//! _corrupt/                     artifacts that failed verification, moved aside
//! ```
//!
//! Key design decision: an artifact becomes visible by one `rename` of a
//! fully written, fsynced directory whose last-written file is the manifest.
//! A killed run leaves at most a `_tmp` directory, which the next holder of
//! that key's lock deletes.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::hash::{content_digest, file_digest, short};
use crate::manifest::{FileRecord, MANIFEST_FILE, Manifest};

/// Environment variable naming the store directory.
pub const STORE_ENV: &str = "INSTRUCTGPT_STORE";

const RESERVED: &[&str] = &["_tmp", "_scratch", "_locks", "_refs", "_runs", "_corrupt"];

/// A complete artifact in the store.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Artifact {
    pub fn key(&self) -> &str {
        &self.manifest.key
    }

    /// Path of a table's file inside the artifact.
    pub fn table_path(&self, table: &str) -> Result<PathBuf> {
        match self.manifest.table(table) {
            Some(t) => Ok(self.dir.join(&t.file)),
            None => bail!(
                "artifact {} ({}) has no table `{table}`; it has: {}",
                short(&self.manifest.key),
                self.manifest.stage,
                self.manifest.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// One file that does not match its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub path: String,
    pub problem: String,
}

/// Which key a pipeline step last produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRef {
    pub stage: String,
    pub key: String,
    pub content_hash: String,
    pub updated_at: u64,
}

/// A held per-key lock; released on drop.
pub struct KeyLock {
    file: File,
    /// Whether acquiring it meant waiting for another process.
    pub waited: bool,
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

pub struct Store {
    root: PathBuf,
    verified: Mutex<HashSet<PathBuf>>,
}

impl Store {
    /// `$INSTRUCTGPT_STORE`, or `./artifacts`.
    pub fn default_root() -> PathBuf {
        std::env::var_os(STORE_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("artifacts"))
    }

    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for d in RESERVED {
            fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating store directory {}", root.join(d).display()))?;
        }
        Ok(Store { root, verified: Mutex::new(HashSet::new()) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn artifact_dir(&self, stage: &str, key: &str) -> PathBuf {
        self.root.join(stage).join(key)
    }

    /// The artifact if present and complete (no verification).
    pub fn get(&self, stage: &str, key: &str) -> Result<Option<Artifact>> {
        let dir = self.artifact_dir(stage, key);
        if !dir.join(MANIFEST_FILE).is_file() {
            return Ok(None);
        }
        let manifest = Manifest::read(&dir)?;
        Ok(Some(Artifact { dir, manifest }))
    }

    /// The artifact if present, complete and matching its manifest. A corrupt
    /// artifact is moved to `_corrupt/` (never silently used or deleted) and
    /// reported as missing, so the caller recomputes it. Verification runs
    /// once per artifact per process.
    pub fn get_verified(&self, stage: &str, key: &str) -> Result<Option<Artifact>> {
        let found = match self.get(stage, key) {
            Ok(f) => f,
            Err(e) => {
                let dir = self.artifact_dir(stage, key);
                let moved = self.move_aside(&dir)?;
                tracing::warn!("unreadable manifest in {}: {e:#}; moved to {}", dir.display(), moved.display());
                return Ok(None);
            }
        };
        let Some(artifact) = found else {
            return Ok(None);
        };
        if self.verified.lock().expect("verified set").contains(&artifact.dir) {
            return Ok(Some(artifact));
        }
        let bad = verify(&artifact);
        if bad.is_empty() {
            self.verified.lock().expect("verified set").insert(artifact.dir.clone());
            return Ok(Some(artifact));
        }
        let moved = self.move_aside(&artifact.dir)?;
        for m in &bad {
            tracing::warn!("artifact {} ({}): {}: {}", short(key), stage, m.path, m.problem);
        }
        tracing::warn!(
            "artifact {} failed verification; moved to {} and will be recomputed",
            short(key),
            moved.display()
        );
        Ok(None)
    }

    /// Moves a directory to `_corrupt/` under a unique name.
    pub fn move_aside(&self, dir: &Path) -> Result<PathBuf> {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let target = self.root.join("_corrupt").join(format!("{name}.{}", now_nanos()));
        fs::rename(dir, &target).with_context(|| format!("moving {} aside", dir.display()))?;
        self.verified.lock().expect("verified set").remove(dir);
        Ok(target)
    }

    /// Every complete artifact in the store.
    pub fn list(&self) -> Result<Vec<Artifact>> {
        let mut out = Vec::new();
        for stage_dir in sorted_dirs(&self.root)? {
            let name = stage_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if RESERVED.contains(&name.as_str()) {
                continue;
            }
            for dir in sorted_dirs(&stage_dir)? {
                if dir.join(MANIFEST_FILE).is_file() {
                    match Manifest::read(&dir) {
                        Ok(manifest) => out.push(Artifact { dir, manifest }),
                        Err(e) => tracing::warn!("{e:#}"),
                    }
                }
            }
        }
        Ok(out)
    }

    /// The artifact whose key starts with `prefix`.
    pub fn find(&self, prefix: &str) -> Result<Artifact> {
        let mut hits: Vec<Artifact> = self.list()?.into_iter().filter(|a| a.manifest.key.starts_with(prefix)).collect();
        match hits.len() {
            0 => bail!("no artifact in {} has a key starting with `{prefix}`", self.root.display()),
            1 => Ok(hits.remove(0)),
            n => bail!("{n} artifacts have keys starting with `{prefix}`; give more characters"),
        }
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join("_locks").join(format!("{key}.lock"))
    }

    /// Takes the lock of `key`, waiting for another holder if needed.
    pub fn lock(&self, key: &str) -> Result<KeyLock> {
        let file = File::options().create(true).truncate(false).write(true).open(self.lock_path(key))?;
        let waited = match file.try_lock() {
            Ok(()) => false,
            Err(fs::TryLockError::WouldBlock) => {
                tracing::info!("another run is computing {}; waiting for it", short(key));
                file.lock()?;
                true
            }
            Err(fs::TryLockError::Error(e)) => return Err(e.into()),
        };
        Ok(KeyLock { file, waited })
    }

    /// Takes the lock of `key` if nobody holds it.
    pub fn try_lock(&self, key: &str) -> Result<Option<KeyLock>> {
        let file = File::options().create(true).truncate(false).write(true).open(self.lock_path(key))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(KeyLock { file, waited: false })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }

    /// Deletes leftovers of interrupted runs of `key`. Call with its lock held.
    pub fn clear_stale_tmp(&self, key: &str) -> Result<()> {
        for dir in sorted_dirs(&self.root.join("_tmp"))? {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.split('.').next() == Some(key) {
                tracing::info!("removing the half-written output of an interrupted run: {}", dir.display());
                fs::remove_dir_all(&dir)?;
            }
        }
        Ok(())
    }

    /// A fresh directory to write `key`'s outputs into. Call with its lock held.
    pub fn new_tmp_dir(&self, key: &str) -> Result<PathBuf> {
        let dir = self.root.join("_tmp").join(format!("{key}.{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Where a step keeps checkpoints that survive an interruption, so a
    /// rerun of the same key can resume.
    pub fn scratch_dir(&self, key: &str) -> PathBuf {
        self.root.join("_scratch").join(key)
    }

    /// Moves a finished output directory into place. Its files must already
    /// be fsynced and its manifest written.
    pub fn publish(&self, tmp: &Path, stage: &str, key: &str) -> Result<PathBuf> {
        let target = self.artifact_dir(stage, key);
        let parent = target.parent().expect("artifact dirs have a parent");
        fs::create_dir_all(parent)?;
        if target.exists() {
            // Only a directory without a manifest can be here (a complete one
            // would have been found under the lock): keep it for inspection.
            self.move_aside(&target)?;
        }
        sync_dir(tmp)?;
        fs::rename(tmp, &target).with_context(|| format!("publishing {}", target.display()))?;
        sync_dir(parent)?;
        self.verified.lock().expect("verified set").insert(target.clone());
        Ok(target)
    }

    /// Removes an artifact (for `gc`; hold its lock). It first leaves the store in one rename, into
    /// `_tmp/`, so an interrupted removal never leaves a half-deleted directory with its manifest.
    pub fn remove(&self, artifact: &Artifact) -> Result<()> {
        let tmp = self.root.join("_tmp");
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let gone = tmp.join(format!("{}.gc-{}", artifact.key(), now_nanos()));
        fs::rename(&artifact.dir, &gone).with_context(|| format!("removing {}", artifact.dir.display()))?;
        if let Some(parent) = artifact.dir.parent() {
            sync_dir(parent)?;
        }
        self.verified.lock().expect("verified set").remove(&artifact.dir);
        fs::remove_dir_all(&gone).with_context(|| format!("removing {}", gone.display()))
    }

    fn ref_path(&self, pipeline: &str, step: &str) -> PathBuf {
        self.root.join("_refs").join(pipeline).join(format!("{step}.json"))
    }

    pub fn set_ref(&self, pipeline: &str, step: &str, manifest: &Manifest) -> Result<()> {
        let r = StepRef {
            stage: manifest.stage.clone(),
            key: manifest.key.clone(),
            content_hash: manifest.content_hash.clone(),
            updated_at: now_secs(),
        };
        write_atomic(&self.ref_path(pipeline, step), serde_json::to_string_pretty(&r)?.as_bytes())
    }

    pub fn get_ref(&self, pipeline: &str, step: &str) -> Option<StepRef> {
        let text = fs::read_to_string(self.ref_path(pipeline, step)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Every `(pipeline, step, ref)` recorded.
    pub fn refs(&self) -> Result<Vec<(String, String, StepRef)>> {
        let mut out = Vec::new();
        for pdir in sorted_dirs(&self.root.join("_refs"))? {
            let pipeline = pdir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            for entry in fs::read_dir(&pdir)?.flatten() {
                let path = entry.path();
                let Some(step) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                    continue;
                };
                if let Ok(r) =
                    fs::read_to_string(&path).map_err(anyhow::Error::from).and_then(|t| Ok(serde_json::from_str(&t)?))
                {
                    out.push((pipeline.clone(), step, r));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }

    /// Saves a run summary under `_runs/`.
    pub fn record_run(&self, pipeline: &str, summary: &serde_json::Value) -> Result<PathBuf> {
        let path = self.root.join("_runs").join(format!("{}-{pipeline}.json", now_secs()));
        write_atomic(&path, serde_json::to_string_pretty(summary)?.as_bytes())?;
        Ok(path)
    }

    /// Calls `f` with the leftover directories in `_tmp` and `_scratch` of each key nobody is
    /// computing now, holding that key's lock during the call (so no run starts on the key while
    /// `f` removes them), one key at a time.
    pub fn for_each_leftover(&self, mut f: impl FnMut(&[PathBuf]) -> Result<()>) -> Result<()> {
        let mut by_key: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
        for sub in ["_tmp", "_scratch"] {
            for dir in sorted_dirs(&self.root.join(sub))? {
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let key = name.split('.').next().unwrap_or_default().to_string();
                by_key.entry(key).or_default().push(dir);
            }
        }
        for (key, dirs) in by_key {
            if let Some(_lock) = self.try_lock(&key)? {
                f(&dirs)?;
            }
        }
        Ok(())
    }
}

/// Re-hashes an artifact's files against its manifest.
pub fn verify(artifact: &Artifact) -> Vec<Mismatch> {
    let mut bad = Vec::new();
    for f in &artifact.manifest.files {
        let path = artifact.dir.join(&f.path);
        let problem = match fs::metadata(&path) {
            Err(_) => Some("missing".to_string()),
            Ok(m) if m.len() != f.bytes => Some(format!("size {} bytes, manifest says {}", m.len(), f.bytes)),
            Ok(_) => match file_digest(&path) {
                Err(e) => Some(format!("unreadable: {e}")),
                Ok(d) if d != f.blake3 => Some(format!("blake3 {} but manifest says {}", short(&d), short(&f.blake3))),
                Ok(_) => None,
            },
        };
        if let Some(problem) = problem {
            bad.push(Mismatch { path: f.path.clone(), problem });
        }
    }
    bad
}

/// Hashes and fsyncs every file under `dir` (except the manifest) into file
/// records, in path order.
pub fn record_files(dir: &Path, volatile: &BTreeSet<String>) -> Result<Vec<FileRecord>> {
    let mut paths = Vec::new();
    collect(dir, dir, &mut paths)?;
    paths.sort();
    let mut out = Vec::new();
    for rel in paths {
        if rel == MANIFEST_FILE {
            continue;
        }
        let path = dir.join(&rel);
        File::open(&path)?.sync_all()?;
        let full = file_digest(&path).with_context(|| format!("hashing {}", path.display()))?;
        let content = content_digest(&path, &full).with_context(|| format!("hashing {}", path.display()))?;
        out.push(FileRecord {
            bytes: fs::metadata(&path)?.len(),
            blake3: full,
            content,
            volatile: volatile.contains(&rel),
            path: rel,
        });
    }
    Ok(out)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
            sync_dir(&path)?;
        } else {
            let rel = path.strip_prefix(root).expect("under root");
            out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
        }
    }
    Ok(())
}

/// Writes a file by write, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().expect("file has a parent");
    fs::create_dir_all(parent)?;
    let tmp =
        parent.join(format!(".{}.{}.tmp", path.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
    {
        let mut f = File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(parent)
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all().with_context(|| format!("fsync {}", dir.display()))
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    out.sort();
    Ok(out)
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_handed_over_with_their_keys_lock_and_skipped_while_a_run_holds_it() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        for d in ["_tmp/aaaa.12", "_scratch/aaaa", "_scratch/bbbb"] {
            fs::create_dir_all(root.path().join(d)).unwrap();
        }
        let running = store.try_lock("bbbb").unwrap().expect("free");
        let mut seen = Vec::new();
        store
            .for_each_leftover(|dirs| {
                assert!(store.try_lock("aaaa").unwrap().is_none(), "the key stays locked while its leftovers go");
                seen.push(dirs.iter().map(|d| d.strip_prefix(root.path()).unwrap().to_path_buf()).collect::<Vec<_>>());
                Ok(())
            })
            .unwrap();
        assert_eq!(
            seen,
            [vec![PathBuf::from("_tmp/aaaa.12"), PathBuf::from("_scratch/aaaa")]],
            "bbbb is being computed"
        );
        assert!(store.try_lock("aaaa").unwrap().is_some(), "and is released after");
        drop(running);
    }
}
