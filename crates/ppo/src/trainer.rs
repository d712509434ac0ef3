//! The PPO-ptx loop: sample, score, advantages, clipped updates of policy and value, EMA, probes,
//! checkpoints and exact resume.
//!
//! Every random choice (which prompts an iteration uses, sampling seeds, minibatch order, which
//! pretraining windows a minibatch mixes in, the null control's scores) is a pure function of the
//! seed and the iteration, so a run resumed from a checkpoint needs nothing but the weights, the
//! optimizer moments, the KL coefficient and the iteration count to continue bit-for-bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use lineage::log::{TrainLog, checkpoint_file};
use lineage::tables::RolloutRow;
use model::batch::Batch;
use model::bundle::{Bundle, Sampled, score_pairs, with_eos};
use model::lm::{CausalLm, ScalarModel};
use model::train::checkpoint::{self, ModelPart, TrainerState};
use model::train::data::{Windows, epoch_order, locate};
use model::train::{AdamW, AdamWConfig, Grads, ParamGroup};
use serde::{Deserialize, Serialize};
use world::meta::TaskMeta;

use crate::math::{self, AdvantageEstimator, gae, kl_per_token, leave_one_out, token_rewards, whiten};
use crate::params::PpoParams;

/// The saved rollouts inside a resumable checkpoint (beside its training log).
const ROLLOUTS_FILE: &str = "rollouts.json";

/// A prompt PPO can use.
#[derive(Debug, Clone)]
pub struct PpoPrompt {
    pub id: String,
    pub ids: Vec<u32>,
    pub meta: Option<TaskMeta>,
}

/// Everything the loop trains or reads.
pub struct Models {
    /// The policy (trainable) with its tokenizer and format.
    pub policy: Bundle,
    /// The frozen SFT model the KL penalty is measured against.
    pub reference: CausalLm,
    /// The value model (trainable); `None` with the leave-one-out advantage, which needs no critic.
    pub value: Option<ScalarModel>,
    /// The reward model (frozen); `None` only with the oracle or random reward.
    pub reward: Option<ScalarModel>,
}

/// State that survives a checkpoint besides weights and moments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Extra {
    kl_coef: f64,
    warnings: Vec<String>,
    warned: Vec<String>,
    negative_kl_streak: u32,
    first_len: Option<f64>,
    first_probe_rm: Option<f64>,
    best_probe_gold: Option<f64>,
}

/// What a run produced.
pub struct PpoOutcome {
    pub log: TrainLog,
    pub warnings: Vec<String>,
    pub rollouts: Vec<RolloutRow>,
    /// `checkpoints/iter-NNNN` model directories (in the scratch directory).
    pub checkpoints: Vec<PathBuf>,
    /// The model to publish: the EMA when enabled, else the policy.
    pub final_model: CausalLm,
    pub resumed_from: Option<u64>,
}

/// One episode: a prompt, the policy's response, and what PPO computes about it.
struct Episode {
    prompt: usize,
    response: Vec<u32>,
    text: String,
    eos: bool,
    logp: Vec<f32>,
    ref_logp: Vec<f32>,
    values: Vec<f32>,
    rewards: Vec<f32>,
    adv: Vec<f32>,
    returns: Vec<f32>,
    score: f32,
    rm: f32,
    gold: f32,
}

/// The loop's inputs besides the models.
pub struct PpoData<'a> {
    pub prompts: &'a [PpoPrompt],
    pub probes: &'a [PpoPrompt],
    /// Token stream of pretraining text (for PPO-ptx).
    pub ptx_tokens: &'a [u32],
    pub seed: u64,
    /// Where checkpoints live (survives an interrupted run).
    pub scratch: &'a Path,
}

