//! `ppo.ppo`: the stage around the PPO-ptx loop.

use anyhow::{Context, Result, bail};
use lineage::tables::{
    PRETRAIN_TEXT, PROMPTS, PretrainTextRow, PromptRow, ROLLOUTS, TIMING, TRAIN_LOG, select_prompts,
};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage};
use model::bundle::Bundle;
use model::fsutil::copy_model_files;
use model::lm::ScalarModel;
use model::train;
use world::meta::parse_meta;

use crate::math::AdvantageEstimator;
use crate::params::PpoParams;
use crate::trainer::{Models, PpoData, PpoPrompt, Trainer, mean};

pub struct Ppo;

/// Fault injection for tests of resuming: abort the process right after the checkpoint of this
/// iteration, as a kill would.
pub const ABORT_ENV: &str = "INSTRUCTGPT_PPO_ABORT_AFTER";

fn encode(b: &Bundle, rows: &[PromptRow], max_tokens: usize) -> Result<Vec<PpoPrompt>> {
    let (ids, _) = b.encode_prompts(&rows.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), max_tokens)?;
    rows.iter()
        .zip(ids)
        .map(|(r, ids)| {
            let meta = parse_meta(&r.meta)
                .map_err(|e| anyhow::anyhow!("prompts table, prompt {}, field meta: {e}", r.prompt_id))?;
            Ok(PpoPrompt { id: r.prompt_id.clone(), ids, meta })
        })
        .collect()
}

