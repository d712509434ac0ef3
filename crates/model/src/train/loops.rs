//! The causal-LM training loops: pretraining on a token stream and SFT on (prompt, response) pairs.
//!
//! Both are thin: they pick micro-batches in a seeded order, call [`CausalLm::lm_loss`], sum the
//! gradients of `grad_accum` micro-batches, and hand them to an [`UpdateRule`] (clip, schedule,
//! AdamW): the same pieces a reward-model or PPO loop uses with its own loss.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::dropout::Dropout;
use crate::error::{ModelError, Result};
use crate::lm::CausalLm;
use crate::tokenizer::{EncodedPair, InstructionFormat, Tokenizer};
use crate::train::checkpoint::{self, ModelPart, TrainerState};
use crate::train::data::{self, Windows};
use crate::train::grads::Grads;
use crate::train::optim::{AdamW, AdamWConfig, ParamGroup};
use crate::train::schedule::LrSchedule;

/// Optimisation settings shared by the loops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Seeds the data order and dropout (the model's init has its own seed).
    pub seed: u64,
    pub lr: f64,
    pub warmup_steps: u64,
    /// The cosine schedule ends at `min_lr_ratio * lr`.
    pub min_lr_ratio: f64,
    pub adamw: AdamWConfig,
    /// Learning-rate multipliers by parameter-name prefix.
    pub groups: Vec<ParamGroup>,
    /// Global gradient-norm clip; 0 disables it.
    pub grad_clip: f64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches summed per update.
    pub grad_accum: usize,
    /// Residual dropout; `None` takes the model config's `resid_pdrop`.
    pub dropout: Option<f64>,
    /// Save a resumable checkpoint every this many updates (0: only at the end and at epoch ends).
    pub checkpoint_every: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            lr: 1e-3,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            adamw: AdamWConfig::default(),
            groups: vec![],
            grad_clip: 1.0,
            batch_size: 16,
            grad_accum: 1,
            dropout: None,
            checkpoint_every: 0,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        self.adamw.validate()?;
        if self.batch_size == 0 || self.grad_accum == 0 {
            return Err(ModelError::Config("batch_size and grad_accum must be positive".into()));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) || self.grad_clip < 0.0 {
            return Err(ModelError::Config(format!("lr must be positive and grad_clip >= 0 (lr {})", self.lr)));
        }
        if let Some(p) = self.dropout
            && !(0.0..1.0).contains(&p)
        {
            return Err(ModelError::Config(format!("dropout {p} must be in [0, 1)")));
        }
        LrSchedule::new(self.lr, self.warmup_steps, 1, self.min_lr_ratio).validate()
    }
}

/// Pretraining: next-token loss on windows of a token stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PretrainConfig {
    #[serde(flatten)]
    pub train: TrainConfig,
    /// Tokens per window (each window predicts `seq_len` targets).
    pub seq_len: usize,
    /// Number of updates.
    pub steps: u64,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig { train: TrainConfig::default(), seq_len: 128, steps: 1000 }
    }
}

/// Supervised fine-tuning: loss on response tokens only, for a number of epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SftConfig {
    #[serde(flatten)]
    pub train: TrainConfig,
    pub epochs: u64,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig { train: TrainConfig { dropout: Some(0.2), ..TrainConfig::default() }, epochs: 4 }
    }
}

/// Where a loop writes: `dir/checkpoint/` (the latest resumable checkpoint; a run finds and resumes
/// it) and, for SFT, `dir/epoch-NNN/` (a model directory per epoch, kept). The tokenizer and format,
/// if given, are written into every model directory so each is self-contained.
#[derive(Debug, Clone, Copy)]
pub struct RunDir<'a> {
    pub dir: &'a Path,
    pub tokenizer: Option<&'a Tokenizer>,
    pub format: Option<&'a InstructionFormat>,
}

impl RunDir<'_> {
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    pub fn epoch(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("epoch-{:03}", epoch + 1))
    }

    fn write_extras(&self, dir: &Path) -> Result<()> {
        if let Some(t) = self.tokenizer {
            t.save_to_dir(dir)?;
        }
        if let Some(f) = self.format {
            f.save_to_dir(dir)?;
        }
        Ok(())
    }
}

