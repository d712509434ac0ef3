//! Crash-safe file writes: write a temporary file, fsync it, rename it over the target, fsync the
//! directory. A reader sees the old file or the new one, never half of one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

fn tmp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_name(path);
    let mut f = File::create(&tmp).map_err(|e| ModelError::io("create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| ModelError::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| ModelError::io("fsync", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| ModelError::io("rename into place", path, e))?;
    sync_parent(path)
}

/// Serialises `value` as pretty JSON to `path` atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value).map_err(|e| ModelError::Json { path: path.into(), source: e })?;
    s.push('\n');
    write_atomic(path, s.as_bytes())
}

/// Reads and parses a JSON file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let s = fs::read_to_string(path).map_err(|e| ModelError::io("read", path, e))?;
    serde_json::from_str(&s).map_err(|e| ModelError::Json { path: path.into(), source: e })
}

/// fsyncs the directory holding `path`, so that a rename in it is durable.
pub fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    // Opening a directory for fsync works on Unix; elsewhere it may fail, which we tolerate.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Fills a fresh directory with `fill` and then moves it to `dest`, replacing any previous `dest`:
/// the new one is filled in `.NAME.tmp`, the previous one moved aside to `.NAME.old`, the new one
/// renamed into place, and the old one renamed to `.NAME.del` and removed. A crash leaves the old
/// directory or the new one: between the two renames neither is at `dest`, and the next call (or
/// [`recover_dir`]) moves the old one back before doing anything else.
pub fn replace_dir_atomic(dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let n = aside_names(dest);
    fs::create_dir_all(&n.parent).map_err(|e| ModelError::io("create directory", &n.parent, e))?;
    recover_dir(dest)?;
    // Whatever is left now is stale: a half-filled `.tmp`, an `.old` the last call did not get to
    // remove, a half-removed `.del`.
    if n.old.exists() {
        fs::rename(&n.old, &n.del)
            .or_else(|_| fs::remove_dir_all(&n.old))
            .map_err(|e| ModelError::io("remove stale", &n.old, e))?;
    }
    for stale in [&n.tmp, &n.del] {
        if stale.exists() {
            fs::remove_dir_all(stale).map_err(|e| ModelError::io("remove stale", stale, e))?;
        }
    }
    fs::create_dir_all(&n.tmp).map_err(|e| ModelError::io("create directory", &n.tmp, e))?;
    fill(&n.tmp)?;
    sync_dir(&n.tmp)?;
    if dest.exists() {
        fs::rename(dest, &n.old).map_err(|e| ModelError::io("move aside", dest, e))?;
    }
    fs::rename(&n.tmp, dest).map_err(|e| ModelError::io("rename into place", dest, e))?;
    sync_dir(&n.parent)?;
    if n.old.exists() {
        // Out of `.old` in one rename, so a crash while removing it cannot leave a partial copy
        // that `recover_dir` would take for the previous directory.
        fs::rename(&n.old, &n.del).map_err(|e| ModelError::io("move aside", &n.old, e))?;
        fs::remove_dir_all(&n.del).map_err(|e| ModelError::io("remove", &n.del, e))?;
    }
    Ok(())
}

/// The names [`replace_dir_atomic`] uses beside `dest`.
struct Aside {
    parent: PathBuf,
    tmp: PathBuf,
    old: PathBuf,
    del: PathBuf,
}

fn aside_names(dest: &Path) -> Aside {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let at = |suffix: &str| parent.join(format!(".{name}.{suffix}"));
    Aside { tmp: at("tmp"), old: at("old"), del: at("del"), parent }
}

/// Undoes a [`replace_dir_atomic`] interrupted between its two renames (`dest` missing, the
/// previous directory in `.NAME.old` and the filled new one in `.NAME.tmp`) by moving the previous
/// one back. Only then: a `dest` deleted by hand stays deleted. Call it before reading `dest`.
pub fn recover_dir(dest: &Path) -> Result<()> {
    let n = aside_names(dest);
    if !dest.exists() && n.old.is_dir() && n.tmp.is_dir() {
        fs::rename(&n.old, dest).map_err(|e| ModelError::io("move back", &n.old, e))?;
        sync_dir(&n.parent)?;
    }
    Ok(())
}

/// Copies the files (not sub-directories) of model directory `from` into `to`, creating it.
pub fn copy_model_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| ModelError::io("create directory", to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| ModelError::io("read directory", from, e))? {
        let path = entry.map_err(|e| ModelError::io("read directory", from, e))?.path();
        if path.is_file() {
            let name = path.file_name().expect("a file has a name");
            std::fs::copy(&path, to.join(name)).map_err(|e| ModelError::io("copy", &path, e))?;
        }
    }
    Ok(())
}
