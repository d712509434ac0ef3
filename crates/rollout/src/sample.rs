//! `rollout.sample`: K responses per prompt from a model.

use anyhow::{Context, Result, bail};
use lineage::tables::{PROMPTS, SAMPLES, SampleRow, select_prompts};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use model::bundle::Bundle;
use model::generate::FinishReason;
use model::train;
use serde::{Deserialize, Serialize};

pub struct Sample;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleParams {
    /// Responses per prompt (the paper's labelers ranked 4 to 9).
    pub k: usize,
    /// Keep prompts of this `dataset` (`sft`, `rm`, `ppo`, `eval`); empty keeps all.
    pub dataset: String,
    /// Keep prompts of these splits; empty keeps all.
    pub splits: Vec<String>,
    /// At most this many prompts (the first by prompt id); 0 keeps all.
    pub max_prompts: usize,
    /// Which model of the artifact: `model` (its final model) or a sub-directory such as
    /// `epochs/epoch-002`.
    pub model_path: String,
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    /// Sequences decoded together.
    pub batch_size: usize,
}

impl Default for SampleParams {
    fn default() -> Self {
        SampleParams {
            k: 4,
            dataset: "rm".into(),
            splits: vec![],
            max_prompts: 0,
            model_path: "model".into(),
            max_new_tokens: 48,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            batch_size: 32,
        }
    }
}

impl Validate for SampleParams {
    fn validate(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.k) {
            return Err(format!("k = {} must be between 1 and 64", self.k));
        }
        if self.max_new_tokens == 0 || self.batch_size == 0 {
            return Err("max_new_tokens and batch_size must be at least 1".into());
        }
        if !(self.temperature >= 0.0 && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err("temperature must be >= 0 and top_p in (0, 1]".into());
        }
        if self.model_path.contains("..") {
            return Err("model_path must stay inside the artifact".into());
        }
        Ok(())
    }
}

/// The seed of sample `k` of a prompt.
pub fn sample_seed(ctx: &StageContext, prompt_id: &str, k: usize) -> u64 {
    ctx.derive_seed(&format!("sample/{prompt_id}/{k}"))
}

impl TypedStage for Sample {
    type Params = SampleParams;
    const NAME: &'static str = "rollout.sample";
    const ABOUT: &'static str = "Sample K responses per prompt from a model (batched, KV cache, per-sequence seeds).";
    const INPUTS: &'static [InputSpec] = &[
        InputSpec::one("model", "A model artifact (its `model/`, or `model_path`)."),
        InputSpec::one("prompts", "A prompts table."),
    ];
    const OUTPUTS: &'static [TableSpec] = &[SAMPLES];
    const USES_DEVICE: bool = true;
    const HEADLINE: Option<&'static str> = Some("eos_rate");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }

    fn run(ctx: &mut StageContext, p: &SampleParams) -> Result<()> {
        let dir = ctx.input("model")?.dir().join(&p.model_path);
        if !dir.join("config.json").is_file() {
            bail!("{} has no model (config.json): check `model_path`", dir.display());
        }
        let device = train::parse_device(&ctx.device)?;
        let bundle = Bundle::load(&dir, &device).with_context(|| format!("loading the model in {}", dir.display()))?;
        let splits: Vec<&str> = p.splits.iter().map(String::as_str).collect();
        let prompts = select_prompts(ctx.read_rows("prompts", &PROMPTS)?, &p.dataset, &splits, p.max_prompts);
        if prompts.is_empty() {
            bail!("no prompts of dataset {:?} and splits {:?} in the prompts table", p.dataset, p.splits);
        }

        // Every (prompt, k) is one sequence with its own seed.
        let (encoded, truncated) = bundle.encode_prompts(
            &prompts.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
            bundle.max_prompt_tokens(p.max_new_tokens),
        )?;
        if truncated > 0 {
            ctx.warn(format!("{truncated} prompts were longer than the context allows and were cut from the left"));
        }
        let mut seqs = Vec::new();
        let mut seeds = Vec::new();
        for (i, r) in prompts.iter().enumerate() {
            for k in 0..p.k {
                seqs.push(encoded[i].clone());
                seeds.push(sample_seed(ctx, &r.prompt_id, k));
            }
        }
        let cfg = bundle.sampling(p.max_new_tokens, p.temperature, p.top_k, p.top_p);
        let bar = ctx.progress().bar(seqs.len() as u64, format!("{} sampling", ctx.step));
        let sampled = bundle.sample(&seqs, &seeds, &cfg, p.batch_size, |n| bar.inc(n as u64))?;
        bar.finish_and_clear();

        let mut rows = Vec::with_capacity(sampled.len());
        for (i, s) in sampled.into_iter().enumerate() {
            let r = &prompts[i / p.k];
            rows.push(SampleRow {
                prompt_id: r.prompt_id.clone(),
                prompt: r.text.clone(),
                sample_idx: (i % p.k) as i32,
                response: s.text,
                finish_reason: match s.generation.finish {
                    FinishReason::Eos => "eos".into(),
                    FinishReason::Length => "length".into(),
                },
                response_tokens: s.generation.tokens,
                logprobs: s.generation.logprobs,
                seed: seeds[i],
                split: r.split.clone(),
                family: r.family.clone(),
                meta: r.meta.clone(),
            });
        }
        let n = rows.len() as f64;
        let eos = rows.iter().filter(|r| r.finish_reason == "eos").count() as f64;
        let len: f64 = rows.iter().map(|r| r.response_tokens.len() as f64).sum();
        let distinct = distinct_fraction(&rows, p.k);
        ctx.metric("prompts", prompts.len() as f64);
        ctx.metric("samples", n);
        ctx.metric("eos_rate", eos / n);
        ctx.metric("mean_response_tokens", len / n);
        ctx.metric("distinct_fraction", distinct);
        if p.k > 1 && distinct < 0.5 {
            ctx.warn(format!(
                "only {:.0}% of a prompt's samples are distinct: rankings will be mostly ties (raise the temperature?)",
                distinct * 100.0
            ));
        }
        ctx.write_rows(&SAMPLES, &rows)
    }
}

/// The mean fraction of a prompt's K responses that are distinct texts.
fn distinct_fraction(rows: &[SampleRow], k: usize) -> f64 {
    let groups = rows.chunks(k);
    let n = groups.len().max(1) as f64;
    rows.chunks(k)
        .map(|g| {
            let set: std::collections::BTreeSet<&str> = g.iter().map(|r| r.response.as_str()).collect();
            set.len() as f64 / g.len() as f64
        })
        .sum::<f64>()
        / n
}