/// What a loop reports after every update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Updates done so far (1 after the first).
    pub step: u64,
    pub total_steps: u64,
    pub epoch: u64,
    /// Mean NLL per target token of this update's batch.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real (non-padding) tokens processed in this update.
    pub tokens: usize,
    pub targets: usize,
    pub tokens_per_s: f64,
    pub step_s: f64,
}

/// Events a loop sends to its observer. Returning `ControlFlow::Break` from a `Step` stops the run
/// after saving a checkpoint (if it has a directory); from `CheckpointFiles` it fails that checkpoint.
#[derive(Debug)]
pub enum TrainEvent<'a> {
    Step(&'a StepMetrics),
    /// Validation loss (mean NLL per target) at the end of an epoch.
    Eval {
        epoch: u64,
        step: u64,
        loss: f64,
    },
    /// A checkpoint at `step` is being written into the temporary `dir`: write there whatever must be
    /// resumed with it (the observer's log). `Break` fails the checkpoint.
    CheckpointFiles {
        step: u64,
        dir: &'a Path,
    },
    /// The checkpoint at `step` is complete at `path`.
    Checkpoint {
        step: u64,
        path: &'a Path,
    },
    /// A model directory written at the end of an epoch.
    EpochSaved {
        epoch: u64,
        path: &'a Path,
    },
}

/// Observer that ignores everything.
pub fn no_observer(_: &TrainEvent<'_>) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Updates done in total (including those before a resume).
    pub steps: u64,
    /// Updates done by this call.
    pub steps_this_run: u64,
    pub resumed_from_step: Option<u64>,
    /// Loss of the last update.
    pub final_loss: Option<f64>,
    /// `(epoch, validation loss)` per finished epoch (SFT).
    pub val_losses: Vec<(u64, f64)>,
    /// Model directories written per epoch (SFT).
    pub epoch_dirs: Vec<PathBuf>,
    pub tokens: u64,
    pub elapsed_s: f64,
    /// The observer asked to stop.
    pub stopped: bool,
}

/// Gradient clipping, learning-rate schedule and AdamW: turns summed gradients into an update.
#[derive(Debug)]
pub struct UpdateRule {
    pub optimizer: AdamW,
    pub schedule: LrSchedule,
    /// 0 disables clipping.
    pub grad_clip: f64,
}

impl UpdateRule {
    /// Clips, applies one AdamW update at the scheduled rate, and returns `(grad_norm, lr)`; the
    /// norm is taken before clipping.
    pub fn apply(&mut self, grads: &mut Grads) -> Result<(f64, f64)> {
        let norm = if self.grad_clip > 0.0 { grads.clip(self.grad_clip)? } else { grads.global_norm()? };
        let lr = self.schedule.lr(self.optimizer.steps());
        self.optimizer.step(grads, lr)?;
        Ok((norm, lr))
    }

    /// Updates done so far.
    pub fn steps(&self) -> u64 {
        self.optimizer.steps()
    }
}

/// The settings a resumed run must share with the run that wrote the checkpoint: everything but
/// the checkpoint interval, plus the loop's own settings and data sizes.
fn fingerprint(t: &TrainConfig, data: serde_json::Value) -> serde_json::Value {
    let t = TrainConfig { checkpoint_every: 0, ..t.clone() };
    serde_json::json!({ "train": t, "data": data })
}

/// Shared state of one causal-LM run.
struct Run<'a> {
    lm: &'a CausalLm,
    rule: UpdateRule,
    dropout: Option<Dropout>,
    out: Option<RunDir<'a>>,
    total_steps: u64,
    report: TrainReport,
    started: Instant,
    /// What the data order and schedule depend on; a checkpoint made under another run is refused.
    fingerprint: serde_json::Value,
}

impl<'a> Run<'a> {
    fn new(
        lm: &'a CausalLm,
        cfg: &TrainConfig,
        total_steps: u64,
        out: Option<RunDir<'a>>,
        fingerprint: serde_json::Value,
    ) -> Result<Self> {
        cfg.validate()?;
        crate::runtime::tune_allocator();
        if !lm.is_trainable() {
            return Err(ModelError::Input("cannot train a frozen model: load it trainable".into()));
        }
        let optimizer = AdamW::new(lm.params(), cfg.adamw.clone(), cfg.groups.clone())?;
        let schedule = LrSchedule::new(cfg.lr, cfg.warmup_steps, total_steps, cfg.min_lr_ratio);
        let p = cfg.dropout.unwrap_or(lm.config().resid_pdrop);
        let dropout = (p > 0.0).then(|| Dropout::new(p, cfg.seed ^ 0x6472_6f70_6f75_7421)); // "dropout!"
        let rule = UpdateRule { optimizer, schedule, grad_clip: cfg.grad_clip };
        Ok(Run {
            lm,
            rule,
            dropout,
            out,
            total_steps,
            report: TrainReport::default(),
            started: Instant::now(),
            fingerprint,
        })
    }

