//! Model directories: what we save loads back identically, for causal LMs and scalar models.

use candle_core::Device;
use model::batch::Batch;
use model::lm::{CausalLm, HeadInit, ScalarModel};
use model::{LlamaConfig, Preset};

fn cfg() -> LlamaConfig {
    let mut c = LlamaConfig::preset(Preset::Smoke, 40, 32);
    c.initializer_range = 0.2;
    c
}

fn batch() -> Batch {
    Batch::aligned(&[(vec![1u32, 2, 3], vec![4u32, 5]), (vec![6], vec![7, 8, 9])], &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

#[test]
fn a_saved_causal_lm_loads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    for tied in [true, false] {
        let mut c = cfg();
        c.tie_word_embeddings = tied;
        let lm = CausalLm::init(&c, 3, &Device::Cpu).unwrap();
        lm.save(dir.path()).unwrap();
        let back = CausalLm::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(back.config().tie_word_embeddings, tied);
        let (a, b) =
            (lm.response_scores(&batch(), false, None).unwrap(), back.response_scores(&batch(), false, None).unwrap());
        assert_eq!(max_abs_diff(&a.logprobs, &b.logprobs), 0.0);
        assert_eq!(lm.params().names().collect::<Vec<_>>(), back.params().names().collect::<Vec<_>>());
    }
}

#[test]
fn a_scalar_model_starts_from_an_lm_directory_and_saves_its_head_separately() {
    let lm_dir = tempfile::tempdir().unwrap();
    let rm_dir = tempfile::tempdir().unwrap();
    let lm = CausalLm::init(&cfg(), 3, &Device::Cpu).unwrap();
    lm.save(lm_dir.path()).unwrap();

    // A fresh head: small and random (a zero head would not train at a small learning rate).
    let rm = ScalarModel::load(lm_dir.path(), HeadInit::DirOrRandom { std: 0.05, seed: 9 }, &Device::Cpu).unwrap();
    let w: Vec<f32> = rm.params().get("score.weight").unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(w.iter().any(|&x| x != 0.0));
    let std = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
    assert!((0.02..0.1).contains(&std), "head std {std}");
    // Same trunk as the LM.
    assert_eq!(
        max_abs_diff(rm.params().get("model.norm.weight").unwrap(), lm.params().get("model.norm.weight").unwrap()),
        0.0
    );

    rm.save(rm_dir.path()).unwrap();
    assert!(rm_dir.path().join("score.safetensors").exists());
    let names = candle_core::safetensors::load(rm_dir.path().join("score.safetensors"), &Device::Cpu).unwrap();
    let mut keys: Vec<_> = names.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["score.bias", "score.weight"]);

    let back = ScalarModel::load(rm_dir.path(), HeadInit::DirOrRandom { std: 0.05, seed: 1 }, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&rm.rewards(&batch(), None).unwrap(), &back.rewards(&batch(), None).unwrap()), 0.0);
    let from_file =
        ScalarModel::load(lm_dir.path(), HeadInit::File(rm_dir.path().join("score.safetensors")), &Device::Cpu)
            .unwrap();
    assert_eq!(max_abs_diff(&rm.values(&batch(), None).unwrap(), &from_file.values(&batch(), None).unwrap()), 0.0);
    // The trunk directory still loads as a causal LM in transformers' sense (tied embeddings).
    CausalLm::load(rm_dir.path(), &Device::Cpu).unwrap();
}

#[test]
fn a_reward_is_the_scalar_at_the_last_real_token() {
    let lm = CausalLm::init(&cfg(), 3, &Device::Cpu).unwrap();
    let rm = ScalarModel::from_causal_lm(&lm, 0.1, 2).unwrap();
    let b = batch();
    let r = rm.rewards(&b, None).unwrap().to_vec1::<f32>().unwrap();
    // Each row alone, unpadded.
    let alone0 = Batch::aligned(&[(vec![1u32, 2, 3], vec![4u32, 5])], &Device::Cpu).unwrap();
    let alone1 = Batch::aligned(&[(vec![6u32], vec![7u32, 8, 9])], &Device::Cpu).unwrap();
    let r0 = rm.rewards(&alone0, None).unwrap().to_vec1::<f32>().unwrap()[0];
    let r1 = rm.rewards(&alone1, None).unwrap().to_vec1::<f32>().unwrap()[0];
    assert!((r[0] - r0).abs() < 1e-5 && (r[1] - r1).abs() < 1e-5, "{r:?} vs {r0}, {r1}");
}

