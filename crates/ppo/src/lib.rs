//! Stage 3 of the method: PPO with a KL penalty against the SFT model, and
//! the pretraining mix (PPO-ptx).
//!
//! | stage | inputs | outputs |
//! |---|---|---|
//! | `ppo.ppo` | `policy` (SFT), `reward` (RM), `prompts`, optional `text` | `model/` (EMA policy), `checkpoints/iter-NNNN/`, `train_log`, `timing`, `rollouts` |
//!
//! The math (KL estimators, GAE, whitening, clipped losses) is in [`math`]
//! with golden tests; the loop is [`trainer`]. Key design decision: the
//! value model is a separate network started from the reward model, its head
//! rescaled by least squares to the first iteration's returns, trained by its
//! own optimizer (with the leave-one-out advantage there is none); and the two controls swap only
//! the score: `oracle = true` (the gold judge) tells a broken PPO from a weak reward model, and
//! `random_reward = true` (a seeded random score) shows what PPO's noise alone does.

pub mod math;
pub mod params;
pub mod stage;
pub mod trainer;

/// The stages of this crate.
pub fn stages() -> Vec<Box<dyn lineage::Stage>> {
    vec![lineage::stage::<stage::Ppo>()]
}
