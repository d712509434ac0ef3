//! `eval.report`: every model's evaluation side by side. It computes what
//! needs two models (the win rate against the baseline's responses to the
//! same prompts, judged by held-out labelers; perplexity relative to the SFT
//! model of the same size), merges every model's metrics into one `metrics`
//! table, and writes `report.html` with headline findings computed from the
//! numbers.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use lineage::tables::{LogRow, METRICS, MetricRow, SAMPLES, SampleRow, TRAIN_LOG};
use lineage::{InputArtifact, InputSpec, StageContext, TableSpec, TypedStage, Validate};
use serde::{Deserialize, Serialize};
use world::{Labeler, Pool, Response, TaskMeta};

use crate::findings;
use crate::metrics::{self, Bootstrap, Matchup};
use crate::report::{
    Cited, CurvePoint, Example, PPL_VS_BASE, ReportData, WIN_RATE_OVER_NULL, WIN_RATE_PROBES, WIN_RATE_USE_CASES,
};

pub struct EvalReport;

/// Parameters of `eval.report`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalReportParams {
    /// Seed of the simulated labeler population whose held-out members judge.
    pub labeler_seed: u64,
    /// Held-out labelers (none of them labelled training data).
    pub n_heldout: usize,
    /// Multiplies every labeler's noise (1 = the calibrated default).
    pub noise_scale: f64,
    /// Bootstrap resamples for the win-rate intervals.
    pub bootstrap: usize,
    /// Prompts shown with every model's response.
    pub examples: usize,
    pub title: String,
}

impl Default for EvalReportParams {
    fn default() -> Self {
        EvalReportParams {
            labeler_seed: 0,
            n_heldout: 5,
            noise_scale: 1.0,
            bootstrap: 1000,
            examples: 6,
            title: "instructgpt-rs evaluation".into(),
        }
    }
}

impl Validate for EvalReportParams {
    fn validate(&self) -> Result<(), String> {
        if self.n_heldout == 0 {
            return Err("n_heldout must be at least 1".into());
        }
        if !(self.noise_scale > 0.0 && self.noise_scale.is_finite()) {
            return Err(format!("noise_scale = {} must be positive", self.noise_scale));
        }
        Ok(())
    }
}

/// PPO's per-iteration metrics the report plots.
pub const CURVE_METRICS: [&str; 8] =
    ["rm_reward", "probe_gold", "probe_rm", "kl", "ptx_loss", "entropy", "response_len", "no_eos_rate"];

/// One evaluated model, as the report sees it.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// Display name (the model's step, made unique).
    pub name: String,
    pub kind: String,
    pub size: String,
    pub params: i64,
    /// The `eval.model` artifact's key.
    pub key: String,
    pub metrics: Vec<MetricRow>,
    /// Responses to the test prompts as written (instructed variants left out).
    pub samples: BTreeMap<String, SampleRow>,
}

fn kind_rank(kind: &str) -> usize {
    crate::model_eval::KINDS.iter().position(|k| *k == kind).unwrap_or(usize::MAX)
}

fn load(input: &InputArtifact) -> Result<Evaluated> {
    let m = input.manifest();
    if m.stage != crate::model_eval::EvalModel::NAME {
        bail!(
            "input `{}` is an artifact of stage {}, not eval.model: give eval.report the eval.model steps",
            input.label,
            m.stage
        );
    }
    let metrics: Vec<MetricRow> = input.read_rows(&METRICS).with_context(|| format!("reading {}", input.label))?;
    let samples: Vec<SampleRow> = input.read_rows(&SAMPLES).with_context(|| format!("reading {}", input.label))?;
    let param = |k: &str| m.params.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let model = m.inputs.get("model").and_then(|v| v.first()).map_or_else(|| input.label.clone(), |i| i.step.clone());
    Ok(Evaluated {
        name: model,
        kind: param("kind"),
        size: param("size"),
        params: metrics.first().map_or(0, |r| r.params),
        key: m.key.clone(),
        metrics,
        samples: samples
            .into_iter()
            .filter(|s| s.sample_idx == 0 && !s.prompt_id.contains('#'))
            .map(|s| (s.prompt_id.clone(), s))
            .collect(),
    })
}

