//! `ingest.world`: the embedded synthetic instruction world -> the same
//! canonical tables users' data becomes: `pretrain_text`, `prompts` (with the
//! hidden task metadata the gold judge needs), `demonstrations`,
//! `benchmarks`, `quarantine`.
//!
//! The world's prompts go through the same hygiene as users' prompts
//! (deduplication, the per-user cap). The split is by user: the world marks
//! whole users for evaluation, who form the test split; the other users are
//! split between train and validation by a seeded hash.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use lineage::tables::{
    BENCHMARKS, BenchmarkRow, DEMONSTRATIONS, DemonstrationRow, PRETRAIN_TEXT, PROMPTS, PretrainTextRow, PromptRow,
};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use serde::{Deserialize, Serialize};
use serde_json::json;
use world::{World, WorldConfig, WorldSize};

use super::{Ingested, finish};
use crate::common::check_fraction;
use crate::formats::{Example, Payload};
use crate::hygiene::{self, Hygiene};
use crate::quarantine::{Origin, Quarantine};

pub struct WorldStage;

/// Parameters of `ingest.world`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorldParams {
    /// `smoke`, `default` or `large`.
    pub size: String,
    /// Overrides of the size's counts (0 = the size's own).
    pub n_docs: usize,
    pub n_prompts: usize,
    pub n_users: usize,
    /// Chance that a demonstration shows its writer's habit (terse, hasty, skipping a constraint,
    /// embellishing); unset = the world's own (`world::DEMO_HABIT_RATE`), 0 = ideal demonstrations.
    pub demo_habit_rate: Option<f64>,
    /// Share of the non-evaluation users whose prompts form the validation split.
    pub validation_fraction: f64,
    /// The paper's cap on prompts per user.
    pub max_per_user: usize,
    /// Common-prefix deduplication (0 = exact duplicates only: the world's
    /// prompts are short, so a short shared prefix does not mean a duplicate).
    pub dedup_prefix_chars: usize,
}

impl Default for WorldParams {
    fn default() -> Self {
        WorldParams {
            size: "default".into(),
            n_docs: 0,
            n_prompts: 0,
            n_users: 0,
            demo_habit_rate: None,
            validation_fraction: 0.1,
            max_per_user: 200,
            dedup_prefix_chars: 0,
        }
    }
}