impl TypedStage for Ppo {
    type Params = PpoParams;
    const NAME: &'static str = "ppo.ppo";
    const ABOUT: &'static str =
        "PPO (-ptx) from the SFT policy against the reward model, with a KL penalty, EMA, probes and checkpoints.";
    const INPUTS: &'static [InputSpec] = &[
        InputSpec::one("policy", "The SFT model artifact (policy and frozen reference)."),
        InputSpec::optional(
            "reward",
            "The reward model artifact (rm.rm); with GAE the value model starts from it. Optional with oracle or \
             random_reward.",
        ),
        InputSpec::one("prompts", "A prompts table (the PPO prompts and the probe prompts)."),
        InputSpec::optional("text", "A pretrain_text table, for the pretraining mix (ptx_coef > 0)."),
    ];
    const OUTPUTS: &'static [TableSpec] = &[TRAIN_LOG, TIMING, ROLLOUTS];
    const USES_DEVICE: bool = true;
    const HEADLINE: Option<&'static str> = Some("probe_gold");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }

    fn run(ctx: &mut StageContext, p: &PpoParams) -> Result<()> {
        let device = train::parse_device(&ctx.device)?;
        let dir = ctx.input("policy")?.model_dir();
        let policy = Bundle::load(&dir, &device).with_context(|| format!("loading the policy in {}", dir.display()))?;
        let reference = policy.lm.snapshot()?;
        // The value model starts from the reward model; the reward model itself is a frozen copy.
        // The leave-one-out advantage has no critic.
        let critic = p.advantage == AdvantageEstimator::Gae;
        let (value, reward) = match ctx.optional_input("reward") {
            Some(a) => {
                let d = a.model_dir();
                let rm = ScalarModel::load_reward(&d, &policy.tok, &device)
                    .with_context(|| format!("loading the reward model in {}", d.display()))?;
                // Without a critic nothing trains the loaded weights, so the reward needs no copy.
                let reward = if critic { rm.snapshot()? } else { rm.frozen()? };
                // A value is the head's scalar at each column: a reward's likelihood term is not part of it.
                (critic.then(|| rm.without_likelihood()).transpose()?, Some(reward))
            }
            None if p.oracle || p.random_reward => {
                let value = critic
                    .then(|| ScalarModel::from_causal_lm(&policy.lm, 0.02, ctx.derive_seed("value-head")))
                    .transpose()?;
                (value, None)
            }
            None => bail!("no `reward` input: connect a reward model, or set oracle = true (or random_reward = true)"),
        };
        // Same token numbering (checked above) but a smaller embedding would fail on the first
        // sampled id past its end.
        if let Some(r) = &reward
            && r.config().vocab_size != policy.lm.config().vocab_size
        {
            bail!("the policy and the reward model have embeddings of different sizes");
        }

        let rows: Vec<PromptRow> = ctx.read_rows("prompts", &PROMPTS)?;
        let pick = |split: &str| select_prompts(rows.clone(), &p.dataset, &[split], 0);
        let max_prompt = p.max_prompt_tokens.min(policy.max_prompt_tokens(p.max_new_tokens));
        let prompts = encode(&policy, &pick(&p.split), max_prompt)?;
        if prompts.is_empty() {
            bail!("no prompts of dataset {:?} and split {:?}", p.dataset, p.split);
        }
        let mut probe_rows = pick("validation");
        probe_rows.truncate(p.probe_prompts);
        let probes = encode(&policy, &probe_rows, max_prompt)?;
        if p.probe_every > 0 && probes.is_empty() {
            ctx.warn("no validation prompts: no probe scores along training");
        }
        let ptx_tokens = match ctx.optional_input("text") {
            Some(a) if p.ptx_coef > 0.0 => {
                let docs: Vec<PretrainTextRow> = a.read_rows(&PRETRAIN_TEXT)?;
                let texts: Vec<&str> = docs.iter().filter(|d| d.split == "train").map(|d| d.text.as_str()).collect();
                policy.tok.encode_documents(&texts, policy.eos)?
            }
            _ => vec![],
        };
        ctx.metric("ppo_prompts", prompts.len() as f64);
        ctx.metric("probe_prompts", probes.len() as f64);

        let scratch = ctx.scratch_dir()?.to_path_buf();
        let data =
            PpoData { prompts: &prompts, probes: &probes, ptx_tokens: &ptx_tokens, seed: ctx.seed, scratch: &scratch };
        let (tok, format) = (policy.tok.clone(), policy.format.clone());
        let trainer = Trainer::new(p, Models { policy, reference, value, reward }, data)?;
        let abort_after: Option<u64> = std::env::var(ABORT_ENV).ok().and_then(|v| v.parse().ok());
        let bar = ctx.progress().bar(p.iterations, format!("{} ppo", ctx.step));
        let outcome = trainer.run(
            &mut |it, log| {
                bar.set_position(it);
                let show = |m: &str| log.last(m).map_or("-".to_string(), |v| format!("{v:.3}"));
                bar.set_message(format!("score {} kl {} gold {}", show("score"), show("kl"), show("probe_gold")));
                if abort_after == Some(it) {
                    eprintln!("{ABORT_ENV}={it}: aborting after the checkpoint of iteration {it}");
                    std::process::abort();
                }
            },
            None,
        )?;
        bar.finish_and_clear();
        if let Some(it) = outcome.resumed_from {
            ctx.warn(format!("resumed from the checkpoint of an interrupted run at iteration {it}"));
        }
        for w in &outcome.warnings {
            ctx.warn(w.clone());
        }

        // Headline numbers: the last value of each series, and the change over SFT.
        let log = &outcome.log;
        for m in [
            "score",
            "rm_reward",
            "gold",
            "kl",
            "entropy",
            "clip_fraction",
            "explained_variance",
            "response_len",
            "no_eos_rate",
            "ptx_loss",
            "kl_coef",
        ] {
            if let Some(v) = log.last(m) {
                ctx.metric(m, v);
            }
        }
        // The training rollouts' reward and gold score, averaged over the first and the last quarter
        // of the iterations: fresh prompts every iteration, so these move less by chance than one
        // probe pass of a few dozen samples.
        for m in ["rm_reward", "gold", "score"] {
            let s = log.series(m);
            let q = s.len().div_ceil(4);
            if s.len() >= 2 {
                let mean = |w: &[(i64, f64)]| mean(w.iter().map(|(_, v)| *v));
                ctx.metric(format!("{m}_first_quarter"), mean(&s[..q]));
                ctx.metric(format!("{m}_last_quarter"), mean(&s[s.len() - q..]));
            }
        }
        for m in ["probe_gold", "probe_rm", "probe_kl"] {
            let s = log.series(m);
            if let (Some(first), Some(last)) = (s.first(), s.last()) {
                ctx.metric(m, last.1);
                ctx.metric(format!("{m}_start"), first.1);
            }
        }

        let out = ctx.out_path("model/config.json")?.parent().expect("model dir").to_path_buf();
        Bundle::new(outcome.final_model, tok, format)?.save(&out)?;
        for c in &outcome.checkpoints {
            let name = c.file_name().expect("named").to_string_lossy().into_owned();
            copy_model_files(c, ctx.out_path(&format!("checkpoints/{name}/config.json"))?.parent().expect("dir"))?;
        }
        ctx.metric("checkpoints", outcome.checkpoints.len() as f64);
        ctx.write_rows(&ROLLOUTS, &outcome.rollouts)?;
        outcome.log.write(ctx)
    }
}