fn response(s: &SampleRow) -> Response {
    Response::new(s.response.clone(), s.finish_reason == "eos")
}

impl TypedStage for EvalReport {
    type Params = EvalReportParams;
    const NAME: &'static str = "eval.report";
    const ABOUT: &'static str =
        "Win rates against the baseline by held-out labelers, all models' metrics, and report.html.";
    const INPUTS: &'static [InputSpec] = &[
        InputSpec::many("models", "eval.model artifacts, one per model compared."),
        InputSpec::one("baseline", "The eval.model artifact of the baseline (normally the largest SFT model)."),
        InputSpec::many("curves", "PPO artifacts whose train_log curves to plot (optional)."),
        InputSpec::optional(
            "labelers",
            "The labelling artifact (rollout.label): its held-out labelers judge win rates.",
        ),
    ];
    const OUTPUTS: &'static [TableSpec] = &[METRICS];
    const HEADLINE: Option<&'static str> = Some("best_ppo_ptx_win_rate");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }

    fn run(ctx: &mut StageContext, p: &EvalReportParams) -> Result<()> {
        let baseline_input = ctx.input("baseline")?.clone();
        let baseline = load(&baseline_input)?;
        let mut models: Vec<Evaluated> = Vec::new();
        let mut cited = Vec::new();
        let mut labels: Vec<String> = Vec::new();
        let mut inputs: Vec<InputArtifact> = Vec::new();
        for input in ctx.inputs("models").iter().chain([&baseline_input]) {
            let e = load(input)?;
            if models.iter().any(|m| m.key == e.key) {
                continue; // the baseline is usually one of the models too
            }
            labels.push(input.label.clone());
            inputs.push(input.clone());
            models.push(e);
        }
        // A model evaluated twice (base and few-shot base) is named by kind,
        // then by evaluation step.
        let step_names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
        let count = |names: &[String], n: &str| names.iter().filter(|x| *x == n).count();
        for (m, step) in models.iter_mut().zip(&step_names) {
            if count(&step_names, step) > 1 {
                m.name = format!("{step} ({})", m.kind);
            }
        }
        let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
        for ((m, step), label) in models.iter_mut().zip(&step_names).zip(&labels) {
            if count(&names, &m.name) > 1 {
                m.name = format!("{step} ({label})");
            }
        }
        for (m, input) in models.iter().zip(&inputs) {
            cited.push(cite(input, &m.name));
        }
        if models.is_empty() {
            bail!("eval.report needs at least one `models` input");
        }
        models.sort_by_key(|m| (m.params, kind_rank(&m.kind)));
        let baseline_name = models.iter().find(|m| m.key == baseline.key).map(|m| m.name.clone()).unwrap_or_default();

        // Win rates against the baseline, prompt by prompt.
        // The held-out group of the population that labelled the comparison data, when given.
        let pool = match ctx.optional_input("labelers") {
            Some(a) => Pool::load_from_dir(a.dir())?.filter(|pool| !pool.heldout.is_empty()),
            None => None,
        }
        .unwrap_or_else(|| Pool::with_noise_scale(p.labeler_seed, 0, p.n_heldout, p.noise_scale));
        let labelers: Vec<&Labeler> = pool.heldout.iter().collect();
        let boot = Bootstrap { resamples: p.bootstrap, seed: ctx.derive_seed("bootstrap") };
        let mut rows: Vec<MetricRow> = Vec::new();
        let mut unmatched = 0;
        // Each model's win (1, 0.5, 0) against the baseline, by prompt.
        let mut wins_by_prompt: Vec<BTreeMap<&str, f64>> = Vec::with_capacity(models.len());
        for m in &models {
            let metas: Vec<(&SampleRow, TaskMeta, &SampleRow)> = m
                .samples
                .values()
                .filter_map(|s| {
                    let b = baseline.samples.get(&s.prompt_id)?;
                    Some((s, TaskMeta::from_json(&s.meta).ok()?, b))
                })
                .collect();
            unmatched += m.samples.len() - metas.len();
            let responses: Vec<(Response, Response)> =
                metas.iter().map(|(s, _, b)| (response(s), response(b))).collect();
            let matchups: Vec<Matchup> = metas
                .iter()
                .zip(&responses)
                .map(|((s, meta, _), (a, b))| Matchup { prompt_id: &s.prompt_id, meta, model: a, baseline: b })
                .collect();
            let wins = metrics::wins(&labelers, &matchups);
            // Every test prompt, and apart: the paper's use cases (its API prompt distribution) and
            // the probes (harmful, honesty, provocative and gendered-choice prompts, 40% of the
            // world's test prompts against 16% of its training prompts, for their own metrics).
            for (metric, use_cases) in
                [("win_rate", None), (WIN_RATE_USE_CASES, Some(true)), (WIN_RATE_PROBES, Some(false))]
            {
                let values: Vec<f64> = metas
                    .iter()
                    .zip(&wins)
                    .filter(|((_, meta, _), _)| use_cases.is_none_or(|u| meta.family.is_use_case() == u))
                    .map(|(_, w)| *w)
                    .collect();
                if let Some(w) = boot.mean(metric, &values) {
                    rows.push(row(m, &w.metric, w.value, (w.lo, w.hi), w.n, &ctx.key));
                }
            }
            wins_by_prompt.push(metas.iter().map(|(s, _, _)| s.prompt_id.as_str()).zip(wins).collect());
        }
        // PPO runs against the null control of their size, prompt by prompt: both answered the same
        // prompts against the same baseline response, so prompt difficulty cancels from the
        // difference and its interval does not count it twice.
        for (null, null_wins) in models.iter().zip(&wins_by_prompt).filter(|(m, _)| m.kind == "ppo_null") {
            for (m, m_wins) in models.iter().zip(&wins_by_prompt) {
                if m.size != null.size || !matches!(m.kind.as_str(), "ppo" | "ppo_ptx" | "ppo_oracle") {
                    continue;
                }
                let d = metrics::paired_differences(m_wins, null_wins);
                if let Some(w) = boot.mean(WIN_RATE_OVER_NULL, &d) {
                    rows.push(row(m, &w.metric, w.value, (w.lo, w.hi), w.n, &ctx.key));
                }
            }
        }
        if unmatched > 0 {
            ctx.warn(format!(
                "{unmatched} responses had no baseline response to the same prompt, or no metadata: left out of win rates"
            ));
        }

        // Perplexity relative to the SFT model of the same size, and to its pretrained base (the
        // paper's alignment tax is a regression against GPT-3 itself).
        let metric_of = |m: &Evaluated, name: &str| m.metrics.iter().find(|r| r.metric == name).map(|r| r.value);
        for m in &models {
            // The base model's perplexity is the same with or without few-shot examples.
            for (kinds, metric) in
                [(&["sft"][..], "pretrain_ppl_vs_sft"), (&["base", "base_few_shot"][..], PPL_VS_BASE)]
            {
                let of = models.iter().find(|s| kinds.contains(&s.kind.as_str()) && s.size == m.size);
                if let (Some(ppl), Some(reference)) =
                    (metric_of(m, "pretrain_ppl"), of.and_then(|s| metric_of(s, "pretrain_ppl")))
                {
                    rows.push(row(m, metric, ppl / reference, (f64::NAN, f64::NAN), 1, &ctx.key));
                }
            }
        }

        // Every model's own metrics, under the report's display name.
        for m in &models {
            for r in &m.metrics {
                rows.push(MetricRow { model: m.name.clone(), source: m.key.clone(), ..r.clone() });
            }
        }

        let curves = curves(ctx, &mut cited)?;
        let examples = examples(&models, &baseline, p.examples);
        let found = findings::findings(&models, &rows, &baseline_name);
        for r in rows.iter().filter(|r| r.metric == "win_rate") {
            ctx.metric(format!("win_rate/{}", r.model), r.value);
        }
        if let Some(best) = found.best_ppo_ptx_win_rate {
            ctx.metric("best_ppo_ptx_win_rate", best);
        }
        cited.push(Cited {
            label: format!("{} (this report)", ctx.step),
            stage: EvalReport::NAME.into(),
            key: ctx.key.clone(),
            content_hash: "(this artifact)".into(),
            params: serde_json::to_value(p)?,
        });
        let data = ReportData {
            title: p.title.clone(),
            subtitle: format!(
                "{} models against baseline {baseline_name}; win rates judged by {} held-out simulated labelers (seed {}); report {}",
                models.len(),
                p.n_heldout,
                p.labeler_seed,
                &ctx.key[..ctx.key.len().min(12)]
            ),
            models: models.iter().map(|m| m.name.clone()).collect(),
            metrics: rows.clone(),
            curves,
            examples,
            cited,
            findings: found.lines,
        };
        std::fs::write(ctx.out_path("report.html")?, data.render_html()).context("writing report.html")?;
        ctx.write_rows(&METRICS, &rows)
    }
}

