//! One clipped policy update on a real (smoke-sized) model moves probability the way the
//! advantages say: towards the tokens of positive-advantage responses and away from the others.
//! The math tests check the loss on tensors; this checks the whole path the trainer takes (the
//! response-aligned log-probs, the loss, backward, gradient clipping and AdamW).

use candle_core::Device;
use model::batch::Batch;
use model::lm::CausalLm;
use model::train::{AdamW, AdamWConfig, Grads};
use model::{LlamaConfig, Preset};
use ppo::math::policy_loss;

fn logprobs(lm: &CausalLm, batch: &Batch) -> Vec<Vec<f32>> {
    batch.split_responses(&lm.response_scores(batch, false, None).unwrap().logprobs).unwrap()
}

#[test]
fn a_policy_update_raises_positive_advantage_tokens_and_lowers_negative_ones() {
    let cfg = LlamaConfig::preset(Preset::Smoke, 61, 64);
    let lm = CausalLm::init(&cfg, 3, &Device::Cpu).unwrap();
    // Prompts and responses of different lengths (both kinds of padding); rows 0 and 2 are good.
    let pairs = [
        (vec![3u32, 9, 4], vec![7u32, 1, 2, 60]),
        (vec![5, 6, 11, 12, 13], vec![8, 2]),
        (vec![1], vec![9, 9, 9]),
        (vec![14, 15], vec![20, 21, 22, 23, 24]),
    ];
    let sign = [1.0f32, -1.0, 1.0, -1.0];
    let batch = Batch::aligned(&pairs, &Device::Cpu).unwrap();
    let old = logprobs(&lm, &batch);
    let r = batch.response_width;
    let pad = |rows: Vec<Vec<f32>>| {
        let v: Vec<f32> = rows
            .into_iter()
            .flat_map(|mut x| {
                x.resize(r, 0.0);
                x
            })
            .collect();
        candle_core::Tensor::from_vec(v, (pairs.len(), r), &Device::Cpu).unwrap()
    };
    let adv = pad(pairs.iter().zip(sign).map(|((_, resp), s)| vec![s; resp.len()]).collect());
    let old_t = pad(old.clone());
    let mut opt = AdamW::new(lm.params(), AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() }, vec![]).unwrap();
    for _ in 0..3 {
        let s = lm.response_scores(&batch, true, None).unwrap();
        let (loss, _) = policy_loss(&s.logprobs, &old_t, &adv, &s.mask, 0.2).unwrap();
        let mut g = Grads::backward(&loss, lm.params()).unwrap();
        g.clip(1.0).unwrap();
        opt.step(&g, 1e-3).unwrap();
    }
    let new = logprobs(&lm, &batch);
    for (i, s) in sign.iter().enumerate() {
        let delta: f32 = new[i].iter().zip(&old[i]).map(|(n, o)| n - o).sum::<f32>() / new[i].len() as f32;
        assert!(delta * s > 0.01, "row {i} (advantage {s}): mean log-prob change {delta}");
    }
}
