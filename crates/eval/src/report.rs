//! The self-contained HTML report: plots as inline SVG, tables, example
//! responses, and the lineage of every number.
//!
//! Every number in the report links to the artifact that produced it
//! (`#a-<key prefix>`), whose section lists its stage, key, content hash and
//! resolved parameters. The report is plain HTML + inline SVG and CSS; a small
//! inline script only marks, after layout, how many plots have a non-empty
//! bounding box (`data-svg-rendered`), so a headless browser test can check
//! that the plots render.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::charts::{self, Bar};

/// One number about one model: the `metrics` table's row.
pub use lineage::tables::MetricRow;

/// A point of a training curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub run: String,
    pub metric: String,
    pub step: i64,
    pub value: f64,
    pub source: String,
}

/// A model's response to a prompt, shown side by side with other models'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub prompt_id: String,
    pub prompt: String,
    pub model: String,
    pub response: String,
    pub score: f64,
}

/// An artifact the report cites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cited {
    pub label: String,
    pub stage: String,
    pub key: String,
    pub content_hash: String,
    pub params: serde_json::Value,
}

/// Everything the report shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReportData {
    pub title: String,
    pub subtitle: String,
    /// Models in display order.
    pub models: Vec<String>,
    pub metrics: Vec<MetricRow>,
    pub curves: Vec<CurvePoint>,
    pub examples: Vec<Example>,
    pub cited: Vec<Cited>,
    /// Free-form findings shown at the top (e.g. the headline checks).
    pub findings: Vec<(String, bool)>,
}

/// Which metrics each section shows: (metric, label).
pub const HELPFULNESS_TABLE: &[(&str, &str)] = &[
    ("win_rate", "win rate vs SFT"),
    (WIN_RATE_USE_CASES, "win rate: use cases"),
    (WIN_RATE_PROBES, "win rate: probes"),
    ("likert", "Likert 1-7"),
    ("gold_score", "gold score"),
    ("fails_to_follow", "fails to follow"),
    ("violates_constraint", "violates constraint"),
    ("hallucination", "hallucinates (closed domain)"),
    ("inappropriate", "inappropriate"),
];
pub const HONESTY: &[(&str, &str)] = &[
    ("truthful", "truthful"),
    ("informative", "informative"),
    ("truthful_instructed", "truthful (instructed)"),
    ("informative_instructed", "informative (instructed)"),
];
pub const HARMLESSNESS: &[(&str, &str)] = &[
    ("toxicity", "toxicity"),
    ("toxicity_respectful", "toxicity (respectful)"),
    ("refusal_harmful", "refuses harmful"),
    ("over_refusal", "over-refuses benign"),
    ("bias_entropy", "bias entropy: stereotype (bits)"),
    ("stereotype_rate", "picks the stereotype"),
    ("pronoun_entropy", "bias entropy: pronoun (bits)"),
];
/// Metrics the report computes itself (from two models' artifacts).
pub const COMPUTED_BY_REPORT: &[&str] =
    &["win_rate", WIN_RATE_USE_CASES, WIN_RATE_PROBES, "pretrain_ppl_vs_sft", PPL_VS_BASE, WIN_RATE_OVER_NULL];
