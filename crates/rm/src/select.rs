//! `rm.select_sft`: choose the SFT epoch whose samples the reward model scores highest on
//! validation prompts, as the paper does (validation loss would pick the first epoch).

use anyhow::{Context, Result, bail};
use lineage::log::TrainLog;
use lineage::tables::{PROMPTS, TRAIN_LOG, select_prompts};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use model::bundle::{Bundle, score_pairs, with_eos};
use model::fsutil::copy_model_files;
use model::lm::{HeadInit, ScalarModel};
use model::train;
use serde::{Deserialize, Serialize};
use world::meta::parse_meta;

pub struct SelectSft;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectParams {
    /// Prompts to score on: this dataset and split (held out from SFT and RM training).
    pub dataset: String,
    pub split: String,
    pub max_prompts: usize,
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub batch_size: usize,
}

impl Default for SelectParams {
    fn default() -> Self {
        SelectParams {
            dataset: "ppo".into(),
            split: "validation".into(),
            max_prompts: 128,
            max_new_tokens: 48,
            temperature: 1.0,
            batch_size: 32,
        }
    }
}

impl Validate for SelectParams {
    fn validate(&self) -> Result<(), String> {
        if self.max_new_tokens == 0 || self.batch_size == 0 {
            return Err("max_new_tokens and batch_size must be at least 1".into());
        }
        Ok(())
    }
}

impl TypedStage for SelectSft {
    type Params = SelectParams;
    const NAME: &'static str = "rm.select_sft";
    const ABOUT: &'static str = "Choose the SFT epoch with the highest mean reward-model score on validation prompts.";
    const INPUTS: &'static [InputSpec] = &[
        InputSpec::one("sft", "An sft.sft artifact (its epochs/epoch-NNN/ models)."),
        InputSpec::one("rm", "A reward-model artifact (rm.rm)."),
        InputSpec::one("prompts", "A prompts table."),
    ];
    const OUTPUTS: &'static [TableSpec] = &[TRAIN_LOG];
    const USES_DEVICE: bool = true;
    const HEADLINE: Option<&'static str> = Some("selected_epoch");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }

    fn run(ctx: &mut StageContext, p: &SelectParams) -> Result<()> {
        let device = train::parse_device(&ctx.device)?;
        let sft_dir = ctx.input("sft")?.dir().to_path_buf();
        let mut candidates: Vec<(u64, std::path::PathBuf)> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(sft_dir.join("epochs")) {
            for e in rd {
                let path = e?.path();
                let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                if let Some(n) = name.strip_prefix("epoch-").and_then(|n| n.parse::<u64>().ok()) {
                    candidates.push((n, path));
                }
            }
        }
        candidates.sort();
        if candidates.is_empty() {
            ctx.warn("the SFT artifact keeps no per-epoch models: its final model is the only candidate");
            candidates.push((0, sft_dir.join("model")));
        }
        let rm_dir = ctx.input("rm")?.model_dir();
        let rm = ScalarModel::load(&rm_dir, HeadInit::File(rm_dir.join(model::hub::SCORE_FILE)), &device)
            .with_context(|| format!("loading the reward model in {}", rm_dir.display()))?
            .frozen()?;

        let splits: Vec<&str> = if p.split.is_empty() { vec![] } else { vec![p.split.as_str()] };
        let prompts = select_prompts(ctx.read_rows("prompts", &PROMPTS)?, &p.dataset, &splits, p.max_prompts);
        if prompts.is_empty() {
            bail!("no prompts of dataset {:?}, split {:?}", p.dataset, p.split);
        }
        let seeds: Vec<u64> = prompts.iter().map(|r| ctx.derive_seed(&format!("select/{}", r.prompt_id))).collect();
        let metas: Vec<_> = prompts.iter().map(|r| parse_meta(&r.meta).ok().flatten()).collect();

        let mut log = TrainLog::new();
        let mut best: Option<(f64, u64, std::path::PathBuf)> = None;
        for (epoch, dir) in &candidates {
            let b = Bundle::load(dir, &device).with_context(|| format!("loading {}", dir.display()))?;
            if b.tok.vocab_size() != rm.config().vocab_size {
                bail!("the SFT model and the reward model have different vocabularies");
            }
            let texts: Vec<&str> = prompts.iter().map(|r| r.text.as_str()).collect();
            let (enc, _) = b.encode_prompts(&texts, b.max_prompt_tokens(p.max_new_tokens))?;
            let cfg = b.sampling(p.max_new_tokens, p.temperature, 0, 1.0);
            let sampled = b.sample(&enc, &seeds, &cfg, p.batch_size, |_| {})?;
            let pairs: Vec<_> =
                enc.iter().zip(&sampled).map(|(pr, s)| (pr.clone(), with_eos(&s.generation.tokens, b.eos))).collect();
            let scores = score_pairs(&rm, &pairs, p.batch_size)?;
            let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len() as f64;
            log.record(*epoch, "rm_score", mean);
            let golds: Vec<f64> = metas
                .iter()
                .zip(&sampled)
                .filter_map(|(m, s)| m.as_ref().map(|m| world::judge(m, &s.text, s.ended_with_eos()).score))
                .collect();
            if !golds.is_empty() {
                log.record(*epoch, "gold_score", golds.iter().sum::<f64>() / golds.len() as f64);
            }
            let eos = sampled.iter().filter(|s| s.ended_with_eos()).count() as f64 / sampled.len() as f64;
            log.record(*epoch, "eos_rate", eos);
            ctx.metric(format!("rm_score_epoch_{epoch}"), mean);
            if best.as_ref().is_none_or(|(b, _, _)| mean > *b) {
                best = Some((mean, *epoch, dir.clone()));
            }
        }
        let (score, epoch, dir) = best.expect("at least one candidate");
        ctx.metric("selected_epoch", epoch as f64);
        ctx.metric("rm_score", score);
        if let Some(g) = log.rows().iter().find(|r| r.step == epoch as i64 && r.metric == "gold_score") {
            ctx.metric("gold_score", g.value);
        }
        copy_model_files(&dir, ctx.out_path("model/config.json")?.parent().expect("model dir"))?;
        log.write(ctx)
    }
}
