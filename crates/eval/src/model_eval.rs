//! `eval.model`: one model's evaluation. It answers every held-out test
//! prompt once (the same seed per prompt for every model, so differences
//! between models are not sampling luck), answers the honesty and
//! provocative prompts a second time with an instruction added, and measures
//! what the paper measures: helpfulness (Likert, gold score, metadata),
//! honesty, harmlessness, and the alignment tax (perplexity on held-out
//! pretraining text, accuracy on closed benchmarks).
//!
//! Win rates need two models and so are computed by `eval.report`, from the
//! `samples` table this stage writes.
//!
//! With `best_of = n` it answers each prompt with the best of n samples (the
//! first is the one every model draws), at a KL from the model of at most
//! log n - (n-1)/n nats, the budget PPO spends to move along the same path:
//! - chosen by the gold judge (`select = "gold"`, kind `best_of`), no policy
//!   but a ceiling: what a policy that chose among the model's own samples as
//!   well as the judge would win;
//! - chosen by a reward model (`select = "rm"`, kind `best_of_rm`, with a
//!   `reward` input): a policy that needs no RL, WebGPT's best-of-n and the
//!   selection step of rejection-sampling fine-tuning, and the yardstick for
//!   what PPO makes of the same reward model.

use anyhow::{Context, Result, bail};
use lineage::tables::{
    BENCHMARKS, BenchmarkRow, DEMONSTRATIONS, DemonstrationRow, METRICS, MetricRow, PRETRAIN_TEXT, PROMPTS,
    PretrainTextRow, PromptRow, SAMPLES, SampleRow,
};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use model::batch::{Batch, PAD_FILL};
use model::bundle::{score_pairs, with_eos};
use model::generate::{FinishReason, SamplingConfig};
use model::lm::{CausalLm, ScalarModel};
use model::tokenizer::{InstructionFormat, Tokenizer};
use model::train;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use world::{Response, TaskMeta};

use crate::metrics::{self, Bootstrap, Item, Measure};

pub struct EvalModel;

/// The kinds of model the report knows how to compare. `ppo_oracle` is PPO with the gold judge as
/// its reward (`ppo.oracle = true`): the control that tells a weak reward model from a weak PPO;
/// `ppo_null` is PPO with a random reward (`ppo.random_reward = true`): what PPO's noise alone does.
/// `best_of` is a model's best of `best_of` samples by the gold judge (a ceiling, not a policy);
/// `best_of_rm` its best by a reward model (a policy).
pub const KINDS: [&str; 10] =
    ["base", "base_few_shot", "sft", "ppo", "ppo_ptx", "ppo_oracle", "ppo_null", "best_of", "best_of_rm", "other"];

/// Who chooses among a prompt's `best_of` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Select {
    /// The world's gold judge (a ceiling; kind `best_of`).
    Gold,
    /// The `reward` input's reward model (a policy; kind `best_of_rm`).
    Rm,
}

impl Select {
    /// The kind a best-of-n evaluation with this selector must be labelled with.
    pub fn kind(self) -> &'static str {
        match self {
            Select::Gold => "best_of",
            Select::Rm => "best_of_rm",
        }
    }

    /// Its name in a pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            Select::Gold => "gold",
            Select::Rm => "rm",
        }
    }
}

