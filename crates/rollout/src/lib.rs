//! Sampling responses from a model, and having them ranked.
//!
//! | stage | inputs | outputs |
//! |---|---|---|
//! | `rollout.sample` | `model`, `prompts` | `samples` (K responses per prompt) |
//! | `rollout.label` | `samples` | `rankings`, `comparisons` (simulated labelers) |
//!
//! `rollout.sample` is how the SFT model's outputs reach the labelers (the
//! paper's comparison data). Human rankings of the same samples come back
//! through `ingest.export_labels` / `ingest.import_labels` instead of
//! `rollout.label`; both end in the same `rankings` table. Key design
//! decision: every response's sampling seed is derived from the step seed,
//! the prompt id and the sample index, so a prompt's samples do not change
//! when other prompts are added or the batch size changes.

pub mod label;
pub mod sample;

use lineage::stage;

/// The stages of this crate.
pub fn stages() -> Vec<Box<dyn lineage::Stage>> {
    vec![stage::<sample::Sample>(), stage::<label::Label>()]
}