fn row(m: &Evaluated, metric: &str, value: f64, (lo, hi): (f64, f64), n: usize, source: &str) -> MetricRow {
    MetricRow {
        model: m.name.clone(),
        kind: m.kind.clone(),
        size: m.size.clone(),
        params: m.params,
        metric: metric.to_string(),
        value,
        lo,
        hi,
        n: n as i64,
        source: source.to_string(),
    }
}

/// The lineage entry of an input artifact: its parameters and what it read.
fn cite(input: &InputArtifact, name: &str) -> Cited {
    let m = input.manifest();
    let read: BTreeMap<&String, Vec<String>> = m
        .inputs
        .iter()
        .map(|(k, v)| (k, v.iter().map(|i| format!("{} ({}, key {})", i.step, i.stage, i.key)).collect()))
        .collect();
    Cited {
        label: format!("{name}: step {}", input.label),
        stage: m.stage.clone(),
        key: m.key.clone(),
        content_hash: m.content_hash.clone(),
        params: serde_json::json!({ "params": m.params, "seed": m.seed, "inputs": read }),
    }
}

/// The PPO curves of the `curves` inputs.
fn curves(ctx: &mut StageContext, cited: &mut Vec<Cited>) -> Result<Vec<CurvePoint>> {
    let mut out = Vec::new();
    let inputs = ctx.inputs("curves").to_vec();
    for input in &inputs {
        if !input.has_table(TRAIN_LOG.name) {
            ctx.warn(format!("curves input `{}` has no train_log table: nothing to plot", input.label));
            continue;
        }
        let log: Vec<LogRow> = input.read_rows(&TRAIN_LOG)?;
        out.extend(log.into_iter().filter(|r| CURVE_METRICS.contains(&r.metric.as_str())).map(|r| CurvePoint {
            run: input.label.clone(),
            metric: r.metric,
            step: r.step,
            value: r.value,
            source: input.manifest().key.clone(),
        }));
        cited.push(cite(input, &input.label));
    }
    Ok(out)
}

