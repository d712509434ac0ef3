//! One clipped policy update on a real (smoke-sized) model moves probability the way the
//! advantages say: towards the tokens of positive-advantage responses and away from the others.
//! The math tests check the loss on tensors; this checks the whole path the trainer takes (the
//! response-aligned log-probs, the loss, backward, gradient clipping and AdamW).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use model::batch::Batch;
use model::lm::CausalLm;
use model::train::{AdamW, AdamWConfig, Grads};
use model::{LlamaConfig, Preset};
use ppo::math::policy_loss;
use ppo::trainer::policy_groups;

fn logprobs(lm: &CausalLm, batch: &Batch) -> Vec<Vec<f32>> {
    batch.split_responses(&lm.response_scores(batch, false, None).unwrap().logprobs).unwrap()
}

/// A smoke-sized policy, a batch of four responses (rows 0 and 2 good), their advantages and
/// old log-probs as `[B, R]` tensors, and the old log-probs per row.
fn setup() -> (CausalLm, Batch, Tensor, Tensor, Vec<Vec<f32>>, [f32; 4]) {
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
    (lm, batch, adv, old_t, old, sign)
}

fn update(lm: &CausalLm, batch: &Batch, adv: &Tensor, old: &Tensor, opt: &mut AdamW, lr: f64) {
    let s = lm.response_scores(batch, true, None).unwrap();
    let (loss, _) = policy_loss(&s.logprobs, old, adv, &s.mask, 0.2).unwrap();
    let mut g = Grads::backward(&loss, lm.params()).unwrap();
    g.clip(1.0).unwrap();
    opt.step(&g, lr).unwrap();
}

#[test]
fn a_policy_update_raises_positive_advantage_tokens_and_lowers_negative_ones() {
    let (lm, batch, adv, old_t, old, sign) = setup();
    let mut opt = AdamW::new(lm.params(), AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() }, vec![]).unwrap();
    for _ in 0..3 {
        update(&lm, &batch, &adv, &old_t, &mut opt, 1e-3);
    }
    let new = logprobs(&lm, &batch);
    for (i, s) in sign.iter().enumerate() {
        let delta: f32 = new[i].iter().zip(&old[i]).map(|(n, o)| n - o).sum::<f32>() / new[i].len() as f32;
        assert!(delta * s > 0.01, "row {i} (advantage {s}): mean log-prob change {delta}");
    }
}

/// `lr_groups`: the final norm's gains scale every logit (raising them lowers the policy's
/// temperature), and at the policy's learning rate Adam moves a gain of about 1 by at most that
/// rate a step. A group multiplies the step of the parameters it names, and only theirs.
#[test]
fn an_lr_group_multiplies_the_step_of_the_parameters_it_names() {
    let (lm, batch, adv, old_t, _, _) = setup();
    let e = policy_groups(&lm, &BTreeMap::from([("model.nrom".to_string(), 100.0)])).unwrap_err().to_string();
    assert!(e.contains("model.nrom") && e.contains("model."), "{e}");

    let values =
        |name: &str| lm.params().get(name).unwrap().as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let watched = ["model.norm.weight", "model.layers.0.input_layernorm.weight"];
    let before: Vec<Vec<f32>> = watched.iter().map(|n| values(n)).collect();
    let groups = policy_groups(&lm, &BTreeMap::from([("model.norm".to_string(), 100.0)])).unwrap();
    let cfg = AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() };
    let mut opt = AdamW::new(lm.params(), cfg, groups).unwrap();
    update(&lm, &batch, &adv, &old_t, &mut opt, 1e-4);
    // Adam's first step moves each parameter by about lr (its gradient's sign): 1e-2 in the group.
    let moved: Vec<f32> = watched
        .iter()
        .zip(&before)
        .map(|(n, b)| values(n).iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max))
        .collect();
    assert!((0.5e-2..=1.01e-2).contains(&moved[0]), "final norm moved {}", moved[0]);
    assert!(moved[1] > 0.0 && moved[1] <= 1.01e-4, "a layer norm outside the group moved {}", moved[1]);
}
