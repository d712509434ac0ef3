//! `rm.rm`: train the reward model on K-way rankings.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Tensor;
use lineage::log::TrainLog;
use lineage::tables::{DEMONSTRATIONS, DemonstrationRow, PROMPTS, PromptRow, RANKINGS, RankingRow, TIMING, TRAIN_LOG};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use model::batch::Batch;
use model::bundle::{Bundle, score_pairs};
use model::dropout::Dropout;
use model::lm::ScalarModel;
use model::train::{self, AdamW, AdamWConfig, Grads, LrSchedule, ParamGroup, data::epoch_order};
use serde::{Deserialize, Serialize};
use world::judge::{Judgment, judge};
use world::labelers::{Pool, Preference};
use world::meta::{Response, parse_meta};

use crate::loss::ranking_loss;

pub struct RewardModel;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmParams {
    /// The paper trains one epoch: more overfits.
    pub epochs: u64,
    /// Rankings (prompts) per optimizer step; each contributes its K responses.
    pub batch_prompts: usize,
    pub lr: f64,
    /// The scalar head's learning rate is `lr * head_lr_mult`.
    pub head_lr_mult: f64,
    /// Standard deviation of the head's random init.
    pub head_std: f64,
    pub warmup_steps: u64,
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    /// Longest prompt and response, in tokens (longer ones are cut).
    pub max_prompt_tokens: usize,
    pub max_response_tokens: usize,
    /// Population seed and size of the held-out labelers the RM is checked against, when no
    /// `labelers` input brings the population the rankings came from.
    pub labeler_seed: u64,
    pub heldout_labelers: usize,
    /// Demonstrations used to normalise the reward (0: all).
    pub norm_max_demos: usize,
    /// Residual dropout while training (0: none). Regularises runs of more than one epoch.
    pub dropout: f64,
    /// Adds to the head's scalar a learned multiple of the response's mean token log-probability
    /// under the trunk's own language-model head (off: the paper's reward model). A small trunk
    /// that cannot learn from the comparisons what its own likelihood already knows gets it as a
    /// feature; the ranking loss trains the coefficient, the head and the unembedding with the rest.
    pub likelihood_term: bool,
    /// The coefficient's initial value (with `likelihood_term`). It is a `score.` parameter, so it
    /// learns at the head's rate; an untied unembedding learns at the trunk's.
    pub likelihood_init: f64,
}

impl Default for RmParams {
    fn default() -> Self {
        RmParams {
            epochs: 1,
            batch_prompts: 8,
            lr: 3e-4,
            head_lr_mult: 10.0,
            head_std: 0.02,
            warmup_steps: 5,
            min_lr_ratio: 0.1,
            weight_decay: 0.0,
            grad_clip: 1.0,
            max_prompt_tokens: 96,
            max_response_tokens: 64,
            labeler_seed: 0,
            heldout_labelers: 4,
            norm_max_demos: 512,
            dropout: 0.0,
            likelihood_term: false,
            likelihood_init: 1.0,
        }
    }
}

