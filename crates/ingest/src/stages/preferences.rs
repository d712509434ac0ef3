//! `ingest.preferences`: preference pairs (TRL standard and conversational,
//! Anthropic HH-RLHF) or K-way rankings -> `rankings` (a pair is a K = 2
//! ranking), `comparisons`, `prompts`, `quarantine`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use lineage::tables::{COMPARISONS, PROMPTS, QUARANTINE, RANKINGS, RankingRow, comparisons_of};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use serde::{Deserialize, Serialize};

use super::prompts::TOKENIZER_INPUT;
use super::{RowSettings, finish, ingest_rows, prompt_rows};
use crate::common::{Format, MissingUser, Paths, stable_id};
use crate::formats::{Payload, Want};
use crate::hygiene::Hygiene;

pub struct Preferences;

/// Parameters of `ingest.preferences` (as `ingest.demonstrations`).
///
/// Common-prefix deduplication is off by default here: preference data often
/// holds several rankings of one prompt, and multi-turn prompts that share an
/// opening; exact duplicate prompts merge, and a repeated ranking is dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreferencesParams {
    pub path: Paths,
    /// `auto`, pairs, pairs_conversational, hh_rlhf or rankings.
    pub format: Format,
    pub columns: BTreeMap<String, String>,
    pub user_column: String,
    pub missing_user: MissingUser,
    /// `""`: the row's `dataset` column, else `rm`.
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

impl Default for PreferencesParams {
    fn default() -> Self {
        PreferencesParams {
            path: Paths::default(),
            format: Format::Auto,
            columns: BTreeMap::new(),
            user_column: String::new(),
            missing_user: MissingUser::File,
            dataset: String::new(),
            split: String::new(),
            validation_fraction: 0.1,
            test_fraction: 0.1,
            dedup_prefix_chars: 0,
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

impl PreferencesParams {
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
                default_dataset: "rm",
                seed,
            },
        }
    }
}

impl Validate for PreferencesParams {
    fn validate(&self) -> Result<(), String> {
        self.path.check()?;
        self.settings(0).validate()
    }
}

/// A ranking's id: its prompt, labeler, responses and ranks.
pub fn ranking_id(prompt_id: &str, labeler_id: &str, responses: &[String], ranks: &[i32]) -> String {
    let ranks = ranks.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let mut parts: Vec<&str> = vec![prompt_id, labeler_id, &ranks];
    parts.extend(responses.iter().map(String::as_str));
    stable_id("r", &parts)
}

impl TypedStage for Preferences {
    type Params = PreferencesParams;
    const NAME: &'static str = "ingest.preferences";
    const ABOUT: &'static str =
        "Preference pairs (TRL, HH-RLHF) or K-way rankings -> rankings, comparisons, prompts, quarantine.";
    const INPUTS: &'static [InputSpec] = &[TOKENIZER_INPUT];
    const OUTPUTS: &'static [TableSpec] = &[RANKINGS, COMPARISONS, PROMPTS, QUARANTINE];
    const HEADLINE: Option<&'static str> = Some("comparisons");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }
    fn file_deps(p: &PreferencesParams) -> Vec<PathBuf> {
        p.path.path_bufs()
    }
    fn run(ctx: &mut StageContext, p: &PreferencesParams) -> Result<()> {
        let ingested = ingest_rows(ctx, &p.settings(ctx.seed), Want::Preferences)?;
        let mut rankings = Vec::new();
        for g in &ingested.groups {
            for e in &g.examples {
                if let Payload::Ranking { responses, ranks, labeler_id } = &e.payload {
                    rankings.push(RankingRow {
                        ranking_id: ranking_id(&g.prompt_id, labeler_id, responses, ranks),
                        prompt_id: g.prompt_id.clone(),
                        prompt: g.text.clone(),
                        responses: responses.clone(),
                        ranks: ranks.clone(),
                        labeler_id: labeler_id.clone(),
                        split: g.split.clone(),
                        source: e.origin.file.clone(),
                    });
                }
            }
        }
        let comparisons: Vec<_> = rankings.iter().flat_map(comparisons_of).collect();
        let prompts = prompt_rows(&ingested.groups);
        ctx.write_rows(&RANKINGS, &rankings)?;
        ctx.write_rows(&COMPARISONS, &comparisons)?;
        ctx.write_rows(&PROMPTS, &prompts)?;
        ctx.metric("rankings", rankings.len() as f64);
        ctx.metric("comparisons", comparisons.len() as f64);
        let mut k: BTreeMap<usize, u64> = BTreeMap::new();
        for r in &rankings {
            *k.entry(r.responses.len()).or_default() += 1;
        }
        ctx.stat("rankings_per_k", serde_json::json!(k));
        finish(ctx, &ingested, &prompts)
    }
}