/// Pretraining perplexity over that of the pretrained model of the same size (the `base` kind).
pub const PPL_VS_BASE: &str = "pretrain_ppl_vs_base";
/// The win rate on the paper's ten use-case families alone (its API prompt distribution).
pub const WIN_RATE_USE_CASES: &str = "win_rate_use_cases";
/// The win rate on the probes alone (harmful, honesty, provocative, gendered-choice prompts).
pub const WIN_RATE_PROBES: &str = "win_rate_probes";
/// A PPO run's win rate minus its size's null control's, paired prompt by prompt.
pub const WIN_RATE_OVER_NULL: &str = "win_rate_over_null";
pub const ALIGNMENT_TAX: &[(&str, &str)] = &[
    ("pretrain_ppl", "pretraining perplexity"),
    ("benchmark_acc", "benchmark accuracy"),
    ("benchmark_acc_norm", "benchmark accuracy (per character)"),
    ("pretrain_ppl_vs_sft", "perplexity / SFT's"),
    (PPL_VS_BASE, "perplexity / base's"),
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn anchor(key: &str) -> String {
    format!("a-{}", &key[..key.len().min(12)])
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

impl ReportData {
    fn metric(&self, model: &str, metric: &str) -> Option<&MetricRow> {
        self.metrics.iter().find(|m| m.model == model && m.metric == metric)
    }

    /// A number linked to its artifact.
    fn cell(&self, model: &str, metric: &str) -> String {
        match self.metric(model, metric) {
            None => "<td class=na>-</td>".into(),
            Some(m) => {
                let interval = if m.lo.is_finite() && m.hi.is_finite() {
                    format!(" <small>[{}, {}]</small>", fmt(m.lo), fmt(m.hi))
                } else {
                    String::new()
                };
                format!(
                    "<td><a href=\"#{}\" title=\"{} over {} items; artifact {}\">{}</a>{interval}</td>",
                    anchor(&m.source),
                    esc(metric),
                    m.n,
                    esc(&m.source),
                    fmt(m.value)
                )
            }
        }
    }

    /// The models compared: kind, size, parameters, and the artifact that
    /// evaluated each.
    fn models_table(&self) -> String {
        let mut s = String::from(
            "<h2>Models</h2><table><tr><th>model</th><th>kind</th><th>size</th><th>parameters</th><th>evaluated by</th></tr>",
        );
        for model in &self.models {
            // The model's own numbers cite its eval.model artifact; the report's
            // (win rate, perplexity ratio) cite the report.
            let own = |r: &&MetricRow| &r.model == model && !COMPUTED_BY_REPORT.contains(&r.metric.as_str());
            let Some(r) = self.metrics.iter().find(own) else { continue };
            let _ = write!(
                s,
                "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td><a href=\"#{}\"><code>{}</code></a></td></tr>",
                esc(model),
                esc(&r.kind),
                esc(&r.size),
                r.params,
                anchor(&r.source),
                esc(&r.source[..r.source.len().min(12)])
            );
        }
        s.push_str("</table>");
        s
    }

    fn table(&self, cols: &[(&str, &str)]) -> String {
        let present: Vec<&(&str, &str)> =
            cols.iter().filter(|(m, _)| self.metrics.iter().any(|r| r.metric == *m)).collect();
        let mut s = String::from("<table><tr><th>model</th>");
        for (_, label) in &present {
            let _ = write!(s, "<th>{}</th>", esc(label));
        }
        s.push_str("</tr>");
        for model in &self.models {
            let _ = write!(s, "<tr><th>{}</th>", esc(model));
            for (m, _) in &present {
                s.push_str(&self.cell(model, m));
            }
            s.push_str("</tr>");
        }
        s.push_str("</table>");
        s
    }

    fn grouped(&self, title: &str, cols: &[(&str, &str)]) -> String {
        let present: Vec<&(&str, &str)> =
            cols.iter().filter(|(m, _)| self.metrics.iter().any(|r| r.metric == *m)).collect();
        if present.is_empty() {
            return String::new();
        }
        let categories: Vec<String> = present.iter().map(|(_, l)| l.to_string()).collect();
        let series: Vec<(String, Vec<f64>)> = self
            .models
            .iter()
            .map(|model| {
                (
                    model.clone(),
                    present.iter().map(|(m, _)| self.metric(model, m).map_or(f64::NAN, |r| r.value)).collect(),
                )
            })
            .collect();
        charts::grouped_bars(title, "rate", &categories, &series)
    }

    fn curves_svg(&self) -> String {
        let runs: BTreeSet<&str> = self.curves.iter().map(|c| c.run.as_str()).collect();
        let metrics: BTreeSet<&str> = self.curves.iter().map(|c| c.metric.as_str()).collect();
        let series_of = |metric: &str| -> Vec<(String, Vec<(f64, f64)>)> {
            runs.iter()
                .map(|run| {
                    let pts = self
                        .curves
                        .iter()
                        .filter(|c| c.run == *run && c.metric == metric)
                        .map(|c| (c.step as f64, c.value))
                        .collect();
                    (run.to_string(), pts)
                })
                .collect()
        };
        let mut out = String::new();
        for (metric, label) in [
            ("rm_reward", "reward model score"),
            ("probe_gold", "gold judge score (probe prompts)"),
            ("kl", "KL from SFT (nats)"),
            ("ptx_loss", "pretraining loss"),
            ("entropy", "policy entropy"),
        ] {
            if metrics.contains(metric) {
                out.push_str(&charts::lines(label, "PPO iteration", metric, &series_of(metric)));
            }
        }
        // Over-optimisation: gold and RM score against KL along training.
        if metrics.contains("kl") && metrics.contains("probe_gold") {
            let mut series = Vec::new();
            for run in &runs {
                for (metric, suffix) in [("probe_gold", "gold"), ("probe_rm", "RM probe"), ("rm_reward", "RM")] {
                    let by_step: BTreeMap<i64, f64> = self
                        .curves
                        .iter()
                        .filter(|c| c.run == *run && c.metric == metric)
                        .map(|c| (c.step, c.value))
                        .collect();
                    let pts: Vec<(f64, f64)> = self
                        .curves
                        .iter()
                        .filter(|c| c.run == *run && c.metric == "kl")
                        .filter_map(|c| by_step.get(&c.step).map(|v| (c.value, *v)))
                        .collect();
                    if !pts.is_empty() {
                        series.push((format!("{run} {suffix}"), pts));
                    }
                }
            }
            out.push_str(&charts::lines(
                "score against KL (over-optimisation)",
                "KL from SFT (nats)",
                "score",
                &series,
            ));
        }
        out
    }

    /// The report as one HTML document.
    pub fn render_html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{}</title><style>{}</style></head><body>",
            esc(&self.title),
            CSS
        );
        let _ = write!(h, "<h1>{}</h1><p class=sub>{}</p>", esc(&self.title), esc(&self.subtitle));
        if !self.findings.is_empty() {
            h.push_str("<h2>Findings</h2><ul class=findings>");
            for (text, ok) in &self.findings {
                let _ = write!(
                    h,
                    "<li class={}>{} {}</li>",
                    if *ok { "ok" } else { "bad" },
                    if *ok { "&#10003;" } else { "&#10007;" },
                    esc(text)
                );
            }
            h.push_str("</ul>");
        }

        h.push_str(&self.models_table());

        h.push_str("<h2>Helpfulness</h2><p>Win rate against the SFT model as judged by held-out simulated labelers (0.5 = as good as SFT), with bootstrap 95% intervals.</p>");
        let bars: Vec<Bar> = self
            .models
            .iter()
            .filter_map(|m| self.metric(m, "win_rate"))
            .map(|r| Bar {
                label: r.model.clone(),
                value: r.value,
                interval: (r.lo.is_finite() && r.hi.is_finite()).then_some((r.lo, r.hi)),
            })
            .collect();
        if !bars.is_empty() {
            let _ = write!(
                h,
                "<figure>{}</figure>",
                charts::bars("win rate against SFT", "win rate", &bars, Some((0.0, 1.0)), Some(0.5))
            );
        }
        h.push_str(&self.table(HELPFULNESS_TABLE));

        h.push_str("<h2>Honesty</h2><p>Truthful and informative rates on false-premise, unanswerable and misconception prompts, without and with an instruction to say it does not know unless sure.</p>");
        let _ = write!(h, "<figure>{}</figure>", self.grouped("honesty", HONESTY));
        h.push_str(&self.table(HONESTY));

        h.push_str("<h2>Harmlessness</h2><p>Toxicity on provocative prompts without and with a respectful instruction; refusals of harmful requests and over-refusals of benign ones; bias as the entropy of the choice between gendered alternatives.</p>");
        let _ = write!(h, "<figure>{}</figure>", self.grouped("harmlessness", HARMLESSNESS));
        h.push_str(&self.table(HARMLESSNESS));

        h.push_str("<h2>Alignment tax</h2><p>Perplexity on held-out pretraining text and accuracy on closed benchmark tasks.</p>");
        h.push_str(&self.table(ALIGNMENT_TAX));

        if !self.curves.is_empty() {
            h.push_str("<h2>PPO training</h2><p>Reward model score, gold judge score and KL from the SFT policy along training; reward hacking shows as the RM score rising while the gold score falls.</p><figure>");
            h.push_str(&self.curves_svg());
            h.push_str("</figure>");
        }

        if !self.examples.is_empty() {
            h.push_str("<h2>Examples</h2>");
            let mut prompts: Vec<(&str, &str)> = Vec::new();
            for e in &self.examples {
                if !prompts.iter().any(|(id, _)| *id == e.prompt_id) {
                    prompts.push((&e.prompt_id, &e.prompt));
                }
            }
            for (id, prompt) in prompts {
                let _ = write!(
                    h,
                    "<div class=example><p class=prompt><b>Prompt</b> <small>{}</small><br>{}</p><table>",
                    esc(id),
                    esc(prompt)
                );
                for e in self.examples.iter().filter(|e| e.prompt_id == id) {
                    let _ = write!(
                        h,
                        "<tr><th>{}</th><td class=resp>{}</td><td>{}</td></tr>",
                        esc(&e.model),
                        esc(&e.response),
                        fmt(e.score)
                    );
                }
                h.push_str("</table></div>");
            }
        }

        h.push_str("<h2>Lineage</h2><p>Every number above links here: the artifact that produced it, its key, content hash and parameters.</p>");
        for c in &self.cited {
            let _ = write!(
                h,
                "<div class=cited id=\"{}\"><b>{}</b> <code>{}</code><br>key <code>{}</code><br>content <code>{}</code><details><summary>parameters</summary><pre>{}</pre></details></div>",
                anchor(&c.key),
                esc(&c.label),
                esc(&c.stage),
                esc(&c.key),
                esc(&c.content_hash),
                esc(&serde_json::to_string_pretty(&c.params).unwrap_or_default())
            );
        }
        h.push_str(SCRIPT);
        h.push_str("</body></html>\n");
        h
    }
}

