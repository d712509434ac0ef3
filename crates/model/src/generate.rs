//! Batched sampling with a preallocated KV cache.
//!
//! Prompts of different lengths are left-padded to a common width `P` (the [`Batch::aligned`]
//! layout), prefilled in one forward pass, then decoded one column per step for all rows together.
//! Each row samples from its own ChaCha stream seeded by its own seed and draws exactly one number
//! per sampled token, so a sequence's tokens do not depend on which other prompts share its batch.
//!
//! The log-probability recorded for each token is `log_softmax(logits)[token]` of the UNMODIFIED
//! policy (temperature 1, no top-k/top-p truncation), whatever the sampling settings: that is the
//! `log pi(y|x)` PPO's ratio and KL penalty need, and what [`CausalLm::response_scores`] recomputes.
//!
//! [`Batch::aligned`]: crate::batch::Batch::aligned
//! [`CausalLm::response_scores`]: crate::lm::CausalLm::response_scores

use std::sync::Arc;

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::model::{Input, Llama};
use crate::ops::AttnMask;

/// Sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: off).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: off).
    pub top_p: f32,
    /// Tokens that end a sequence (kept as its last token).
    pub eos_ids: Vec<u32>,
    /// Id written in padding columns (never attended to).
    pub pad_id: u32,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig { max_new_tokens: 64, temperature: 1.0, top_k: 0, top_p: 1.0, eos_ids: vec![], pad_id: 0 }
    }
}

impl SamplingConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(ModelError::Config(format!("temperature {} must be finite and >= 0", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::Config(format!("top_p {} must be in (0, 1]", self.top_p)));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-sequence token was sampled (it is the last of `tokens`).
    Eos,
    /// `max_new_tokens` were generated without one.
    Length,
}

/// One sampled continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub tokens: Vec<u32>,
    /// Log-probability of each token under the unmodified policy (see the module docs).
    pub logprobs: Vec<f32>,
    pub finish: FinishReason,
}

/// Samples a continuation of every prompt; `seeds[i]` drives prompt `i`'s sampling.
pub fn generate(net: &Llama, prompts: &[Vec<u32>], seeds: &[u64], cfg: &SamplingConfig) -> Result<Vec<Generation>> {
    cfg.validate()?;
    if prompts.len() != seeds.len() {
        return Err(ModelError::Input(format!("{} prompts but {} seeds", prompts.len(), seeds.len())));
    }
    let b = prompts.len();
    let mut out: Vec<Generation> =
        (0..b).map(|_| Generation { tokens: vec![], logprobs: vec![], finish: FinishReason::Length }).collect();
    if b == 0 || cfg.max_new_tokens == 0 {
        return Ok(out);
    }
    let model_cfg = net.config();
    let vocab = model_cfg.vocab_size;
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(ModelError::Input(format!("prompt {i} is empty")));
    }
    if let Some(bad) = prompts.iter().flatten().find(|&&t| t as usize >= vocab) {
        return Err(ModelError::Input(format!("prompt token {bad} is outside the vocabulary of {vocab}")));
    }
    let p = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0) + cfg.max_new_tokens;
    if longest > model_cfg.max_position_embeddings {
        return Err(ModelError::Input(format!(
            "a prompt of {p} tokens plus {} new ones exceeds max_position_embeddings ({})",
            cfg.max_new_tokens, model_cfg.max_position_embeddings
        )));
    }
    let device = net.model.embed_tokens.device().clone();
    let cap = p + cfg.max_new_tokens;
    let mut cache = KvCache::new(model_cfg, b, cap, &device)?;

    // Prefill: prompts right-aligned at column p.
    let mut ids = vec![cfg.pad_id; b * p];
    let mut history: Vec<Vec<u8>> = Vec::with_capacity(b);
    for (i, pr) in prompts.iter().enumerate() {
        ids[i * p + p - pr.len()..(i + 1) * p].copy_from_slice(pr);
        let mut h = vec![0u8; p - pr.len()];
        h.resize(p, 1);
        h.reserve(cfg.max_new_tokens);
        history.push(h);
    }
    let flags: Vec<u8> = history.iter().flatten().copied().collect();
    let input = Input::new(ids, &flags, b, &device)?;
    let mut logits = net.last_logits(&input, Some(&mut cache))?; // (B, V)

    let mut rngs: Vec<ChaCha8Rng> = seeds.iter().map(|&s| ChaCha8Rng::seed_from_u64(s)).collect();
    let mut counts: Vec<u32> = prompts.iter().map(|p| p.len() as u32).collect();
    let mut done = vec![false; b];
    let mut scratch = Scratch::default();
    for step in 0..cfg.max_new_tokens {
        let host: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let mut next = vec![cfg.pad_id; b];
        for i in 0..b {
            if done[i] {
                continue;
            }
            let row = &host[i * vocab..(i + 1) * vocab];
            let (tok, lp) = scratch.sample(row, cfg, &mut rngs[i]);
            out[i].tokens.push(tok);
            out[i].logprobs.push(lp);
            next[i] = tok;
            if cfg.eos_ids.contains(&tok) {
                out[i].finish = FinishReason::Eos;
                done[i] = true;
            }
        }
        if step + 1 == cfg.max_new_tokens || done.iter().all(|&d| d) {
            break;
        }
        // Feed the sampled column. Rows that have finished get a padding column (valid = 0): their
        // outputs are no longer used and rows never attend to each other.
        let c = cache.len();
        let mut positions = Vec::with_capacity(b);
        for i in 0..b {
            positions.push(counts[i]);
            history[i].push(u8::from(!done[i]));
            counts[i] += u32::from(!done[i]);
        }
        let key_valid: Vec<u8> = history.iter().flatten().copied().collect();
        let input = Input {
            ids: Tensor::from_vec(next, (b, 1), &device)?,
            positions,
            mask: AttnMask { key_valid: Arc::new(key_valid), batch: b, keys: c + 1, query_offset: c },
        };
        logits = net.last_logits(&input, Some(&mut cache))?;
    }
    Ok(out)
}

