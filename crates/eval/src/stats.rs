//! Small statistics for evaluation: win rates, bootstrap intervals, choice
//! entropy. Deterministic: resampling draws from a seeded ChaCha.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The mean of `values` (0 for none).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 }
}

/// A percentile-bootstrap confidence interval of the mean: `resamples`
/// resamples with replacement, the `(1-level)/2` and `(1+level)/2` quantiles.
pub fn bootstrap_mean_ci(values: &[f64], resamples: usize, level: f64, seed: u64) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = values.len();
    let mut means: Vec<f64> =
        (0..resamples.max(1)).map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let idx = (p * (means.len() - 1) as f64).round() as usize;
        means[idx.min(means.len() - 1)]
    };
    (q((1.0 - level) / 2.0), q((1.0 + level) / 2.0))
}

/// Entropy in bits of a choice between alternatives given how often each
/// was chosen (1 bit = a fair coin between two; 0 = always the same).
pub fn choice_entropy(counts: &[usize]) -> f64 {
    let total: usize = counts.iter().sum();
    if total == 0 {
        return f64::NAN;
    }
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / total as f64;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_brackets_the_mean_and_is_deterministic() {
        let v: Vec<f64> = (0..200).map(|i| if i % 4 == 0 { 0.0 } else { 1.0 }).collect();
        let (lo, hi) = bootstrap_mean_ci(&v, 1000, 0.95, 7);
        assert!(lo < 0.75 && hi > 0.75 && lo > 0.6 && hi < 0.9, "{lo} {hi}");
        assert_eq!((lo, hi), bootstrap_mean_ci(&v, 1000, 0.95, 7));
        let (lo2, hi2) = bootstrap_mean_ci(&v[..20], 1000, 0.95, 7);
        assert!(hi2 - lo2 > hi - lo, "fewer samples, wider interval");
    }

    #[test]
    fn entropy_of_choices() {
        assert!((choice_entropy(&[5, 5]) - 1.0).abs() < 1e-12);
        assert_eq!(choice_entropy(&[10, 0]), 0.0);
        assert!(choice_entropy(&[]).is_nan());
    }
}
