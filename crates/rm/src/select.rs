//! `rm.select_sft`: choose the SFT epoch whose samples the reward model scores highest on
//! validation prompts, as the paper does (validation loss would pick the first epoch).

use anyhow::{Context, Result, bail};
use lineage::log::TrainLog;
use lineage::tables::{PROMPTS, TRAIN_LOG, select_prompts};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use model::bundle::{Bundle, score_pairs, with_eos};
use model::fsutil::copy_model_files;
use model::lm::ScalarModel;
use model::tokenizer::Tokenizer;
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
        // The candidates are one SFT run's epochs, which share its tokenizer.
        let sft_tok = Tokenizer::from_dir(&candidates[0].1)?;
        let rm = ScalarModel::load_reward(&rm_dir, &sft_tok, &device)
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
        // (epoch, model directory, mean RM score, per-prompt scores)
        let mut scored: Vec<(u64, &std::path::PathBuf, f64, Vec<f32>)> = Vec::new();
        for (epoch, dir) in &candidates {
            let b = Bundle::load(dir, &device).with_context(|| format!("loading {}", dir.display()))?;
            if let Some(d) = b.tok.id_mismatch(&sft_tok) {
                bail!("{} has another tokenizer than {} ({d})", dir.display(), candidates[0].1.display());
            }
            let texts: Vec<&str> = prompts.iter().map(|r| r.text.as_str()).collect();
            let (enc, _) = b.encode_prompts(&texts, b.max_prompt_tokens(p.max_new_tokens))?;
            let cfg = b.sampling(p.max_new_tokens, p.temperature, 0, 1.0);
            let sampled = b.sample(&enc, &seeds, &cfg, p.batch_size, |_| {})?;
            let pairs: Vec<_> =
                enc.iter().zip(&sampled).map(|(pr, s)| (pr.clone(), with_eos(&s.generation.tokens, b.eos))).collect();
            let scores = score_pairs(&rm, &pairs, p.batch_size, |_| {})?;
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
            scored.push((*epoch, dir, mean, scores));
        }
        // The highest mean; the earliest epoch on a tie.
        let best = scored.iter().fold(&scored[0], |b, e| if e.2 > b.2 { e } else { b });
        let (epoch, dir, score, best_scores) = (best.0, best.1, best.2, &best.3);
        ctx.metric("selected_epoch", epoch as f64);
        ctx.metric("rm_score", score);
        // Every epoch samples the same prompts with the same seeds, so the pick is judged by paired
        // differences: epochs within two standard errors of the best are not told apart by this RM.
        let close: Vec<u64> = scored
            .iter()
            .filter(|(e, _, _, s)| *e != epoch && paired_gap(best_scores, s).is_some_and(|(gap, se)| gap < 2.0 * se))
            .map(|(e, ..)| *e)
            .collect();
        ctx.metric("epochs_within_2se", close.len() as f64);
        if !close.is_empty() {
            let list: Vec<String> = close.iter().map(u64::to_string).collect();
            ctx.warn(format!(
                "epoch {epoch} is the RM's pick, but epochs {} score within two standard errors of it on {} prompts: \
                 more prompts (max_prompts) or a stronger reward model would tell them apart",
                list.join(", "),
                best_scores.len()
            ));
        }
        if let Some(g) = log.rows().iter().find(|r| r.step == epoch as i64 && r.metric == "gold_score") {
            ctx.metric("gold_score", g.value);
        }
        copy_model_files(dir, ctx.out_path("model/config.json")?.parent().expect("model dir"))?;
        log.write(ctx)
    }
}

/// Mean of `a - b` over paired samples and its standard error (None with fewer than two pairs).
fn paired_gap(a: &[f32], b: &[f32]) -> Option<(f64, f64)> {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (*x - *y) as f64).collect();
    let n = d.len() as f64;
    if d.len() < 2 {
        return None;
    }
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, (var / n).sqrt()))
}

#[cfg(test)]
mod tests {
    use super::paired_gap;

    #[test]
    fn paired_gap_is_the_mean_difference_and_its_standard_error() {
        // Differences 1, 2, 3: mean 2, sample variance 1, standard error 1/sqrt(3).
        let (gap, se) = paired_gap(&[2.0, 4.0, 6.0], &[1.0, 2.0, 3.0]).unwrap();
        assert!((gap - 2.0).abs() < 1e-12 && (se - 1.0 / 3f64.sqrt()).abs() < 1e-12, "{gap} {se}");
        // A constant shift has no spread: any gap is told apart.
        assert_eq!(paired_gap(&[1.5, 2.5], &[1.0, 2.0]).unwrap(), (0.5, 0.0));
        assert!(paired_gap(&[1.0], &[0.0]).is_none());
    }
}
