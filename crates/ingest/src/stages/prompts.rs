//! `ingest.prompts`: a user's file of prompts -> `prompts`, `quarantine`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use lineage::tables::{PROMPTS, QUARANTINE};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use serde::{Deserialize, Serialize};

use super::{RowSettings, finish, ingest_rows, prompt_rows};
use crate::common::{Format, MissingUser, Paths};
use crate::formats::Want;
use crate::hygiene::Hygiene;

pub struct Prompts;

/// Parameters of `ingest.prompts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptsParams {
    /// The file, or a list of files (.jsonl, .json, .csv, .tsv, .parquet).
    pub path: Paths,
    /// `auto`, or one of prompt, prompt_completion, alpaca, messages, pairs,
    /// pairs_conversational, hh_rlhf, rankings (only the prompts are kept).
    pub format: Format,
    /// Canonical column -> the file's column, e.g. `{ prompt = "question" }`.
    pub columns: BTreeMap<String, String>,
    /// The column of user ids (`""`: `user_id`, else `user`).
    pub user_column: String,
    /// A row without a user id: `file` (the file is one user) or `row` (each prompt is its own user).
    pub missing_user: MissingUser,
    /// The file's dataset: sft, rm, ppo or eval (`""`: the row's `dataset` column, else `ppo`).
    pub dataset: String,
    /// Put every prompt in this split (`""`: split by a seeded hash of the user id).
    pub split: String,
    pub validation_fraction: f64,
    pub test_fraction: f64,
    /// Prompts sharing this many leading (normalised) characters are duplicates; 0 turns it off.
    pub dedup_prefix_chars: usize,
    /// At most this many prompts per user; 0 turns the cap off.
    pub max_per_user: usize,
    /// Replace e-mail addresses and phone numbers in the training split.
    pub scrub_pii: bool,
    /// Longer prompts are dropped (0: no limit).
    pub max_prompt_chars: usize,
    /// Longer prompts are dropped (0: no limit); needs the `tokenizer` input.
    pub max_prompt_tokens: usize,
    /// The step fails when more than this fraction of a file's rows are malformed.
    pub max_bad_fraction: f64,
}

impl Default for PromptsParams {
    fn default() -> Self {
        PromptsParams {
            path: Paths::default(),
            format: Format::Auto,
            columns: BTreeMap::new(),
            user_column: String::new(),
            missing_user: MissingUser::File,
            dataset: String::new(),
            split: String::new(),
            validation_fraction: 0.1,
            test_fraction: 0.1,
            dedup_prefix_chars: 100,
            max_per_user: 200,
            scrub_pii: true,
            max_prompt_chars: 0,
            max_prompt_tokens: 0,
            max_bad_fraction: 0.1,
        }
    }
}

impl PromptsParams {
    fn settings(&self, seed: u64) -> RowSettings {
        RowSettings {
            paths: self.path.list(),
            format: self.format,
            columns: self.columns.clone(),
            user_column: self.user_column.clone(),
            missing_user: self.missing_user,
            max_bad_fraction: self.max_bad_fraction,
            hygiene: Hygiene {
                dedup_prefix_chars: self.dedup_prefix_chars,
                max_per_user: self.max_per_user,
                validation_fraction: self.validation_fraction,
                test_fraction: self.test_fraction,
                split: self.split.clone(),
                scrub_pii: self.scrub_pii,
                max_prompt_chars: self.max_prompt_chars,
                max_response_chars: 0,
                max_prompt_tokens: self.max_prompt_tokens,
                max_response_tokens: 0,
                dataset: self.dataset.clone(),
                default_dataset: "ppo",
                seed,
            },
        }
    }
}

impl Validate for PromptsParams {
    fn validate(&self) -> Result<(), String> {
        self.path.check()?;
        self.settings(0).validate()
    }
}

pub(crate) const TOKENIZER_INPUT: InputSpec = InputSpec::optional(
    "tokenizer",
    "A tokenizer artifact (ingest.tokenizer), for length limits in tokens (max_*_tokens).",
);

impl TypedStage for Prompts {
    type Params = PromptsParams;
    const NAME: &'static str = "ingest.prompts";
    const ABOUT: &'static str =
        "A file of user prompts -> prompts (deduplicated, capped per user, split by user, PII scrubbed), quarantine.";
    const INPUTS: &'static [InputSpec] = &[TOKENIZER_INPUT];
    const OUTPUTS: &'static [TableSpec] = &[PROMPTS, QUARANTINE];
    const HEADLINE: Option<&'static str> = Some("prompts");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }
    fn file_deps(p: &PromptsParams) -> Vec<PathBuf> {
        p.path.path_bufs()
    }
    fn run(ctx: &mut StageContext, p: &PromptsParams) -> Result<()> {
        let ingested = ingest_rows(ctx, &p.settings(ctx.seed), Want::Prompts)?;
        let prompts = prompt_rows(&ingested.groups);
        ctx.write_rows(&PROMPTS, &prompts)?;
        finish(ctx, &ingested, &prompts)
    }
}
