//! `rollout.label`: simulated labelers rank each prompt's K samples.
//!
//! Each prompt goes to one training labeler of the pool (chosen by a hash of the prompt id), who
//! ranks its K responses with ties allowed, as the paper's labelers did. Inter-labeler agreement on
//! a subset of the same samples is measured and recorded, so the reward model's accuracy can be read
//! against it (the paper: 72.6% among training labelers).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use lineage::tables::{COMPARISONS, RANKINGS, RankingRow, SAMPLES, SampleRow, comparisons_of};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use serde::{Deserialize, Serialize};
use world::labelers::{Group, Pool, agreement};
use world::meta::{Response, parse_meta};

pub struct Label;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelParams {
    /// Seed of the labeler population (the same population evaluation draws its held-out group from).
    pub labeler_seed: u64,
    /// Training labelers.
    pub labelers: usize,
    /// Independent rankings per prompt, by distinct labelers (the paper mostly had one).
    pub rankings_per_prompt: usize,
    /// Held-out labelers (for evaluation only; stored with the population).
    pub heldout_labelers: usize,
    /// Prompts on which every training labeler's agreement is measured (0: skip).
    pub agreement_prompts: usize,
    /// Re-fit the labelers' noise so training labelers agree on this share of non-tied pairs of
    /// these very samples (the paper: 0.73 on SFT outputs); 0 keeps the world's calibration.
    pub calibrate_to: f64,
}

impl Default for LabelParams {
    fn default() -> Self {
        LabelParams {
            labeler_seed: 0,
            labelers: 8,
            heldout_labelers: 5,
            rankings_per_prompt: 1,
            agreement_prompts: 200,
            calibrate_to: 0.73,
        }
    }
}

impl Validate for LabelParams {
    fn validate(&self) -> Result<(), String> {
        if !(self.calibrate_to == 0.0 || (0.5..1.0).contains(&self.calibrate_to)) {
            return Err(format!("calibrate_to = {} must be 0 (off) or in [0.5, 1)", self.calibrate_to));
        }
        if self.calibrate_to > 0.0 && (self.agreement_prompts == 0 || self.labelers < 2) {
            return Err("calibrate_to needs agreement_prompts > 0 and at least 2 labelers".into());
        }
        if self.labelers == 0 {
            return Err("labelers must be at least 1".into());
        }
        if self.rankings_per_prompt == 0 || self.rankings_per_prompt > self.labelers {
            return Err(format!(
                "rankings_per_prompt = {} must be between 1 and labelers = {}",
                self.rankings_per_prompt, self.labelers
            ));
        }
        Ok(())
    }
}

/// Samples grouped by prompt, in prompt-id order, each group in sample order.
pub fn group_samples(rows: Vec<SampleRow>) -> Vec<Vec<SampleRow>> {
    let mut by: BTreeMap<String, Vec<SampleRow>> = BTreeMap::new();
    for r in rows {
        by.entry(r.prompt_id.clone()).or_default().push(r);
    }
    by.into_values()
        .map(|mut g| {
            g.sort_by_key(|r| r.sample_idx);
            g
        })
        .collect()
}

fn responses(group: &[SampleRow]) -> Vec<Response> {
    group.iter().map(|r| Response::new(r.response.clone(), r.finish_reason == "eos")).collect()
}

impl TypedStage for Label {
    type Params = LabelParams;
    const NAME: &'static str = "rollout.label";
    const ABOUT: &'static str =
        "Simulated labelers rank each prompt's K samples (ties allowed) -> rankings and comparisons.";
    const INPUTS: &'static [InputSpec] =
        &[InputSpec::one("samples", "A samples table with the world's task metadata (K >= 2 per prompt).")];
    const OUTPUTS: &'static [TableSpec] = &[RANKINGS, COMPARISONS];
    const HEADLINE: Option<&'static str> = Some("labeler_agreement");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }

    fn run(ctx: &mut StageContext, p: &LabelParams) -> Result<()> {
        let groups = group_samples(ctx.read_rows("samples", &SAMPLES)?);
        let mut metas = Vec::with_capacity(groups.len());
        for g in &groups {
            let first = &g[0];
            if g.len() < 2 {
                bail!("prompt {}: {} sample(s); ranking needs K >= 2", first.prompt_id, g.len());
            }
            metas.push(match parse_meta(&first.meta) {
                Ok(Some(m)) => m,
                Ok(None) => bail!(
                    "prompt {}: no task metadata, so simulated labelers cannot judge it. For your own prompts, \
                     export label tasks with ingest.export_labels and bring the rankings back with \
                     ingest.import_labels",
                    first.prompt_id
                ),
                Err(e) => bail!("samples table, prompt {}, field meta: {e}", first.prompt_id),
            });
        }
        let agreement_groups: Vec<Group> = groups
            .iter()
            .zip(&metas)
            .take(p.agreement_prompts)
            .map(|(g, m)| Group { prompt_id: g[0].prompt_id.clone(), meta: m.clone(), responses: responses(g) })
            .collect();
        let pool = if p.calibrate_to > 0.0 {
            let (pool, scale) =
                Pool::calibrated(p.labeler_seed, p.labelers, p.heldout_labelers, &agreement_groups, p.calibrate_to);
            ctx.metric("noise_scale", scale);
            pool
        } else {
            Pool::new(p.labeler_seed, p.labelers, p.heldout_labelers)
        };

        let mut rankings = Vec::new();
        for (g, meta) in groups.iter().zip(&metas) {
            let first = &g[0];
            let resp = responses(g);
            let start = (blake3::hash(first.prompt_id.as_bytes()).as_bytes()[0] as usize) % p.labelers;
            for j in 0..p.rankings_per_prompt {
                let labeler = &pool.train[(start + j) % p.labelers];
                let ranks = labeler.rank(&first.prompt_id, meta, &resp);
                rankings.push(RankingRow {
                    ranking_id: format!("{}/{}", first.prompt_id, labeler.id),
                    prompt_id: first.prompt_id.clone(),
                    prompt: first.prompt.clone(),
                    responses: g.iter().map(|r| r.response.clone()).collect(),
                    ranks: ranks.iter().map(|&r| r as i32).collect(),
                    labeler_id: labeler.id.clone(),
                    split: first.split.clone(),
                    source: "simulated".into(),
                });
            }
        }
        let comparisons: Vec<_> = rankings.iter().flat_map(comparisons_of).collect();
        let possible: usize = rankings.iter().map(|r| r.responses.len() * (r.responses.len() - 1) / 2).sum();
        ctx.metric("rankings", rankings.len() as f64);
        ctx.metric("comparisons", comparisons.len() as f64);
        ctx.metric("tie_fraction", 1.0 - comparisons.len() as f64 / possible.max(1) as f64);
        if !agreement_groups.is_empty() && p.labelers >= 2 {
            let refs: Vec<_> = pool.train.iter().collect();
            let a = agreement(&refs, &agreement_groups);
            ctx.metric("labeler_agreement", a.agreement);
            ctx.metric("labeler_agreement_std", a.std_over_pairs);
            ctx.metric("labeler_tie_rate", a.tie_rate);
            if !pool.heldout.is_empty() {
                let held: Vec<_> = pool.heldout.iter().collect();
                ctx.metric("heldout_labeler_agreement", agreement(&held, &agreement_groups).agreement);
            }
        }
        // The population travels with its rankings: evaluation draws its held-out labelers from it.
        pool.save_to_dir(ctx.out_path(world::labelers::POOL_FILE)?.parent().expect("artifact dir"))?;
        ctx.write_rows(&RANKINGS, &rankings)?;
        ctx.write_rows(&COMPARISONS, &comparisons)
    }
}