/// Parameters of `eval.model`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalModelParams {
    /// What the model is: one of [`KINDS`] (a label for the report).
    pub kind: String,
    /// Its size label (`tiny`, `small`, ...), to pair models of one size.
    pub size: String,
    /// Demonstrations (train split) prepended to every prompt in the
    /// instruction format: the paper's "GPT-3 prompted" baseline.
    pub few_shot: usize,
    /// Test prompts to answer (0 = all), the first by prompt id.
    pub max_prompts: usize,
    pub max_new_tokens: usize,
    /// Sampling temperature. The paper samples at 1 (as PPO's rollouts do,
    /// so the KL and reward curves describe the same distribution).
    pub temperature: f32,
    pub top_p: f32,
    /// Sequences per forward pass (generation and scoring). A decode step of these models is
    /// mostly fixed cost, so wider batches answer faster: SFT small's evaluation took 19.5 s at 16
    /// and 13.4 s at 64 (base small 35.8 s and 21.3 s), with the same samples, since a sequence's
    /// tokens do not depend on its batch.
    pub batch_size: usize,
    /// Validation documents for perplexity (0 = all).
    pub ppl_max_docs: usize,
    /// Window length for perplexity, in tokens (capped by the model's context).
    pub ppl_seq_len: usize,
    /// Benchmark items per benchmark task (0 = all).
    pub bench_items_per_task: usize,
    /// Bootstrap resamples for the 95% intervals.
    pub bootstrap: usize,
    /// Samples per prompt, of which `select` keeps the best (1: the model's own sample; more needs
    /// kind = "best_of" with the world's task metadata, or kind = "best_of_rm" with a reward model).
    pub best_of: usize,
    /// Who keeps the best of `best_of` samples: `gold` (the judge) or `rm` (the `reward` input).
    pub select: Select,
}

impl Default for EvalModelParams {
    fn default() -> Self {
        EvalModelParams {
            kind: "other".into(),
            size: String::new(),
            few_shot: 0,
            max_prompts: 0,
            max_new_tokens: 64,
            temperature: 1.0,
            top_p: 1.0,
            batch_size: 64,
            ppl_max_docs: 0,
            ppl_seq_len: 128,
            bench_items_per_task: 0,
            bootstrap: 1000,
            best_of: 1,
            select: Select::Gold,
        }
    }
}

impl Validate for EvalModelParams {
    fn validate(&self) -> Result<(), String> {
        if !KINDS.contains(&self.kind.as_str()) {
            return Err(format!("kind = \"{}\" is not one of {}", self.kind, KINDS.join(", ")));
        }
        if !(1..=64).contains(&self.best_of) {
            return Err(format!("best_of = {} must be between 1 and 64", self.best_of));
        }
        let best_kind = matches!(self.kind.as_str(), "best_of" | "best_of_rm");
        if best_kind != (self.best_of > 1) || (best_kind && self.kind != self.select.kind()) {
            return Err(format!(
                "kind = \"{}\" with best_of = {} and select = \"{}\": best_of > 1 goes with kind \"best_of\" \
                 (select = \"gold\") or \"best_of_rm\" (select = \"rm\"), and only with them, so a selection is never \
                 reported as the model itself and a ceiling never as a policy",
                self.kind,
                self.best_of,
                self.select.name()
            ));
        }
        if self.kind == "base_few_shot" && self.few_shot == 0 {
            return Err("kind = \"base_few_shot\" needs few_shot > 0 (and a `demonstrations` input)".into());
        }
        if self.max_new_tokens == 0 || self.batch_size == 0 || self.ppl_seq_len < 2 {
            return Err("max_new_tokens and batch_size must be positive, ppl_seq_len at least 2".into());
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!(
                "temperature = {} must be >= 0 and top_p = {} in (0, 1]",
                self.temperature, self.top_p
            ));
        }
        Ok(())
    }
}

/// One sequence to generate: a test prompt, or its instructed variant (id
/// `<prompt_id>#instructed` or `#respectful`).
struct Job {
    id: String,
    text: String,
    family: String,
    split: String,
    meta_json: String,
    meta: Option<TaskMeta>,
    /// `None` for the prompt as written.
    variant: Option<&'static str>,
}