#[test]
fn loading_a_directory_without_weights_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let err = CausalLm::load(dir.path(), &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    let lm = CausalLm::init(&cfg(), 3, &Device::Cpu).unwrap();
    lm.save(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = CausalLm::load(dir.path(), &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn the_likelihood_term_adds_coef_times_the_mean_response_logprob_and_survives_a_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for tied in [true, false] {
        let mut c = cfg();
        c.tie_word_embeddings = tied;
        let lm = CausalLm::init(&c, 3, &Device::Cpu).unwrap();
        let plain = ScalarModel::from_causal_lm(&lm, 0.1, 2).unwrap();
        let rm = ScalarModel::from_causal_lm_with_likelihood(&lm, 0.1, 2, Some(0.7)).unwrap();
        assert_eq!(rm.likelihood_coef().unwrap(), Some(0.7f32 as f64));
        assert_eq!(plain.likelihood_coef().unwrap(), None);
        let b = batch();
        // By hand: the head's scalar (same seed, same head) + 0.7 * the LM's mean response log-prob.
        let head = plain.rewards(&b, None).unwrap().to_vec1::<f32>().unwrap();
        let s = lm.response_scores(&b, false, None).unwrap();
        let (lp, mask) = (s.logprobs.to_vec2::<f32>().unwrap(), s.mask.to_vec2::<f32>().unwrap());
        let r = rm.rewards(&b, None).unwrap().to_vec1::<f32>().unwrap();
        for row in 0..2 {
            let n: f32 = mask[row].iter().sum();
            let mean: f32 = lp[row].iter().zip(&mask[row]).map(|(l, m)| l * m).sum::<f32>() / n;
            let want = head[row] + 0.7 * mean;
            assert!((r[row] - want).abs() < 1e-5, "tied {tied}, row {row}: {} vs {want}", r[row]);
        }
        // Saved and loaded (head from the directory or from the file) it scores the same; an untied
        // unembedding is kept beside the trunk.
        rm.save(dir.path()).unwrap();
        let back = ScalarModel::load(dir.path(), HeadInit::DirOrRandom { std: 0.0, seed: 0 }, &Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&rm.rewards(&b, None).unwrap(), &back.rewards(&b, None).unwrap()), 0.0);
        assert_eq!(back.params().get("lm_head.weight").is_some(), !tied);
        let score = dir.path().join("score.safetensors");
        let from_file = ScalarModel::load(dir.path(), HeadInit::File(score.clone()), &Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&rm.rewards(&b, None).unwrap(), &from_file.rewards(&b, None).unwrap()), 0.0);
        // A fresh head on the same directory has no term and keeps no unembedding.
        let fresh = ScalarModel::load(dir.path(), HeadInit::Random { std: 0.1, seed: 2 }, &Device::Cpu).unwrap();
        assert_eq!(fresh.likelihood_coef().unwrap(), None);
        assert!(fresh.params().get("lm_head.weight").is_none());
        if !tied {
            // The term's head file beside a trunk without the unembedding it reads: a clear error.
            let bare = tempfile::tempdir().unwrap();
            plain.save(bare.path()).unwrap();
            let err = ScalarModel::load(bare.path(), HeadInit::File(score), &Device::Cpu).unwrap_err().to_string();
            assert!(err.contains("likelihood term") && err.contains("lm_head.weight"), "{err}");
        }
        // The value function drops the term and reads the head only.
        let value = back.without_likelihood().unwrap();
        assert_eq!(value.likelihood_coef().unwrap(), None);
        assert_eq!(max_abs_diff(&value.values(&b, None).unwrap(), &plain.values(&b, None).unwrap()), 0.0);
        assert_eq!(max_abs_diff(&value.rewards(&b, None).unwrap(), &plain.rewards(&b, None).unwrap()), 0.0);
    }
}

#[test]
fn an_untied_lm_directory_becomes_a_scalar_model_without_its_unembedding() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.tie_word_embeddings = false;
    CausalLm::init(&c, 3, &Device::Cpu).unwrap().save(dir.path()).unwrap();
    let rm = ScalarModel::load(dir.path(), HeadInit::DirOrRandom { std: 0.05, seed: 9 }, &Device::Cpu).unwrap();
    assert!(rm.params().get("lm_head.weight").is_none());
    assert_eq!(rm.likelihood_coef().unwrap(), None);
}

#[test]
fn the_likelihood_term_trains_its_coefficient() {
    let lm = CausalLm::init(&cfg(), 3, &Device::Cpu).unwrap();
    let rm = ScalarModel::from_causal_lm_with_likelihood(&lm, 0.1, 2, Some(1.0)).unwrap();
    let r = rm.rewards(&batch(), None).unwrap().sum_all().unwrap();
    let grads = model::train::Grads::backward(&r, rm.params()).unwrap();
    for name in ["score.loglik", "score.weight", "model.embed_tokens.weight"] {
        assert!(grads.get(name).is_some(), "no gradient for {name}");
    }
}

#[test]
fn a_reward_model_loads_only_for_a_model_that_numbers_tokens_as_it_does() {
    use model::tokenizer::train_byte_level_bpe;
    let rm_dir = tempfile::tempdir().unwrap();
    let lm = CausalLm::init(&cfg(), 3, &Device::Cpu).unwrap();
    lm.save(rm_dir.path()).unwrap();
    let rm = ScalarModel::load(rm_dir.path(), HeadInit::DirOrRandom { std: 0.05, seed: 9 }, &Device::Cpu).unwrap();
    rm.save(rm_dir.path()).unwrap();
    let err = ScalarModel::load_reward(rm_dir.path(), &train_byte_level_bpe(&["a b"], 300).unwrap(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tokenizer.json"), "{err}");

    let ours = train_byte_level_bpe(&["the cat sat on the mat; the dog sat on the log"; 3], 300).unwrap();
    ours.save_to_dir(rm_dir.path()).unwrap();
    let back = ScalarModel::load_reward(rm_dir.path(), &ours, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&rm.rewards(&batch(), None).unwrap(), &back.rewards(&batch(), None).unwrap()), 0.0);

    // Another tokenizer of the same kind, whose merges number tokens differently.
    let other = train_byte_level_bpe(&["zebras quietly juggle vivid pixels again"; 3], 300).unwrap();
    let err = ScalarModel::load_reward(rm_dir.path(), &other, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("maps tokens to ids differently"), "{err}");
    assert!(err.contains(&rm_dir.path().display().to_string()), "{err}");
}
