//! Per-step training metrics, collected during a stage and written as the
//! `train_log` table (deterministic values) and the volatile `timing` table
//! (seconds and rates, which differ between identical runs).

use anyhow::Result;

use crate::stage::StageContext;
use crate::tables::{LogRow, TIMING, TRAIN_LOG};

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

    /// Saves the log beside a resumable checkpoint (atomically), so a run
    /// resumed from that checkpoint continues the same log.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let doc = serde_json::json!({ "rows": self.rows, "timing": self.timing });
        crate::store::write_atomic(path, serde_json::to_string(&doc)?.as_bytes())
    }

    /// The log saved with [`save`](Self::save), or an empty one.
    pub fn load_or_new(path: &std::path::Path) -> Result<TrainLog> {
        let Ok(text) = std::fs::read_to_string(path) else { return Ok(TrainLog::new()) };
        let doc: serde_json::Value = serde_json::from_str(&text)?;
        Ok(TrainLog {
            rows: serde_json::from_value(doc["rows"].clone())?,
            timing: serde_json::from_value(doc["timing"].clone())?,
        })
    }

    /// Writes `train_log` and (volatile) `timing`.
    pub fn write(&self, ctx: &mut StageContext) -> Result<()> {
        ctx.write_rows(&TRAIN_LOG, &self.rows)?;
        ctx.write_rows_volatile(&TIMING, &self.timing)
    }
}
