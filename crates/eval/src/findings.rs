//! The report's headline findings, computed from the numbers (never
//! written by hand): each is a sentence and whether the paper's claim holds
//! here.

use lineage::tables::MetricRow;

use crate::report::WIN_RATE_OVER_NULL;
use crate::report_stage::Evaluated;

#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub lines: Vec<(String, bool)>,
    pub best_ppo_ptx_win_rate: Option<f64>,
}

fn get<'a>(rows: &'a [MetricRow], model: &str, metric: &str) -> Option<&'a MetricRow> {
    rows.iter().find(|r| r.model == model && r.metric == metric)
}

fn ci(r: &MetricRow) -> String {
    if r.lo.is_finite() && r.hi.is_finite() {
        format!("{:.3} [{:.3}, {:.3}]", r.value, r.lo, r.hi)
    } else {
        format!("{:.3}", r.value)
    }
}

/// `+0.012 [-0.004, +0.027]`: a difference with its interval, signs shown.
fn signed(r: &MetricRow) -> String {
    format!("{:+.3} [{:+.3}, {:+.3}]", r.value, r.lo, r.hi)
}

fn of_kind<'a>(models: &'a [Evaluated], kind: &str) -> impl Iterator<Item = &'a Evaluated> {
    models.iter().filter(move |m| m.kind == kind)
}

/// The models of a kind that have a win rate, each with it.
fn rated<'a>(
    models: &'a [Evaluated],
    rows: &'a [MetricRow],
    kind: &'a str,
) -> impl Iterator<Item = (&'a Evaluated, &'a MetricRow)> {
    of_kind(models, kind).filter_map(move |m| get(rows, &m.name, "win_rate").map(|r| (m, r)))
}

/// The base model of a size: plain if there is one, else few-shot prompted.
fn base_of<'a>(models: &'a [Evaluated], size: &str) -> Option<&'a Evaluated> {
    of_kind(models, "base")
        .find(|m| m.size == size)
        .or_else(|| of_kind(models, "base_few_shot").find(|m| m.size == size))
}