impl Validate for RmParams {
    fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 || self.batch_prompts == 0 {
            return Err("epochs and batch_prompts must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.head_lr_mult > 0.0 && self.head_std >= 0.0) {
            return Err("lr and head_lr_mult must be > 0, head_std >= 0".into());
        }
        if !self.likelihood_init.is_finite() {
            return Err(format!("likelihood_init must be finite, got {}", self.likelihood_init));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.max_prompt_tokens == 0 || self.max_response_tokens == 0 {
            return Err("max_prompt_tokens and max_response_tokens must be at least 1".into());
        }
        Ok(())
    }
}

/// A ranking encoded for the reward model.
pub struct EncodedRanking {
    pub pairs: Vec<(Vec<u32>, Vec<u32>)>,
    pub ranks: Vec<i32>,
}

/// Encodes one (prompt, response) as the reward model reads it: the prompt in the instruction
/// format, then the response and EOS, each cut to its limit (the prompt from the left).
pub fn encode_for_rm(
    b: &Bundle,
    prompt: &str,
    response: &str,
    max_prompt: usize,
    max_response: usize,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let (p, _) = b.encode_prompt(prompt, max_prompt)?;
    let mut r = b.tok.encode(response)?;
    r.truncate(max_response.saturating_sub(1));
    r.push(b.eos);
    Ok((p, r))
}

fn encode_rankings(b: &Bundle, rows: &[RankingRow], p: &RmParams) -> Result<Vec<EncodedRanking>> {
    rows.iter()
        .map(|r| {
            if r.responses.len() != r.ranks.len() {
                bail!(
                    "rankings table, ranking {}: {} responses but {} ranks",
                    r.ranking_id,
                    r.responses.len(),
                    r.ranks.len()
                );
            }
            let pairs = r
                .responses
                .iter()
                .map(|resp| encode_for_rm(b, &r.prompt, resp, p.max_prompt_tokens, p.max_response_tokens))
                .collect::<Result<Vec<_>>>()?;
            Ok(EncodedRanking { pairs, ranks: r.ranks.clone() })
        })
        .collect()
}

/// Loss and accuracy of a set of rankings (each is one batch element; one forward over all their
/// responses). The loss is the mean over rankings with at least one non-tied pair.
fn batch_loss(
    rm: &ScalarModel,
    items: &[&EncodedRanking],
    dropout: Option<&mut Dropout>,
) -> Result<Option<(Tensor, usize, usize)>> {
    let all: Vec<(Vec<u32>, Vec<u32>)> = items.iter().flat_map(|e| e.pairs.iter().cloned()).collect();
    let batch = Batch::aligned(&all, rm.device())?;
    let rewards = rm.rewards(&batch, dropout)?;
    let (mut losses, mut pairs, mut correct, mut off) = (Vec::new(), 0, 0, 0);
    for e in items {
        let k = e.pairs.len();
        if let Some((loss, stats)) = ranking_loss(&rewards.narrow(0, off, k)?, &e.ranks)? {
            losses.push(loss);
            pairs += stats.pairs;
            correct += stats.correct;
        }
        off += k;
    }
    if losses.is_empty() {
        return Ok(None);
    }
    let n = losses.len() as f64;
    Ok(Some(((Tensor::stack(&losses, 0)?.sum_all()? / n)?, pairs, correct)))
}

/// Mean loss and pairwise accuracy over `set`, no gradients.
fn evaluate(rm: &ScalarModel, set: &[EncodedRanking], batch: usize) -> Result<(f64, f64, usize)> {
    let frozen = rm.frozen()?;
    let (mut loss, mut n, mut pairs, mut correct) = (0.0, 0usize, 0usize, 0usize);
    for chunk in set.chunks(batch.max(1)) {
        let items: Vec<&EncodedRanking> = chunk.iter().collect();
        if let Some((l, p, c)) = batch_loss(&frozen, &items, None)? {
            let k = items.iter().filter(|e| e.ranks.iter().any(|r| *r != e.ranks[0])).count();
            loss += l.to_scalar::<f32>()? as f64 * k as f64;
            n += k;
            pairs += p;
            correct += c;
        }
    }
    Ok((loss / n.max(1) as f64, correct as f64 / pairs.max(1) as f64, pairs))
}

impl TypedStage for RewardModel {
    type Params = RmParams;
    const NAME: &'static str = "rm.rm";
    const ABOUT: &'static str =
        "Train the reward model on K-way rankings from the SFT trunk; normalise so demonstrations score 0.";
    const INPUTS: &'static [InputSpec] = &[
        InputSpec::one("base", "The SFT model artifact whose trunk the reward model starts from."),
        InputSpec::one("rankings", "A rankings table (train split trains, validation split validates)."),
        InputSpec::optional("demonstrations", "Demonstrations: the reward is shifted so their mean is 0."),
        InputSpec::optional("prompts", "Prompts with task metadata: agreement with held-out labelers."),
        InputSpec::optional(
            "labelers",
            "The labelling artifact whose labeler population (held-out group) checks the RM.",
        ),
    ];
    const OUTPUTS: &'static [TableSpec] = &[TRAIN_LOG, TIMING];
    const USES_DEVICE: bool = true;
    const HEADLINE: Option<&'static str> = Some("val_accuracy");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }

    fn run(ctx: &mut StageContext, p: &RmParams) -> Result<()> {
        let dir = ctx.input("base")?.model_dir();
        let device = train::parse_device(&ctx.device)?;
        let base = Bundle::load(&dir, &device).with_context(|| format!("loading {}", dir.display()))?;
        let rm = ScalarModel::from_causal_lm_with_likelihood(
            &base.lm,
            p.head_std,
            ctx.derive_seed("head"),
            p.likelihood_term.then_some(p.likelihood_init),
        )?;

        let rows: Vec<RankingRow> = ctx.read_rows("rankings", &RANKINGS)?;
        let train_rows: Vec<RankingRow> = rows.iter().filter(|r| r.split == "train").cloned().collect();
        let val_rows: Vec<RankingRow> = rows.iter().filter(|r| r.split == "validation").cloned().collect();
        if train_rows.is_empty() {
            bail!("the rankings table has no train-split rows");
        }
        let train_set = encode_rankings(&base, &train_rows, p)?;
        let val_set = encode_rankings(&base, &val_rows, p)?;
        ctx.metric("train_rankings", train_set.len() as f64);
        ctx.metric("val_rankings", val_set.len() as f64);

        let steps_per_epoch = train_set.len().div_ceil(p.batch_prompts) as u64;
        let total = steps_per_epoch * p.epochs;
        let sched = LrSchedule::new(p.lr, p.warmup_steps.min(total / 2), total, p.min_lr_ratio);
        let mut opt = AdamW::new(
            rm.params(),
            AdamWConfig { weight_decay: p.weight_decay, ..AdamWConfig::default() },
            vec![ParamGroup::new("score.", p.head_lr_mult)],
        )?;
        let mut log = TrainLog::default();
        let bar = ctx.progress().bar(total, format!("{} reward model", ctx.step));
        let order_seed = ctx.derive_seed("order");
        let mut dropout = (p.dropout > 0.0).then(|| Dropout::new(p.dropout, ctx.derive_seed("dropout")));
        let mut step = 0u64;
        for epoch in 0..p.epochs {
            let order = epoch_order(train_set.len(), order_seed, epoch);
            for idx in order.chunks(p.batch_prompts) {
                let t0 = Instant::now();
                let items: Vec<&EncodedRanking> = idx.iter().map(|&i| &train_set[i]).collect();
                let Some((loss, pairs, correct)) = batch_loss(&rm, &items, dropout.as_mut())? else { continue };
                let mut grads = Grads::backward(&loss, rm.params())?;
                let norm = grads.clip(p.grad_clip)?;
                let lr = sched.lr(step);
                opt.step(&grads, lr)?;
                step += 1;
                let l = loss.to_scalar::<f32>()? as f64;
                log.record(step, "loss", l);
                log.record(step, "accuracy", correct as f64 / pairs as f64);
                log.record(step, "lr", lr);
                log.record(step, "grad_norm", norm);
                log.time(step, "step_s", t0.elapsed().as_secs_f64());
                bar.set_position(step);
                bar.set_message(format!("loss {l:.3}"));
            }
            if !val_set.is_empty() {
                let (vl, va, _) = evaluate(&rm, &val_set, p.batch_prompts)?;
                log.record(step, "val_loss", vl);
                log.record(step, "val_accuracy", va);
            }
        }
        bar.finish_and_clear();
        if let Some(c) = rm.likelihood_coef()? {
            ctx.metric("likelihood_coef", c);
        }
        let tail = log.series("loss");
        let recent = &tail[tail.len().saturating_sub(20)..];
        ctx.metric("final_train_loss", recent.iter().map(|(_, v)| v).sum::<f64>() / recent.len().max(1) as f64);

        if !val_set.is_empty() {
            let (vl, va, pairs) = evaluate(&rm, &val_set, p.batch_prompts)?;
            ctx.metric("val_loss", vl);
            ctx.metric("val_accuracy", va);
            ctx.metric("val_pairs", pairs as f64);
        } else {
            ctx.warn("no validation-split rankings: no validation accuracy");
        }

        // Normalise: demonstrations' mean reward -> 0, folded into the head's bias.
        if let Some(demo) = ctx.optional_input("demonstrations") {
            let demos: Vec<DemonstrationRow> = demo.read_rows(&DEMONSTRATIONS)?;
            let take = if p.norm_max_demos == 0 { demos.len() } else { p.norm_max_demos.min(demos.len()) };
            let pairs = demos[..take]
                .iter()
                .map(|d| encode_for_rm(&base, &d.prompt, &d.response, p.max_prompt_tokens, p.max_response_tokens))
                .collect::<Result<Vec<_>>>()?;
            if !pairs.is_empty() {
                let scores = score_pairs(&rm, &pairs, 32, |_| {})?;
                let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len() as f64;
                let bias = rm.params().get("score.bias").context("the reward model has no score.bias")?;
                bias.set(&(bias.as_tensor() - mean)?)?;
                ctx.metric("norm_offset", mean);
                ctx.metric("norm_demos", pairs.len() as f64);
            }
        } else {
            ctx.warn("no demonstrations: the reward is not normalised");
        }

        if let Some(prompts) = ctx.optional_input("prompts") {
            let prompts: Vec<PromptRow> = prompts.read_rows(&PROMPTS)?;
            let pool = match ctx.optional_input("labelers") {
                Some(a) => Pool::load_from_dir(a.dir())?,
                None => None,
            }
            .unwrap_or_else(|| Pool::new(p.labeler_seed, 0, p.heldout_labelers));
            heldout_agreement(ctx, &base, &rm, &val_rows, &prompts, &pool, p)?;
        }

        let out = ctx.out_path("model/config.json")?.parent().expect("model dir").to_path_buf();
        rm.save(&out)?;
        base.tok.save_to_dir(&out)?;
        base.format.save_to_dir(&out)?;
        log.write(ctx)
    }
}

