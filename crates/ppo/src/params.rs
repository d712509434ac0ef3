//! PPO's parameters.

use std::collections::BTreeMap;

use lineage::Validate;
use serde::{Deserialize, Serialize};

use crate::math::{AdvantageEstimator, KlEstimator};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoParams {
    /// PPO iterations (each: sample, score, `ppo_epochs` passes of updates).
    pub iterations: u64,
    /// Episodes (responses) per iteration: `prompts_per_iter / samples_per_prompt` distinct
    /// prompts, each sampled `samples_per_prompt` times.
    pub prompts_per_iter: usize,
    /// Responses sampled per prompt in an iteration (1: the paper). `rloo` needs at least 2.
    pub samples_per_prompt: usize,
    /// `gae` (the paper: value model baseline) or `rloo` (leave-one-out over a prompt's samples; no
    /// value model is loaded or trained, so `value_lr`, `value_clip` and `gae_lambda` do not apply).
    pub advantage: AdvantageEstimator,
    /// Prompts of this dataset and split are the PPO prompts.
    pub dataset: String,
    pub split: String,
    pub max_new_tokens: usize,
    /// Sampling temperature of rollouts (1: the policy itself).
    pub temperature: f32,
    /// Sequences decoded together.
    pub gen_batch_size: usize,
    pub ppo_epochs: usize,
    pub minibatch_size: usize,
    /// Policy learning rate (constant after `warmup_iters`).
    pub lr: f64,
    /// Learning-rate multipliers of the policy's parameters by name prefix, e.g.
    /// `{ "model.norm" = 10.0 }`: the final norm's gains scale every logit, so they set the
    /// policy's temperature, and at `lr` Adam moves a gain of 1 by at most `lr` a step. Where
    /// prefixes overlap the longest applies (`model.norm` over `model.`). Every prefix must name at
    /// least one parameter.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lr_groups: BTreeMap<String, f64>,
    /// Value model learning rate.
    pub value_lr: f64,
    pub warmup_iters: u64,
    pub grad_clip: f64,
    /// The KL coefficient beta (initial value when adaptive).
    pub kl_coef: f64,
    /// Adaptive KL control (Ziegler et al.): target KL per sequence in nats; 0 keeps beta fixed.
    pub kl_target: f64,
    pub kl_horizon: f64,
    pub kl_estimator: KlEstimator,
    /// GAE lambda; the discount is 1 (no discount), as in the paper.
    pub gae_lambda: f64,
    pub clip_range: f64,
    pub value_clip: f64,
    pub whiten_advantages: bool,
    /// Added to the score of a response that ran out of length without EOS (e.g. -1).
    pub missing_eos_penalty: f64,
    /// EMA of the policy weights per update (0: off). The EMA model is the artifact's model.
    pub ema_decay: f64,
    /// PPO-ptx: gamma, the pretraining loss coefficient (0: plain PPO). The paper: 27.8.
    pub ptx_coef: f64,
    /// Pretraining sequences per episode (the paper: 8).
    pub ptx_per_episode: f64,
    /// Length of a pretraining sequence, in tokens.
    pub ptx_seq_len: usize,
    /// Use the gold judge as the reward instead of the reward model (a control).
    pub oracle: bool,
    /// The oracle reward is `oracle_scale * (gold score - 0.5)`.
    pub oracle_scale: f64,
    /// A null control: every episode's score is a seeded uniform draw from [-2, 2] instead of a
    /// judgement of the response (the missing-EOS and KL penalties apply as in every run), so the
    /// run shows what PPO's noise does to the policy (its KL, entropy and gold score) when the
    /// reward carries no signal; a gain over it is signal. The reward model, if connected, is still
    /// logged (and with GAE the value model starts from it).
    pub random_reward: bool,
    /// Fixed probe prompts (validation split), scored by the gold judge and the RM every
    /// `probe_every` iterations, to see reward hacking.
    pub probe_prompts: usize,
    pub probe_every: u64,
    /// Save the (EMA) policy into `checkpoints/iter-NNNN/` every N iterations (0: never), and a
    /// resumable checkpoint into the step's scratch directory.
    pub checkpoint_every: u64,
    /// Keep every iteration's rollouts as the `rollouts` table.
    pub save_rollouts: bool,
    /// Longest prompt, in tokens (cut from the left).
    pub max_prompt_tokens: usize,
}