const CSS: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
h1{margin-bottom:0}.sub{color:#666}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\
td a{color:#1f4e8c;text-decoration:none}td.na{color:#aaa}figure{margin:1em 0;display:flex;flex-wrap:wrap;gap:8px}\
.example{border-left:3px solid #ddd;padding-left:8px;margin:1em 0}.resp{white-space:pre-wrap;max-width:700px}\
.cited{font-size:90%;margin:.6em 0}.findings li.ok{color:#176317}.findings li.bad{color:#a11}";

const SCRIPT: &str = "<script>window.addEventListener('load',function(){var s=document.querySelectorAll('svg'),ok=0;\
for(var i=0;i<s.length;i++){var b=s[i].getBBox();if(b.width>0&&b.height>0&&s[i].querySelectorAll('rect,path,polyline,circle,line').length>0)ok++;}\
document.body.setAttribute('data-svg-rendered',ok+'/'+s.length);});</script>";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> ReportData {
        let key = "abcdef0123456789".to_string();
        let mut metrics = Vec::new();
        for (model, wr) in [("sft", 0.5), ("ppo", 0.68), ("ppo-ptx", 0.72)] {
            metrics.push(MetricRow {
                model: model.into(),
                kind: model.replace('-', "_"),
                size: "tiny".into(),
                params: 1000,
                metric: "win_rate".into(),
                value: wr,
                lo: wr - 0.05,
                hi: wr + 0.05,
                n: 200,
                source: key.clone(),
            });
            for (m, v) in [("truthful", 0.6), ("toxicity", 0.2), ("pretrain_ppl", 12.5)] {
                metrics.push(MetricRow {
                    model: model.into(),
                    kind: model.replace('-', "_"),
                    size: "tiny".into(),
                    params: 1000,
                    metric: m.into(),
                    value: v,
                    lo: f64::NAN,
                    hi: f64::NAN,
                    n: 50,
                    source: key.clone(),
                });
            }
        }
        let curves = (0..10)
            .flat_map(|i| {
                let k = key.clone();
                [("kl", i as f64 * 0.1), ("probe_gold", 0.5 + i as f64 * 0.02), ("rm_reward", i as f64 * 0.05)].map(
                    move |(m, v)| CurvePoint {
                        run: "ppo".into(),
                        metric: m.into(),
                        step: i,
                        value: v,
                        source: k.clone(),
                    },
                )
            })
            .collect();
        ReportData {
            title: "instructgpt-rs report".into(),
            subtitle: "pipeline test <script>".into(),
            models: vec!["sft".into(), "ppo".into(), "ppo-ptx".into()],
            metrics,
            curves,
            examples: vec![Example {
                prompt_id: "p1".into(),
                prompt: "How many legs does a dog have?".into(),
                model: "ppo".into(),
                response: "A dog has four legs.".into(),
                score: 0.9,
            }],
            cited: vec![Cited {
                label: "eval".into(),
                stage: "eval.eval".into(),
                key,
                content_hash: "ff".into(),
                params: serde_json::json!({"a": 1}),
            }],
            findings: vec![("PPO-ptx win rate 0.72 >= 0.70".into(), true)],
        }
    }

    #[test]
    fn report_has_plots_tables_and_links() {
        let html = sample().render_html();
        if let Some(path) = std::env::var_os("INSTRUCTGPT_REPORT_DUMP") {
            std::fs::write(path, &html).unwrap();
        }
        assert!(html.matches("<svg").count() >= 4, "win-rate bars, grouped bars, curves");
        assert!(html.contains("href=\"#a-abcdef012345\"") && html.contains("id=\"a-abcdef012345\""));
        assert!(html.contains("[0.670, 0.770]"));
        assert!(!html.contains("pipeline test <script>"), "text is escaped");
        assert!(html.contains("How many legs"));
    }

    #[test]
    fn report_plots_render_in_headless_chromium() {
        if let Some((ok, total)) = crate::browser::rendered_plots(&sample().render_html()) {
            assert!(total >= 4, "{total} plots");
            assert_eq!(ok, total, "every plot has a non-empty bounding box and marks");
        }
    }
}
