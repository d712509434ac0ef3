//! Stage 1 of the method and what comes before it: pretraining a base model
//! and supervised fine-tuning (SFT).
//!
//! | stage | inputs | outputs |
//! |---|---|---|
//! | `sft.pretrain` | `text` (pretrain_text), `tokenizer` | `model/`, `train_log`, `timing` |
//! | `sft.import` | a Hugging Face directory (`path`) | `model/` |
//! | `sft.sft` | `base` (a model), `demonstrations` | `model/`, `epochs/epoch-NNN/`, `train_log`, `timing` |
//!
//! The training loops are `model::train::{pretrain, sft}`; these stages
//! read artifacts, call them, and write artifacts. Key design decision: the
//! loops checkpoint into the step's scratch directory, which survives an
//! interrupted run of the same key, so rerunning a killed step resumes it
//! and ends with the same weights as an uninterrupted run.

pub mod common;
pub mod import;
pub mod pretrain;
pub mod sft;

use lineage::stage;

/// The stages of this crate.
pub fn stages() -> Vec<Box<dyn lineage::Stage>> {
    vec![stage::<pretrain::Pretrain>(), stage::<import::Import>(), stage::<sft::Sft>()]
}