/// A few prompts, one per task family in turn, with every model's response.
fn examples(models: &[Evaluated], baseline: &Evaluated, n: usize) -> Vec<Example> {
    let common: Vec<&SampleRow> =
        baseline.samples.values().filter(|s| models.iter().all(|m| m.samples.contains_key(&s.prompt_id))).collect();
    let mut chosen: Vec<&SampleRow> = Vec::new();
    let mut families: BTreeSet<&str> = BTreeSet::new();
    // First one prompt per family, then fill up in id order.
    for s in &common {
        if chosen.len() < n && families.insert(&s.family) {
            chosen.push(s);
        }
    }
    for s in &common {
        if chosen.len() < n && !chosen.iter().any(|c| c.prompt_id == s.prompt_id) {
            chosen.push(s);
        }
    }
    let mut out = Vec::new();
    for c in chosen {
        let meta = TaskMeta::from_json(&c.meta).ok();
        for m in models {
            let s = &m.samples[&c.prompt_id];
            let score =
                meta.as_ref().map_or(f64::NAN, |t| world::judge(t, &s.response, s.finish_reason == "eos").score);
            out.push(Example {
                prompt_id: c.prompt_id.clone(),
                prompt: c.prompt.clone(),
                model: m.name.clone(),
                response: s.response.clone(),
                score,
            });
        }
    }
    out
}
