//! The RL math of PPO with a KL penalty, in small named functions.
//!
//! Per-sequence bookkeeping (rewards, GAE, whitening) runs on plain vectors:
//! it is sequential over tokens and tiny. The losses are candle tensor
//! expressions so their gradients flow into the policy and value models.
//! Shapes: `(B, T)` over response tokens, with a `mask` of 1.0 on real tokens
//! and 0.0 on padding.

use candle_core::{D, Result, Tensor};

/// Estimators of KL(pi || ref) from a sample of pi, per token, given
/// `d = log pi(y) - log ref(y)` (Schulman, "Approximating KL divergence").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    /// `d`: unbiased, high variance, can be negative per token.
    K1,
    /// `d^2 / 2`: biased, low variance, never negative.
    K2,
    /// `exp(-d) - 1 + d`: unbiased, low variance, never negative.
    K3,
}

/// How advantages are estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdvantageEstimator {
    /// GAE over the per-token rewards with the value model as baseline (the paper's PPO).
    Gae,
    /// REINFORCE leave-one-out (Ahmadian et al. 2024; OpenRLHF's `rloo`): each response's
    /// KL-penalised sequence reward minus the mean of the other samples of its prompt, at every
    /// token. Needs `samples_per_prompt >= 2`; there is no value model (no critic to train).
    Rloo,
}

/// Leave-one-out advantages: `rewards` in consecutive groups of `k` samples of one prompt; each
/// gets its reward minus the mean of the other `k - 1` of its group.
pub fn leave_one_out(rewards: &[f32], k: usize) -> Vec<f32> {
    assert!(k >= 2 && rewards.len().is_multiple_of(k), "groups of k >= 2 samples");
    rewards
        .chunks(k)
        .flat_map(|g| {
            let sum: f32 = g.iter().sum();
            g.iter().map(move |r| r - (sum - r) / (k - 1) as f32)
        })
        .collect()
}

