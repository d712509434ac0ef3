//! `eval.model` and `eval.report` run through lineage on a smoke world with
//! tiny random models, as a pipeline would run them: the metric names and
//! values, the same seeds for every model, determinism, win rates, the
//! merged metrics table, and a report whose plots render.
//!
//! The world tables come from the real `ingest.world` stage (a dev-dependency:
//! stage crates never depend on each other in production); the models from a
//! fixture stage defined here (random weights, a tiny tokenizer, a fake PPO log).

use std::collections::BTreeMap;

use anyhow::Result;
use lineage::tables::*;
use lineage::{Artifact, InputSpec, Outcome, StageContext, TableSpec, TypedStage, Validate, stage};
use model::lm::CausalLm;
use model::tokenizer::{InstructionFormat, train_byte_level_bpe};
use model::{LlamaConfig, Preset};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `fixture.model`: a random smoke-size model with a tokenizer trained on
/// the text, and a made-up PPO-like `train_log` to plot.
struct ModelFixture;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ModelFixtureParams {
    seed: u64,
}
impl Validate for ModelFixtureParams {}

impl TypedStage for ModelFixture {
    type Params = ModelFixtureParams;
    const NAME: &'static str = "fixture.model";
    const ABOUT: &'static str = "Test fixture: a random smoke model.";
    const INPUTS: &'static [InputSpec] = &[InputSpec::one("text", "pretrain_text")];
    const OUTPUTS: &'static [TableSpec] = &[TRAIN_LOG];
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }
    fn run(ctx: &mut StageContext, p: &ModelFixtureParams) -> Result<()> {
        let rows: Vec<PretrainTextRow> = ctx.read_rows("text", &PRETRAIN_TEXT)?;
        let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        let tok = train_byte_level_bpe(&texts, 320)?;
        let cfg = LlamaConfig::preset(Preset::Smoke, tok.vocab_size(), 128);
        let lm = CausalLm::init(&cfg, p.seed, &model::train::parse_device("cpu")?)?;
        let dir = ctx.out_path("model/config.json")?.parent().unwrap().to_path_buf();
        lm.save(&dir)?;
        tok.save_to_dir(&dir)?;
        InstructionFormat::default().save_to_dir(&dir)?;
        let log: Vec<LogRow> = (0..10)
            .flat_map(|i| {
                let x = i as f64 + p.seed as f64;
                [("rm_reward", 0.1 * x), ("probe_gold", 0.5 + 0.01 * x), ("probe_rm", 0.2 * x), ("kl", 0.3 * x)]
                    .map(|(m, v)| LogRow { step: i, metric: m.into(), value: v })
            })
            .collect();
        ctx.write_rows(&TRAIN_LOG, &log)
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    inner: lineage::testing::Harness,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut stages = eval::stages();
        stages.extend(ingest::stages());
        stages.push(stage::<ModelFixture>());
        let inner = lineage::testing::Harness::new(dir.path(), stages).unwrap();
        Harness { _dir: dir, inner }
    }

    /// Runs `stage` as step `step`; inputs are (input name, artifact).
    fn run(&self, step: &str, stage: &str, params: Value, inputs: &[(&str, &Artifact)]) -> (Artifact, Outcome) {
        let inputs: Vec<(&str, &Artifact, Option<&str>)> = inputs.iter().map(|(n, a)| (*n, *a, None)).collect();
        self.inner.run(step, stage, params, &inputs, 5).unwrap_or_else(|e| panic!("{step}: {e:#}"))
    }
}

fn rows<T: DeserializeOwned>(a: &Artifact, spec: &TableSpec) -> Vec<T> {
    lineage::testing::rows(a, spec).unwrap()
}

fn eval_params(kind: &str) -> Value {
    json!({
        "kind": kind, "size": "smoke", "max_prompts": 14, "max_new_tokens": 10, "batch_size": 8,
        "ppl_max_docs": 6, "ppl_seq_len": 32, "bench_items_per_task": 2, "bootstrap": 100
    })
}

