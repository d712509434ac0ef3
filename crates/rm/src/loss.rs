//! The reward model's K-way ranking loss (paper, eq. 1).

use candle_core::{Result, Tensor};

/// `-1/P * sum over pairs (w better than l) of log sigmoid(r_w - r_l)` for
/// the K rewards of one prompt's responses, `rewards` of shape `(K,)`, ranks
/// 1 = best. All pairs of one prompt form one batch element: K forward
/// passes, not C(K,2). Tied pairs are left out; `P` is the number of pairs
/// kept, C(K,2) when there are no ties. Returns `None` when every pair is tied.
pub fn ranking_loss(rewards: &Tensor, ranks: &[i32]) -> Result<Option<(Tensor, RankingStats)>> {
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for i in 0..ranks.len() {
        for j in (i + 1)..ranks.len() {
            match ranks[i].cmp(&ranks[j]) {
                std::cmp::Ordering::Less => {
                    winners.push(i as u32);
                    losers.push(j as u32);
                }
                std::cmp::Ordering::Greater => {
                    winners.push(j as u32);
                    losers.push(i as u32);
                }
                std::cmp::Ordering::Equal => {}
            }
        }
    }
    if winners.is_empty() {
        return Ok(None);
    }
    let pairs = winners.len();
    let device = rewards.device();
    let w = rewards.index_select(&Tensor::new(winners.as_slice(), device)?, 0)?;
    let l = rewards.index_select(&Tensor::new(losers.as_slice(), device)?, 0)?;
    let diff = (w - l)?;
    // -log sigmoid(x) = log(1 + exp(-x)). The usual max/abs rewrite has kinks
    // at x = 0 whose subgradients candle does not cancel (and x = 0 is where
    // training starts); clamping keeps exp finite in f32 instead.
    let softplus = (diff.clamp(-50.0, 50.0)?.neg()?.exp()? + 1.0)?.log()?;
    let loss = (softplus.sum_all()? / pairs as f64)?;
    let correct = diff.gt(0.0)?.to_dtype(candle_core::DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    Ok(Some((loss, RankingStats { pairs, correct: correct as usize })))
}

/// How many pairs a ranking contributed and how many the model orders right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankingStats {
    pub pairs: usize,
    pub correct: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn four_way_ranking_gives_six_pairs_scaled_by_one_sixth() {
        // Rewards in rank order 2 > 1 > 0.5 > -1: differences 1, 1.5, 3, 0.5, 2, 1.5.
        // -log sigmoid: 0.313262, 0.201413, 0.048587, 0.474077, 0.126928, 0.201413; sum 1.36568.
        let r = Tensor::new(&[2.0f32, 1.0, 0.5, -1.0], &Device::Cpu).unwrap();
        let (loss, stats) = ranking_loss(&r, &[1, 2, 3, 4]).unwrap().unwrap();
        assert_eq!(stats, RankingStats { pairs: 6, correct: 6 });
        let v = loss.to_scalar::<f32>().unwrap();
        assert!((v - 1.36568 / 6.0).abs() < 1e-5, "{v}");
    }

    #[test]
    fn order_of_responses_does_not_matter_and_ties_are_left_out() {
        let r = Tensor::new(&[-1.0f32, 0.5, 2.0, 1.0], &Device::Cpu).unwrap();
        let (loss, _) = ranking_loss(&r, &[4, 3, 1, 2]).unwrap().unwrap();
        assert!((loss.to_scalar::<f32>().unwrap() - 1.36568 / 6.0).abs() < 1e-5);
        let (_, stats) = ranking_loss(&r, &[1, 1, 2, 2]).unwrap().unwrap();
        assert_eq!(stats.pairs, 4);
        assert!(ranking_loss(&r, &[1, 1, 1, 1]).unwrap().is_none());
    }

    #[test]
    fn gradient_pushes_the_winner_up() {
        let r = candle_core::Var::new(&[0.0f32, 0.0], &Device::Cpu).unwrap();
        let (loss, _) = ranking_loss(r.as_tensor(), &[2, 1]).unwrap().unwrap();
        let g = loss.backward().unwrap();
        let grad = g.get(r.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!((grad[1] + 0.5).abs() < 1e-6 && (grad[0] - 0.5).abs() < 1e-6, "{grad:?}");
    }
}