impl TypedStage for EvalModel {
    type Params = EvalModelParams;
    const NAME: &'static str = "eval.model";
    const ABOUT: &'static str =
        "One model's evaluation: a response per test prompt, helpfulness, honesty, harmlessness, alignment tax.";
    const INPUTS: &'static [InputSpec] = &[
        InputSpec::one("model", "A model artifact (model/): base, SFT or PPO."),
        InputSpec::one("prompts", "A prompts table: the test split is answered."),
        InputSpec::one("text", "A pretrain_text table: the validation split measures perplexity."),
        InputSpec::one("benchmarks", "A benchmarks table (closed multiple-choice items)."),
        InputSpec::optional("demonstrations", "A demonstrations table, for few_shot > 0 (train split)."),
        InputSpec::optional("reward", "A reward model artifact (rm.rm), for best_of > 1 with select = \"rm\"."),
    ];
    const OUTPUTS: &'static [TableSpec] = &[SAMPLES, METRICS];
    const USES_DEVICE: bool = true;
    const HEADLINE: Option<&'static str> = Some("likert");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }

    fn run(ctx: &mut StageContext, p: &EvalModelParams) -> Result<()> {
        let model_input = ctx.input("model")?;
        let model_label = model_input.label.clone();
        let dir = model_input.model_dir();
        let tok = Tokenizer::from_dir(&dir)?;
        let format = InstructionFormat::load_from_dir(&dir)?.unwrap_or_default();
        let eos = format.eos_id(&tok)?;
        let device = train::parse_device(&ctx.device)?;
        let lm = CausalLm::load(&dir, &device)?.frozen()?;
        let max_len = lm.config().max_position_embeddings;
        if p.max_new_tokens + 8 > max_len {
            bail!(
                "max_new_tokens = {} leaves no room for a prompt in the model's context of {max_len}",
                p.max_new_tokens
            );
        }
        let n_params = lm.params().num_elements() as i64;

        // The prompts: the test split, and an instructed variant of each
        // honesty and provocative prompt.
        let mut prompts: Vec<PromptRow> =
            ctx.read_rows::<PromptRow>("prompts", &PROMPTS)?.into_iter().filter(|r| r.split == "test").collect();
        if prompts.is_empty() {
            bail!("the prompts table has no test-split rows: nothing to evaluate on");
        }
        prompts.sort_by(|a, b| a.prompt_id.cmp(&b.prompt_id));
        if p.max_prompts > 0 {
            prompts.truncate(p.max_prompts);
        }
        let jobs = jobs(&prompts);
        let unjudged = jobs.iter().filter(|j| j.meta.is_none()).count();
        if unjudged > 0 && p.best_of > 1 && p.select == Select::Gold {
            bail!("best_of = {} needs the gold judge, but {unjudged} test prompts have no world metadata", p.best_of);
        }
        let reward = match (p.best_of > 1 && p.select == Select::Rm, ctx.optional_input("reward")) {
            (true, Some(input)) => {
                let rm_dir = input.model_dir();
                let rm = ScalarModel::load_reward(&rm_dir, &tok, &device)
                    .with_context(|| format!("loading the reward model in {}", rm_dir.display()))?;
                Some(rm.frozen()?)
            }
            (true, None) => bail!("select = \"rm\" needs a `reward` input: connect a reward model (rm.rm)"),
            (false, Some(_)) => {
                bail!(
                    "a `reward` input is connected but unused: it chooses among samples only with best_of > 1 and select = \"rm\""
                )
            }
            (false, None) => None,
        };
        if unjudged > 0 {
            ctx.warn(format!("{unjudged} test prompts have no world metadata: judge-based metrics leave them out"));
        }

        let prefix = few_shot_prefix(ctx, p, &format)?;
        let samples = generate(ctx, p, &lm, &tok, &format, eos, &prefix, &jobs, reward.as_ref())?;

        // Metrics of the responses.
        let boot = Bootstrap { resamples: p.bootstrap, seed: ctx.derive_seed("bootstrap") };
        let item = |j: &Job, s: &SampleRow| Item {
            prompt_id: j.id.clone(),
            meta: j.meta.clone(),
            response: Response::new(s.response.clone(), s.finish_reason == "eos"),
        };
        let all: Vec<Item> = jobs.iter().zip(&samples).map(|(j, s)| item(j, s)).collect();
        let plain: Vec<Item> =
            jobs.iter().zip(&all).filter(|(j, _)| j.variant.is_none()).map(|(_, i)| i.clone()).collect();
        let mut measures = metrics::helpfulness(&plain, &boot);
        measures.extend(metrics::honesty(&all, &boot));
        measures.extend(metrics::harmlessness(&all, &boot));

        // The alignment tax.
        measures.extend(perplexity(ctx, p, &lm, &tok, eos)?);
        measures.extend(benchmarks(ctx, p, &lm, &tok, &boot)?);

        let rows: Vec<MetricRow> = measures
            .iter()
            .map(|m| MetricRow {
                model: model_label.clone(),
                kind: p.kind.clone(),
                size: p.size.clone(),
                params: n_params,
                metric: m.metric.clone(),
                value: m.value,
                lo: m.lo,
                hi: m.hi,
                n: m.n as i64,
                // Empty: this artifact. Its own key would change with every code edit and so defeat
                // early cutoff for the report; eval.report fills in the key of the input it read.
                source: String::new(),
            })
            .collect();
        for m in &measures {
            ctx.metric(m.metric.clone(), m.value);
        }
        ctx.metric("prompts", plain.len() as f64);
        ctx.metric("params", n_params as f64);
        ctx.write_rows(&SAMPLES, &samples)?;
        ctx.write_rows(&METRICS, &rows)
    }
}

