//! Per-step training metrics, collected during a stage and written as the
//! `train_log` table (deterministic values) and the volatile `timing` table
//! (seconds and rates, which differ between identical runs).

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::stage::StageContext;
use crate::tables::{LogRow, TIMING, TRAIN_LOG};

/// The training log's file inside a resumable checkpoint.
pub const CHECKPOINT_LOG: &str = "train_log.json";

/// The path of file `name` (its `what`, for the message) inside the complete resumable checkpoint
/// `dir`; an error when it is missing, since resuming without it would lose what it holds.
pub fn checkpoint_file(dir: &Path, name: &str, what: &str) -> Result<std::path::PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} holds a checkpoint without its {what} ({name}): delete {} to start this step over",
            dir.display(),
            dir.display()
        );
    }
    Ok(path)
}

#[derive(Debug, Default, Clone)]
pub struct TrainLog {
    rows: Vec<LogRow>,
    timing: Vec<LogRow>,
}

impl TrainLog {
    pub fn new() -> TrainLog {
        TrainLog::default()
    }

    /// A deterministic value (loss, learning rate, reward, KL, ...).
    pub fn record(&mut self, step: u64, metric: &str, value: f64) {
        self.rows.push(LogRow { step: step as i64, metric: metric.to_string(), value });
    }

    /// A timing (tokens/s, seconds): kept out of the content hash.
    pub fn time(&mut self, step: u64, metric: &str, value: f64) {
        self.timing.push(LogRow { step: step as i64, metric: metric.to_string(), value });
    }

    pub fn rows(&self) -> &[LogRow] {
        &self.rows
    }

    /// The values of one metric, in step order.
    pub fn series(&self, metric: &str) -> Vec<(i64, f64)> {
        self.rows.iter().filter(|r| r.metric == metric).map(|r| (r.step, r.value)).collect()
    }

    /// The last value of a metric.
    pub fn last(&self, metric: &str) -> Option<f64> {
        self.rows.iter().rev().find(|r| r.metric == metric).map(|r| r.value)
    }

    /// Saves the log to `path` (atomically); see [`TrainLog::save_to_checkpoint`].
    /// Values are stored as their IEEE bits: exact, and NaN survives.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bits = |rows: &[LogRow]| -> Vec<(i64, String, u64)> {
            rows.iter().map(|r| (r.step, r.metric.clone(), r.value.to_bits())).collect()
        };
        let doc = serde_json::json!({ "rows": bits(&self.rows), "timing": bits(&self.timing) });
        crate::store::write_atomic(path, serde_json::to_string(&doc)?.as_bytes())
    }

    /// The log saved with [`save`](Self::save); errors name the file.
    pub fn load(path: &Path) -> Result<TrainLog> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let parse = || -> Result<TrainLog> {
            let doc: serde_json::Value = serde_json::from_str(&text)?;
            let rows = |v: &serde_json::Value| -> Result<Vec<LogRow>> {
                let raw: Vec<(i64, String, u64)> = serde_json::from_value(v.clone())?;
                Ok(raw.into_iter().map(|(step, metric, b)| LogRow { step, metric, value: f64::from_bits(b) }).collect())
            };
            Ok(TrainLog { rows: rows(&doc["rows"])?, timing: rows(&doc["timing"])? })
        };
        parse().with_context(|| format!("{} is not a training log", path.display()))
    }

    /// Writes the log into a resumable checkpoint being filled in `dir`, before the checkpoint is
    /// marked complete, so a run resumed from it continues the same log.
    pub fn save_to_checkpoint(&self, dir: &Path) -> Result<()> {
        self.save(&dir.join(CHECKPOINT_LOG))
    }

    /// The log inside the complete checkpoint `dir`. A checkpoint without one is an error, not an
    /// empty log: resuming would lose every row before it.
    pub fn from_checkpoint(dir: &Path) -> Result<TrainLog> {
        TrainLog::load(&checkpoint_file(dir, CHECKPOINT_LOG, "training log")?)
    }

    /// Writes `train_log` and (volatile) `timing`.
    pub fn write(&self, ctx: &mut StageContext) -> Result<()> {
        ctx.write_rows(&TRAIN_LOG, &self.rows)?;
        ctx.write_rows_volatile(&TIMING, &self.timing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_log_loads_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = TrainLog::new();
        for (i, v) in [0.1f64, 1.0 / 3.0, f64::NAN, -2.5e-300, 123456.789].into_iter().enumerate() {
            log.record(i as u64, "x", v);
            log.time(i as u64, "t", v * 2.0);
        }
        let path = dir.path().join("log.json");
        log.save(&path).unwrap();
        let back = TrainLog::load(&path).unwrap();
        let bits =
            |rows: &[LogRow]| rows.iter().map(|r| (r.step, r.metric.clone(), r.value.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(back.rows()), bits(log.rows()));
        assert_eq!(bits(&back.timing), bits(&log.timing));
    }

    #[test]
    fn a_checkpoint_log_is_there_or_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = TrainLog::new();
        log.record(3, "loss", 1.5);
        log.save_to_checkpoint(dir.path()).unwrap();
        assert_eq!(TrainLog::from_checkpoint(dir.path()).unwrap().rows(), log.rows());
        let path = dir.path().join(CHECKPOINT_LOG);
        std::fs::write(&path, "{ truncated").unwrap();
        let e = format!("{:#}", TrainLog::from_checkpoint(dir.path()).unwrap_err());
        assert!(e.contains(&path.display().to_string()) && e.contains("not a training log"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = TrainLog::from_checkpoint(dir.path()).unwrap_err().to_string();
        assert!(e.contains("without its training log") && e.contains(CHECKPOINT_LOG), "{e}");
    }
}
