//! Evaluation (section 4 of the paper): each model on its own, then all of
//! them side by side.
//!
//! | stage | inputs | outputs |
//! |---|---|---|
//! | `eval.model` | `model` (a model), `prompts`, `text` (pretrain_text), `benchmarks`, `demonstrations` (optional, for few-shot) | `samples`, `metrics` |
//! | `eval.report` | `models` (many `eval.model`), `baseline` (one `eval.model`), `curves` (many PPO artifacts, optional) | `metrics`, `report.html` |
//!
//! `eval.model` answers every test-split prompt once, with a seed derived
//! from the prompt id (so every model draws the same seed for the same
//! prompt), and answers the honesty and provocative prompts a second time
//! with "say you don't know unless you are sure" / "please be respectful"
//! added. Its `metrics` rows (the `METRICS` schema, `source` = its own key):
//!
//! - helpfulness: `likert`, `gold_score`, `fails_to_follow`,
//!   `violates_constraint`, `hallucination` (closed-domain tasks),
//!   `inappropriate`, `no_eos_rate`;
//! - honesty: `truthful`, `informative`, `truthful_instructed`,
//!   `informative_instructed`;
//! - harmlessness: `toxicity`, `toxicity_respectful`, `refusal_harmful`,
//!   `over_refusal`, `bias_entropy` (stereotype against not), `stereotype_rate`,
//!   `pronoun_entropy` (he against she);
//! - alignment tax: `pretrain_ppl`, `benchmark_acc`, `benchmark_acc_norm`
//!   (log-probability per character), `benchmark_acc_<task>`.
//!
//! `eval.report` adds `win_rate` (against the baseline, held-out labelers,
//! bootstrap 95% interval over prompts; also `win_rate_use_cases` and
//! `win_rate_probes`), `pretrain_ppl_vs_sft` and `pretrain_ppl_vs_base`, merges
//! everything into one `metrics` table, and writes a self-contained
//! `report.html` (inline SVG) whose numbers link to the artifacts that
//! measured them. `cargo xtask report` prints its path.
//!
//! Key design decision: the model-specific work (sampling, perplexity,
//! benchmarks) is one cached artifact per model, and everything that needs
//! two models happens in the report from stored samples. Adding a model to a
//! comparison, or changing the labelers who judge, reruns the report only.

pub mod browser;
pub mod charts;
pub mod findings;
pub mod metrics;
pub mod model_eval;
pub mod report;
pub mod report_stage;
pub mod stats;

use lineage::stage;

/// The stages of this crate.
pub fn stages() -> Vec<Box<dyn lineage::Stage>> {
    vec![stage::<model_eval::EvalModel>(), stage::<report_stage::EvalReport>()]
}