/// Agreement with held-out labelers on the validation rankings' non-tied pairs, for the reward model
/// and, as yardsticks, for the training labeler who made each ranking and for the gold judge (the
/// ceiling: a reward model can at best learn the judge the labelers are noisy copies of). Also the
/// validation accuracy per task family, the RM's and the gold judge's.
fn heldout_agreement(
    ctx: &mut StageContext,
    base: &Bundle,
    rm: &ScalarModel,
    val: &[RankingRow],
    prompts: &[PromptRow],
    pool: &Pool,
    p: &RmParams,
) -> Result<()> {
    if pool.heldout.is_empty() || val.is_empty() {
        return Ok(());
    }
    let by_id: BTreeMap<&str, &PromptRow> = prompts.iter().map(|r| (r.prompt_id.as_str(), r)).collect();
    let (mut rm_agree, mut lab_agree, mut gold_agree, mut n) = (0usize, 0usize, 0usize, 0usize);
    // Per task family, against the ranking itself: pairs, RM right, gold judge right.
    let mut by_family: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for (i, r) in val.iter().enumerate() {
        let Some(row) = by_id.get(r.prompt_id.as_str()) else { continue };
        let Ok(Some(m)) = parse_meta(&row.meta) else { continue };
        let pairs = r
            .responses
            .iter()
            .map(|resp| encode_for_rm(base, &r.prompt, resp, p.max_prompt_tokens, p.max_response_tokens))
            .collect::<Result<Vec<_>>>()?;
        let scores = score_pairs(rm, &pairs, 32, |_| {})?;
        // Judged once: the gold judge's own choice, and the held-out labeler's (a noisy copy of it).
        let responses: Vec<Response> = r.responses.iter().map(|t| Response::new(t.clone(), true)).collect();
        let gold: Vec<Judgment> = responses.iter().map(|x| judge(&m, &x.text, x.ended_with_eos)).collect();
        let h = &pool.heldout[i % pool.heldout.len()];
        for a in 0..r.responses.len() {
            for b in (a + 1)..r.responses.len() {
                if r.ranks[a] == r.ranks[b] || r.responses[a] == r.responses[b] {
                    continue;
                }
                let (ranked_a, rm_a, gold_a) =
                    (r.ranks[a] < r.ranks[b], scores[a] > scores[b], gold[a].score > gold[b].score);
                let f = by_family.entry(row.family.as_str()).or_default();
                f[0] += 1;
                f[1] += usize::from(rm_a == ranked_a);
                f[2] += usize::from(gold_a == ranked_a);
                let pref = h.compare_judged(&r.prompt_id, [&responses[a], &responses[b]], [gold[a], gold[b]]);
                let held_a = match pref {
                    Preference::A => true,
                    Preference::B => false,
                    Preference::Tie => continue,
                };
                n += 1;
                rm_agree += usize::from(rm_a == held_a);
                lab_agree += usize::from(ranked_a == held_a);
                gold_agree += usize::from(gold_a == held_a);
            }
        }
    }
    if n > 0 {
        ctx.metric("heldout_agreement_rm", rm_agree as f64 / n as f64);
        ctx.metric("heldout_agreement_labelers", lab_agree as f64 / n as f64);
        ctx.metric("heldout_agreement_gold", gold_agree as f64 / n as f64);
        ctx.metric("heldout_pairs", n as f64);
    }
    // Which kinds of task the RM can rank, beside how well the judge the labelers copy ranks them.
    for (f, [pairs, rm, gold]) in by_family {
        if pairs >= 20 && !f.is_empty() {
            ctx.metric(format!("val_accuracy_{f}"), rm as f64 / pairs as f64);
            ctx.metric(format!("val_accuracy_gold_{f}"), gold as f64 / pairs as f64);
        }
    }
    Ok(())
}
