//! What the two training stages share: the model's size parameters, the
//! observer that turns training events into the `train_log` table and a
//! progress bar, and writing a self-contained model directory.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::Result;
use lineage::log::TrainLog;
use lineage::{Progress, Validate};
use model::train::TrainEvent;
use model::{LlamaConfig, Preset};
use serde::{Deserialize, Serialize};

/// A model size: a preset, optionally with some dimensions changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    /// `smoke`, `tiny` or `small`.
    pub preset: String,
    /// Overrides of the preset (0 = the preset's own).
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// The longest context, in tokens.
    pub max_position_embeddings: usize,
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            preset: "tiny".into(),
            hidden_size: 0,
            intermediate_size: 0,
            num_hidden_layers: 0,
            num_attention_heads: 0,
            num_key_value_heads: 0,
            max_position_embeddings: 256,
        }
    }
}

impl ModelSpec {
    /// The model config for a vocabulary of `vocab_size` tokens.
    pub fn config(&self, vocab_size: usize) -> Result<LlamaConfig, String> {
        let preset: Preset = self.preset.parse().map_err(|e: model::ModelError| e.to_string())?;
        let mut c = LlamaConfig::preset(preset, vocab_size, self.max_position_embeddings);
        let set = |v: usize, field: &mut usize| {
            if v > 0 {
                *field = v;
            }
        };
        set(self.hidden_size, &mut c.hidden_size);
        set(self.intermediate_size, &mut c.intermediate_size);
        set(self.num_hidden_layers, &mut c.num_hidden_layers);
        set(self.num_attention_heads, &mut c.num_attention_heads);
        if self.num_key_value_heads > 0 {
            c.num_key_value_heads = Some(self.num_key_value_heads);
        }
        c.validate().map_err(|e| format!("model: {e}"))?;
        Ok(c)
    }
}

impl Validate for ModelSpec {
    fn validate(&self) -> Result<(), String> {
        self.config(512).map(|_| ())
    }
}

/// Turns training events into log rows, a progress bar, and a saved log
/// beside every checkpoint (so a resumed run continues the same log).
pub struct Observer {
    pub log: TrainLog,
    bar: indicatif::ProgressBar,
    log_path: PathBuf,
}

impl Observer {
    /// Resumes the log saved in `scratch` if there is one.
    pub fn new(progress: &Progress, total: u64, what: &str, scratch: &Path) -> Result<Observer> {
        let log_path = scratch.join("train_log.json");
        let log = TrainLog::load_or_new(&log_path)?;
        let bar = progress.bar(total, what);
        if let Some(last) = log.rows().last() {
            bar.set_position(last.step as u64);
        }
        Ok(Observer { log, bar, log_path })
    }

    pub fn on_event(&mut self, event: &TrainEvent<'_>) -> ControlFlow<()> {
        match event {
            TrainEvent::Step(m) => {
                self.log.record(m.step, "loss", m.loss);
                self.log.record(m.step, "lr", m.lr);
                self.log.record(m.step, "grad_norm", m.grad_norm);
                self.log.record(m.step, "tokens", m.tokens as f64);
                self.log.time(m.step, "tokens_per_s", m.tokens_per_s);
                self.log.time(m.step, "step_s", m.step_s);
                self.bar.set_position(m.step);
                self.bar.set_message(format!("loss {:.3}", m.loss));
            }
            TrainEvent::Eval { epoch, step, loss } => {
                self.log.record(*step, "val_loss", *loss);
                self.log.record(*step, "epoch", (*epoch + 1) as f64);
            }
            TrainEvent::Checkpoint { .. } => {
                if let Err(e) = self.log.save(&self.log_path) {
                    tracing::warn!("could not save the training log beside the checkpoint: {e:#}");
                }
            }
            TrainEvent::EpochSaved { .. } => {}
        }
        ControlFlow::Continue(())
    }

    pub fn finish(self) -> TrainLog {
        self.bar.finish_and_clear();
        self.log
    }
}
