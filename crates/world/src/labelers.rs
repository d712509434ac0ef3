//! Simulated labelers: a population of noisy variants of the gold judge.
//!
//! Each labeler weighs the judge's axes with its own exponents (one cares more about form, another
//! about harmlessness), perceives each response's utility with Gumbel noise of its own temperature
//! (so its pairwise choices follow Bradley-Terry and its rankings Plackett-Luce), and calls two
//! responses a tie when its noiseless utilities differ by less than its threshold. A held-out group,
//! with a little less noise, is used only for evaluation, as in the paper.
//!
//! Key design decision: a labeler's noise for a response is a pure function of (labeler seed, call
//! purpose, prompt id, response text, EOS), so results never depend on call order or batching, and
//! identical responses always tie. The noise scale is calibrated so that two training labelers agree on
//! about 73% of non-tied pairs of a mix of good and degraded responses (the paper: 72.6 ± 1.5%
//! training, 77.3 ± 1.3% held-out); [`Pool::calibrated`] re-fits it on any other set of groups, e.g.
//! real SFT samples.

use rand::Rng;
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Serialize};

use crate::judge::{AxisWeights, Judgment, judge};
use crate::meta::{Response, TaskMeta};
use crate::seed;

/// The Gumbel temperature of an average training labeler, on the utility scale `ln(score + 0.1)`.
/// Calibrated on [`calibration_groups`] (seed 0): about 73% agreement on non-tied pairs.
pub const BASE_TEMPERATURE: f64 = 0.62;
/// Held-out labelers are this much less noisy (the paper's held-out labelers agreed more).
pub const HELDOUT_NOISE: f64 = 0.75;
/// The average tie threshold on the utility scale (about a 1.5% difference in score).
pub const BASE_TIE_THRESHOLD: f64 = 0.015;
/// Spread of a labeler's axis exponents around the gold judge's (log-normal sigma).
pub const WEIGHT_SPREAD: f64 = 0.3;

/// A labeler's choice between two responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    A,
    B,
    Tie,
}

/// One simulated labeler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labeler {
    pub id: String,
    pub heldout: bool,
    pub seed: u64,
    pub weights: AxisWeights,
    /// Gumbel noise scale on the utility.
    pub temperature: f64,
    /// Noiseless utilities closer than this are ties.
    pub tie_threshold: f64,
}

/// The labeler population: training labelers (`lab-00`, ...) and held-out ones (`heldout-00`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub train: Vec<Labeler>,
    pub heldout: Vec<Labeler>,
}

impl Pool {
    /// `n_train` training and `n_heldout` held-out labelers drawn from `seed`, at the calibrated noise.
    pub fn new(seed_: u64, n_train: usize, n_heldout: usize) -> Pool {
        Pool::with_noise_scale(seed_, n_train, n_heldout, 1.0)
    }

    /// As [`Pool::new`], with every temperature multiplied by `scale`.
    pub fn with_noise_scale(seed_: u64, n_train: usize, n_heldout: usize, scale: f64) -> Pool {
        let make = |id: String, heldout: bool| {
            let seed = seed::derive(seed_, &format!("labeler/{id}"));
            let mut rng = seed::rng(seed, "traits");
            let spread = LogNormal::new(0.0, WEIGHT_SPREAD).expect("valid log-normal");
            let mut w = || spread.sample(&mut rng);
            let weights =
                AxisWeights { follows: w(), constraint: w(), grounded: w(), truthful: w(), harmless: w(), form: w() };
            let t_spread = LogNormal::new(0.0, 0.15).expect("valid log-normal").sample(&mut rng);
            let noise = if heldout { HELDOUT_NOISE } else { 1.0 };
            let tie_threshold = BASE_TIE_THRESHOLD * rng.random_range(0.5..1.5);
            Labeler {
                id,
                heldout,
                seed,
                weights,
                temperature: BASE_TEMPERATURE * scale * noise * t_spread,
                tie_threshold,
            }
        };
        Pool {
            train: (0..n_train).map(|i| make(format!("lab-{i:02}"), false)).collect(),
            heldout: (0..n_heldout).map(|i| make(format!("heldout-{i:02}"), true)).collect(),
        }
    }