/// Per-response log-probs under a frozen model (the reference; the policy's come from sampling).
fn row_logprobs(lm: &CausalLm, pairs: &[(Vec<u32>, Vec<u32>)], bs: usize) -> Result<Vec<Vec<f32>>> {
    debug_assert!(!lm.is_trainable(), "scoring needs no gradients: pass a frozen model");
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(bs.max(1)) {
        let batch = Batch::aligned(chunk, lm.device())?;
        out.extend(batch.split_responses(&lm.response_scores(&batch, false, None)?.logprobs)?);
    }
    Ok(out)
}

fn row_values(v: &ScalarModel, pairs: &[(Vec<u32>, Vec<u32>)], bs: usize) -> Result<Vec<Vec<f32>>> {
    let frozen = v.frozen()?;
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(bs.max(1)) {
        let batch = Batch::aligned(chunk, frozen.device())?;
        out.extend(batch.split_responses(&frozen.values(&batch, None)?)?);
    }
    Ok(out)
}

/// `[B, R]` tensor of per-row vectors, zero-padded to `r`.
fn padded(rows: &[&[f32]], r: usize, device: &Device) -> Result<Tensor> {
    let mut v = vec![0f32; rows.len() * r];
    for (i, row) in rows.iter().enumerate() {
        v[i * r..i * r + row.len()].copy_from_slice(row);
    }
    Ok(Tensor::from_vec(v, (rows.len(), r), device)?)
}

/// The optimizer's parameter groups of `lr_groups`, each checked to name at least one parameter of
/// the policy (a misspelt prefix would otherwise change nothing, silently).
pub fn policy_groups(lm: &CausalLm, lr_groups: &BTreeMap<String, f64>) -> Result<Vec<ParamGroup>> {
    lr_groups
        .iter()
        .map(|(prefix, mult)| {
            if !lm.params().iter().any(|(name, _)| name.starts_with(prefix.as_str())) {
                let names: Vec<&str> = lm.params().iter().map(|(n, _)| n.as_str()).take(6).collect();
                bail!(
                    "lr_groups: no parameter of the policy starts with \"{prefix}\" (its parameters are named like {})",
                    names.join(", ")
                );
            }
            Ok(ParamGroup::new(prefix.as_str(), *mult))
        })
        .collect()
}

pub(crate) fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

pub struct Trainer<'a> {
    p: &'a PpoParams,
    m: Models,
    data: PpoData<'a>,
    opt: AdamW,
    value_opt: Option<AdamW>,
    ema: Option<CausalLm>,
    extra: Extra,
    log: TrainLog,
    rollouts: Vec<RolloutRow>,
    iteration: u64,
    resumed_from: Option<u64>,
}

