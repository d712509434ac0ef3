//! Stage 2 of the method: the reward model, and choosing the SFT checkpoint with it.
//!
//! | stage | inputs | outputs |
//! |---|---|---|
//! | `rm.rm` | `base` (SFT model), `rankings`, optional `demonstrations`, `prompts` | `model/` (trunk + `score.safetensors`; with `likelihood_term` and an untied trunk, also `lm_head.weight`), `train_log`, `timing` |
//! | `rm.select_sft` | `sft` (with `epochs/`), `rm`, `prompts` | `model/` (the chosen epoch), `train_log` (score per epoch) |
//!
//! Key design decisions: all C(K,2) comparisons of one prompt are one batch
//! element (each response scored once, loss over the pairs scaled by
//! 1/pairs), tied pairs are left out; the scalar head starts small and random
//! and learns at its own, larger rate; after training the head's bias is
//! shifted so the demonstrations' mean reward is 0, so the normalisation
//! travels inside the weights and every consumer sees normalised rewards.

pub mod loss;
pub mod select;
pub mod train_rm;

use lineage::stage;

/// The stages of this crate.
pub fn stages() -> Vec<Box<dyn lineage::Stage>> {
    vec![stage::<train_rm::RewardModel>(), stage::<select::SelectSft>()]
}