    /// Fits the noise scale so that training labelers agree on `target` of non-tied pairs of `groups`
    /// (bisection; agreement falls as noise grows). Returns the pool and the scale.
    pub fn calibrated(seed_: u64, n_train: usize, n_heldout: usize, groups: &[Group], target: f64) -> (Pool, f64) {
        let judged = judge_groups(groups);
        let measure = |scale: f64| {
            let pool = Pool::with_noise_scale(seed_, n_train, n_heldout, scale);
            let refs: Vec<&Labeler> = pool.train.iter().collect();
            agreement_judged(&refs, groups, &judged).agreement
        };
        let (mut lo, mut hi) = (0.05f64, 20.0f64);
        for _ in 0..30 {
            let mid = (lo * hi).sqrt();
            if measure(mid) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let scale = (lo * hi).sqrt();
        (Pool::with_noise_scale(seed_, n_train, n_heldout, scale), scale)
    }

    pub fn all(&self) -> impl Iterator<Item = &Labeler> {
        self.train.iter().chain(&self.heldout)
    }

    pub fn get(&self, id: &str) -> Option<&Labeler> {
        self.all().find(|l| l.id == id)
    }
}

/// The file a labeler population is stored in, inside an artifact.
pub const POOL_FILE: &str = "labelers.json";

impl Pool {
    /// Writes the population to `dir/labelers.json`.
    pub fn save_to_dir(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(dir.join(POOL_FILE), serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// The population stored in `dir`, if there is one.
    pub fn load_from_dir(dir: &std::path::Path) -> anyhow::Result<Option<Pool>> {
        let path = dir.join(POOL_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)?;
        Ok(Some(serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?))
    }
}

impl Labeler {
    /// The labeler's noiseless utility of a judged response: `ln(score + 0.1)` under its weights, so
    /// it tells bad from terrible as well as good from perfect.
    pub fn utility(&self, j: &Judgment) -> f64 {
        (j.score_with(&self.weights) + 0.1).ln()
    }

    /// Gumbel noise for one response in one kind of call, fixed by its inputs.
    fn noise(&self, purpose: &str, prompt_id: &str, r: &Response) -> f64 {
        let label = format!("{purpose}\u{1f}{prompt_id}\u{1f}{}\u{1f}{}", u8::from(r.ended_with_eos), r.text);
        let u = seed::unit(self.seed, &label).clamp(1e-12, 1.0 - 1e-12);
        self.temperature * -(-u.ln()).ln()
    }

    /// Ranks `responses` (1 = best; tied responses share a rank, the next rank skips: 1, 2, 2, 4).
    pub fn rank(&self, prompt_id: &str, meta: &TaskMeta, responses: &[Response]) -> Vec<u32> {
        let judged: Vec<Judgment> = responses.iter().map(|r| judge(meta, &r.text, r.ended_with_eos)).collect();
        self.rank_judged("rank", prompt_id, responses, &judged)
    }

    /// Compares two responses.
    pub fn compare(&self, prompt_id: &str, meta: &TaskMeta, a: &Response, b: &Response) -> Preference {
        let judged = [judge(meta, &a.text, a.ended_with_eos), judge(meta, &b.text, b.ended_with_eos)];
        self.compare_judged(prompt_id, [a, b], judged)
    }

    /// As [`Labeler::compare`], for responses the gold judge has already judged (`judged[i]` is the
    /// verdict on `responses[i]`), so a caller that needs the verdicts too judges each response once.
    pub fn compare_judged(&self, prompt_id: &str, responses: [&Response; 2], judged: [Judgment; 2]) -> Preference {
        let [a, b] = responses;
        let ranks = self.rank_judged("compare", prompt_id, &[a.clone(), b.clone()], &judged);
        match ranks[0].cmp(&ranks[1]) {
            std::cmp::Ordering::Less => Preference::A,
            std::cmp::Ordering::Greater => Preference::B,
            std::cmp::Ordering::Equal => Preference::Tie,
        }
    }

    pub(crate) fn rank_judged(&self, purpose: &str, prompt_id: &str, rs: &[Response], js: &[Judgment]) -> Vec<u32> {
        let n = rs.len();
        let u: Vec<f64> = js.iter().map(|j| self.utility(j)).collect();
        // Ties: single-linkage clusters of noiseless utilities closer than the threshold.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| u[a].total_cmp(&u[b]).then(a.cmp(&b)));
        let mut cluster = vec![0usize; n];
        let mut c = 0;
        for w in 1..n {
            if u[order[w]] - u[order[w - 1]] >= self.tie_threshold {
                c += 1;
            }
            cluster[order[w]] = c;
        }
        let n_clusters = if n == 0 { 0 } else { c + 1 };
        // Each cluster is perceived at its members' mean noisy utility.
        let mut sum = vec![0.0; n_clusters];
        let mut count = vec![0usize; n_clusters];
        for i in 0..n {
            sum[cluster[i]] += u[i] + self.noise(purpose, prompt_id, &rs[i]);
            count[cluster[i]] += 1;
        }
        let perceived: Vec<f64> = (0..n_clusters).map(|k| sum[k] / count[k] as f64).collect();
        (0..n)
            .map(|i| {
                let mine = perceived[cluster[i]];
                let better: usize =
                    (0..n).filter(|&j| perceived[cluster[j]] > mine && cluster[j] != cluster[i]).count();
                better as u32 + 1
            })
            .collect()
    }
}

/// Responses to one prompt, to rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub prompt_id: String,
    pub meta: TaskMeta,
    pub responses: Vec<Response>,
}

/// Inter-labeler agreement over a set of groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Labeler pairs compared.
    pub labeler_pairs: usize,
    /// (labeler pair, response pair) judgments over distinct responses.
    pub pairs: usize,
    /// Of those, pairs that neither labeler tied.
    pub non_tied: usize,
    /// Of those, pairs both ordered the same way.
    pub agreed: usize,
    /// `agreed / non_tied`, pooled.
    pub agreement: f64,
    /// Mean and standard deviation of agreement across labeler pairs (the paper reports these).
    pub mean_over_pairs: f64,
    pub std_over_pairs: f64,
    /// Share of single-labeler judgments of distinct-response pairs that were ties.
    pub tie_rate: f64,
}

/// How often labelers agree on the order of two distinct responses they did not tie.
pub fn agreement(labelers: &[&Labeler], groups: &[Group]) -> Agreement {
    agreement_judged(labelers, groups, &judge_groups(groups))
}

fn judge_groups(groups: &[Group]) -> Vec<Vec<Judgment>> {
    groups.iter().map(|g| g.responses.iter().map(|r| judge(&g.meta, &r.text, r.ended_with_eos)).collect()).collect()
}

fn agreement_judged(labelers: &[&Labeler], groups: &[Group], judged: &[Vec<Judgment>]) -> Agreement {
    let ranks: Vec<Vec<Vec<u32>>> = labelers
        .iter()
        .map(|l| groups.iter().zip(judged).map(|(g, j)| l.rank_judged("rank", &g.prompt_id, &g.responses, j)).collect())
        .collect();
    let (mut pairs, mut non_tied, mut agreed, mut ties, mut single) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut per_pair = Vec::new();
    for a in 0..labelers.len() {
        for b in (a + 1)..labelers.len() {
            let (mut nt, mut ag) = (0usize, 0usize);
            for (gi, g) in groups.iter().enumerate() {
                let (ra, rb) = (&ranks[a][gi], &ranks[b][gi]);
                for i in 0..g.responses.len() {
                    for j in (i + 1)..g.responses.len() {
                        if g.responses[i] == g.responses[j] {
                            continue;
                        }
                        pairs += 1;
                        let pa = ra[i].cmp(&ra[j]);
                        let pb = rb[i].cmp(&rb[j]);
                        single += 2;
                        ties += usize::from(pa.is_eq()) + usize::from(pb.is_eq());
                        if pa.is_ne() && pb.is_ne() {
                            nt += 1;
                            ag += usize::from(pa == pb);
                        }
                    }
                }
            }
            non_tied += nt;
            agreed += ag;
            if nt > 0 {
                per_pair.push(ag as f64 / nt as f64);
            }
        }
    }
    let mean = if per_pair.is_empty() { 0.0 } else { per_pair.iter().sum::<f64>() / per_pair.len() as f64 };
    let var = if per_pair.len() < 2 {
        0.0
    } else {
        per_pair.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (per_pair.len() - 1) as f64
    };
    Agreement {
        labeler_pairs: labelers.len() * labelers.len().saturating_sub(1) / 2,
        pairs,
        non_tied,
        agreed,
        agreement: if non_tied == 0 { 0.0 } else { agreed as f64 / non_tied as f64 },
        mean_over_pairs: mean,
        std_over_pairs: var.sqrt(),
        tie_rate: if single == 0 { 0.0 } else { ties as f64 / single as f64 },
    }
}

/// The calibration set: `n` prompts of a world, each with K = 4..9 responses from
/// [`crate::degrade::sample_group`].
pub fn calibration_groups(world: &crate::World, n: usize, seed_: u64) -> Vec<Group> {
    world
        .prompts()
        .iter()
        .take(n)
        .map(|p| {
            let mut rng = seed::rng(seed_, &format!("calibration/{}", p.id));
            let k = rng.random_range(4..=9);
            Group {
                prompt_id: p.id.clone(),
                meta: p.meta.clone(),
                responses: crate::degrade::sample_group(&p.meta, k, &mut rng),
            }
        })
        .collect()
}