/// Findings over the models (sorted by size) and the merged metric rows.
pub fn findings(models: &[Evaluated], rows: &[MetricRow], baseline: &str) -> Findings {
    let mut f = Findings::default();
    let wr = |m: &Evaluated| get(rows, &m.name, "win_rate");

    // 1. The best PPO-ptx model against the baseline.
    let best = rated(models, rows, "ppo_ptx").max_by(|a, b| a.1.value.total_cmp(&b.1.value));
    if let Some((m, r)) = best {
        f.best_ppo_ptx_win_rate = Some(r.value);
        f.lines.push((
            format!(
                "Best PPO-ptx model {}: win rate {} against {baseline} (significantly above 0.5 if the interval is)",
                m.name,
                ci(r)
            ),
            r.lo > 0.5,
        ));
    } else {
        f.lines.push(("No PPO-ptx model was evaluated: no headline win rate".into(), false));
    }

    // 2. The smallest PPO-ptx model against the largest SFT model.
    let small = rated(models, rows, "ppo_ptx").min_by_key(|(m, _)| m.params);
    let largest = |kind| rated(models, rows, kind).max_by_key(|(m, _)| m.params);
    if let (Some((a, ra)), Some((b, rb))) = (small, largest("sft")) {
        let (text, ok) = if b.name == baseline {
            (format!("win rate {} against it", ci(ra)), ra.value > 0.5)
        } else {
            (format!("win rates against {baseline}: {} vs {}", ci(ra), ci(rb)), ra.value > rb.value)
        };
        f.lines.push((
            format!(
                "Smallest PPO-ptx model {} ({} parameters) against the largest SFT model {} ({} parameters): {text}",
                a.name, a.params, b.name, b.params
            ),
            ok,
        ));
    }

    // 2b. The paper's own headline: a 1.3B InstructGPT preferred over the 175B GPT-3, plain or
    // few-shot prompted; here the smallest PPO-ptx model against the largest base model of each kind.
    for kind in ["base", "base_few_shot"] {
        if let (Some((a, ra)), Some((b, rb))) = (small, largest(kind)) {
            f.lines.push((
                format!(
                    "Smallest PPO-ptx model {} ({} parameters) against the largest {kind} model {} ({} parameters, \
                     {:.1}x; the paper: 1.3B InstructGPT over 175B GPT-3): win rates against {baseline} {} vs {}",
                    a.name,
                    a.params,
                    b.name,
                    b.params,
                    b.params as f64 / a.params.max(1) as f64,
                    ci(ra),
                    ci(rb)
                ),
                ra.value > rb.value,
            ));
        }
    }

    // 3. Fine-tuning helps: the base models against the (SFT) baseline.
    for m in models.iter().filter(|m| m.kind == "base" || m.kind == "base_few_shot") {
        if let Some(r) = wr(m) {
            f.lines.push((
                format!(
                    "{} model {} against {baseline}: win rate {} (below 0.5: the baseline is preferred)",
                    m.kind,
                    m.name,
                    ci(r)
                ),
                r.value < 0.5,
            ));
        }
    }

    // 4. Instruction following over the base model: SFT and PPO-ptx against base, by size.
    if let Some(m) = of_kind(models, "ppo_ptx").max_by_key(|m| m.params)
        && let Some(base) = base_of(models, &m.size)
    {
        let compare = |metric: &str, label: &str, higher_is_better: bool| {
            let (a, b) = (get(rows, &m.name, metric)?, get(rows, &base.name, metric)?);
            let ok = if higher_is_better { a.value > b.value } else { a.value < b.value };
            Some((format!("{label}: {} {} vs {} {}", m.name, ci(a), base.name, ci(b)), ok))
        };
        f.lines.extend(compare("win_rate", "Win rate over the base model", true));
        f.lines.extend(compare("truthful", "Truthfulness (higher is better)", true));
        f.lines.extend(compare("truthful_instructed", "Truthfulness when told to say it does not know", true));
        f.lines.extend(compare("hallucination", "Closed-domain hallucination (lower is better)", false));
        f.lines.extend(compare("toxicity_respectful", "Toxicity when asked to be respectful (lower is better)", false));
    }

    // 5. The oracle control: PPO on the gold judge's score with the same budget. Its win rate is
    // what this PPO can buy with a perfect reward; the gap down to PPO on the RM is the RM's cost.
    // The bar is the SFT model of its size: 0.5 when that is the baseline.
    for (oracle, ro) in rated(models, rows, "ppo_oracle") {
        let sft = rated(models, rows, "sft").find(|(m, _)| m.size == oracle.size);
        let (bar, sft_text) = match sft {
            Some((m, r)) if m.name != baseline => (r.value, format!("; its SFT model {}: {}", m.name, ci(r))),
            _ => (0.5, String::new()),
        };
        let rm_ppo = rated(models, rows, "ppo").find(|(m, _)| m.size == oracle.size);
        let versus = match rm_ppo {
            Some((m, r)) => format!("; with the reward model ({}): {}", m.name, ci(r)),
            None => String::new(),
        };
        f.lines.push((
            format!(
                "Oracle control {}: PPO with the gold judge as its reward wins {} against {baseline}{sft_text}{versus} \
                 (an oracle near its SFT model: this PPO budget, not the reward model, limits the result; an oracle well \
                 above PPO on the reward model: the reward model does)",
                oracle.name,
                ci(ro)
            ),
            ro.lo > bar,
        ));
    }

    // 6. The null control: PPO with a random reward and the same budget. A PPO's gain over it is
    // what its reward taught it; down to it, the policy only moved by PPO's noise.
    for (null, rn) in rated(models, rows, "ppo_null") {
        let mut ok = vec![];
        let mut versus = String::new();
        for kind in ["ppo", "ppo_ptx", "ppo_oracle"] {
            let Some((m, r)) = rated(models, rows, kind).find(|(m, _)| m.size == null.size) else { continue };
            // The paired difference (same prompts, same baseline responses) when the report has
            // it: above when its interval is above 0. Else the two intervals: above when they part.
            let (a, how) = match get(rows, &m.name, WIN_RATE_OVER_NULL) {
                Some(d) if d.lo.is_finite() => (d.lo > 0.0, format!(", paired difference {}", signed(d))),
                Some(d) => (d.value > 0.0, format!(", paired difference {:+.3}", d.value)),
                None if r.lo.is_finite() && rn.hi.is_finite() => (r.lo > rn.hi, String::new()),
                None => (r.value > rn.value, String::new()),
            };
            versus.push_str(&format!(
                "; {} ({kind}): {}{how}, {}",
                m.name,
                ci(r),
                if a { "above" } else { "not above" }
            ));
            ok.push((kind, a));
        }
        if ok.is_empty() {
            continue;
        }
        // The claim is about PPO on the reward model; the oracle speaks for itself only without one.
        let holds = ok.iter().find(|(k, _)| *k == "ppo").or_else(|| ok.first()).is_some_and(|(_, a)| *a);
        f.lines.push((
            format!(
                "Null control {}: PPO with a random reward wins {} against {baseline}{versus} (a gain over the \
                 null is what a reward taught; down to it, the policy moved only as PPO's noise moves it)",
                null.name,
                ci(rn)
            ),
            holds,
        ));
    }

    // 6b. RL against selection with the same reward model: the best of n samples of an SFT model by
    // the reward model needs no training, at a KL of at most log n - (n-1)/n nats. RL is worth its
    // cost where its policy wins at least as often as the selection of its size.
    for (bon, rb) in rated(models, rows, "best_of_rm") {
        let rl: Vec<_> = ["ppo", "ppo_ptx"]
            .iter()
            .flat_map(|kind| rated(models, rows, kind).filter(|(m, _)| m.size == bon.size))
            .collect();
        let Some(&(best, rr)) = rl.iter().max_by(|a, b| a.1.value.total_cmp(&b.1.value)) else { continue };
        f.lines.push((
            format!(
                "RL against best-of-n with the same reward model ({}): {} ({}) wins {} against {baseline}, the best of \
                 n samples by the reward model {} {} (RL at least as good: the reward model's signal reached the policy)",
                bon.size,
                best.name,
                best.kind,
                ci(rr),
                bon.name,
                ci(rb)
            ),
            rr.value >= rb.value,
        ));
    }

    // 7. The alignment tax: PPO-ptx against PPO of the same size.
    for ptx in of_kind(models, "ppo_ptx") {
        let Some(ppo) = of_kind(models, "ppo").find(|m| m.size == ptx.size) else { continue };
        if let (Some(a), Some(b)) =
            (get(rows, &ptx.name, "pretrain_ppl_vs_sft"), get(rows, &ppo.name, "pretrain_ppl_vs_sft"))
        {
            f.lines.push((
                format!(
                    "Alignment tax ({}): pretraining perplexity relative to SFT {:.3} with the pretraining mix ({}) vs {:.3} without ({})",
                    ptx.size, a.value, ptx.name, b.value, ppo.name
                ),
                a.value <= b.value,
            ));
        }
        if let (Some(a), Some(b)) = (get(rows, &ptx.name, "benchmark_acc"), get(rows, &ppo.name, "benchmark_acc")) {
            f.lines.push((
                format!(
                    "Alignment tax ({}): benchmark accuracy {} with the pretraining mix vs {} without",
                    ptx.size,
                    ci(a),
                    ci(b)
                ),
                a.value >= b.value,
            ));
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn model(name: &str, kind: &str, size: &str) -> Evaluated {
        Evaluated {
            name: name.into(),
            kind: kind.into(),
            size: size.into(),
            params: match size {
                "mini" => 250,
                "big" => 8000,
                _ => 1000,
            },
            key: format!("key-{name}"),
            metrics: vec![],
            samples: BTreeMap::new(),
        }
    }

    fn row(name: &str, metric: &str, value: f64, lo: f64, hi: f64) -> MetricRow {
        MetricRow {
            model: name.into(),
            kind: String::new(),
            size: String::new(),
            params: 0,
            metric: metric.into(),
            value,
            lo,
            hi,
            n: 100,
            source: String::new(),
        }
    }

    fn win(name: &str, value: f64, lo: f64, hi: f64) -> MetricRow {
        row(name, "win_rate", value, lo, hi)
    }

    fn line<'a>(f: &'a Findings, start: &str) -> Vec<&'a (String, bool)> {
        f.lines.iter().filter(|(l, _)| l.starts_with(start)).collect()
    }

    #[test]
    fn rl_is_compared_with_best_of_n_by_the_reward_model_of_its_size() {
        let models = [
            model("sft", "sft", "tiny"),
            model("ppo", "ppo", "tiny"),
            model("ptx", "ppo_ptx", "tiny"),
            model("bon", "best_of_rm", "tiny"),
            model("bon_mini", "best_of_rm", "mini"),
            model("ceiling", "best_of", "tiny"),
        ];
        let rows = |bon: f64| {
            [
                win("sft", 0.5, 0.5, 0.5),
                win("ppo", 0.52, 0.50, 0.54),
                win("ptx", 0.55, 0.53, 0.57),
                win("bon", bon, bon - 0.02, bon + 0.02),
                win("bon_mini", 0.3, 0.28, 0.32),
                win("ceiling", 0.75, 0.73, 0.77),
            ]
        };
        let f = findings(&models, &rows(0.54), "sft");
        let lines = line(&f, "RL against best-of-n");
        // Only the size with an RL model, against its best RL model; the gold ceiling is not a selection by the RM.
        assert_eq!(lines.len(), 1, "{:?}", f.lines);
        let (text, ok) = lines[0];
        assert!(*ok && text.contains("(tiny): ptx (ppo_ptx) wins 0.550 [0.530, 0.570]"), "{text}");
        assert!(text.contains("bon 0.540 [0.520, 0.560]") && !text.contains("ceiling"), "{text}");
        let f = findings(&models, &rows(0.60), "sft");
        assert!(!line(&f, "RL against best-of-n")[0].1, "{:?}", f.lines);
    }

    #[test]
    fn oracle_control_is_compared_with_rm_ppo_of_its_size() {
        let models = [
            model("ppo_mini", "ppo", "mini"),
            model("sft", "sft", "tiny"),
            model("ppo", "ppo", "tiny"),
            model("ptx", "ppo_ptx", "tiny"),
            model("oracle", "ppo_oracle", "tiny"),
        ];
        let nan = f64::NAN;
        let rows = [
            win("sft", 0.5, 0.5, 0.5),
            win("ppo_mini", 0.40, 0.38, 0.42),
            win("ppo", 0.50, 0.48, 0.52),
            win("ptx", 0.47, 0.45, 0.49),
            win("oracle", 0.60, 0.57, 0.63),
            row("ppo", "pretrain_ppl_vs_sft", 1.05, nan, nan),
            row("ptx", "pretrain_ppl_vs_sft", 0.08, nan, nan),
            row("oracle", "pretrain_ppl_vs_sft", 1.10, nan, nan),
        ];
        let f = findings(&models, &rows, "sft");
        let oracle = line(&f, "Oracle control");
        assert_eq!(oracle.len(), 1, "{:?}", f.lines);
        let (text, ok) = oracle[0];
        assert!(*ok, "{text}");
        assert!(text.contains("0.600 [0.570, 0.630]") && text.contains("(ppo): 0.500 [0.480, 0.520]"), "{text}");
        // The oracle is neither the headline PPO-ptx model nor the plain PPO the alignment tax compares with.
        assert_eq!(f.best_ppo_ptx_win_rate, Some(0.47));
        let tax = line(&f, "Alignment tax (tiny): pretraining perplexity");
        assert_eq!(tax.len(), 1, "{:?}", f.lines);
        assert!(tax[0].0.contains("1.050 without (ppo)") && tax[0].1, "{:?}", tax[0]);

        // Without an RM-PPO model of its size, the oracle stands alone; not above 0.5, it fails.
        let rows = [win("sft", 0.5, 0.5, 0.5), win("ppo_mini", 0.4, 0.38, 0.42), win("oracle", 0.51, 0.49, 0.53)];
        let models =
            [model("ppo_mini", "ppo", "mini"), model("sft", "sft", "tiny"), model("oracle", "ppo_oracle", "tiny")];
        let f = findings(&models, &rows, "sft");
        let (text, ok) = line(&f, "Oracle control")[0];
        assert!(!ok && !text.contains("with the reward model"), "{text}");

        // Against a larger baseline the bar is the oracle's own SFT model, not 0.5.
        let models =
            [model("sft", "sft", "tiny"), model("oracle", "ppo_oracle", "tiny"), model("sft_big", "sft", "big")];
        let rows = |oracle_lo: f64| {
            [win("sft_big", 0.5, 0.5, 0.5), win("sft", 0.40, 0.38, 0.42), win("oracle", 0.45, oracle_lo, 0.47)]
        };
        let f = findings(&models, &rows(0.43), "sft_big");
        let (text, ok) = line(&f, "Oracle control")[0];
        assert!(*ok && text.contains("its SFT model sft: 0.400 [0.380, 0.420]"), "{text}");
        let f = findings(&models, &rows(0.39), "sft_big");
        assert!(!line(&f, "Oracle control")[0].1);
    }

    #[test]
    fn smallest_ppo_ptx_is_compared_with_the_largest_sft_and_base_models() {
        let models = [
            model("ptx_mini", "ppo_ptx", "mini"),
            model("base", "base", "tiny"),
            model("few", "base_few_shot", "tiny"),
            model("ptx", "ppo_ptx", "tiny"),
            model("base_big", "base", "big"),
            model("sft_big", "sft", "big"),
        ];
        let rows = [
            win("sft_big", 0.5, 0.5, 0.5),
            win("ptx_mini", 0.30, 0.28, 0.32),
            win("ptx", 0.45, 0.43, 0.47),
            win("base", 0.10, 0.09, 0.11),
            win("few", 0.35, 0.33, 0.37),
            win("base_big", 0.20, 0.18, 0.22),
        ];
        let f = findings(&models, &rows, "sft_big");
        let sft = line(&f, "Smallest PPO-ptx model ptx_mini (250 parameters) against the largest SFT");
        assert_eq!(sft.len(), 1, "{:?}", f.lines);
        assert!(sft[0].0.contains("sft_big (8000 parameters)") && !sft[0].1, "{:?}", sft[0]);
        // The largest plain base model is the 8000-parameter one, not the 1000-parameter one.
        let base = line(&f, "Smallest PPO-ptx model ptx_mini (250 parameters) against the largest base model");
        assert_eq!(base.len(), 1, "{:?}", f.lines);
        assert!(base[0].0.contains("base_big (8000 parameters, 32.0x") && base[0].1, "{:?}", base[0]);
        // Few-shot: the only one is tiny, and it beats the smallest PPO-ptx model here.
        let few = line(&f, "Smallest PPO-ptx model ptx_mini (250 parameters) against the largest base_few_shot");
        assert_eq!(few.len(), 1, "{:?}", f.lines);
        assert!(few[0].0.contains("few (1000 parameters, 4.0x") && !few[0].1, "{:?}", few[0]);
    }

    #[test]
    fn null_control_is_compared_with_the_ppo_runs_of_its_size() {
        let models = [
            model("sft", "sft", "tiny"),
            model("ppo", "ppo", "tiny"),
            model("ptx", "ppo_ptx", "tiny"),
            model("oracle", "ppo_oracle", "tiny"),
            model("null", "ppo_null", "tiny"),
            model("ppo_mini", "ppo", "mini"),
        ];
        let rows = |ppo: (f64, f64, f64)| {
            [
                win("sft", 0.5, 0.5, 0.5),
                win("ppo", ppo.0, ppo.1, ppo.2),
                win("ptx", 0.47, 0.45, 0.49),
                win("oracle", 0.55, 0.53, 0.57),
                win("null", 0.49, 0.47, 0.51),
                win("ppo_mini", 0.70, 0.68, 0.72),
            ]
        };
        // RM-PPO inside the null's interval: no signal from the reward model; the oracle is above.
        let f = findings(&models, &rows((0.50, 0.48, 0.52)), "sft");
        let null = line(&f, "Null control");
        assert_eq!(null.len(), 1, "{:?}", f.lines);
        let (text, ok) = null[0];
        assert!(!ok, "{text}");
        assert!(text.contains("0.490 [0.470, 0.510]"), "{text}");
        assert!(text.contains("ppo (ppo): 0.500 [0.480, 0.520], not above"), "{text}");
        assert!(text.contains("ptx (ppo_ptx): 0.470 [0.450, 0.490], not above"), "{text}");
        assert!(text.contains("oracle (ppo_oracle): 0.550 [0.530, 0.570], above"), "{text}");
        assert!(!text.contains("ppo_mini"), "only models of the null's size: {text}");
        // RM-PPO above the null's interval: the finding holds.
        let f = findings(&models, &rows((0.54, 0.52, 0.56)), "sft");
        assert!(line(&f, "Null control")[0].1);
        // The null is neither the headline PPO-ptx model nor an oracle.
        assert_eq!(f.best_ppo_ptx_win_rate, Some(0.47));
        assert_eq!(line(&f, "Oracle control").len(), 1);
        // Alone (no PPO run of its size to compare), the null makes no claim.
        let alone = [model("sft", "sft", "tiny"), model("null", "ppo_null", "tiny")];
        let f = findings(&alone, &rows((0.5, 0.48, 0.52)), "sft");
        assert!(line(&f, "Null control").is_empty(), "{:?}", f.lines);
        // Without intervals, the values are compared.
        let flat =
            [win("sft", 0.5, 0.5, 0.5), win("ppo", 0.52, f64::NAN, f64::NAN), win("null", 0.49, f64::NAN, f64::NAN)];
        let f = findings(&models, &flat, "sft");
        let (text, ok) = line(&f, "Null control")[0];
        assert!(*ok && text.contains("ppo (ppo): 0.520, above"), "{text}");
        // The paired difference decides when the report computed it: overlapping intervals, yet
        // the difference's interval is above 0 (and a paired difference below 0 is not above).
        let mut paired = rows((0.50, 0.48, 0.52)).to_vec();
        paired.push(row("ppo", WIN_RATE_OVER_NULL, 0.012, 0.003, 0.021));
        paired.push(row("oracle", WIN_RATE_OVER_NULL, -0.01, -0.02, 0.001));
        let f = findings(&models, &paired, "sft");
        let (text, ok) = line(&f, "Null control")[0];
        assert!(*ok, "{text}");
        assert!(
            text.contains("ppo (ppo): 0.500 [0.480, 0.520], paired difference +0.012 [+0.003, +0.021], above"),
            "{text}"
        );
        assert!(text.contains("oracle (ppo_oracle): 0.550 [0.530, 0.570], paired difference -0.010"), "{text}");
        assert!(text.contains("+0.001], not above"), "{text}");
    }
}