impl<'a> Trainer<'a> {
    /// Sets up the optimizers, and resumes from the scratch directory's checkpoint if one is there.
    pub fn new(p: &'a PpoParams, m: Models, data: PpoData<'a>) -> Result<Trainer<'a>> {
        if data.prompts.is_empty() {
            bail!("no PPO prompts");
        }
        if p.ptx_coef > 0.0 && Windows::new(data.ptx_tokens, p.ptx_seq_len).is_empty() {
            bail!("PPO-ptx (ptx_coef > 0) needs pretraining text: connect a `text` input");
        }
        let cfg = AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() };
        match (p.advantage, &m.value) {
            (AdvantageEstimator::Gae, None) => bail!("the GAE advantage needs a value model"),
            (AdvantageEstimator::Rloo, Some(_)) => bail!("the leave-one-out advantage uses no value model"),
            _ => {}
        }
        let opt = AdamW::new(m.policy.lm.params(), cfg.clone(), policy_groups(&m.policy.lm, &p.lr_groups)?)?;
        let value_opt = m.value.as_ref().map(|v| AdamW::new(v.params(), cfg, vec![])).transpose()?;
        let ema = if p.ema_decay > 0.0 { Some(m.policy.lm.snapshot()?) } else { None };
        let mut t = Trainer {
            p,
            m,
            data,
            opt,
            value_opt,
            ema,
            extra: Extra { kl_coef: p.kl_coef, ..Extra::default() },
            log: TrainLog::new(),
            rollouts: Vec::new(),
            iteration: 0,
            resumed_from: None,
        };
        t.resume()?;
        Ok(t)
    }

    fn resume_dir(&self) -> PathBuf {
        self.data.scratch.join("resume")
    }

    fn resume(&mut self) -> Result<()> {
        let dir = self.resume_dir();
        if !checkpoint::exists(&dir)? {
            return Ok(());
        }
        let state = checkpoint::read_state(&dir)?;
        checkpoint::restore_part(&dir, "policy", self.m.policy.lm.params(), Some(&mut self.opt))?;
        if let (Some(v), Some(opt)) = (&self.m.value, &mut self.value_opt) {
            checkpoint::restore_part(&dir, "value", v.params(), Some(opt))?;
        }
        if let Some(ema) = &self.ema {
            checkpoint::restore_part(&dir, "ema", ema.params(), None)?;
        }
        self.extra = serde_json::from_value(state.extra).context("reading the PPO checkpoint's state")?;
        self.iteration = state.step;
        self.log = TrainLog::from_checkpoint(&dir)?;
        if self.p.save_rollouts {
            let path = checkpoint_file(&dir, ROLLOUTS_FILE, "rollouts")?;
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            self.rollouts = serde_json::from_str(&text)
                .with_context(|| format!("{} is not the checkpoint's rollouts", path.display()))?;
        }
        self.resumed_from = Some(state.step);
        Ok(())
    }

    fn save_resume(&self) -> Result<()> {
        let dir = self.resume_dir();
        let cfg = self.m.policy.lm.config();
        let mut parts = vec![ModelPart {
            name: "policy",
            config: cfg,
            params: self.m.policy.lm.params(),
            optimizer: Some(&self.opt),
        }];
        if let Some(v) = &self.m.value {
            parts.push(ModelPart {
                name: "value",
                config: v.config(),
                params: v.params(),
                optimizer: self.value_opt.as_ref(),
            });
        }
        if let Some(ema) = &self.ema {
            parts.push(ModelPart { name: "ema", config: cfg, params: ema.params(), optimizer: None });
        }
        let state =
            TrainerState { step: self.iteration, extra: serde_json::to_value(&self.extra)?, ..TrainerState::default() };
        // The log and rollouts go inside the checkpoint, written before trainer_state.json marks it
        // complete, so they are replaced with the weights in one step.
        checkpoint::save_with(&dir, &parts, &state, |tmp| {
            let io =
                |e: anyhow::Error| model::ModelError::checkpoint(&dir, format!("writing its log and rollouts: {e:#}"));
            self.log.save_to_checkpoint(tmp).map_err(io)?;
            if self.p.save_rollouts {
                let bytes = serde_json::to_vec(&self.rollouts).map_err(|e| io(e.into()))?;
                lineage::store::write_atomic(&tmp.join(ROLLOUTS_FILE), &bytes).map_err(io)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// The model that is evaluated: the EMA when enabled.
    fn eval_model(&self) -> &CausalLm {
        self.ema.as_ref().unwrap_or(&self.m.policy.lm)
    }

    fn warn_once(&mut self, key: &str, message: String) {
        if !self.extra.warned.iter().any(|k| k == key) {
            tracing::warn!("{message}");
            self.extra.warned.push(key.into());
            self.extra.warnings.push(message);
        }
    }

    fn sample(&self, lm: &CausalLm, prompts: &[&PpoPrompt], seeds: &[u64]) -> Result<Vec<Sampled>> {
        let b = &self.m.policy;
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
        let cfg = b.sampling(self.p.max_new_tokens, self.p.temperature, 0, 1.0);
        Ok(b.sample_from(lm, &ids, seeds, &cfg, self.p.gen_batch_size, |_| {})?)
    }

    fn rm_scores(&self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Option<Vec<f32>>> {
        let Some(rm) = &self.m.reward else { return Ok(None) };
        let eos = self.m.policy.eos;
        let with: Vec<_> = pairs.iter().map(|(p, r)| (p.clone(), with_eos(r, eos))).collect();
        Ok(Some(score_pairs(rm, &with, self.p.gen_batch_size, |_| {})?))
    }

    /// Gold score, KL from the reference and RM score of the evaluated model on the probe prompts.
    fn probe(&mut self) -> Result<()> {
        if self.p.probe_every == 0 || self.data.probes.is_empty() {
            return Ok(());
        }
        let probes: Vec<&PpoPrompt> = self.data.probes.iter().collect();
        let seeds: Vec<u64> =
            probes.iter().map(|p| lineage::derive_seed(self.data.seed, &format!("probe/{}", p.id))).collect();
        let lm = self.eval_model();
        let sampled = self.sample(lm, &probes, &seeds)?;
        let pairs: Vec<_> =
            probes.iter().zip(&sampled).map(|(p, s)| (p.ids.clone(), s.generation.tokens.clone())).collect();
        let refs = row_logprobs(&self.m.reference, &pairs, self.p.gen_batch_size)?;
        let kl = mean(
            sampled
                .iter()
                .zip(&refs)
                .map(|(s, r)| s.generation.logprobs.iter().zip(r).map(|(a, b)| (a - b) as f64).sum::<f64>()),
        );
        let gold = mean(
            probes
                .iter()
                .zip(&sampled)
                .filter_map(|(p, s)| p.meta.as_ref().map(|m| world::judge(m, &s.text, s.ended_with_eos()).score)),
        );
        let step = self.iteration;
        self.log.record(step, "probe_kl", kl);
        self.log.record(step, "probe_len", mean(sampled.iter().map(|s| s.generation.tokens.len() as f64)));
        self.log.record(step, "probe_eos_rate", mean(sampled.iter().map(|s| f64::from(u8::from(s.ended_with_eos())))));
        if gold.is_finite() {
            self.log.record(step, "probe_gold", gold);
        }
        let rm = self.rm_scores(&pairs)?.map(|s| mean(s.iter().map(|&x| x as f64)));
        if let Some(rm) = rm {
            self.log.record(step, "probe_rm", rm);
        }
        // Reward hacking: the RM's score above where it started while the gold score falls well
        // below its best (only when the RM is the reward: the controls do not optimise it).
        let rm_is_reward = !self.p.oracle && !self.p.random_reward;
        if let (Some(rm), true, true) = (rm, gold.is_finite(), rm_is_reward) {
            let first_rm = *self.extra.first_probe_rm.get_or_insert(rm);
            let best = self.extra.best_probe_gold.map_or(gold, |b| b.max(gold));
            self.extra.best_probe_gold = Some(best);
            if rm > first_rm && gold < best - 0.05 {
                self.warn_once(
                    "gold_gap",
                    format!(
                        "iteration {step}: the reward model's probe score rose ({first_rm:.3} -> {rm:.3}) while the gold \
                         score fell from its best ({best:.3} -> {gold:.3}): the policy may be over-optimising the \
                         reward model (raise kl_coef, lower lr, or stop earlier)"
                    ),
                );
            }
        }
        Ok(())
    }

    /// The prompts of iteration `it`: consecutive positions of a per-epoch shuffle of all prompts,
    /// each repeated `samples_per_prompt` times in a row (a group of samples of one prompt).
    fn iteration_prompts(&self, it: u64) -> Vec<usize> {
        let n = self.data.prompts.len();
        let k = self.p.samples_per_prompt;
        let per = (self.p.prompts_per_iter / k) as u64;
        let order_seed = lineage::derive_seed(self.data.seed, "prompt-order");
        (0..per)
            .flat_map(|j| {
                let (epoch, pos) = locate(it * per + j, n as u64);
                std::iter::repeat_n(epoch_order(n, order_seed, epoch)[pos as usize], k)
            })
            .collect()
    }

    /// Runs the remaining iterations; `stop_after` ends early (after its checkpoint), for tests of
    /// resuming.
    pub fn run(mut self, on_iteration: &mut dyn FnMut(u64, &TrainLog), stop_after: Option<u64>) -> Result<PpoOutcome> {
        if self.iteration == 0 {
            self.probe()?;
        }
        while self.iteration < self.p.iterations {
            let it = self.iteration;
            self.one_iteration(it)?;
            self.iteration += 1;
            if self.p.probe_every > 0
                && (self.iteration.is_multiple_of(self.p.probe_every) || self.iteration == self.p.iterations)
            {
                self.probe()?;
            }
            if self.p.checkpoint_every > 0 && self.iteration.is_multiple_of(self.p.checkpoint_every) {
                let dir = self.data.scratch.join(format!("checkpoints/iter-{:04}", self.iteration));
                let model = self.eval_model();
                model::fsutil::replace_dir_atomic(&dir, |tmp| self.m.policy.save_with(model, tmp))?;
                self.save_resume()?;
            }
            on_iteration(self.iteration, &self.log);
            if stop_after == Some(self.iteration) {
                break;
            }
        }
        let mut checkpoints: Vec<PathBuf> = match std::fs::read_dir(self.data.scratch.join("checkpoints")) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect(),
            Err(_) => vec![],
        };
        checkpoints.sort();
        let final_model = match self.ema.take() {
            Some(e) => e,
            None => self.m.policy.lm.snapshot()?,
        };
        Ok(PpoOutcome {
            log: self.log,
            warnings: self.extra.warnings,
            rollouts: self.rollouts,
            checkpoints,
            final_model,
            resumed_from: self.resumed_from,
        })
    }

    fn one_iteration(&mut self, it: u64) -> Result<()> {
        let t0 = Instant::now();
        let p = self.p;
        let idx = self.iteration_prompts(it);
        let prompts: Vec<&PpoPrompt> = idx.iter().map(|&i| &self.data.prompts[i]).collect();
        let seeds: Vec<u64> =
            (0..prompts.len()).map(|k| lineage::derive_seed(self.data.seed, &format!("rollout/{it}/{k}"))).collect();
        let sampled = self.sample(&self.m.policy.lm, &prompts, &seeds)?;
        let t_gen = t0.elapsed().as_secs_f64();

        let pairs: Vec<(Vec<u32>, Vec<u32>)> =
            prompts.iter().zip(&sampled).map(|(p, s)| (p.ids.clone(), s.generation.tokens.clone())).collect();
        let bs = p.gen_batch_size;
        // The policy's log-probs are the ones recorded while sampling (equal to a training forward's
        // to float rounding: model/tests/generation.rs), so PPO's old log-probs cost no extra pass.
        let ref_logp = row_logprobs(&self.m.reference, &pairs, bs)?;
        let mut values = match &self.m.value {
            Some(v) => row_values(v, &pairs, bs)?,
            None => vec![vec![]; pairs.len()],
        };
        let rm = self.rm_scores(&pairs)?;
        let mut eps: Vec<Episode> = Vec::with_capacity(pairs.len());
        for (k, s) in sampled.into_iter().enumerate() {
            let pr = prompts[k];
            let gold = pr.meta.as_ref().map_or(f32::NAN, |m| world::judge(m, &s.text, s.ended_with_eos()).score as f32);
            let rm_k = rm.as_ref().map_or(f32::NAN, |r| r[k]);
            let mut score = if p.oracle {
                if gold.is_nan() {
                    bail!("prompt {}: the oracle reward needs the world's task metadata", pr.id);
                }
                (p.oracle_scale * (gold as f64 - 0.5)) as f32
            } else if p.random_reward {
                math::null_score(self.data.seed, it, k)
            } else {
                rm_k
            };
            let eos = s.ended_with_eos();
            if !eos {
                score += p.missing_eos_penalty as f32;
            }
            eps.push(Episode {
                prompt: idx[k],
                eos,
                text: s.text,
                response: s.generation.tokens,
                logp: s.generation.logprobs,
                ref_logp: ref_logp[k].clone(),
                values: std::mem::take(&mut values[k]),
                rewards: vec![],
                adv: vec![],
                returns: vec![],
                score,
                rm: rm_k,
                gold,
            });
        }
        let beta = self.extra.kl_coef as f32;
        let advantages = |eps: &mut [Episode]| {
            for e in eps.iter_mut() {
                let kl: Vec<f32> =
                    e.logp.iter().zip(&e.ref_logp).map(|(a, b)| kl_per_token(*a, *b, p.kl_estimator)).collect();
                e.rewards = token_rewards(&kl, e.score, beta);
            }
            match p.advantage {
                AdvantageEstimator::Gae => {
                    for e in eps.iter_mut() {
                        // gae() asserts one value per reward (the value model scored the same tokens).
                        (e.adv, e.returns) = gae(&e.rewards, &e.values, 1.0, p.gae_lambda as f32);
                    }
                }
                AdvantageEstimator::Rloo => {
                    // The KL-penalised sequence reward against the prompt's other samples, at every
                    // token; no value model, so no returns.
                    let seq: Vec<f32> = eps.iter().map(|e| e.rewards.iter().sum()).collect();
                    for (e, a) in eps.iter_mut().zip(leave_one_out(&seq, p.samples_per_prompt)) {
                        e.adv = vec![a; e.rewards.len()];
                    }
                }
            }
        };
        advantages(&mut eps);
        if it == 0 && self.resumed_from.is_none() && self.m.value.is_some() {
            // Rescale the value head to the returns it must predict, so the first updates are not
            // driven by a value model on another scale (the reward model's head, or a fresh one).
            let (a, b) = self.rescale_value_head(&eps)?;
            for e in eps.iter_mut() {
                e.values.iter_mut().for_each(|v| *v = a * *v + b);
            }
            advantages(&mut eps);
            self.log.record(0, "value_rescale_a", a as f64);
            self.log.record(0, "value_rescale_b", b as f64);
        }
        if p.whiten_advantages {
            let mut all: Vec<f32> = eps.iter().flat_map(|e| e.adv.iter().copied()).collect();
            whiten(&mut all);
            let mut off = 0;
            for e in eps.iter_mut() {
                let n = e.adv.len();
                e.adv.copy_from_slice(&all[off..off + n]);
                off += n;
            }
        }

        // Updates.
        let lr_scale = if p.warmup_iters > 0 { ((it + 1) as f64 / p.warmup_iters as f64).min(1.0) } else { 1.0 };
        let device = self.m.policy.lm.device().clone();
        let n_mb = eps.len().div_ceil(p.minibatch_size);
        let mb_seed = lineage::derive_seed(self.data.seed, "minibatch-order");
        let windows = Windows::new(self.data.ptx_tokens, p.ptx_seq_len);
        let ptx_seed = lineage::derive_seed(self.data.seed, "ptx-order");
        let (mut pg, mut vl, mut clip, mut akl, mut ent, mut ptx, mut vclip, mut gn) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for e in 0..p.ppo_epochs {
            let order = epoch_order(eps.len(), mb_seed, it * p.ppo_epochs as u64 + e as u64);
            for (m, chunk) in order.chunks(p.minibatch_size).enumerate() {
                let mb: Vec<&Episode> = chunk.iter().map(|&i| &eps[i]).collect();
                let mb_pairs: Vec<(&[u32], &[u32])> =
                    mb.iter().map(|e| (&self.data.prompts[e.prompt].ids[..], &e.response[..])).collect();
                let batch = Batch::aligned(&mb_pairs, &device)?;
                let r = batch.response_width;
                let scores = self.m.policy.lm.response_scores(&batch, true, None)?;
                let old = padded(&mb.iter().map(|e| &e.logp[..]).collect::<Vec<_>>(), r, &device)?;
                let adv = padded(&mb.iter().map(|e| &e.adv[..]).collect::<Vec<_>>(), r, &device)?;
                let (mut loss, stats) = math::policy_loss(&scores.logprobs, &old, &adv, &scores.mask, p.clip_range)?;
                pg.push(loss.to_scalar::<f32>()? as f64);
                clip.push(stats.clip_fraction as f64);
                akl.push(stats.approx_kl as f64);
                if let Some(h) = &scores.entropy {
                    ent.push(math::masked_mean(h, &scores.mask)?.to_scalar::<f32>()? as f64);
                }
                if p.ptx_coef > 0.0 && !windows.is_empty() {
                    let count = ((p.ptx_per_episode * mb.len() as f64).round() as usize).max(1);
                    let g = (it * p.ppo_epochs as u64 + e as u64) * n_mb as u64 + m as u64;
                    let docs: Vec<&[u32]> = (0..count as u64)
                        .map(|j| {
                            let (ep, pos) = locate(g * count as u64 + j, windows.len() as u64);
                            windows.get(epoch_order(windows.len(), ptx_seed, ep)[pos as usize])
                        })
                        .collect();
                    let lm_loss = self.m.policy.lm.lm_loss(&Batch::documents(&docs, &device)?, None)?.mean()?;
                    ptx.push(lm_loss.to_scalar::<f32>()? as f64);
                    loss = (loss + (lm_loss * p.ptx_coef)?)?;
                }
                let mut grads = Grads::backward(&loss, self.m.policy.lm.params())?;
                gn.push(grads.clip(p.grad_clip)?);
                self.opt.step(&grads, p.lr * lr_scale)?;
                if let Some(ema) = &self.ema {
                    ema.params().ema_update(self.m.policy.lm.params(), p.ema_decay)?;
                }

                if let (Some(value), Some(value_opt)) = (&self.m.value, &mut self.value_opt) {
                    let v = value.values(&batch, None)?;
                    let old_v = padded(&mb.iter().map(|e| &e.values[..]).collect::<Vec<_>>(), r, &device)?;
                    let ret = padded(&mb.iter().map(|e| &e.returns[..]).collect::<Vec<_>>(), r, &device)?;
                    let (vloss, vfrac) = math::value_loss(&v, &old_v, &ret, &scores.mask, p.value_clip)?;
                    vl.push(vloss.to_scalar::<f32>()? as f64);
                    vclip.push(vfrac as f64);
                    let mut vgrads = Grads::backward(&vloss, value.params())?;
                    vgrads.clip(p.grad_clip)?;
                    value_opt.step(&vgrads, p.value_lr * lr_scale)?;
                }
            }
        }

        // Metrics of this iteration.
        let step = it + 1;
        let kl_seq: Vec<f64> =
            eps.iter().map(|e| e.logp.iter().zip(&e.ref_logp).map(|(a, b)| (a - b) as f64).sum()).collect();
        let kl = mean(kl_seq.iter().copied());
        let vals: Vec<f32> = eps.iter().flat_map(|e| e.values.iter().copied()).collect();
        let rets: Vec<f32> = eps.iter().flat_map(|e| e.returns.iter().copied()).collect();
        let len = mean(eps.iter().map(|e| e.response.len() as f64));
        let log = &mut self.log;
        log.record(step, "score", mean(eps.iter().map(|e| e.score as f64)));
        if self.m.reward.is_some() {
            log.record(step, "rm_reward", mean(eps.iter().map(|e| e.rm as f64)));
        }
        let gold = mean(eps.iter().filter(|e| !e.gold.is_nan()).map(|e| e.gold as f64));
        if gold.is_finite() {
            log.record(step, "gold", gold);
        }
        log.record(step, "kl", kl);
        log.record(step, "kl_coef", self.extra.kl_coef);
        log.record(step, "entropy", mean(ent.iter().copied()));
        log.record(step, "policy_loss", mean(pg.iter().copied()));
        log.record(step, "clip_fraction", mean(clip.iter().copied()));
        log.record(step, "approx_kl", mean(akl.iter().copied()));
        if !vl.is_empty() {
            log.record(step, "value_loss", mean(vl.iter().copied()));
            log.record(step, "value_clip_fraction", mean(vclip.iter().copied()));
            log.record(step, "explained_variance", math::explained_variance(&vals, &rets) as f64);
        }
        log.record(step, "response_len", len);
        log.record(step, "no_eos_rate", mean(eps.iter().map(|e| f64::from(u8::from(!e.eos)))));
        log.record(step, "grad_norm", mean(gn.iter().copied()));
        log.record(step, "lr", p.lr * lr_scale);
        if !ptx.is_empty() {
            log.record(step, "ptx_loss", mean(ptx.iter().copied()));
        }
        log.time(step, "iteration_s", t0.elapsed().as_secs_f64());
        log.time(step, "generation_s", t_gen);

        // Warnings. The KL counts as negative only beyond two standard errors of its noise.
        if math::significantly_negative(&kl_seq, 2.0) {
            self.extra.negative_kl_streak += 1;
        } else {
            self.extra.negative_kl_streak = 0;
        }
        if self.extra.negative_kl_streak >= 3 {
            self.warn_once(
                "negative_kl",
                format!(
                    "iteration {step}: the KL estimate has been below 0 beyond its noise for 3 iterations ({kl:.3}): the sampled \
                     log-probs and the policy disagree (sampling temperature != 1? a tokenizer mismatch?)"
                ),
            );
        }
        let first = *self.extra.first_len.get_or_insert(len);
        if len > 2.0 * first || len < 0.5 * first {
            self.warn_once(
                "length",
                format!("iteration {step}: mean response length drifted from {first:.1} to {len:.1} tokens"),
            );
        }

        // Adaptive KL (Ziegler et al. 2019): proportional control towards the target.
        if p.kl_target > 0.0 {
            let err = (kl / p.kl_target - 1.0).clamp(-0.2, 0.2);
            self.extra.kl_coef *= 1.0 + err * eps.len() as f64 / p.kl_horizon;
        }

        if p.save_rollouts {
            for e in &eps {
                self.rollouts.push(RolloutRow {
                    iteration: step as i64,
                    prompt_id: self.data.prompts[e.prompt].id.clone(),
                    response: e.text.clone(),
                    response_tokens: e.response.clone(),
                    logprobs: e.logp.clone(),
                    ref_logprobs: e.ref_logp.clone(),
                    values: e.values.clone(),
                    rewards: e.rewards.clone(),
                    advantages: e.adv.clone(),
                    score: e.score,
                    gold: e.gold,
                });
            }
        }
        Ok(())
    }

    /// Least-squares `a, b` with `returns ~ a * values + b` over every token, `a` kept in [0, 10];
    /// applied to the value head's weights.
    fn rescale_value_head(&self, eps: &[Episode]) -> Result<(f32, f32)> {
        let v: Vec<f64> = eps.iter().flat_map(|e| e.values.iter().map(|&x| x as f64)).collect();
        let r: Vec<f64> = eps.iter().flat_map(|e| e.returns.iter().map(|&x| x as f64)).collect();
        let (mv, mr) = (mean(v.iter().copied()), mean(r.iter().copied()));
        let cov: f64 = v.iter().zip(&r).map(|(a, b)| (a - mv) * (b - mr)).sum();
        let var: f64 = v.iter().map(|a| (a - mv).powi(2)).sum();
        let a = if var > 1e-12 { (cov / var).clamp(0.0, 10.0) } else { 0.0 };
        let b = mr - a * mv;
        let params = self.m.value.as_ref().context("no value model to rescale")?.params();
        let w = params.get("score.weight").context("the value model has no score.weight")?;
        let bias = params.get("score.bias").context("the value model has no score.bias")?;
        w.set(&(w.as_tensor() * a)?)?;
        bias.set(&((bias.as_tensor() * a)? + b)?)?;
        Ok((a as f32, b as f32))
    }
}