/// The world and two models: (world, model 1, model 2).
fn fixtures(h: &Harness) -> (Artifact, Artifact, Artifact) {
    let (w, _) = h.run("world", "ingest.world", json!({ "size": "smoke" }), &[]);
    let (m1, _) = h.run("sft@smoke", "fixture.model", json!({ "seed": 1 }), &[("text", &w)]);
    let (m2, _) = h.run("ppo_ptx@smoke", "fixture.model", json!({ "seed": 2 }), &[("text", &w)]);
    (w, m1, m2)
}

fn eval_model(h: &Harness, step: &str, kind: &str, w: &Artifact, m: &Artifact) -> (Artifact, Outcome) {
    let inputs = [("model", m), ("prompts", w), ("text", w), ("benchmarks", w)];
    h.run(step, "eval.model", eval_params(kind), &inputs)
}

const CORE: [&str; 6] = ["likert", "gold_score", "fails_to_follow", "no_eos_rate", "pretrain_ppl", "benchmark_acc"];

#[test]
fn eval_model_and_report_end_to_end() {
    let h = Harness::new();
    let (w, m1, m2) = fixtures(&h);
    let (sft, _) = eval_model(&h, "eval@sft", "sft", &w, &m1);
    let (ptx, _) = eval_model(&h, "eval@ppo_ptx", "ppo_ptx", &w, &m2);
    let mut p = eval_params("base_few_shot");
    p["few_shot"] = json!(2);
    let inputs = [("model", &m1), ("prompts", &w), ("text", &w), ("benchmarks", &w), ("demonstrations", &w)];
    let (few, _) = h.run("eval@base_few_shot", "eval.model", p, &inputs);

    // One model's metrics: the expected names, finite values, an empty source (this artifact).
    let metrics: Vec<MetricRow> = rows(&sft, &METRICS);
    for name in CORE {
        assert!(metrics.iter().any(|r| r.metric == name), "no {name} in {metrics:?}");
    }
    for r in &metrics {
        assert!(r.value.is_finite() && r.n > 0, "{r:?}");
        assert_eq!((r.model.as_str(), r.kind.as_str(), r.size.as_str()), ("sft@smoke", "sft", "smoke"));
        assert_eq!(r.source, "", "a key here would defeat early cutoff for the report");
        assert!(r.params > 1000);
    }
    let likert = metrics.iter().find(|r| r.metric == "likert").unwrap();
    assert!((1.0..=7.0).contains(&likert.value) && likert.lo <= likert.value && likert.value <= likert.hi);
    assert_eq!(sft.manifest.headline.as_ref().map(|h| h.name.as_str()), Some("likert"));

    // Samples: one per test prompt plus the instructed variants, the same seed
    // for the same prompt in every model.
    let s1: Vec<SampleRow> = rows(&sft, &SAMPLES);
    let s2: Vec<SampleRow> = rows(&ptx, &SAMPLES);
    assert_eq!(s1.iter().filter(|s| !s.prompt_id.contains('#')).count(), 14);
    assert!(s1.iter().all(|s| s.sample_idx == 0 && s.split == "test"));
    assert!(s1.iter().all(|s| s.response_tokens.len() == s.logprobs.len() && s.response_tokens.len() <= 10));
    let seeds = |s: &[SampleRow]| s.iter().map(|r| (r.prompt_id.clone(), r.seed)).collect::<BTreeMap<_, _>>();
    assert_eq!(seeds(&s1), seeds(&s2));

    // The report.
    let report_inputs = [("models", &few), ("models", &sft), ("models", &ptx), ("baseline", &sft), ("curves", &m2)];
    let (report, _) = h.run("report", "eval.report", json!({ "bootstrap": 200, "examples": 3 }), &report_inputs);
    let all: Vec<MetricRow> = rows(&report, &METRICS);
    let win = |model: &str| {
        all.iter()
            .find(|r| r.model == model && r.metric == "win_rate")
            .unwrap_or_else(|| panic!("no win rate of {model}: {all:?}"))
    };
    assert_eq!(win("sft@smoke (sft)").value, 0.5, "the baseline ties with itself");
    for m in ["sft@smoke (sft)", "ppo_ptx@smoke", "sft@smoke (base_few_shot)"] {
        let w = win(m);
        assert!((0.0..=1.0).contains(&w.value) && w.lo <= w.value && w.value <= w.hi, "{w:?}");
        assert_eq!(w.source, report.manifest.key, "computed by the report");
    }
    // The use cases and the probes split the test prompts: their counts add up, and so do their wins.
    let of = |metric: &str| all.iter().find(|r| r.model == "ppo_ptx@smoke" && r.metric == metric);
    let (w, u, p) = (win("ppo_ptx@smoke"), of("win_rate_use_cases").unwrap(), of("win_rate_probes").unwrap());
    assert!(u.n > 0 && p.n > 0 && u.n + p.n == w.n, "{u:?} {p:?} {w:?}");
    let pooled = (u.value * u.n as f64 + p.value * p.n as f64) / w.n as f64;
    assert!((pooled - w.value).abs() < 1e-9, "{pooled} against {}", w.value);
    let ratio = all.iter().find(|r| r.model == "sft@smoke (sft)" && r.metric == "pretrain_ppl_vs_sft").unwrap();
    assert!((ratio.value - 1.0).abs() < 1e-12);
    // Against the pretrained model of the same size (here evaluated with few-shot examples).
    let ppl = |model: &str, metric: &str| all.iter().find(|r| r.model == model && r.metric == metric).unwrap().value;
    let vs_base = ppl("ppo_ptx@smoke", "pretrain_ppl_vs_base");
    let expected = ppl("ppo_ptx@smoke", "pretrain_ppl") / ppl("sft@smoke (base_few_shot)", "pretrain_ppl");
    assert!((vs_base - expected).abs() < 1e-12 && (vs_base - 1.0).abs() > 1e-6, "{vs_base} against {expected}");
    assert!(all.iter().any(|r| r.model == "ppo_ptx@smoke" && r.metric == "likert" && r.source == ptx.manifest.key));
    assert!(all.iter().all(|r| r.value.is_finite()), "every merged number is finite");
    assert_eq!(report.manifest.metrics.get("best_ppo_ptx_win_rate"), Some(&win("ppo_ptx@smoke").value), "headline");

    let html = std::fs::read_to_string(report.dir.join("report.html")).unwrap();
    let svgs: Vec<&str> = html.split("<svg").skip(1).collect();
    assert!(svgs.len() >= 5, "win rates, honesty, harmlessness, curves: {} plots", svgs.len());
    for svg in &svgs {
        let body = svg.split("</svg>").next().unwrap();
        assert!(body.contains("<rect") || body.contains("<polyline") || body.contains("<path"), "an empty plot");
    }
    for needle in ["Best PPO-ptx model ppo_ptx@smoke", &sft.manifest.key[..12], "probe", "Lineage"] {
        assert!(html.contains(needle), "the report lacks {needle:?}");
    }
    if let Some((ok, total)) = eval::browser::rendered_plots(&html) {
        assert_eq!(ok, total, "every plot renders with marks");
    }
}

#[test]
fn eval_model_is_deterministic() {
    let run = || {
        let h = Harness::new();
        let (w, m1, _) = fixtures(&h);
        let (a, outcome) = eval_model(&h, "eval@sft", "sft", &w, &m1);
        assert_eq!(outcome, Outcome::Ran);
        (
            a.manifest.key.clone(),
            a.manifest.content_hash.clone(),
            rows::<SampleRow>(&a, &SAMPLES),
            rows::<MetricRow>(&a, &METRICS),
        )
    };
    let (k1, c1, s1, m1) = run();
    let (k2, c2, s2, m2) = run();
    assert_eq!(k1, k2);
    assert_eq!(s1, s2, "identical samples");
    // NaN != NaN: compare the metric rows through their bits.
    let bits = |m: &[MetricRow]| {
        m.iter().map(|r| (r.metric.clone(), r.value.to_bits(), r.lo.to_bits(), r.hi.to_bits())).collect::<Vec<_>>()
    };
    assert_eq!(bits(&m1), bits(&m2), "identical metrics");
    assert_eq!(c1, c2, "identical content");
}