/// The score of the null control (`random_reward`): uniform in [-2, 2], a pure function of the
/// run's seed, the iteration and the episode's position in it (never of the response).
pub fn null_score(seed: u64, iteration: u64, episode: usize) -> f32 {
    let h = lineage::derive_seed(seed, &format!("null-reward/{iteration}/{episode}"));
    ((h >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0) as f32
}

/// The per-token KL estimate from policy and reference log-probs.
pub fn kl_per_token(logp: f32, ref_logp: f32, estimator: KlEstimator) -> f32 {
    let d = logp - ref_logp;
    match estimator {
        KlEstimator::K1 => d,
        KlEstimator::K2 => 0.5 * d * d,
        KlEstimator::K3 => (-d).exp() - 1.0 + d,
    }
}

/// Per-token rewards of one response: `-kl_coef * kl_t` at every token, plus
/// the sequence `score` (the reward model's, already penalised if the
/// response has no EOS) at the last token. The paper's reward arrives only at
/// the final token; the KL penalty at every token.
pub fn token_rewards(kl: &[f32], score: f32, kl_coef: f32) -> Vec<f32> {
    let mut r: Vec<f32> = kl.iter().map(|k| -kl_coef * k).collect();
    if let Some(last) = r.last_mut() {
        *last += score;
    }
    r
}

/// Generalised advantage estimation over one response (the episode ends
/// after its last token, so the value after it is 0). Returns
/// `(advantages, returns)` with `returns = advantages + values`.
pub fn gae(rewards: &[f32], values: &[f32], gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(rewards.len(), values.len(), "one value per reward");
    let n = rewards.len();
    let mut adv = vec![0.0f32; n];
    let mut next_adv = 0.0f32;
    for t in (0..n).rev() {
        let next_value = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_value - values[t];
        next_adv = delta + gamma * lambda * next_adv;
        adv[t] = next_adv;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// Whitens advantages over all tokens of a batch in place: zero mean, unit
/// (unbiased) standard deviation.
pub fn whiten(values: &mut [f32]) {
    let n = values.len();
    if n < 2 {
        return;
    }
    let (mean, var) = mean_and_unbiased_var(values.iter().map(|v| *v as f64));
    let std = var.sqrt() + 1e-8;
    for v in values.iter_mut() {
        *v = ((*v as f64 - mean) / std) as f32;
    }
}

/// Mean of `x` over positions where `mask` is 1.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let total = mask.sum_all()?;
    (x * mask)?.sum_all()?.broadcast_div(&total.maximum(1.0)?)
}

/// Diagnostics of one policy-loss evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyStats {
    /// Fraction of tokens where the clipped objective was the active one.
    pub clip_fraction: f32,
    /// `mean(0.5 (new - old)^2)`, an estimate of KL(old || new).
    pub approx_kl: f32,
}

/// The clipped surrogate policy loss:
/// `mean(max(-A r, -A clip(r, 1-eps, 1+eps)))` with `r = exp(new - old)`.
pub fn policy_loss(
    new_logp: &Tensor,
    old_logp: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    clip: f64,
) -> Result<(Tensor, PolicyStats)> {
    let log_ratio = (new_logp - old_logp)?;
    let ratio = log_ratio.exp()?;
    let unclipped = (advantages.neg()? * &ratio)?;
    let clipped = (advantages.neg()? * ratio.clamp(1.0 - clip, 1.0 + clip)?)?;
    let loss = masked_mean(&unclipped.maximum(&clipped)?, mask)?;
    let active = clipped.gt(&unclipped)?.to_dtype(mask.dtype())?;
    let clip_fraction = masked_mean(&active, mask)?.to_scalar::<f32>()?;
    let approx_kl = masked_mean(&(log_ratio.sqr()? * 0.5)?, mask)?.to_scalar::<f32>()?;
    Ok((loss, PolicyStats { clip_fraction, approx_kl }))
}

/// The clipped value loss: `0.5 mean(max((v - R)^2, (v_clip - R)^2))` with
/// `v_clip = old + clip(v - old, -eps, eps)`. Returns the loss and the
/// fraction of tokens where the clipped term was active.
pub fn value_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    clip: f64,
) -> Result<(Tensor, f32)> {
    let v_clipped = (old_values + (values - old_values)?.clamp(-clip, clip)?)?;
    let l1 = (values - returns)?.sqr()?;
    let l2 = (v_clipped - returns)?.sqr()?;
    let loss = (masked_mean(&l1.maximum(&l2)?, mask)? * 0.5)?;
    let active = l2.gt(&l1)?.to_dtype(mask.dtype())?;
    Ok((loss, masked_mean(&active, mask)?.to_scalar::<f32>()?))
}

/// Mean per-token entropy from logits `(B, T, V)` under `mask` `(B, T)`.
pub fn entropy(logits: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let logp = shifted.broadcast_sub(&log_z)?;
    let h = (logp.exp()? * &logp)?.sum(D::Minus1)?.neg()?;
    masked_mean(&h, mask)
}

/// Fraction of the variance of `returns` that `values` explain:
/// `1 - Var(R - V) / Var(R)`.
pub fn explained_variance(values: &[f32], returns: &[f32]) -> f32 {
    let n = returns.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let var = |x: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = x.collect();
        let m = v.iter().sum::<f64>() / n;
        v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n
    };
    let var_r = var(&mut returns.iter().map(|r| *r as f64));
    if var_r == 0.0 {
        return 0.0;
    }
    let var_d = var(&mut returns.iter().zip(values).map(|(r, v)| (*r - *v) as f64));
    (1.0 - var_d / var_r) as f32
}

/// Whether the mean of `xs` is below zero by more than `z` standard errors. The per-sequence KL
/// estimate is noisy around 0 before the policy has moved (k1 is unbiased, not non-negative), so a
/// warning that the KL is negative should fire only when its mean is negative beyond that noise.
pub fn significantly_negative(xs: &[f64], z: f64) -> bool {
    if xs.len() < 2 {
        return false;
    }
    let (m, var) = mean_and_unbiased_var(xs.iter().copied());
    m + z * (var / xs.len() as f64).sqrt() < 0.0
}

