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
/// the previous one is moved aside (`.NAME.old`), the new one renamed into place, and the old one
/// removed. A crash leaves the old directory or the new one: between the two renames neither is at
/// `dest`, and the next call (or [`recover_dir`]) moves the old one back before doing anything else.
pub fn replace_dir_atomic(dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (parent, tmp, old) = aside_names(dest);
    fs::create_dir_all(&parent).map_err(|e| ModelError::io("create directory", &parent, e))?;
    recover_dir(dest)?;
    for stale in [&tmp, &old] {
        if stale.exists() {
            fs::remove_dir_all(stale).map_err(|e| ModelError::io("remove stale", stale, e))?;
        }
    }
    fs::create_dir_all(&tmp).map_err(|e| ModelError::io("create directory", &tmp, e))?;
    fill(&tmp)?;
    sync_dir(&tmp)?;
    if dest.exists() {
        fs::rename(dest, &old).map_err(|e| ModelError::io("move aside", dest, e))?;
    }
    fs::rename(&tmp, dest).map_err(|e| ModelError::io("rename into place", dest, e))?;
    sync_dir(&parent)?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| ModelError::io("remove", &old, e))?;
    }
    Ok(())
}

/// The parent of `dest` and the temporary and moved-aside names [`replace_dir_atomic`] uses.
fn aside_names(dest: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let (tmp, old) = (parent.join(format!(".{name}.tmp")), parent.join(format!(".{name}.old")));
    (parent, tmp, old)
}

/// Undoes a [`replace_dir_atomic`] interrupted between its two renames: when `dest` is missing and
/// its moved-aside copy is there, moves that copy back. Call it before reading `dest`.
pub fn recover_dir(dest: &Path) -> Result<()> {
    let (parent, _, old) = aside_names(dest);
    if !dest.exists() && old.is_dir() {
        fs::rename(&old, dest).map_err(|e| ModelError::io("move back", &old, e))?;
        sync_dir(&parent)?;
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