    /// Restores the latest checkpoint of the run directory, if any; returns its state.
    fn resume(&mut self) -> Result<Option<TrainerState>> {
        let Some(out) = self.out else { return Ok(None) };
        let dir = out.checkpoint();
        if !checkpoint::exists(&dir)? {
            return Ok(None);
        }
        let state = checkpoint::read_state(&dir)?;
        if let Some(saved) = state.extra.get("run")
            && *saved != self.fingerprint
        {
            return Err(ModelError::checkpoint(
                &dir,
                format!(
                    "this checkpoint belongs to another run (it was made with {saved}, this run is {}): \
                     delete it or use another output directory",
                    self.fingerprint
                ),
            ));
        }
        checkpoint::restore_part(&dir, "", self.lm.params(), Some(&mut self.rule.optimizer))?;
        if let (Some(d), Some(s)) = (self.dropout.as_mut(), state.rngs.get("dropout")) {
            d.set_state(s)?;
        }
        self.report.resumed_from_step = Some(state.step);
        if let Some(v) = state.extra.get("val_losses") {
            self.report.val_losses = serde_json::from_value(v.clone()).unwrap_or_default();
        }
        Ok(Some(state))
    }

    fn save(
        &self,
        epoch: u64,
        position: u64,
        observer: &mut dyn FnMut(&TrainEvent<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        let Some(out) = self.out else { return Ok(()) };
        let extra = serde_json::json!({ "val_losses": self.report.val_losses, "run": self.fingerprint });
        let mut state = TrainerState { step: self.rule.steps(), epoch, position, extra, ..Default::default() };
        if let Some(d) = &self.dropout {
            state.rngs.insert("dropout".into(), d.state());
        }
        let dir = out.checkpoint();
        let part = ModelPart {
            name: "",
            config: self.lm.config(),
            params: self.lm.params(),
            optimizer: Some(&self.rule.optimizer),
        };
        checkpoint::save_with(&dir, &[part], &state, |tmp| {
            match observer(&TrainEvent::CheckpointFiles { step: state.step, dir: tmp }) {
                ControlFlow::Continue(()) => Ok(()),
                ControlFlow::Break(()) => Err(ModelError::checkpoint(
                    &dir,
                    "the training observer could not write its files into the checkpoint",
                )),
            }
        })?;
        let _ = observer(&TrainEvent::Checkpoint { step: state.step, path: &dir });
        Ok(())
    }

    /// Forward, backward and one update over the micro-batches of a step; the loss is the token
    /// mean over all of them, exactly as if they were one batch.
    fn update(&mut self, micro: &[Batch], epoch: u64) -> Result<StepMetrics> {
        let t0 = Instant::now();
        let targets: usize = micro.iter().map(|b| b.num_targets()).sum();
        let tokens: usize = micro.iter().map(|b| b.num_tokens()).sum();
        let mut grads = Grads::default();
        let mut nll = 0f64;
        for b in micro {
            let loss = self.lm.lm_loss(b, self.dropout.as_mut())?;
            let scaled = (&loss.nll_sum / targets.max(1) as f64)?;
            nll += loss.nll_sum.to_scalar::<f32>()? as f64;
            grads.accumulate(Grads::backward(&scaled, self.lm.params())?)?;
        }
        let (grad_norm, lr) = self.rule.apply(&mut grads)?;
        let step_s = t0.elapsed().as_secs_f64();
        self.report.steps_this_run += 1;
        self.report.tokens += tokens as u64;
        let loss = nll / targets.max(1) as f64;
        self.report.final_loss = Some(loss);
        Ok(StepMetrics {
            step: self.rule.steps(),
            total_steps: self.total_steps,
            epoch,
            loss,
            lr,
            grad_norm,
            tokens,
            targets,
            tokens_per_s: tokens as f64 / step_s.max(1e-9),
            step_s,
        })
    }

    fn finish(mut self, stopped: bool) -> TrainReport {
        self.report.steps = self.rule.steps();
        self.report.stopped = stopped;
        self.report.elapsed_s = self.started.elapsed().as_secs_f64();
        self.report
    }
}

/// Pretrains `lm` on windows of `tokens` for `cfg.steps` updates of `batch_size * grad_accum`
/// windows each, in a seeded order (reshuffled every pass over the data). With `out`, a checkpoint
/// found there is resumed, and checkpoints are written every `checkpoint_every` updates and at the
/// end.
pub fn pretrain(
    lm: &CausalLm,
    tokens: &[u32],
    cfg: &PretrainConfig,
    out: Option<RunDir<'_>>,
    observer: &mut dyn FnMut(&TrainEvent<'_>) -> ControlFlow<()>,
) -> Result<TrainReport> {
    let t = &cfg.train;
    let windows = Windows::new(tokens, cfg.seq_len);
    let per_epoch = (windows.len() / t.batch_size) as u64;
    if per_epoch == 0 {
        return Err(ModelError::Input(format!(
            "{} tokens do not fill one micro-batch of {} windows of {} tokens",
            tokens.len(),
            t.batch_size,
            cfg.seq_len
        )));
    }
    if cfg.seq_len + 1 > lm.config().max_position_embeddings {
        return Err(ModelError::Config(format!(
            "seq_len {} exceeds the model's max_position_embeddings ({})",
            cfg.seq_len,
            lm.config().max_position_embeddings
        )));
    }
    let fingerprint =
        fingerprint(t, serde_json::json!({ "seq_len": cfg.seq_len, "steps": cfg.steps, "tokens": tokens.len() }));
    let mut run = Run::new(lm, t, cfg.steps, out, fingerprint)?;
    run.resume()?;
    let device = lm.device().clone();
    let mut stopped = false;
    while run.rule.steps() < cfg.steps {
        let step = run.rule.steps();
        let mut micro = Vec::with_capacity(t.grad_accum);
        let mut epoch = 0;
        for k in 0..t.grad_accum as u64 {
            let (e, pos) = data::locate(step * t.grad_accum as u64 + k, per_epoch);
            epoch = e;
            let order = data::epoch_order(windows.len(), t.seed, e);
            let start = pos as usize * t.batch_size;
            let rows: Vec<&[u32]> = order[start..start + t.batch_size].iter().map(|&i| windows.get(i)).collect();
            micro.push(Batch::documents(&rows, &device)?);
        }
        let m = run.update(&micro, epoch)?;
        let brk = observer(&TrainEvent::Step(&m)).is_break();
        let done = run.rule.steps() == cfg.steps;
        if done || brk || (t.checkpoint_every > 0 && run.rule.steps().is_multiple_of(t.checkpoint_every)) {
            run.save(epoch, 0, observer)?;
        }
        if brk && !done {
            stopped = true;
            break;
        }
    }
    Ok(run.finish(stopped))
}

/// Mean NLL per target token of a token stream under `lm`, over the same
/// non-overlapping windows pretraining uses (no gradients, no dropout): the
/// log of held-out perplexity. `None` when the stream is shorter than a window.
pub fn eval_stream(lm: &CausalLm, tokens: &[u32], seq_len: usize, batch_size: usize) -> Result<Option<f64>> {
    let windows = Windows::new(tokens, seq_len);
    if windows.is_empty() {
        return Ok(None);
    }
    let frozen = lm.frozen()?;
    let (mut nll, mut n) = (0f64, 0usize);
    let all: Vec<&[u32]> = (0..windows.len()).map(|i| windows.get(i)).collect();
    for chunk in all.chunks(batch_size.max(1)) {
        let b = Batch::documents(chunk, lm.device())?;
        let l = frozen.lm_loss(&b, None)?;
        nll += l.nll_sum.to_scalar::<f32>()? as f64;
        n += l.n_targets;
    }
    Ok(Some(nll / n.max(1) as f64))
}

/// Mean NLL per target of `pairs` under `lm` (no gradients, no dropout).
pub fn eval_loss(lm: &CausalLm, pairs: &[EncodedPair], batch_size: usize) -> Result<f64> {
    let frozen = lm.frozen()?;
    let (mut nll, mut n) = (0f64, 0usize);
    for chunk in pairs.chunks(batch_size.max(1)) {
        let b = Batch::from_pairs(chunk, lm.device())?;
        let l = frozen.lm_loss(&b, None)?;
        nll += l.nll_sum.to_scalar::<f32>()? as f64;
        n += l.n_targets;
    }
    Ok(nll / n.max(1) as f64)
}

/// Fine-tunes `lm` on `train` pairs (loss on response tokens, EOS included) for `cfg.epochs`
/// epochs, reshuffled each epoch. After every epoch: the validation loss on `val` (if any) and,
/// with `out`, a model directory `epoch-NNN/` (kept, for selecting the best epoch by reward later)
/// plus a resumable checkpoint.
pub fn sft(
    lm: &CausalLm,
    train: &[EncodedPair],
    val: &[EncodedPair],
    cfg: &SftConfig,
    out: Option<RunDir<'_>>,
    observer: &mut dyn FnMut(&TrainEvent<'_>) -> ControlFlow<()>,
) -> Result<TrainReport> {
    let t = &cfg.train;
    if train.is_empty() {
        return Err(ModelError::Input("no SFT training pairs".into()));
    }
    let too_long = train.iter().chain(val).position(|p| p.len() > lm.config().max_position_embeddings);
    if let Some(i) = too_long {
        return Err(ModelError::Input(format!(
            "pair {i} has more tokens than max_position_embeddings ({}): truncate pairs first (EncodedPair::truncate)",
            lm.config().max_position_embeddings
        )));
    }
    let micro_per_epoch = train.len().div_ceil(t.batch_size) as u64;
    let steps_per_epoch = micro_per_epoch.div_ceil(t.grad_accum as u64);
    let total = steps_per_epoch * cfg.epochs;
    let data = serde_json::json!({ "epochs": cfg.epochs, "train_pairs": train.len(), "val_pairs": val.len() });
    let mut run = Run::new(lm, t, total, out, fingerprint(t, data))?;
    run.resume()?;
    let device = lm.device().clone();
    let mut stopped = false;
    while run.rule.steps() < total {
        let step = run.rule.steps();
        let (epoch, in_epoch) = data::locate(step, steps_per_epoch);
        let order = data::epoch_order(train.len(), t.seed, epoch);
        let first = in_epoch * t.grad_accum as u64;
        let last = (first + t.grad_accum as u64).min(micro_per_epoch);
        let micro = (first..last)
            .map(|mb| {
                let idx = &order[mb as usize * t.batch_size..((mb as usize + 1) * t.batch_size).min(train.len())];
                let pairs: Vec<EncodedPair> = idx.iter().map(|&i| train[i].clone()).collect();
                Batch::from_pairs(&pairs, &device)
            })
            .collect::<Result<Vec<_>>>()?;
        let m = run.update(&micro, epoch)?;
        let brk = observer(&TrainEvent::Step(&m)).is_break();
        let epoch_end = run.rule.steps().is_multiple_of(steps_per_epoch);
        if epoch_end {
            if !val.is_empty() {
                let loss = eval_loss(lm, val, t.batch_size)?;
                run.report.val_losses.push((epoch, loss));
                let _ = observer(&TrainEvent::Eval { epoch, step: run.rule.steps(), loss });
            }
            if let Some(o) = out {
                let dir = o.epoch(epoch);
                crate::fsutil::replace_dir_atomic(&dir, |tmp| {
                    checkpoint::write_model_files(tmp, lm.config(), lm.params())?;
                    o.write_extras(tmp)
                })?;
                let _ = observer(&TrainEvent::EpochSaved { epoch, path: &dir });
                run.report.epoch_dirs.push(dir);
            }
        }
        let done = run.rule.steps() == total;
        let periodic = t.checkpoint_every > 0 && run.rule.steps().is_multiple_of(t.checkpoint_every);
        if done || brk || epoch_end || periodic {
            run.save(epoch, in_epoch + 1, observer)?;
        }
        if brk && !done {
            stopped = true;
            break;
        }
    }
    if let Some(o) = out {
        // Include the epochs a resumed run finished before it was interrupted.
        let epochs_done = run.rule.steps() / steps_per_epoch;
        run.report.epoch_dirs = (0..epochs_done).map(|e| o.epoch(e)).filter(|d| d.is_dir()).collect();
    }
    Ok(run.finish(stopped))
}