impl Default for PpoParams {
    fn default() -> Self {
        PpoParams {
            iterations: 40,
            prompts_per_iter: 32,
            samples_per_prompt: 1,
            advantage: AdvantageEstimator::Gae,
            dataset: "ppo".into(),
            split: "train".into(),
            max_new_tokens: 48,
            temperature: 1.0,
            gen_batch_size: 64,
            ppo_epochs: 2,
            minibatch_size: 16,
            lr: 3e-5,
            lr_groups: BTreeMap::new(),
            value_lr: 1e-4,
            warmup_iters: 2,
            grad_clip: 1.0,
            kl_coef: 0.02,
            kl_target: 0.0,
            kl_horizon: 10_000.0,
            kl_estimator: KlEstimator::K1,
            gae_lambda: 0.95,
            clip_range: 0.2,
            value_clip: 0.2,
            whiten_advantages: true,
            missing_eos_penalty: -1.0,
            ema_decay: 0.9,
            ptx_coef: 0.0,
            ptx_per_episode: 8.0,
            ptx_seq_len: 64,
            oracle: false,
            oracle_scale: 4.0,
            random_reward: false,
            probe_prompts: 64,
            probe_every: 5,
            checkpoint_every: 10,
            save_rollouts: false,
            max_prompt_tokens: 96,
        }
    }
}

impl Validate for PpoParams {
    fn validate(&self) -> Result<(), String> {
        let pos = |v: f64, name: &str| if v > 0.0 { Ok(()) } else { Err(format!("{name} must be > 0")) };
        if self.iterations == 0 || self.prompts_per_iter == 0 || self.ppo_epochs == 0 || self.minibatch_size == 0 {
            return Err("iterations, prompts_per_iter, ppo_epochs and minibatch_size must be at least 1".into());
        }
        if self.max_new_tokens == 0 || self.gen_batch_size == 0 || self.max_prompt_tokens == 0 {
            return Err("max_new_tokens, gen_batch_size and max_prompt_tokens must be at least 1".into());
        }
        if self.samples_per_prompt == 0 || !self.prompts_per_iter.is_multiple_of(self.samples_per_prompt) {
            return Err(format!(
                "samples_per_prompt = {} must be at least 1 and divide prompts_per_iter = {}",
                self.samples_per_prompt, self.prompts_per_iter
            ));
        }
        if self.advantage == AdvantageEstimator::Rloo && self.samples_per_prompt < 2 {
            return Err(
                "advantage = \"rloo\" needs samples_per_prompt >= 2 (a prompt's other samples are its baseline)".into(),
            );
        }
        pos(self.lr, "lr")?;
        for (prefix, mult) in &self.lr_groups {
            if !(*mult > 0.0 && mult.is_finite()) || prefix.is_empty() {
                return Err(format!("lr_groups: \"{prefix}\" = {mult} needs a non-empty prefix and a multiplier > 0"));
            }
        }
        pos(self.value_lr, "value_lr")?;
        pos(self.clip_range, "clip_range")?;
        pos(self.value_clip, "value_clip")?;
        pos(self.kl_horizon, "kl_horizon")?;
        if self.kl_coef < 0.0 || self.kl_target < 0.0 || self.ptx_coef < 0.0 || self.ptx_per_episode < 0.0 {
            return Err("kl_coef, kl_target, ptx_coef and ptx_per_episode must be >= 0".into());
        }
        if !(0.0..=1.0).contains(&self.gae_lambda) {
            return Err(format!("gae_lambda = {} must be in [0, 1]", self.gae_lambda));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(format!("ema_decay = {} must be in [0, 1)", self.ema_decay));
        }
        if self.ptx_coef > 0.0 && self.ptx_seq_len < 2 {
            return Err("ptx_seq_len must be at least 2".into());
        }
        if self.oracle && self.random_reward {
            return Err("oracle and random_reward are two different controls: set at most one".into());
        }
        if self.temperature <= 0.0 {
            return Err("temperature must be > 0 (PPO needs the policy's own samples)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_groups_need_a_prefix_and_a_positive_multiplier() {
        let with = |prefix: &str, mult: f64| PpoParams {
            lr_groups: BTreeMap::from([(prefix.to_string(), mult)]),
            ..PpoParams::default()
        };
        assert!(with("model.norm", 300.0).validate().is_ok());
        for (prefix, mult) in [("model.norm", 0.0), ("model.norm", -1.0), ("model.norm", f64::NAN), ("", 2.0)] {
            let e = with(prefix, mult).validate().unwrap_err();
            assert!(e.contains("lr_groups"), "{e}");
        }
    }

    #[test]
    fn without_lr_groups_the_parameters_serialize_as_before() {
        // Parameters are part of an artifact's key: an empty map must not appear in them.
        let json = serde_json::to_string(&PpoParams::default()).unwrap();
        assert!(!json.contains("lr_groups"), "{json}");
        let with = PpoParams { lr_groups: BTreeMap::from([("model.norm".into(), 10.0)]), ..PpoParams::default() };
        let back: PpoParams = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back.lr_groups, with.lr_groups);
    }
}
