//! `sft.pretrain`: a new model of a named size, trained with the next-token
//! loss on the `pretrain_text` table -> a base model artifact (`model/`), the
//! per-step `train_log`, and held-out perplexity.

use anyhow::{Context, Result, bail};
use lineage::tables::{PRETRAIN_TEXT, PretrainTextRow, TIMING, TRAIN_LOG};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use model::lm::CausalLm;
use model::tokenizer::{InstructionFormat, Tokenizer};
use model::train::{self, AdamWConfig, PretrainConfig, RunDir, TrainConfig};
use serde::{Deserialize, Serialize};

use crate::common::{ModelSpec, Observer};

pub struct Pretrain;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainParams {
    pub model: ModelSpec,
    /// Optimizer updates.
    pub steps: u64,
    /// Tokens per training window.
    pub seq_len: usize,
    /// Windows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per update.
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// The cosine schedule ends at `min_lr_ratio * lr`.
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub dropout: f64,
    /// A resumable checkpoint every this many updates.
    pub checkpoint_every: u64,
}

impl Default for PretrainParams {
    fn default() -> Self {
        PretrainParams {
            model: ModelSpec::default(),
            steps: 300,
            seq_len: 128,
            batch_size: 16,
            grad_accum: 1,
            lr: 2e-3,
            warmup_steps: 20,
            min_lr_ratio: 0.1,
            weight_decay: 0.1,
            grad_clip: 1.0,
            dropout: 0.0,
            checkpoint_every: 50,
        }
    }
}

impl Validate for PretrainParams {
    fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        if self.seq_len + 1 > self.model.max_position_embeddings {
            return Err(format!(
                "seq_len = {} needs model.max_position_embeddings of at least {}",
                self.seq_len,
                self.seq_len + 1
            ));
        }
        if self.steps == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return Err("steps, batch_size and grad_accum must be positive".into());
        }
        self.train_config(0).validate().map_err(|e| e.to_string())
    }
}

impl PretrainParams {
    fn train_config(&self, seed: u64) -> TrainConfig {
        TrainConfig {
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
            checkpoint_every: self.checkpoint_every,
        }
    }
}

impl TypedStage for Pretrain {
    type Params = PretrainParams;
    const NAME: &'static str = "sft.pretrain";
    const ABOUT: &'static str = "Pretrain a new model of a named size on a pretrain_text table (next-token loss).";
    const INPUTS: &'static [InputSpec] = &[
        InputSpec::one("text", "A pretrain_text table (train split trains, validation split measures perplexity)."),
        InputSpec::one("tokenizer", "A tokenizer artifact (model/tokenizer.json)."),
    ];
    const OUTPUTS: &'static [TableSpec] = &[TRAIN_LOG, TIMING];
    const USES_DEVICE: bool = true;
    const HEADLINE: Option<&'static str> = Some("val_loss");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }

    fn run(ctx: &mut StageContext, p: &PretrainParams) -> Result<()> {
        let tok = Tokenizer::from_dir(&ctx.input("tokenizer")?.model_dir())?;
        let format = InstructionFormat::default();
        format.validate(&tok).context("the tokenizer lacks the instruction format's special tokens")?;
        let eos = format.eos_id(&tok)?;
        let docs: Vec<PretrainTextRow> = ctx.read_rows("text", &PRETRAIN_TEXT)?;
        let texts = |split: &str| docs.iter().filter(|d| d.split == split).map(|d| d.text.as_str()).collect::<Vec<_>>();
        let train_stream = tok.encode_documents(&texts("train"), eos)?;
        let val_stream = tok.encode_documents(&texts("validation"), eos)?;
        if train_stream.len() <= p.seq_len * p.batch_size {
            bail!(
                "the train split has {} tokens, less than one batch of {} windows of {} tokens; lower seq_len or batch_size",
                train_stream.len(),
                p.batch_size,
                p.seq_len
            );
        }

        let mut cfg = p.model.config(tok.vocab_size()).map_err(anyhow::Error::msg)?;
        cfg.eos_token_id = Some(model::config::EosTokenId::One(eos));
        cfg.pad_token_id = Some(eos);
        let device = train::parse_device(&ctx.device)?;
        let lm = CausalLm::init(&cfg, ctx.derive_seed("init"), &device)?;
        ctx.metric("parameters", cfg.num_parameters() as f64);
        ctx.metric("train_stream_tokens", train_stream.len() as f64);

        let pcfg =
            PretrainConfig { train: p.train_config(ctx.derive_seed("data")), seq_len: p.seq_len, steps: p.steps };
        let scratch = ctx.scratch_dir()?.to_path_buf();
        let run_dir = RunDir { dir: &scratch, tokenizer: Some(&tok), format: Some(&format) };
        let mut obs = Observer::new(ctx.progress(), p.steps, ctx.step.as_str(), &run_dir.checkpoint())?;
        let report = train::pretrain(&lm, &train_stream, &pcfg, Some(run_dir), &mut |e| obs.on_event(e));
        let report = report.map_err(|e| obs.explain(e))?;
        let log = obs.finish();
        if let Some(step) = report.resumed_from_step {
            ctx.warn(format!("resumed from the checkpoint of an interrupted run at step {step}"));
        }

        let val = train::eval_stream(&lm, &val_stream, p.seq_len, p.batch_size)?;
        match val {
            Some(v) => {
                ctx.metric("val_loss", v);
                ctx.metric("val_ppl", v.exp());
            }
            None => ctx.warn("the validation split is shorter than one window: no held-out perplexity"),
        }
        if let Some(l) = report.final_loss {
            ctx.metric("final_loss", l);
        }
        ctx.metric("steps", report.steps as f64);
        ctx.metric("trained_tokens", (p.steps as usize * p.batch_size * p.grad_accum * p.seq_len) as f64);

        let dir = ctx.out_path("model/config.json")?.parent().expect("model dir").to_path_buf();
        lm.save(&dir)?;
        tok.save_to_dir(&dir)?;
        format.save_to_dir(&dir)?;
        log.write(ctx)
    }
}