/// Mean and unbiased (n - 1) variance of at least two values.
fn mean_and_unbiased_var(xs: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = xs.clone().count() as f64;
    let mean = xs.clone().sum::<f64>() / n;
    let var = xs.map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn close(a: f32, b: f32) {
        assert!((a - b).abs() < 1e-5, "{a} != {b}");
    }

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v, (1, v.len()), &Device::Cpu).unwrap()
    }

    #[test]
    fn gae_matches_hand_worked_values() {
        // delta_2 = 1 + 0 - 0.7 = 0.3; delta_1 = 0 + 0.7 - 0.6 = 0.1; delta_0 = 0.6 - 0.5 = 0.1
        // A_2 = 0.3; A_1 = 0.1 + 0.95 * 0.3 = 0.385; A_0 = 0.1 + 0.95 * 0.385 = 0.46575
        let (adv, ret) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.6, 0.7], 1.0, 0.95);
        for (a, e) in adv.iter().zip([0.46575, 0.385, 0.3]) {
            close(*a, e);
        }
        for (r, e) in ret.iter().zip([0.96575, 0.985, 1.0]) {
            close(*r, e);
        }
        // lambda = 1, gamma = 1: the advantage is the sum of future rewards minus the value.
        let (adv, _) = gae(&[0.1, -0.2, 1.0], &[0.3, 0.2, 0.1], 1.0, 1.0);
        close(adv[0], 0.9 - 0.3);
    }

    #[test]
    fn leave_one_out_subtracts_the_mean_of_the_others_in_each_group() {
        // Group 1 (1, 2, 6): 1 - 4 = -3, 2 - 3.5 = -1.5, 6 - 1.5 = 4.5. Group 2 (0, 0, 3): -1.5, -1.5, 3.
        let a = leave_one_out(&[1.0, 2.0, 6.0, 0.0, 0.0, 3.0], 3);
        for (x, e) in a.iter().zip([-3.0, -1.5, 4.5, -1.5, -1.5, 3.0]) {
            close(*x, e);
        }
        // Two samples: plus and minus their difference.
        assert_eq!(leave_one_out(&[0.25, 1.0], 2), vec![-0.75, 0.75]);
    }

    #[test]
    fn whitening_uses_the_unbiased_std() {
        let mut v = [1.0, 2.0, 3.0, 4.0];
        whiten(&mut v);
        // mean 2.5, unbiased variance 5/3, std 1.290994
        for (a, e) in v.iter().zip([-1.161895, -0.387298, 0.387298, 1.161895]) {
            close(*a, e);
        }
    }

    #[test]
    fn null_scores_are_seeded_uniform_draws() {
        let s: Vec<f32> = (0..4000).map(|k| null_score(7, 3, k)).collect();
        assert!(s.iter().all(|x| (-2.0..2.0).contains(x)));
        let mean = s.iter().sum::<f32>() / s.len() as f32;
        let var = s.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / s.len() as f32;
        // Uniform on [-2, 2]: mean 0, variance 16 / 12.
        assert!(mean.abs() < 0.06, "{mean}");
        assert!((var - 4.0 / 3.0).abs() < 0.08, "{var}");
        assert_eq!(null_score(7, 3, 5), s[5]);
        assert_ne!(null_score(8, 3, 5), s[5]);
        assert_ne!(null_score(7, 4, 5), s[5]);
    }

    #[test]
    fn kl_estimators() {
        close(kl_per_token(-1.0, -1.5, KlEstimator::K1), 0.5);
        close(kl_per_token(-1.0, -1.5, KlEstimator::K2), 0.125);
        close(kl_per_token(-1.0, -1.5, KlEstimator::K3), (-0.5f32).exp() - 0.5);
        assert!(kl_per_token(-1.5, -1.0, KlEstimator::K3) >= 0.0);
        assert!(kl_per_token(-1.5, -1.0, KlEstimator::K1) < 0.0);
    }

    #[test]
    fn rewards_put_the_score_on_the_last_token() {
        let r = token_rewards(&[0.5, -0.5, 1.0], 2.0, 0.1);
        assert_eq!(r, vec![-0.05, 0.05, -0.1 + 2.0]);
    }

    #[test]
    fn clipped_policy_loss() {
        // Token 1: A = 2, r = 1.5 -> max(-3, -2.4) = -2.4 (clipped active).
        // Token 2: A = -1, r = 0.5 -> max(0.5, 0.8) = 0.8 (clipped active).
        // Token 3: A = 1, r = 1 -> -1 (neither).
        // Token 4: padding.
        let old = t(&[0.0, 0.0, 0.0, 0.0]);
        let new = t(&[1.5f32.ln(), 0.5f32.ln(), 0.0, 5.0]);
        let adv = t(&[2.0, -1.0, 1.0, 100.0]);
        let mask = t(&[1.0, 1.0, 1.0, 0.0]);
        let (loss, stats) = policy_loss(&new, &old, &adv, &mask, 0.2).unwrap();
        close(loss.to_scalar::<f32>().unwrap(), (-2.4 + 0.8 - 1.0) / 3.0);
        close(stats.clip_fraction, 2.0 / 3.0);
        let lr = [1.5f32.ln(), 0.5f32.ln(), 0.0];
        close(stats.approx_kl, lr.iter().map(|x| 0.5 * x * x).sum::<f32>() / 3.0);
    }

    #[test]
    fn policy_gradient_at_ratio_one_is_the_plain_policy_gradient() {
        // With new == old both branches of the max are equal; the gradient
        // must still be -A / n per token, not split or doubled.
        let new = candle_core::Var::new(&[[0.0f32, 0.0]], &Device::Cpu).unwrap();
        let old = t(&[0.0, 0.0]);
        let (loss, _) = policy_loss(new.as_tensor(), &old, &t(&[2.0, -1.0]), &t(&[1.0, 1.0]), 0.2).unwrap();
        let g = loss.backward().unwrap().get(new.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        close(g[0][0], -1.0);
        close(g[0][1], 0.5);
    }

    #[test]
    fn clipped_value_loss() {
        // v = 1.0, old = 0.5, R = 1.2, eps = 0.2: v_clip = 0.7;
        // max((1.0-1.2)^2, (0.7-1.2)^2) = 0.25 -> 0.125.
        let (loss, frac) = value_loss(&t(&[1.0]), &t(&[0.5]), &t(&[1.2]), &t(&[1.0]), 0.2).unwrap();
        close(loss.to_scalar::<f32>().unwrap(), 0.125);
        close(frac, 1.0);
    }

    #[test]
    fn entropy_of_uniform_and_peaked() {
        let logits =
            Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0, 100.0, 0.0, 0.0, 0.0], (1, 2, 4), &Device::Cpu).unwrap();
        let h = entropy(&logits, &t(&[1.0, 0.0])).unwrap().to_scalar::<f32>().unwrap();
        close(h, 4f32.ln());
        let h = entropy(&logits, &t(&[0.0, 1.0])).unwrap().to_scalar::<f32>().unwrap();
        assert!(h < 1e-6);
    }

    #[test]
    fn explained_variance_bounds() {
        close(explained_variance(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 1.0);
        close(explained_variance(&[0.0, 0.0, 0.0], &[1.0, 2.0, 3.0]), 0.0);
    }

    #[test]
    fn significantly_negative_counts_the_noise() {
        // Mean -0.1, sample sd 1 over 4 values: standard error 0.5, so -0.1 + 2 * 0.5 > 0.
        let noisy = [-1.1, 0.9, -1.1, 0.9];
        assert!(!significantly_negative(&noisy, 2.0));
        // Mean -1, sd 0.1155 over 4 values: standard error 0.0577, -1 + 2 * 0.0577 < 0.
        let clear = [-1.1, -0.9, -1.1, -0.9];
        assert!(significantly_negative(&clear, 2.0));
        // At z = 0 any negative mean counts; a single value or a positive mean never does.
        assert!(significantly_negative(&noisy, 0.0));
        assert!(!significantly_negative(&[-5.0], 0.0));
        assert!(!significantly_negative(&[0.2, 0.4], 0.0));
    }
}
