//! `ingest.demonstrations`: prompt/response pairs (prompt/completion, Alpaca,
//! chat messages) -> `demonstrations`, `prompts`, `quarantine`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use lineage::tables::{DEMONSTRATIONS, DemonstrationRow, PROMPTS, QUARANTINE};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use serde::{Deserialize, Serialize};

use super::prompts::TOKENIZER_INPUT;
use super::{RowSettings, finish, ingest_rows, prompt_rows};
use crate::common::{Format, MissingUser, Paths};
use crate::formats::{Payload, Want};
use crate::hygiene::Hygiene;

pub struct Demonstrations;

/// Parameters of `ingest.demonstrations` (as `ingest.prompts`, plus response limits).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemonstrationsParams {
    /// The file, or a list of files.
    pub path: Paths,
    /// `auto`, prompt_completion, alpaca or messages.
    pub format: Format,
    /// Canonical column -> the file's column, e.g. `{ prompt = "question", completion = "answer" }`.
    pub columns: BTreeMap<String, String>,
    pub user_column: String,
    pub missing_user: MissingUser,
    /// `""`: the row's `dataset` column, else `sft`.
    pub dataset: String,
    pub split: String,
    pub validation_fraction: f64,
    pub test_fraction: f64,
    pub dedup_prefix_chars: usize,
    pub max_per_user: usize,
    pub scrub_pii: bool,
    pub max_prompt_chars: usize,
    pub max_response_chars: usize,
    pub max_prompt_tokens: usize,
    pub max_response_tokens: usize,
    pub max_bad_fraction: f64,
}

impl Default for DemonstrationsParams {
    fn default() -> Self {
        DemonstrationsParams {
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
            max_response_chars: 0,
            max_prompt_tokens: 0,
            max_response_tokens: 0,
            max_bad_fraction: 0.1,
        }
    }
}

impl DemonstrationsParams {
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
                max_response_chars: self.max_response_chars,
                max_prompt_tokens: self.max_prompt_tokens,
                max_response_tokens: self.max_response_tokens,
                dataset: self.dataset.clone(),
                default_dataset: "sft",
                seed,
            },
        }
    }
}

impl Validate for DemonstrationsParams {
    fn validate(&self) -> Result<(), String> {
        self.path.check()?;
        self.settings(0).validate()
    }
}

impl TypedStage for Demonstrations {
    type Params = DemonstrationsParams;
    const NAME: &'static str = "ingest.demonstrations";
    const ABOUT: &'static str =
        "Prompt/response pairs (prompt/completion, Alpaca, chat messages) -> demonstrations, prompts, quarantine.";
    const INPUTS: &'static [InputSpec] = &[TOKENIZER_INPUT];
    const OUTPUTS: &'static [TableSpec] = &[DEMONSTRATIONS, PROMPTS, QUARANTINE];
    const HEADLINE: Option<&'static str> = Some("demonstrations");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }
    fn file_deps(p: &DemonstrationsParams) -> Vec<PathBuf> {
        p.path.path_bufs()
    }
    fn run(ctx: &mut StageContext, p: &DemonstrationsParams) -> Result<()> {
        let ingested = ingest_rows(ctx, &p.settings(ctx.seed), Want::Demonstrations)?;
        let mut demos = Vec::new();
        for g in &ingested.groups {
            for e in &g.examples {
                if let Payload::Demonstration { response, labeler_id } = &e.payload {
                    demos.push(DemonstrationRow {
                        prompt_id: g.prompt_id.clone(),
                        prompt: g.text.clone(),
                        response: response.clone(),
                        split: g.split.clone(),
                        labeler_id: labeler_id.clone(),
                        source: e.origin.file.clone(),
                    });
                }
            }
        }
        let prompts = prompt_rows(&ingested.groups);
        ctx.write_rows(&DEMONSTRATIONS, &demos)?;
        ctx.write_rows(&PROMPTS, &prompts)?;
        ctx.metric("demonstrations", demos.len() as f64);
        finish(ctx, &ingested, &prompts)
    }
}
