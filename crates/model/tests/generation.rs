//! Batched sampling with the KV cache: independent of batch composition, reproducible from seeds,
//! and consistent with the log-probs training recomputes for the same tokens.

use candle_core::Device;
use model::batch::Batch;
use model::generate::{FinishReason, Generation, SamplingConfig};
use model::lm::CausalLm;
use model::model::Input;
use model::{LlamaConfig, Preset};

fn lm() -> CausalLm {
    let mut cfg = LlamaConfig::preset(Preset::Smoke, 61, 64);
    cfg.initializer_range = 0.3; // peaked distributions, so sampling paths differ between seeds
    CausalLm::init(&cfg, 11, &Device::Cpu).unwrap()
}

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![1, 2, 3], vec![4, 5, 6, 7, 8, 9, 10], vec![11], vec![12, 13, 14, 15, 16]]
}

fn sampling(temperature: f32, top_k: usize, top_p: f32) -> SamplingConfig {
    SamplingConfig { max_new_tokens: 12, temperature, top_k, top_p, eos_ids: vec![0, 1], pad_id: 0 }
}

fn assert_same(a: &Generation, b: &Generation, what: &str) {
    assert_eq!(a.tokens, b.tokens, "{what}: tokens differ");
    assert_eq!(a.finish, b.finish, "{what}: finish reasons differ");
    for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
        assert!((x - y).abs() < 1e-5, "{what}: log-probs {x} vs {y}");
    }
}

#[test]
fn a_batched_run_equals_each_sequence_alone() {
    let lm = lm();
    let seeds = [7u64, 8, 9, 10];
    for cfg in [sampling(1.0, 0, 1.0), sampling(0.7, 5, 0.9), sampling(0.0, 0, 1.0)] {
        let batched = lm.generate(&prompts(), &seeds, &cfg).unwrap();
        for (i, p) in prompts().iter().enumerate() {
            let alone = lm.generate(std::slice::from_ref(p), &seeds[i..i + 1], &cfg).unwrap();
            assert_same(&batched[i], &alone[0], &format!("row {i}, {cfg:?}"));
        }
        // A different batch composition and order.
        let perm = [2usize, 0];
        let sub: Vec<Vec<u32>> = perm.iter().map(|&i| prompts()[i].clone()).collect();
        let sub_seeds: Vec<u64> = perm.iter().map(|&i| seeds[i]).collect();
        let other = lm.generate(&sub, &sub_seeds, &cfg).unwrap();
        for (j, &i) in perm.iter().enumerate() {
            assert_same(&batched[i], &other[j], &format!("row {i} in another batch"));
        }
    }
}

#[test]
fn a_fixed_seed_gives_identical_samples_and_different_seeds_differ() {
    let lm = lm();
    let cfg = sampling(1.0, 0, 1.0);
    let a = lm.generate(&prompts(), &[1, 2, 3, 4], &cfg).unwrap();
    let b = lm.generate(&prompts(), &[1, 2, 3, 4], &cfg).unwrap();
    assert_eq!(a, b);
    let c = lm.generate(&prompts(), &[5, 6, 7, 8], &cfg).unwrap();
    assert_ne!(a.iter().map(|g| &g.tokens).collect::<Vec<_>>(), c.iter().map(|g| &g.tokens).collect::<Vec<_>>());
}

#[test]
fn sequences_stop_at_eos_or_length() {
    let lm = lm();
    let cfg = SamplingConfig { max_new_tokens: 20, eos_ids: (0..20).collect(), ..sampling(1.0, 0, 1.0) };
    let gens = lm.generate(&prompts(), &[1, 2, 3, 4], &cfg).unwrap();
    for g in &gens {
        assert_eq!(g.tokens.len(), g.logprobs.len());
        match g.finish {
            FinishReason::Eos => {
                assert!(cfg.eos_ids.contains(g.tokens.last().unwrap()));
                assert!(g.tokens[..g.tokens.len() - 1].iter().all(|t| !cfg.eos_ids.contains(t)));
            }
            FinishReason::Length => {
                assert_eq!(g.tokens.len(), cfg.max_new_tokens);
                assert!(g.tokens.iter().all(|t| !cfg.eos_ids.contains(t)));
            }
        }
    }
    assert!(gens.iter().any(|g| g.finish == FinishReason::Eos), "with a third of the vocabulary as EOS some row stops");
}

#[test]
fn greedy_decoding_takes_the_argmax_of_a_full_forward_pass() {
    let lm = lm();
    let cfg = SamplingConfig { max_new_tokens: 6, eos_ids: vec![], ..sampling(0.0, 0, 1.0) };
    let p = vec![4u32, 5, 6];
    let g = &lm.generate(std::slice::from_ref(&p), &[0], &cfg).unwrap()[0];
    // Recompute without the cache: each greedy token is the argmax after the sequence so far.
    let mut seq = p.clone();
    for (i, &tok) in g.tokens.iter().enumerate() {
        let input = Input::new(seq.clone(), &vec![1; seq.len()], 1, &Device::Cpu).unwrap();
        let logits = lm.net().forward(&input, None, None).unwrap();
        let last: Vec<f32> = logits.squeeze(0).unwrap().get(seq.len() - 1).unwrap().to_vec1().unwrap();
        let argmax = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as u32;
        assert_eq!(tok, argmax, "greedy token {i}");
        let lse = last.iter().map(|v| (v - last[argmax as usize]).exp()).sum::<f32>().ln() + last[argmax as usize];
        assert!((g.logprobs[i] - (last[argmax as usize] - lse)).abs() < 1e-5);
        seq.push(tok);
    }
}

/// PPO's ratio needs the log-probs of a rollout recomputed in training to equal those recorded
/// while sampling: same layout, same positions, same numbers (to float rounding).
#[test]
fn training_log_probs_match_the_ones_recorded_at_generation() {
    let lm = lm();
    for cfg in [sampling(1.0, 0, 1.0), sampling(0.5, 4, 0.8)] {
        let gens = lm.generate(&prompts(), &[21, 22, 23, 24], &cfg).unwrap();
        let pairs: Vec<(Vec<u32>, Vec<u32>)> =
            prompts().into_iter().zip(&gens).map(|(p, g)| (p, g.tokens.clone())).collect();
        let batch = Batch::aligned(&pairs, &Device::Cpu).unwrap();
        let scores = lm.response_scores(&batch, true, None).unwrap();
        let rows = batch.split_responses(&scores.logprobs).unwrap();
        for (i, (row, g)) in rows.iter().zip(&gens).enumerate() {
            assert_eq!(row.len(), g.logprobs.len());
            for (t, (a, b)) in row.iter().zip(&g.logprobs).enumerate() {
                assert!((a - b).abs() < 1e-5, "row {i} token {t}: training {a} vs generation {b}");
            }
        }
        // Scoring a sub-batch (different padding) gives the same numbers too.
        let sub = Batch::aligned(&pairs[1..2], &Device::Cpu).unwrap();
        let s = lm.response_scores(&sub, false, None).unwrap();
        let row = &sub.split_responses(&s.logprobs).unwrap()[0];
        for (a, b) in row.iter().zip(&gens[1].logprobs) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
