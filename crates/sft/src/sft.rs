//! `sft.sft`: supervised fine-tuning of a base model on demonstrations, with
//! the loss on response tokens only -> the final model (`model/`), one model
//! per epoch (`epochs/epoch-NNN/`, for selection by reward-model score as
//! the paper does), and validation loss per epoch.

use anyhow::{Context, Result, bail};
use lineage::tables::{DEMONSTRATIONS, DemonstrationRow, TIMING, TRAIN_LOG};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use model::lm::CausalLm;
use model::tokenizer::{EncodedPair, InstructionFormat, Tokenizer};
use model::train::{self, AdamWConfig, RunDir, SftConfig, TrainConfig};
use serde::{Deserialize, Serialize};

use crate::common::Observer;
use model::fsutil::copy_model_files;

pub struct Sft;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftParams {
    /// The paper trains 16 epochs; validation loss overfits after one, yet
    /// later epochs can score better with the reward model.
    pub epochs: u64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Cosine decay to `min_lr_ratio * lr`.
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    /// Residual dropout (the paper: 0.2).
    pub dropout: f64,
    /// Pairs longer than the model's context are truncated (prompt first
    /// kept to `max_prompt_tokens`).
    pub max_prompt_tokens: usize,
}

impl Default for SftParams {
    fn default() -> Self {
        SftParams {
            epochs: 4,
            batch_size: 16,
            grad_accum: 1,
            lr: 1e-3,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            weight_decay: 0.0,
            grad_clip: 1.0,
            dropout: 0.2,
            max_prompt_tokens: 96,
        }
    }
}

impl SftParams {
    fn config(&self, seed: u64) -> SftConfig {
        SftConfig {
            train: TrainConfig {
                seed,
                lr: self.lr,
                warmup_steps: self.warmup_steps,
                min_lr_ratio: self.min_lr_ratio,
                adamw: AdamWConfig { weight_decay: self.weight_decay, ..AdamWConfig::default() },
                groups: vec![],
                grad_clip: self.grad_clip,
                batch_size: self.batch_size,
                grad_accum: self.grad_accum,
                dropout: Some(self.dropout),
                checkpoint_every: 0,
            },
            epochs: self.epochs,
        }
    }
}

impl Validate for SftParams {
    fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 {
            return Err("epochs must be at least 1".into());
        }
        self.config(0).train.validate().map_err(|e| e.to_string())
    }
}

/// Encodes demonstrations of one split, truncated to the model's context.
pub fn encode(
    rows: &[DemonstrationRow],
    split: &str,
    tok: &Tokenizer,
    format: &InstructionFormat,
    max_prompt: usize,
    max_len: usize,
) -> Result<(Vec<EncodedPair>, usize)> {
    let mut out = Vec::new();
    let mut truncated = 0;
    for r in rows.iter().filter(|r| r.split == split) {
        let mut pair = format
            .encode_pair(tok, &r.prompt, &r.response)
            .with_context(|| format!("encoding the demonstration of prompt {}", r.prompt_id))?;
        if pair.len() > max_len {
            pair.truncate(max_prompt, max_len);
            truncated += 1;
        }
        out.push(pair);
    }
    Ok((out, truncated))
}

impl TypedStage for Sft {
    type Params = SftParams;
    const NAME: &'static str = "sft.sft";
    const ABOUT: &'static str =
        "Supervised fine-tuning on demonstrations (loss on response tokens), a model per epoch.";
    const INPUTS: &'static [InputSpec] = &[
        InputSpec::one("base", "A model artifact (model/): pretrained or imported."),
        InputSpec::one("demonstrations", "A demonstrations table (train split trains, validation split validates)."),
    ];
    const OUTPUTS: &'static [TableSpec] = &[TRAIN_LOG, TIMING];
    const USES_DEVICE: bool = true;
    const HEADLINE: Option<&'static str> = Some("val_loss");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }

    fn run(ctx: &mut StageContext, p: &SftParams) -> Result<()> {
        let base = ctx.input("base")?.model_dir();
        let tok = Tokenizer::from_dir(&base)?;
        let format = InstructionFormat::load_from_dir(&base)?.unwrap_or_default();
        let device = train::parse_device(&ctx.device)?;
        let lm = CausalLm::load(&base, &device)?;
        let max_len = lm.config().max_position_embeddings;

        let rows: Vec<DemonstrationRow> = ctx.read_rows("demonstrations", &DEMONSTRATIONS)?;
        let (train_pairs, t1) = encode(&rows, "train", &tok, &format, p.max_prompt_tokens, max_len)?;
        let (val_pairs, t2) = encode(&rows, "validation", &tok, &format, p.max_prompt_tokens, max_len)?;
        if train_pairs.is_empty() {
            bail!("the demonstrations table has no train-split rows");
        }
        if val_pairs.is_empty() {
            ctx.warn("no validation-split demonstrations: no validation loss per epoch");
        }
        if t1 + t2 > 0 {
            ctx.warn(format!("{} demonstrations were longer than the model's context and were truncated", t1 + t2));
        }
        ctx.metric("train_pairs", train_pairs.len() as f64);
        ctx.metric("val_pairs", val_pairs.len() as f64);

        let cfg = p.config(ctx.derive_seed("data"));
        let steps_per_epoch = train_pairs.len().div_ceil(p.batch_size).div_ceil(p.grad_accum) as u64;
        let scratch = ctx.scratch_dir()?.to_path_buf();
        let run_dir = RunDir { dir: &scratch, tokenizer: Some(&tok), format: Some(&format) };
        let mut obs =
            Observer::new(ctx.progress(), steps_per_epoch * p.epochs, ctx.step.as_str(), &run_dir.checkpoint())?;
        let report = train::sft(&lm, &train_pairs, &val_pairs, &cfg, Some(run_dir), &mut |e| obs.on_event(e));
        let report = report.map_err(|e| obs.explain(e))?;
        let log = obs.finish();
        if let Some(step) = report.resumed_from_step {
            ctx.warn(format!("resumed from the checkpoint of an interrupted run at step {step}"));
        }

        for (epoch, loss) in &report.val_losses {
            ctx.metric(format!("val_loss_epoch_{}", epoch + 1), *loss);
        }
        if let Some((_, loss)) = report.val_losses.last() {
            ctx.metric("val_loss", *loss);
        }
        if let Some((epoch, loss)) = report.val_losses.iter().min_by(|a, b| a.1.total_cmp(&b.1)) {
            ctx.metric("best_val_loss", *loss);
            ctx.metric("best_val_loss_epoch", (*epoch + 1) as f64);
        }
        if let Some(l) = report.final_loss {
            ctx.metric("final_train_loss", l);
        }

        // The final model, and every epoch's for selection downstream.
        let model_dir = ctx.out_path("model/config.json")?.parent().expect("model dir").to_path_buf();
        lm.save(&model_dir)?;
        tok.save_to_dir(&model_dir)?;
        format.save_to_dir(&model_dir)?;
        for dir in &report.epoch_dirs {
            let name = dir.file_name().expect("epoch dirs have names").to_string_lossy().into_owned();
            copy_model_files(dir, ctx.out_path(&format!("epochs/{name}/config.json"))?.parent().expect("dir"))?;
        }
        ctx.metric("epochs_kept", report.epoch_dirs.len() as f64);
        log.write(ctx)
    }
}