impl WorldParams {
    fn config(&self, seed: u64) -> Result<WorldConfig, String> {
        let size = WorldSize::from_name(&self.size)
            .ok_or_else(|| format!("size = \"{}\" is not one of smoke, default, large", self.size))?;
        let mut c = WorldConfig::new(seed, size);
        if self.n_docs > 0 {
            c.n_docs = self.n_docs;
        }
        if self.n_prompts > 0 {
            c.n_prompts = self.n_prompts;
        }
        if self.n_users > 0 {
            c.n_users = self.n_users;
        }
        if let Some(rate) = self.demo_habit_rate {
            c.demo_habit_rate = rate;
        }
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

impl Validate for WorldParams {
    fn validate(&self) -> Result<(), String> {
        check_fraction("validation_fraction", self.validation_fraction)?;
        self.config(0).map(|_| ())
    }
}

impl TypedStage for WorldStage {
    type Params = WorldParams;
    const NAME: &'static str = "ingest.world";
    const ABOUT: &'static str = "The embedded synthetic instruction world: pretraining text, prompts with hidden task metadata, demonstrations, benchmarks.";
    const INPUTS: &'static [InputSpec] = &[];
    const OUTPUTS: &'static [TableSpec] =
        &[PRETRAIN_TEXT, PROMPTS, DEMONSTRATIONS, BENCHMARKS, lineage::tables::QUARANTINE];
    const HEADLINE: Option<&'static str> = Some("prompts");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }

    fn run(ctx: &mut StageContext, p: &WorldParams) -> Result<()> {
        let config = p.config(ctx.derive_seed("world")).map_err(anyhow::Error::msg)?;
        let world = World::from_config(config.clone()).context("generating the world")?;

        // Pretraining text.
        let docs: Vec<PretrainTextRow> = world
            .pretrain_docs()
            .iter()
            .map(|d| PretrainTextRow {
                doc_id: d.id.clone(),
                text: d.text.clone(),
                kind: d.kind.name().to_string(),
                split: d.split.name().to_string(),
                source: "world".into(),
            })
            .collect();

        // Prompts through hygiene, exactly like users' prompts.
        let by_id: BTreeMap<&str, &world::Prompt> = world.prompts().iter().map(|p| (p.id.as_str(), p)).collect();
        let examples: Vec<Example> = world
            .prompts()
            .iter()
            .enumerate()
            .map(|(i, wp)| Example {
                origin: Origin { file: "world".into(), line: i as i64 + 1, raw: wp.id.clone() },
                prompt: wp.text.clone(),
                user_id: wp.user_id.clone(),
                dataset: Some(wp.purpose.name().to_string()),
                family: Some(wp.family.name().to_string()),
                payload: Payload::Prompt,
            })
            .collect();
        let h = Hygiene {
            dedup_prefix_chars: p.dedup_prefix_chars,
            max_per_user: p.max_per_user,
            validation_fraction: p.validation_fraction,
            // The world chooses the evaluation users; hygiene must not move
            // other users into the test split.
            test_fraction: 0.0,
            split: String::new(),
            scrub_pii: false,
            max_prompt_chars: 0,
            max_response_chars: 0,
            max_prompt_tokens: 0,
            max_response_tokens: 0,
            dataset: String::new(),
            default_dataset: "ppo",
            seed: ctx.derive_seed("split"),
        };
        let mut q = Quarantine::new();
        q.count_rows("world", examples.len() as u64);
        let (groups, report) = hygiene::apply(examples, &h, None, &mut q);
        let mut prompts = Vec::with_capacity(groups.len());
        for g in &groups {
            let wp = by_id[g.examples[0].origin.raw.as_str()];
            let split = if g.dataset == "eval" { "test".to_string() } else { g.split.clone() };
            prompts.push(PromptRow {
                prompt_id: wp.id.clone(),
                text: wp.text.clone(),
                user_id: wp.user_id.clone(),
                split,
                dataset: g.dataset.clone(),
                family: wp.family.name().to_string(),
                meta: wp.meta.to_json(),
                source: "world".into(),
            });
        }

        // Demonstrations of the SFT prompts that survived hygiene, in their split.
        let split_of: BTreeMap<&str, &str> = prompts.iter().map(|r| (r.prompt_id.as_str(), r.split.as_str())).collect();
        let demonstrations: Vec<DemonstrationRow> = world
            .demonstrations()
            .into_iter()
            .filter_map(|d| {
                let split = split_of.get(d.prompt_id.as_str())?.to_string();
                Some(DemonstrationRow {
                    prompt_id: d.prompt_id,
                    prompt: d.prompt,
                    response: d.response,
                    split,
                    labeler_id: d.labeler_id,
                    source: "world".into(),
                })
            })
            .collect();

        let benchmarks: Vec<BenchmarkRow> = world
            .benchmarks()
            .iter()
            .map(|b| BenchmarkRow {
                item_id: b.id.clone(),
                task: b.task.clone(),
                context: b.context.clone(),
                choices: b.choices.clone(),
                gold: b.gold as i32,
            })
            .collect();

        ctx.write_rows(&PRETRAIN_TEXT, &docs)?;
        ctx.write_rows(&PROMPTS, &prompts)?;
        ctx.write_rows(&DEMONSTRATIONS, &demonstrations)?;
        ctx.write_rows(&BENCHMARKS, &benchmarks)?;
        let ingested = Ingested { groups, quarantine: q, report, formats: BTreeMap::from([("world".into(), "world")]) };
        finish(ctx, &ingested, &prompts)?;

        // The world's own statistics: sizes, the family mix, corpus readiness.
        let words: usize = docs.iter().map(|d| d.text.split_whitespace().count()).sum();
        ctx.metric("docs", docs.len() as f64);
        ctx.metric("pretrain_words", words as f64);
        ctx.metric("demonstrations", demonstrations.len() as f64);
        // How many demonstrations fall short of the ideal response (their writer's habit showed).
        let short = demonstrations
            .iter()
            .filter(|d| d.response != world::ideal_response(&by_id[d.prompt_id.as_str()].meta))
            .count();
        ctx.metric("demonstrations_below_ideal", short as f64 / demonstrations.len().max(1) as f64);
        ctx.metric("benchmark_items", benchmarks.len() as f64);
        let mut families: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &prompts {
            *families.entry(r.family.as_str()).or_default() += 1;
        }
        ctx.stat("family_mix", json!(families));
        ctx.stat("world_config", serde_json::to_value(&config)?);
        let r = world::corpus::readiness(&world);
        ctx.metric("corpus_assistant_format_docs", r.assistant_format_docs as f64);
        ctx.metric("corpus_answered_in_place", r.answered_in_place as f64);
        ctx.metric("corpus_recurring_entity_share", r.recurring_entity_share);
        ctx.metric("corpus_forum_quote_share", r.forum_quote_share);
        ctx.metric("corpus_echo_share", r.echo_share);
        ctx.stat(
            "corpus_readiness",
            json!({
                "docs": r.docs, "words": r.words, "prompt_lines": r.prompt_lines,
                "myth_statements": r.myth_statements, "truth_statements": r.truth_statements,
            }),
        );
        if r.assistant_format_docs > 0 || r.answered_in_place > 0 {
            ctx.warn(format!(
                "the pretraining corpus answers instructions ({} docs in the assistant format, {} prompts answered in place): the base model would not be misaligned",
                r.assistant_format_docs, r.answered_in_place
            ));
        }
        Ok(())
    }
}