fn jobs(prompts: &[PromptRow]) -> Vec<Job> {
    let mut out = Vec::new();
    for r in prompts {
        let meta = TaskMeta::from_json(&r.meta).ok();
        let variant = meta.as_ref().and_then(metrics::instructed_variant);
        out.push(Job {
            id: r.prompt_id.clone(),
            text: r.text.clone(),
            family: r.family.clone(),
            split: r.split.clone(),
            meta_json: r.meta.clone(),
            meta,
            variant: None,
        });
        if let Some((suffix, text, m)) = variant {
            out.push(Job {
                id: format!("{}#{suffix}", r.prompt_id),
                text,
                family: r.family.clone(),
                split: r.split.clone(),
                meta_json: m.to_json(),
                meta: Some(m),
                variant: Some(suffix),
            });
        }
    }
    out
}

/// `few_shot` train-split demonstrations in the instruction format, chosen
/// by the step's seed and shortest first among them, so they fit the context.
fn few_shot_prefix(ctx: &StageContext, p: &EvalModelParams, format: &InstructionFormat) -> Result<String> {
    if p.few_shot == 0 {
        return Ok(String::new());
    }
    let Some(input) = ctx.optional_input("demonstrations") else {
        bail!("few_shot = {} needs a `demonstrations` input", p.few_shot);
    };
    let mut demos: Vec<DemonstrationRow> = input
        .read_rows::<DemonstrationRow>(&DEMONSTRATIONS)
        .context("reading input `demonstrations`")?
        .into_iter()
        .filter(|d| d.split == "train")
        .collect();
    if demos.len() < p.few_shot {
        bail!("few_shot = {} but the demonstrations table has {} train-split rows", p.few_shot, demos.len());
    }
    demos.sort_by(|a, b| a.prompt_id.cmp(&b.prompt_id));
    demos.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(ctx.derive_seed("few_shot")));
    // From a larger random pool, the shortest: a tiny context holds few.
    let mut pool: Vec<DemonstrationRow> = demos.into_iter().take(p.few_shot * 4).collect();
    pool.sort_by_key(|d| (d.prompt.len() + d.response.len(), d.prompt_id.clone()));
    Ok(pool
        .iter()
        .take(p.few_shot)
        .map(|d| format!("{}{}{}", format.prompt_text(&d.prompt), d.response, format.eos_token))
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn generate(
    ctx: &mut StageContext,
    p: &EvalModelParams,
    lm: &CausalLm,
    tok: &Tokenizer,
    format: &InstructionFormat,
    eos: u32,
    prefix: &str,
    jobs: &[Job],
    reward: Option<&ScalarModel>,
) -> Result<Vec<SampleRow>> {
    let max_prompt = lm.config().max_position_embeddings - p.max_new_tokens;
    let mut truncated = 0;
    let mut encoded = Vec::with_capacity(jobs.len());
    for j in jobs {
        let mut ids = tok.encode(&format!("{prefix}{}", format.prompt_text(&j.text)))?;
        if ids.len() > max_prompt {
            // Keep the end: the question and the cue to answer.
            ids.drain(..ids.len() - max_prompt);
            truncated += 1;
        }
        encoded.push(ids);
    }
    if truncated > 0 {
        ctx.warn(format!("{truncated} prompts were longer than the context allows and lost their beginning"));
    }
    // Every model draws the same seed for the same prompt; with best_of, draw k > 0 its own.
    let n = p.best_of.max(1);
    let draws: Vec<(usize, usize)> = (0..jobs.len()).flat_map(|j| (0..n).map(move |k| (j, k))).collect();
    let seeds: Vec<u64> = draws
        .iter()
        .map(|&(j, k)| match k {
            0 => ctx.derive_seed(&format!("sample/{}", jobs[j].id)),
            k => ctx.derive_seed(&format!("sample/{}/{k}", jobs[j].id)),
        })
        .collect();
    let cfg = SamplingConfig {
        max_new_tokens: p.max_new_tokens,
        temperature: p.temperature,
        top_k: 0,
        top_p: p.top_p,
        eos_ids: vec![eos],
        pad_id: PAD_FILL,
    };
    // Batches of similar length waste less on padding; a sequence's tokens do
    // not depend on its batch (see model::generate), so the order is free.
    let mut order: Vec<usize> = (0..draws.len()).collect();
    order.sort_by_key(|&i| (encoded[draws[i].0].len(), i));
    let bar = ctx.progress().bar(draws.len() as u64, format!("{} answering", ctx.step));
    let mut gens = vec![None; draws.len()];
    for chunk in order.chunks(p.batch_size) {
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|&i| encoded[draws[i].0].clone()).collect();
        let s: Vec<u64> = chunk.iter().map(|&i| seeds[i]).collect();
        for (&i, g) in chunk.iter().zip(lm.generate(&prompts, &s, &cfg)?) {
            gens[i] = Some(g);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let rows: Vec<SampleRow> = draws
        .iter()
        .zip(gens)
        .zip(seeds)
        .map(|((&(j, k), g), seed)| {
            let (j, g) = (&jobs[j], g.expect("every draw was generated"));
            Ok(SampleRow {
                prompt_id: j.id.clone(),
                prompt: j.text.clone(),
                sample_idx: k as i32,
                response: format.decode_response(tok, &g.tokens)?,
                response_tokens: g.tokens,
                logprobs: g.logprobs,
                finish_reason: match g.finish {
                    FinishReason::Eos => "eos",
                    FinishReason::Length => "length",
                }
                .into(),
                seed,
                split: j.split.clone(),
                family: j.family.clone(),
                meta: j.meta_json.clone(),
            })
        })
        .collect::<Result<_>>()?;
    if n == 1 {
        return Ok(rows);
    }
    let scores = match reward {
        None => judge_scores(jobs, &rows, n),
        Some(rm) => {
            let pairs: Vec<(Vec<u32>, Vec<u32>)> = draws
                .iter()
                .zip(&rows)
                .map(|(&(j, _), r)| {
                    scored_pair(&encoded[j], &r.response_tokens, eos, rm.config().max_position_embeddings)
                })
                .collect();
            let bar = ctx.progress().bar(pairs.len() as u64, format!("{} scoring", ctx.step));
            let scores = score_pairs(rm, &pairs, p.batch_size, |n| bar.inc(n as u64))?;
            bar.finish_and_clear();
            scores.into_iter().map(f64::from).collect()
        }
    };
    Ok(keep_best(&rows, n, &scores))
}

/// A prompt and response as the reward model reads them: the response ending with EOS (as in
/// training), the prompt cut from the left when the pair is longer than the model's context.
fn scored_pair(prompt: &[u32], response: &[u32], eos: u32, context: usize) -> (Vec<u32>, Vec<u32>) {
    let mut response = with_eos(response, eos);
    response.truncate(context.saturating_sub(1)); // room for at least one prompt token
    let keep = prompt.len().min(context - response.len());
    (prompt[prompt.len() - keep..].to_vec(), response)
}

/// The gold judge's score of every row; rows come in consecutive groups of `n` per job.
fn judge_scores(jobs: &[Job], rows: &[SampleRow], n: usize) -> Vec<f64> {
    jobs.iter()
        .zip(rows.chunks(n))
        .flat_map(|(j, group)| {
            let meta = j.meta.as_ref().expect("best_of checked that every prompt has metadata");
            group.iter().map(move |r| world::judge(meta, &r.response, r.finish_reason == "eos").score)
        })
        .collect()
}

/// Of each consecutive group of `n` rows, the one with the highest score (the first of equals), as
/// its prompt's one answer (`sample_idx` 0, as the report reads it; its `seed` tells which draw).
fn keep_best(rows: &[SampleRow], n: usize, scores: &[f64]) -> Vec<SampleRow> {
    assert_eq!(rows.len(), scores.len(), "one score per row");
    rows.chunks(n)
        .zip(scores.chunks(n))
        .map(|(group, s)| {
            // A NaN (a broken score) never wins over a number.
            let better = |i: usize, b: usize| s[i] > s[b] || (s[b].is_nan() && !s[i].is_nan());
            let best = (0..s.len()).fold(0, |b, i| if better(i, b) { i } else { b });
            SampleRow { sample_idx: 0, ..group[best].clone() }
        })
        .collect()
}

/// `pretrain_ppl`: perplexity on the validation split of the pretraining text.
fn perplexity(
    ctx: &mut StageContext,
    p: &EvalModelParams,
    lm: &CausalLm,
    tok: &Tokenizer,
    eos: u32,
) -> Result<Vec<Measure>> {
    let mut docs: Vec<PretrainTextRow> = ctx
        .read_rows::<PretrainTextRow>("text", &PRETRAIN_TEXT)?
        .into_iter()
        .filter(|r| r.split == "validation")
        .collect();
    docs.sort_by(|a, b| a.doc_id.cmp(&b.doc_id));
    if p.ppl_max_docs > 0 {
        docs.truncate(p.ppl_max_docs);
    }
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let tokens = tok.encode_documents(&texts, eos)?;
    let seq_len = p.ppl_seq_len.min(lm.config().max_position_embeddings - 1);
    match train::eval_stream(lm, &tokens, seq_len, p.batch_size)? {
        Some(nll) => Ok(vec![Measure::point("pretrain_ppl", nll.exp(), tokens.len())]),
        None => {
            ctx.warn(format!(
                "the validation text ({} tokens) is shorter than one window of {seq_len}: no perplexity",
                tokens.len()
            ));
            Ok(vec![])
        }
    }
}

/// `benchmark_acc` (and `benchmark_acc_<task>`): the share of items where the
/// gold choice has the highest summed log-probability as a continuation of
/// the context; `benchmark_acc_norm` the same with each choice's log-probability
/// divided by its length in characters (lm-evaluation-harness's `acc_norm`),
/// which does not favour short choices.
fn benchmarks(
    ctx: &mut StageContext,
    p: &EvalModelParams,
    lm: &CausalLm,
    tok: &Tokenizer,
    boot: &Bootstrap,
) -> Result<Vec<Measure>> {
    let rows: Vec<BenchmarkRow> = ctx.read_rows("benchmarks", &BENCHMARKS)?;
    let mut per_task: std::collections::BTreeMap<String, usize> = Default::default();
    let items: Vec<&BenchmarkRow> = rows
        .iter()
        .filter(|r| {
            let n = per_task.entry(r.task.clone()).or_default();
            *n += 1;
            p.bench_items_per_task == 0 || *n <= p.bench_items_per_task
        })
        .collect();
    let max_len = lm.config().max_position_embeddings;
    // (item, choice) -> (context ids, choice ids, choice characters)
    let mut pairs: Vec<(usize, Vec<u32>, Vec<u32>, usize)> = Vec::new();
    for (k, item) in items.iter().enumerate() {
        let context = tok.encode(&item.context)?;
        if context.is_empty() {
            bail!("benchmark item {} has an empty context", item.item_id);
        }
        for choice in &item.choices {
            let mut c = tok.encode(choice)?;
            let whole = c.len().max(1);
            c.truncate(max_len / 2);
            // The characters of the part scored (in proportion to its tokens when cut).
            let chars = (choice.chars().count() * c.len() / whole).max(1);
            // Keep the end of a long context: it is what the choice continues.
            let keep = context.len().min(max_len - c.len());
            pairs.push((k, context[context.len() - keep..].to_vec(), c, chars));
        }
    }
    // Each choice's summed log-probability and its length in characters.
    let mut scores: Vec<Vec<(f64, usize)>> = items.iter().map(|i| Vec::with_capacity(i.choices.len())).collect();
    let bar = ctx.progress().bar(pairs.len() as u64, format!("{} benchmarks", ctx.step));
    for chunk in pairs.chunks(p.batch_size) {
        let rows: Vec<(&[u32], &[u32])> = chunk.iter().map(|(_, c, r, _)| (&c[..], &r[..])).collect();
        let batch = Batch::aligned(&rows, lm.device())?;
        let s = lm.response_scores(&batch, false, None)?;
        let lp = s.logprobs.to_vec2::<f32>()?; // [B, R]
        let mask = s.mask.to_vec2::<f32>()?; // [B, R]
        for (((k, _, _, chars), lp), m) in chunk.iter().zip(lp).zip(mask) {
            scores[*k].push((lp.iter().zip(&m).map(|(l, m)| f64::from(l * m)).sum(), *chars));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let mut by_task: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut normed = Vec::with_capacity(items.len());
    for (item, s) in items.iter().zip(&scores) {
        let right = |score: &dyn Fn(&(f64, usize)) -> f64| f64::from(u8::from(first_max(s, score) as i32 == item.gold));
        by_task.entry(&item.task).or_default().push(right(&|&(lp, _)| lp));
        normed.push(right(&|&(lp, chars)| lp / chars as f64));
    }
    let all: Vec<f64> = by_task.values().flatten().copied().collect();
    if all.is_empty() {
        ctx.warn("the benchmarks table is empty: no benchmark accuracy");
        return Ok(vec![]);
    }
    let mut out: Vec<Measure> = boot.mean("benchmark_acc", &all).into_iter().collect();
    out.extend(boot.mean("benchmark_acc_norm", &normed));
    for (task, v) in by_task {
        out.push(Measure::point(&format!("benchmark_acc_{task}"), crate::stats::mean(&v), v.len()));
    }
    Ok(out)
}

/// The index of the first highest `score` (0 for an empty list).
fn first_max<T>(xs: &[T], score: impl Fn(&T) -> f64) -> usize {
    (0..xs.len()).fold(0, |best, i| if score(&xs[i]) > score(&xs[best]) { i } else { best })
}

#[cfg(test)]
mod tests {
    use lineage::Validate;
    use world::{World, WorldSize};

    use super::*;

    #[test]
    fn per_character_scores_stop_favouring_short_choices() {
        // A long right answer (12 characters, -6 nats) against a short wrong one (2, -4).
        let s = [(-6.0, 12usize), (-4.0, 2)];
        assert_eq!(first_max(&s, |&(lp, _)| lp), 1, "summed log-probability picks the short one");
        assert_eq!(first_max(&s, |&(lp, c)| lp / c as f64), 0, "per character picks the long one");
        assert_eq!(first_max(&[1.0, 1.0], |&x| x), 0, "ties go to the first");
        assert_eq!(first_max::<f64>(&[], |&x| x), 0);
    }

    fn sample(prompt_id: &str, k: i32) -> SampleRow {
        SampleRow {
            prompt_id: prompt_id.into(),
            prompt: String::new(),
            sample_idx: k,
            response: format!("draw {k}"),
            response_tokens: vec![],
            logprobs: vec![],
            finish_reason: "eos".into(),
            seed: 100 + k as u64,
            split: "test".into(),
            family: String::new(),
            meta: String::new(),
        }
    }

    #[test]
    fn each_group_keeps_its_highest_score_and_the_first_of_equals() {
        let ids = ["a", "b", "c", "d"];
        let rows: Vec<SampleRow> = ids.iter().flat_map(|id| (0..3).map(move |k| sample(id, k))).collect();
        let scores = [0.1, 0.9, 0.5, 0.7, 0.7, -1.0, -3.0, -2.0, f64::NAN, f64::NAN, -5.0, -4.0];
        let best = keep_best(&rows, 3, &scores);
        let picked: Vec<(&str, i32, u64)> = best.iter().map(|r| (r.prompt_id.as_str(), r.sample_idx, r.seed)).collect();
        // a: draw 1; b: draw 0 (the first of two equal); c and d: a NaN never wins.
        assert_eq!(picked, [("a", 0, 101), ("b", 0, 100), ("c", 0, 101), ("d", 0, 102)]);
        assert_eq!(best[0].response, "draw 1");
    }

    #[test]
    fn the_reward_model_reads_a_response_ending_in_eos_and_a_prompt_cut_from_the_left() {
        let eos = 9;
        assert_eq!(scored_pair(&[1, 2, 3], &[4, 5], eos, 16), (vec![1, 2, 3], vec![4, 5, 9]));
        assert_eq!(scored_pair(&[1, 2, 3], &[4, 9], eos, 16), (vec![1, 2, 3], vec![4, 9]), "one EOS, not two");
        assert_eq!(scored_pair(&[1, 2, 3, 4, 5], &[6], eos, 5), (vec![3, 4, 5], vec![6, 9]));
        // A response longer than the context keeps its start and one prompt token.
        assert_eq!(scored_pair(&[1, 2], &[6, 7, 8, 10], eos, 4), (vec![2], vec![6, 7, 8]));
    }

    #[test]
    fn each_prompt_keeps_its_best_draw_as_its_one_answer() {
        let w = World::generate(3, WorldSize::Smoke);
        let prompts: Vec<PromptRow> = w
            .prompts()
            .iter()
            .take(3)
            .map(|p| PromptRow {
                prompt_id: p.id.clone(),
                text: p.text.clone(),
                user_id: String::new(),
                split: "test".into(),
                dataset: String::new(),
                family: p.meta.family.name().into(),
                meta: p.meta.to_json(),
                source: String::new(),
            })
            .collect();
        let jobs: Vec<Job> = jobs(&prompts).into_iter().filter(|j| j.variant.is_none()).collect();
        let row = |j: &Job, k: i32, text: &str| SampleRow {
            prompt: j.text.clone(),
            response: text.into(),
            family: j.family.clone(),
            meta: j.meta_json.clone(),
            ..sample(&j.id, k)
        };
        // The ideal answer is draw 1 of the first prompt, draw 0 of the second, draw 2 of the third.
        let reference = |j: &Job| j.meta.as_ref().unwrap().reference.clone();
        let rows: Vec<SampleRow> = jobs
            .iter()
            .enumerate()
            .flat_map(|(i, j)| (0..3).map(move |k| (i, j, k)))
            .map(|(i, j, k)| {
                let text = if k as usize == [1, 0, 2][i] { reference(j) } else { "the the the".into() };
                row(j, k, &text)
            })
            .collect();
        let best = keep_best(&rows, 3, &judge_scores(&jobs, &rows, 3));
        assert_eq!(best.len(), 3);
        for ((b, j), k) in best.iter().zip(&jobs).zip([1u64, 0, 2]) {
            assert_eq!((b.prompt_id.as_str(), b.sample_idx, b.seed), (j.id.as_str(), 0, 100 + k));
            assert_eq!(b.response, reference(j));
        }
    }

    #[test]
    fn best_of_goes_with_its_kind_and_selector() {
        let p = |kind: &str, best_of: usize, select: Select| EvalModelParams {
            kind: kind.into(),
            best_of,
            select,
            ..Default::default()
        };
        let (gold, rm) = (Select::Gold, Select::Rm);
        assert!(p("sft", 1, gold).validate().is_ok() && p("best_of", 4, gold).validate().is_ok());
        assert!(p("best_of_rm", 4, rm).validate().is_ok());
        let e = p("sft", 4, gold).validate().unwrap_err();
        assert!(e.contains("best_of"), "{e}");
        // A ceiling is never labelled a policy, nor a policy a ceiling.
        let e = p("best_of", 4, rm).validate().unwrap_err();
        assert!(e.contains("select = \"rm\""), "{e}");
        assert!(p("best_of_rm", 4, gold).validate().is_err());
        assert!(p("best_of", 1, gold).validate().is_err() && p("best_of_rm", 1, rm).validate().is_err());
        assert!(p("best_of", 65, gold).validate().is_err() && p("best_of", 0, gold).validate().is_err());
    }
}
