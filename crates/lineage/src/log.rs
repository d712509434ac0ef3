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
    /// Values are stored as their IEEE bits: exact, and NaN survives.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let bits = |rows: &[LogRow]| -> Vec<(i64, String, u64)> {
            rows.iter().map(|r| (r.step, r.metric.clone(), r.value.to_bits())).collect()
        };
        let doc = serde_json::json!({ "rows": bits(&self.rows), "timing": bits(&self.timing) });
        crate::store::write_atomic(path, serde_json::to_string(&doc)?.as_bytes())
    }

    /// The log saved with [`save`](Self::save), or an empty one.
    pub fn load_or_new(path: &std::path::Path) -> Result<TrainLog> {
        let Ok(text) = std::fs::read_to_string(path) else { return Ok(TrainLog::new()) };
        let doc: serde_json::Value = serde_json::from_str(&text)?;
        let rows = |v: &serde_json::Value| -> Result<Vec<LogRow>> {
            let raw: Vec<(i64, String, u64)> = serde_json::from_value(v.clone())?;
            Ok(raw.into_iter().map(|(step, metric, b)| LogRow { step, metric, value: f64::from_bits(b) }).collect())
        };
        Ok(TrainLog { rows: rows(&doc["rows"])?, timing: rows(&doc["timing"])? })
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
        let back = TrainLog::load_or_new(&path).unwrap();
        let bits =
            |rows: &[LogRow]| rows.iter().map(|r| (r.step, r.metric.clone(), r.value.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(back.rows()), bits(log.rows()));
        assert_eq!(bits(&back.timing), bits(&log.timing));
    }
}