/// Reusable buffers for sampling (no allocation per token once warmed up).
#[derive(Default)]
struct Scratch {
    probs: Vec<f32>,
    order: Vec<u32>,
}

impl Scratch {
    /// Samples one token from a row of raw logits; returns it and its unmodified log-probability.
    fn sample(&mut self, logits: &[f32], cfg: &SamplingConfig, rng: &mut ChaCha8Rng) -> (u32, f32) {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max + logits.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
        let tok = if cfg.temperature == 0.0 { argmax(logits) } else { self.sample_tempered(logits, max, cfg, rng) };
        (tok, logits[tok as usize] - lse)
    }

    fn sample_tempered(&mut self, logits: &[f32], max: f32, cfg: &SamplingConfig, rng: &mut ChaCha8Rng) -> u32 {
        let inv_t = 1.0 / cfg.temperature;
        self.probs.clear();
        self.probs.extend(logits.iter().map(|&v| ((v - max) * inv_t).exp()));
        let u: f32 = rng.random();
        let truncate = (cfg.top_k > 0 && cfg.top_k < logits.len()) || cfg.top_p < 1.0;
        if !truncate {
            return walk(&self.probs, 0..logits.len() as u32, u);
        }
        // Most likely first; ties broken by id so the order is deterministic.
        self.order.clear();
        self.order.extend(0..logits.len() as u32);
        let probs = &self.probs;
        self.order.sort_unstable_by(|&a, &b| probs[b as usize].total_cmp(&probs[a as usize]).then(a.cmp(&b)));
        let mut keep = if cfg.top_k > 0 { cfg.top_k.min(self.order.len()) } else { self.order.len() };
        if cfg.top_p < 1.0 {
            let total: f32 = self.order[..keep].iter().map(|&i| probs[i as usize]).sum();
            let mut cum = 0.0;
            for (n, &i) in self.order[..keep].iter().enumerate() {
                cum += probs[i as usize];
                if cum >= cfg.top_p * total {
                    keep = n + 1;
                    break;
                }
            }
        }
        walk(probs, self.order[..keep].iter().copied(), u)
    }
}

/// Picks the token where the cumulative (unnormalised) mass of `ids` first exceeds `u * total`.
fn walk(probs: &[f32], ids: impl Iterator<Item = u32> + Clone, u: f32) -> u32 {
    let total: f32 = ids.clone().map(|i| probs[i as usize]).sum();
    let target = u * total;
    let mut cum = 0.0;
    let mut last = 0;
    for i in ids {
        cum += probs[i as usize];
        last = i;
        if cum > target {
            return i;
        }
    }
    last
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}
