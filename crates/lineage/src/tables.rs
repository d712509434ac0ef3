//! Every artifact table of the pipeline, declared once.
//!
//! Architecture invariant: a table that crosses a stage boundary is declared
//! here, as a [`TableSpec`] constant plus a serde row struct with the same
//! fields. Stages share these declarations and nothing else.

use serde::{Deserialize, Serialize};

use crate::schema::{Col, ColType::*, TableSpec};

/// Text for next-token pretraining (and its held-out slice for perplexity).
pub const PRETRAIN_TEXT: TableSpec = TableSpec {
    name: "pretrain_text",
    doc: "Documents for language-model pretraining and the pretraining mix of PPO-ptx.",
    columns: &[
        Col::new("doc_id", Utf8, "Stable document id."),
        Col::new("text", Utf8, "The document."),
        Col::new("kind", Utf8, "What kind of text (encyclopedic, story, forum, ...; `text` for user data)."),
        Col::new("split", Utf8, "`train` or `validation`."),
        Col::new("source", Utf8, "Where the row came from: `world` or a file name."),
    ],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainTextRow {
    pub doc_id: String,
    pub text: String,
    pub kind: String,
    pub split: String,
    pub source: String,
}

/// Instruction prompts after hygiene, split by user.
pub const PROMPTS: TableSpec = TableSpec {
    name: "prompts",
    doc: "Instruction prompts, deduplicated, capped per user and split by user id.",
    columns: &[
        Col::new("prompt_id", Utf8, "Stable prompt id."),
        Col::new("text", Utf8, "The prompt as the user wrote it."),
        Col::new("user_id", Utf8, "Who wrote it; splits never share a user."),
        Col::new("split", Utf8, "`train`, `validation` or `test`."),
        Col::new("dataset", Utf8, "Which stage uses it: `sft`, `rm`, `ppo` (train/validation) or `eval` (test)."),
        Col::new("family", Utf8, "Task family (generation, open_qa, ..., harmful, false_premise, ...)."),
        Col::new("meta", Utf8, "Hidden task metadata as JSON, for the gold judge (`{}` for user data)."),
        Col::new("source", Utf8, "`world` or the file the prompt came from."),
    ],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRow {
    pub prompt_id: String,
    pub text: String,
    pub user_id: String,
    pub split: String,
    pub dataset: String,
    pub family: String,
    pub meta: String,
    pub source: String,
}

/// Labeler-written ideal responses (the SFT data).
pub const DEMONSTRATIONS: TableSpec = TableSpec {
    name: "demonstrations",
    doc: "Demonstrations: a prompt and the response a labeler wrote for it.",
    columns: &[
        Col::new("prompt_id", Utf8, "The prompt's id (in `prompts`)."),
        Col::new("prompt", Utf8, "The prompt text."),
        Col::new("response", Utf8, "The demonstrated response."),
        Col::new("split", Utf8, "`train`, `validation` or `test`, as the prompt."),
        Col::new("labeler_id", Utf8, "Who wrote it (`` if unknown)."),
        Col::new("source", Utf8, "`world` or a file name."),
    ],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemonstrationRow {
    pub prompt_id: String,
    pub prompt: String,
    pub response: String,
    pub split: String,
    pub labeler_id: String,
    pub source: String,
}

/// K-way rankings of responses to one prompt.
pub const RANKINGS: TableSpec = TableSpec {
    name: "rankings",
    doc: "One labeler's ranking of K responses to one prompt (rank 1 is best; ties share a rank).",
    columns: &[
        Col::new("ranking_id", Utf8, "Stable id of this ranking."),
        Col::new("prompt_id", Utf8, "The prompt's id."),
        Col::new("prompt", Utf8, "The prompt text."),
        Col::new("responses", ListUtf8, "The K responses."),
        Col::new("ranks", ListInt32, "Rank of each response, 1 = best; equal ranks are ties."),
        Col::new("labeler_id", Utf8, "Who ranked them."),
        Col::new("split", Utf8, "`train`, `validation` or `test`."),
        Col::new("source", Utf8, "`world`, `simulated`, or a file name."),
    ],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingRow {
    pub ranking_id: String,
    pub prompt_id: String,
    pub prompt: String,
    pub responses: Vec<String>,
    pub ranks: Vec<i32>,
    pub labeler_id: String,
    pub split: String,
    pub source: String,
}

/// Pairwise comparisons derived from rankings (ties left out).
pub const COMPARISONS: TableSpec = TableSpec {
    name: "comparisons",
    doc: "Every non-tied pair of a ranking: chosen preferred to rejected.",
    columns: &[
        Col::new("ranking_id", Utf8, "The ranking this pair comes from (groups the C(K,2) pairs)."),
        Col::new("prompt_id", Utf8, "The prompt's id."),
        Col::new("prompt", Utf8, "The prompt text."),
        Col::new("chosen", Utf8, "The preferred response."),
        Col::new("rejected", Utf8, "The other response."),
        Col::new("labeler_id", Utf8, "Who ranked them."),
        Col::new("split", Utf8, "`train`, `validation` or `test`."),
    ],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    pub ranking_id: String,
    pub prompt_id: String,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub labeler_id: String,
    pub split: String,
}

/// Prompts with K responses waiting for a human ranking (the labelling round-trip).
pub const LABEL_TASKS: TableSpec = TableSpec {
    name: "label_tasks",
    doc: "Responses to be ranked by labelers: one task per prompt, responses in the order shown.",
    columns: &[
        Col::new("task_id", Utf8, "Stable id of the task; the filled-in file refers to it."),
        Col::new("prompt_id", Utf8, "The prompt's id."),
        Col::new("prompt", Utf8, "The prompt text."),
        Col::new("responses", ListUtf8, "The K responses, in the order the labeler sees them."),
        Col::new("split", Utf8, "`train`, `validation` or `test`, as the prompt."),
        Col::new("source", Utf8, "Where the responses came from (a step or a file name)."),
    ],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelTaskRow {
    pub task_id: String,
    pub prompt_id: String,
    pub prompt: String,
    pub responses: Vec<String>,
    pub split: String,
    pub source: String,
}

/// Rows rejected by ingest, with the reason: bad input never vanishes.
pub const QUARANTINE: TableSpec = TableSpec {
    name: "quarantine",
    doc: "Rejected input rows with file, line, field and reason.",
    columns: &[
        Col::new("source_file", Utf8, "The input file."),
        Col::new("line", Int64, "1-based line (JSONL, CSV) or row (Parquet) number; 0 if not applicable."),
        Col::new("field", Utf8, "The offending field (`` for the whole row)."),
        Col::new("reason", Utf8, "Why the row was rejected."),
        Col::new("raw", Utf8, "The row as read, for repair."),
    ],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineRow {
    pub source_file: String,
    pub line: i64,
    pub field: String,
    pub reason: String,
    pub raw: String,
}

/// Responses sampled from a model, K per prompt.
pub const SAMPLES: TableSpec = TableSpec {
    name: "samples",
    doc: "Responses sampled from a model: K per prompt, with tokens, log-probs and how they ended.",
    columns: &[
        Col::new("prompt_id", Utf8, "The prompt's id."),
        Col::new("prompt", Utf8, "The prompt text."),
        Col::new("sample_idx", Int32, "0..K-1 within the prompt."),
        Col::new("response", Utf8, "The decoded response (without the end-of-sequence token)."),
        Col::new("response_tokens", ListUInt32, "Generated token ids (including EOS when it ended so)."),
        Col::new("logprobs", ListFloat32, "Log-prob of each generated token under the sampling model (temperature 1)."),
        Col::new("finish_reason", Utf8, "`eos` or `length`."),
        Col::new("seed", UInt64, "The sequence's sampling seed."),
        Col::new("split", Utf8, "The prompt's split."),
        Col::new("family", Utf8, "The prompt's task family."),
        Col::new("meta", Utf8, "The prompt's hidden task metadata (JSON)."),
    ],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRow {
    pub prompt_id: String,
    pub prompt: String,
    pub sample_idx: i32,
    pub response: String,
    pub response_tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub finish_reason: String,
    pub seed: u64,
    pub split: String,
    pub family: String,
    pub meta: String,
}

/// Per-step training metrics in long format (one row per step and metric).
pub const TRAIN_LOG: TableSpec = TableSpec {
    name: "train_log",
    doc: "Per-step (or per-iteration) training metrics: loss, lr, grad norm, reward, KL, ...",
    columns: &[
        Col::new("step", Int64, "Optimizer step or PPO iteration."),
        Col::new("metric", Utf8, "Metric name."),
        Col::new("value", Float64, "Value."),
    ],
};

/// Timings (tokens/s, seconds) in the same long format; a volatile table:
/// kept, but not part of the content hash.
pub const TIMING: TableSpec =
    TableSpec { name: "timing", doc: "Per-step timings (volatile).", columns: TRAIN_LOG.columns };

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub step: i64,
    pub metric: String,
    pub value: f64,
}

/// Everything PPO knew about its rollouts, per iteration, for audit and replay.
pub const ROLLOUTS: TableSpec = TableSpec {
    name: "rollouts",
    doc: "PPO rollouts: tokens, log-probs, reference log-probs, values, rewards, advantages per iteration.",
    columns: &[
        Col::new("iteration", Int64, "PPO iteration."),
        Col::new("prompt_id", Utf8, "The prompt's id."),
        Col::new("response", Utf8, "The decoded response."),
        Col::new("response_tokens", ListUInt32, "Generated token ids."),
        Col::new("logprobs", ListFloat32, "Policy log-probs at sampling time."),
        Col::new("ref_logprobs", ListFloat32, "Reference (SFT) log-probs."),
        Col::new("values", ListFloat32, "Value estimates (empty with the leave-one-out advantage: no value model)."),
        Col::new("rewards", ListFloat32, "Per-token rewards (KL penalty, score at the end)."),
        Col::new("advantages", ListFloat32, "Advantages (GAE or leave-one-out; whitened if whiten_advantages)."),
        Col::new("score", Float32, "Sequence reward (reward model, gold judge or null control) before the KL penalty."),
        Col::new("gold", Float32, "The gold judge's score of the response (NaN for user data)."),
    ],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRow {
    pub iteration: i64,
    pub prompt_id: String,
    pub response: String,
    pub response_tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub ref_logprobs: Vec<f32>,
    pub values: Vec<f32>,
    pub rewards: Vec<f32>,
    pub advantages: Vec<f32>,
    pub score: f32,
    pub gold: f32,
}

/// Closed "benchmark" items in pretraining-text format, for the alignment tax.
pub const BENCHMARKS: TableSpec = TableSpec {
    name: "benchmarks",
    doc: "Multiple-choice items: the model scores each choice as a continuation of the context.",
    columns: &[
        Col::new("item_id", Utf8, "Stable item id."),
        Col::new("task", Utf8, "Which benchmark task."),
        Col::new("context", Utf8, "The text before the choices."),
        Col::new("choices", ListUtf8, "Candidate continuations."),
        Col::new("gold", Int32, "Index of the right choice."),
    ],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkRow {
    pub item_id: String,
    pub task: String,
    pub context: String,
    pub choices: Vec<String>,
    pub gold: i32,
}

/// Derives the comparisons of one ranking: every pair with different ranks,
/// better rank first. Ties are left out, as the reward model trains without them.
pub const METRICS: TableSpec = TableSpec {
    name: "metrics",
    doc: "Evaluation metrics: one row per (model, metric), with a 95% interval where one applies.",
    columns: &[
        Col::new("model", Utf8, "The pipeline step that made the model (`sft_tiny`, `ppo_ptx_tiny`, ...)."),
        Col::new("kind", Utf8, "`base`, `base_few_shot`, `sft`, `ppo`, `ppo_ptx` or `other`."),
        Col::new("size", Utf8, "The model's size label (`tiny`, `small`, ...)."),
        Col::new("params", Int64, "Number of model parameters."),
        Col::new("metric", Utf8, "Metric name (`win_rate`, `likert`, `truthful`, `toxicity_respectful`, ...)."),
        Col::new("value", Float64, "Point estimate."),
        Col::new("lo", Float64, "Lower end of the 95% interval (NaN when none)."),
        Col::new("hi", Float64, "Upper end of the 95% interval (NaN when none)."),
        Col::new("n", Int64, "How many items the estimate rests on."),
        Col::new("source", Utf8, "Key of the artifact that measured it (empty: the artifact holding this table)."),
    ],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub model: String,
    pub kind: String,
    pub size: String,
    pub params: i64,
    pub metric: String,
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: i64,
    pub source: String,
}

/// Prompts of `dataset` (empty: any) and of `splits` (empty: any), in prompt-id order, at most
/// `max` of them (0: all). How every stage picks the prompts it works on.
pub fn select_prompts(rows: Vec<PromptRow>, dataset: &str, splits: &[&str], max: usize) -> Vec<PromptRow> {
    let mut keep: Vec<PromptRow> = rows
        .into_iter()
        .filter(|r| dataset.is_empty() || r.dataset == dataset)
        .filter(|r| splits.is_empty() || splits.contains(&r.split.as_str()))
        .collect();
    keep.sort_by(|a, b| a.prompt_id.cmp(&b.prompt_id));
    if max > 0 {
        keep.truncate(max);
    }
    keep
}

pub fn comparisons_of(r: &RankingRow) -> Vec<ComparisonRow> {
    let mut out = Vec::new();
    for i in 0..r.responses.len() {
        for j in (i + 1)..r.responses.len() {
            let (w, l) = match r.ranks[i].cmp(&r.ranks[j]) {
                std::cmp::Ordering::Less => (i, j),
                std::cmp::Ordering::Greater => (j, i),
                std::cmp::Ordering::Equal => continue,
            };
            out.push(ComparisonRow {
                ranking_id: r.ranking_id.clone(),
                prompt_id: r.prompt_id.clone(),
                prompt: r.prompt.clone(),
                chosen: r.responses[w].clone(),
                rejected: r.responses[l].clone(),
                labeler_id: r.labeler_id.clone(),
                split: r.split.clone(),
            });
        }
    }
    out
}

/// All declared tables, for documentation and `show`.
pub const ALL: &[TableSpec] = &[
    PRETRAIN_TEXT,
    PROMPTS,
    DEMONSTRATIONS,
    RANKINGS,
    COMPARISONS,
    LABEL_TASKS,
    QUARANTINE,
    SAMPLES,
    TRAIN_LOG,
    TIMING,
    ROLLOUTS,
    BENCHMARKS,
    METRICS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_skip_ties_and_order_by_rank() {
        let r = RankingRow {
            ranking_id: "r".into(),
            prompt_id: "p".into(),
            prompt: "q".into(),
            responses: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            ranks: vec![2, 1, 2, 4],
            labeler_id: "l".into(),
            split: "train".into(),
            source: "x".into(),
        };
        let c = comparisons_of(&r);
        let pairs: Vec<(&str, &str)> = c.iter().map(|c| (c.chosen.as_str(), c.rejected.as_str())).collect();
        assert_eq!(pairs, vec![("b", "a"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]);
    }

    #[test]
    fn table_names_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|t| t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}
