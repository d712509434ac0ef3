//! What the two training stages share: the model's size parameters, the
//! observer that turns training events into the `train_log` table and a
//! progress bar, and writing a self-contained model directory.

use std::ops::ControlFlow;
use std::path::Path;

use anyhow::Result;
use lineage::log::TrainLog;
use lineage::{Progress, Validate};
use model::train::{TrainEvent, checkpoint};
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

/// Turns training events into log rows, a progress bar, and a log saved inside every checkpoint
/// (so a resumed run continues the same log, and the two never disagree about the step).
pub struct Observer {
    pub log: TrainLog,
    bar: indicatif::ProgressBar,
    /// Why the log could not be written into a checkpoint, which then failed.
    error: Option<anyhow::Error>,
}

impl Observer {
    /// Resumes the log saved in `checkpoint_dir` (the loop's `RunDir::checkpoint`) if
    /// there is one; a checkpoint without its log is an error, not a fresh log.
    pub fn new(progress: &Progress, total: u64, what: &str, checkpoint_dir: &Path) -> Result<Observer> {
        let log = if checkpoint::exists(checkpoint_dir)? {
            TrainLog::from_checkpoint(checkpoint_dir)?
        } else {
            TrainLog::new()
        };
        let bar = progress.bar(total, what);
        if let Some(last) = log.rows().last() {
            bar.set_position(last.step as u64);
        }
        Ok(Observer { log, bar, error: None })
    }

    /// The loop's error, with the reason the observer gave when it was the one that failed.
    pub fn explain(&mut self, e: impl Into<anyhow::Error>) -> anyhow::Error {
        match self.error.take() {
            Some(why) => why.context(e.into().to_string()),
            None => e.into(),
        }
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
            TrainEvent::CheckpointFiles { dir, .. } => {
                if let Err(e) = self.log.save_to_checkpoint(dir) {
                    self.error = Some(e.context("writing the training log into the checkpoint"));
                    return ControlFlow::Break(());
                }
            }
            TrainEvent::Checkpoint { .. } => {}
            TrainEvent::EpochSaved { .. } => {}
        }
        ControlFlow::Continue(())
    }

    pub fn finish(self) -> TrainLog {
        self.bar.finish_and_clear();
        self.log
    }
}

#[cfg(test)]
mod tests {
    use lineage::log::CHECKPOINT_LOG;

    use super::*;

    #[test]
    fn the_log_travels_inside_the_checkpoint_and_a_checkpoint_without_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("checkpoint");
        let progress = Progress::hidden();
        // No checkpoint: a fresh log.
        assert!(Observer::new(&progress, 10, "t", &ck).unwrap().log.rows().is_empty());

        // The loop asks for the observer's files while it fills the new checkpoint.
        let mut obs = Observer::new(&progress, 10, "t", &ck).unwrap();
        assert!(obs.on_event(&TrainEvent::Eval { epoch: 0, step: 3, loss: 1.5 }).is_continue());
        std::fs::create_dir_all(&ck).unwrap();
        assert!(obs.on_event(&TrainEvent::CheckpointFiles { step: 3, dir: &ck }).is_continue());
        std::fs::write(ck.join(checkpoint::TRAINER_STATE_FILE), "{}").unwrap();
        let resumed = Observer::new(&progress, 10, "t", &ck).unwrap();
        assert_eq!(resumed.log.rows(), obs.log.rows());

        // A checkpoint that lost its log is an error naming it, not a log that starts over.
        std::fs::remove_file(ck.join(CHECKPOINT_LOG)).unwrap();
        let e = Observer::new(&progress, 10, "t", &ck).err().unwrap().to_string();
        assert!(e.contains(CHECKPOINT_LOG) && e.contains("checkpoint"), "{e}");

        // A log that cannot be written fails the checkpoint, and the loop's error says why.
        let not_a_dir = dir.path().join("a-file");
        std::fs::write(&not_a_dir, "").unwrap();
        assert!(obs.on_event(&TrainEvent::CheckpointFiles { step: 4, dir: &not_a_dir }).is_break());
        let e = format!("{:#}", obs.explain(anyhow::anyhow!("checkpoint failed")));
        assert!(e.contains("checkpoint failed") && e.contains("writing the training log"), "{e}");
    }
}
