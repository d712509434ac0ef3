//! The training building blocks: AdamW against a hand-worked reference, decay and learning-rate
//! groups, saved optimizer state, gradient accumulation and clipping, device names.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use model::batch::Batch;
use model::lm::CausalLm;
use model::params::Params;
use model::train::{AdamW, AdamWConfig, Grads, ParamGroup, parse_device};
use model::{LlamaConfig, Preset};

fn tiny_lm(seed: u64) -> CausalLm {
    CausalLm::init(&LlamaConfig::preset(Preset::Smoke, 40, 64), seed, &Device::Cpu).unwrap()
}

fn values(p: &Params) -> BTreeMap<String, Vec<f32>> {
    p.iter().map(|(k, v)| (k.clone(), v.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

fn one_param(name: &str, vals: &[f32], shape: &[usize]) -> Params {
    let mut p = Params::new(&Device::Cpu);
    p.insert(name, &Tensor::from_vec(vals.to_vec(), shape, &Device::Cpu).unwrap()).unwrap();
    p
}

fn grads_of(p: &Params, name: &str, g: &[f32]) -> Grads {
    // A linear loss sum(g * x) has gradient g.
    let x = p.get(name).unwrap().as_tensor();
    let gt = Tensor::from_vec(g.to_vec(), x.shape(), &Device::Cpu).unwrap();
    Grads::backward(&(x * gt).unwrap().sum_all().unwrap(), p).unwrap()
}

#[test]
fn adamw_matches_a_hand_worked_reference() {
    // Both the in-place CPU kernels and the composed (any-device) update.
    for fused in [true, false] {
        adamw_reference(fused);
    }
}

fn adamw_reference(fused: bool) {
    let cfg = AdamWConfig { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1, decay_embeddings: false };
    let p = one_param("w", &[1.0, -2.0, 0.5, 3.0], &[2, 2]);
    let mut opt = AdamW::new(&p, cfg.clone(), vec![]).unwrap().with_fused_kernels(fused);
    let gs = [[0.1f64, -0.2, 0.3, 0.0], [0.05, 0.1, -0.3, 1.0], [-0.2, 0.0, 0.1, 0.5]];
    let lrs = [0.1f64, 0.05, 0.02];
    let (mut x, mut m, mut v) = (vec![1.0f64, -2.0, 0.5, 3.0], vec![0.0; 4], vec![0.0; 4]);
    for (t, (g, lr)) in gs.iter().zip(lrs).enumerate() {
        let gf: Vec<f32> = g.iter().map(|&v| v as f32).collect();
        opt.step(&grads_of(&p, "w", &gf), lr).unwrap();
        let t = (t + 1) as i32;
        for i in 0..4 {
            x[i] *= 1.0 - lr * cfg.weight_decay;
            m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * g[i];
            v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * g[i] * g[i];
            let mh = m[i] / (1.0 - cfg.beta1.powi(t));
            let vh = v[i] / (1.0 - cfg.beta2.powi(t));
            x[i] -= lr * mh / (vh.sqrt() + cfg.eps);
        }
    }
    let got = values(&p)["w"].clone();
    for (a, b) in got.iter().zip(&x) {
        assert!((*a as f64 - b).abs() < 1e-5, "{got:?} vs {x:?}");
    }
    assert_eq!(opt.steps(), 3);
}

#[test]
fn decay_skips_norms_biases_and_embeddings_and_groups_scale_the_rate() {
    let mut cfg = LlamaConfig::preset(Preset::Smoke, 40, 64);
    cfg.attention_bias = Some(true);
    let lm = CausalLm::init(&cfg, 0, &Device::Cpu).unwrap();
    let opt = AdamW::new(lm.params(), AdamWConfig::default(), vec![ParamGroup::new("model.layers.0.", 3.0)]).unwrap();
    let decayed = opt.decayed();
    assert!(decayed.contains(&"model.layers.1.mlp.down_proj.weight"));
    assert!(!decayed.iter().any(|n| n.ends_with("norm.weight") || n.ends_with(".bias") || n.contains("embed")));
    let opt2 = AdamW::new(lm.params(), AdamWConfig { decay_embeddings: true, ..Default::default() }, vec![]).unwrap();
    assert!(opt2.decayed().contains(&"model.embed_tokens.weight"));
    assert_eq!(opt.lr_mult("model.layers.0.mlp.up_proj.weight"), Some(3.0));
    assert_eq!(opt.lr_mult("model.layers.1.mlp.up_proj.weight"), Some(1.0));
    // Overlapping prefixes: the most specific one applies, in whichever order they are given.
    for groups in [
        vec![ParamGroup::new("model.", 2.0), ParamGroup::new("model.norm", 50.0)],
        vec![ParamGroup::new("model.norm", 50.0), ParamGroup::new("model.", 2.0)],
    ] {
        let opt = AdamW::new(lm.params(), AdamWConfig::default(), groups).unwrap();
        assert_eq!(opt.lr_mult("model.norm.weight"), Some(50.0));
        assert_eq!(opt.lr_mult("model.layers.0.input_layernorm.weight"), Some(2.0));
    }

    // A parameter with a 10x multiplier moves 10x as far on its first (sign-like) Adam step.
    let p = one_param("score.weight", &[0.0, 0.0], &[1, 2]);
    p.iter().count();
    let mut both = p.clone();
    both.insert("model.norm.weight", &Tensor::new(&[0.0f32, 0.0], &Device::Cpu).unwrap()).unwrap();
    let cfg0 = AdamWConfig { weight_decay: 0.0, ..Default::default() };
    let mut opt = AdamW::new(&both, cfg0, vec![ParamGroup::new("score.", 10.0)]).unwrap();
    let x = (both.get("score.weight").unwrap().as_tensor().sum_all().unwrap()
        + both.get("model.norm.weight").unwrap().as_tensor().sum_all().unwrap())
    .unwrap();
    opt.step(&Grads::backward(&x, &both).unwrap(), 0.01).unwrap();
    let v = values(&both);
    assert!((v["score.weight"][0] + 0.1).abs() < 1e-5, "{v:?}");
    assert!((v["model.norm.weight"][0] + 0.01).abs() < 1e-6, "{v:?}");
}

#[test]
fn fused_and_composed_updates_agree_on_a_model() {
    let a = tiny_lm(9);
    let b = a.snapshot().unwrap();
    let b = CausalLm::from_params(b.config(), b.params().clone(), true).unwrap();
    let batch = Batch::documents(&[vec![1u32, 5, 7, 9, 2, 3], vec![4, 4, 8]], &Device::Cpu).unwrap();
    let groups = vec![ParamGroup::new("model.layers.1.", 2.0)];
    let mut oa = AdamW::new(a.params(), AdamWConfig::default(), groups.clone()).unwrap();
    let mut ob = AdamW::new(b.params(), AdamWConfig::default(), groups).unwrap().with_fused_kernels(false);
    for _ in 0..3 {
        let ga = Grads::backward(&a.lm_loss(&batch, None).unwrap().mean().unwrap(), a.params()).unwrap();
        let gb = Grads::backward(&b.lm_loss(&batch, None).unwrap().mean().unwrap(), b.params()).unwrap();
        oa.step(&ga, 1e-2).unwrap();
        ob.step(&gb, 1e-2).unwrap();
    }
    let (va, vb) = (values(a.params()), values(b.params()));
    for (name, x) in &va {
        let d = x.iter().zip(&vb[name]).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(d < 1e-5, "{name}: {d}");
    }
}

#[test]
fn saved_optimizer_state_continues_identically() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_lm(3);
    let b = tiny_lm(4);
    b.params().assign_from(a.params()).unwrap();
    let batch = Batch::documents(&[vec![1u32, 5, 7, 9, 2, 3], vec![4, 4, 8]], &Device::Cpu).unwrap();
    let grads =
        |lm: &CausalLm| Grads::backward(&lm.lm_loss(&batch, None).unwrap().mean().unwrap(), lm.params()).unwrap();
    let mut oa = AdamW::new(a.params(), AdamWConfig::default(), vec![]).unwrap();
    for _ in 0..2 {
        oa.step(&grads(&a), 1e-2).unwrap();
    }
    oa.save(dir.path()).unwrap();
    // b gets a's weights and a's saved moments, then both take the same two steps.
    b.params().assign_from(a.params()).unwrap();
    let mut ob = AdamW::new(b.params(), AdamWConfig::default(), vec![]).unwrap();
    ob.load_state(dir.path()).unwrap();
    assert_eq!(ob.steps(), 2);
    for _ in 0..2 {
        oa.step(&grads(&a), 1e-2).unwrap();
        ob.step(&grads(&b), 1e-2).unwrap();
    }
    assert_eq!(values(a.params()), values(b.params()));
}

#[test]
fn accumulated_micro_batches_equal_one_batch_and_clipping_bounds_the_norm() {
    let lm = tiny_lm(5);
    let docs: Vec<Vec<u32>> = vec![vec![1, 2, 3, 4, 5, 6], vec![7, 8, 9], vec![10, 11, 12, 13], vec![3, 1, 4, 1, 5]];
    let whole = Batch::documents(&docs, &Device::Cpu).unwrap();
    let total = whole.num_targets() as f64;
    let full = Grads::backward(&lm.lm_loss(&whole, None).unwrap().mean().unwrap(), lm.params()).unwrap();
    let mut acc = Grads::default();
    for half in docs.chunks(2) {
        let b = Batch::documents(half, &Device::Cpu).unwrap();
        let l = (lm.lm_loss(&b, None).unwrap().nll_sum / total).unwrap();
        acc.accumulate(Grads::backward(&l, lm.params()).unwrap()).unwrap();
    }
    assert_eq!(acc.len(), full.len());
    for (name, g) in full.iter() {
        let d = (g - acc.get(name).unwrap()).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5, "{name}");
    }
    let norm = acc.global_norm().unwrap();
    assert!(norm > 0.0);
    let pre = acc.clip(norm / 4.0).unwrap();
    assert!((pre - norm).abs() < 1e-9);
    assert!((acc.global_norm().unwrap() - norm / 4.0).abs() < 1e-4 * norm);
    // Below the threshold nothing changes.
    let before = acc.global_norm().unwrap();
    acc.clip(before * 10.0).unwrap();
    assert_eq!(acc.global_norm().unwrap(), before);
}

#[test]
fn device_names() {
    assert!(parse_device("cpu").unwrap().is_cpu());
    assert!(parse_device("tpu").is_err());
    assert!(parse_device("cuda:x").is_err());
    if !candle_core::utils::cuda_is_available() {
        let e = parse_device("cuda:0").unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}

/// The pieces compose into a reward-model step: K responses of one prompt in one batch element,
/// all C(K, 2) pairs, a faster head, every parameter reached by the gradient.
#[test]
fn a_ranking_loss_trains_a_scalar_model_through_the_update_rule() {
    use model::lm::ScalarModel;
    use model::train::{LrSchedule, UpdateRule};
    let lm = tiny_lm(6);
    let rm = ScalarModel::from_causal_lm(&lm, 0.02, 1).unwrap();
    let prompt = vec![1u32, 4, 5];
    // Ranked best first.
    let responses = [vec![7u32, 8, 0], vec![9, 0], vec![11, 12, 13, 0]];
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = responses.iter().map(|r| (prompt.clone(), r.clone())).collect();
    let batch = Batch::aligned(&pairs, &Device::Cpu).unwrap();
    let mut rule = UpdateRule {
        optimizer: AdamW::new(rm.params(), AdamWConfig::default(), vec![ParamGroup::new("score.", 10.0)]).unwrap(),
        schedule: LrSchedule::constant(1e-3),
        grad_clip: 1.0,
    };
    let loss_of = |rm: &ScalarModel| {
        let r = rm.rewards(&batch, None).unwrap(); // (K,)
        let mut terms = vec![];
        for w in 0..3 {
            for l in w + 1..3 {
                let d = (r.get(w).unwrap() - r.get(l).unwrap()).unwrap();
                // -log sigmoid(d) = softplus(-d)
                terms.push(((d.neg().unwrap().exp().unwrap() + 1.0).unwrap().log().unwrap()).unsqueeze(0).unwrap());
            }
        }
        (Tensor::cat(&terms, 0).unwrap().sum_all().unwrap() / terms.len() as f64).unwrap()
    };
    let first = loss_of(&rm).to_scalar::<f32>().unwrap();
    let mut last = first;
    for _ in 0..15 {
        let loss = loss_of(&rm);
        last = loss.to_scalar::<f32>().unwrap();
        let mut g = Grads::backward(&loss, rm.params()).unwrap();
        assert!(g.missing(rm.params()).is_empty(), "{:?}", g.missing(rm.params()));
        let (norm, lr) = rule.apply(&mut g).unwrap();
        assert!(norm > 0.0 && lr == 1e-3);
    }
    assert!(last < first * 0.7, "{first} -> {last}");
}

/// A PPO-style checkpoint: a policy and a value model, each with its optimizer, in one directory;
/// each part is also a loadable model directory.
#[test]
fn checkpoints_hold_several_models_and_restore_them_in_place() {
    use model::lm::{HeadInit, ScalarModel};
    use model::train::checkpoint::{self, ModelPart, TrainerState};
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let policy = tiny_lm(7);
    let value = ScalarModel::from_causal_lm(&policy, 0.1, 2).unwrap();
    let batch = Batch::documents(&[vec![1u32, 2, 3, 4]], &Device::Cpu).unwrap();
    let mut po = AdamW::new(policy.params(), AdamWConfig::default(), vec![]).unwrap();
    let mut vo = AdamW::new(value.params(), AdamWConfig::default(), vec![]).unwrap();
    po.step(&Grads::backward(&policy.lm_loss(&batch, None).unwrap().mean().unwrap(), policy.params()).unwrap(), 1e-2)
        .unwrap();
    let v = value.scalars(&batch, None).unwrap().sqr().unwrap().sum_all().unwrap();
    vo.step(&Grads::backward(&v, value.params()).unwrap(), 1e-2).unwrap();
    let state = TrainerState { step: 1, extra: serde_json::json!({"kl_coef": 0.05}), ..Default::default() };
    let parts = [
        ModelPart { name: "policy", config: policy.config(), params: policy.params(), optimizer: Some(&po) },
        ModelPart { name: "value", config: value.config(), params: value.params(), optimizer: Some(&vo) },
    ];
    checkpoint::save(&ck, &parts, &state).unwrap();
    // Saving again replaces the directory atomically.
    checkpoint::save(&ck, &parts, &state).unwrap();
    assert!(checkpoint::exists(&ck).unwrap());
    assert_eq!(checkpoint::read_state(&ck).unwrap(), state);

    let p2 = tiny_lm(8);
    let v2 = ScalarModel::from_causal_lm(&p2, 0.1, 3).unwrap();
    let mut vo2 = AdamW::new(v2.params(), AdamWConfig::default(), vec![]).unwrap();
    checkpoint::restore_part(&ck, "policy", p2.params(), None).unwrap();
    checkpoint::restore_part(&ck, "value", v2.params(), Some(&mut vo2)).unwrap();
    assert_eq!(values(p2.params()), values(policy.params()));
    assert_eq!(values(v2.params()), values(value.params()));
    assert_eq!(vo2.steps(), 1);
    // Restoring a part into the wrong kind of model fails with a message naming the tensor.
    let e = checkpoint::restore_part(&ck, "policy", v2.params(), None).unwrap_err().to_string();
    assert!(e.contains("score."), "{e}");
    // The value part is a scalar-model directory, the policy part a causal-LM one.
    let loaded =
        ScalarModel::load(&ck.join("value"), HeadInit::DirOrRandom { std: 0.0, seed: 0 }, &Device::Cpu).unwrap();
    assert_eq!(values(loaded.params()), values(value.params()));
    assert_eq!(values(CausalLm::load(&ck.join("policy"), &Device::Cpu).unwrap().params()), values(policy.params()));
}

/// A caller's files are part of the checkpoint they were saved with: a later save replaces them with
/// the weights, a failing writer leaves the previous checkpoint whole, and a save interrupted between
/// its two renames (the old directory moved aside, the new one not yet in place) is moved back by the
/// next look, so no resume finds the weights of one step beside the log of another, or nothing.
#[test]
fn a_checkpoint_keeps_its_callers_files_and_survives_an_interrupted_replace() {
    use model::train::checkpoint::{self, ModelPart, TrainerState};
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let lm = tiny_lm(3);
    let parts = [ModelPart { name: "", config: lm.config(), params: lm.params(), optimizer: None }];
    let save = |step: u64, log: &str| {
        let state = TrainerState { step, ..Default::default() };
        checkpoint::save_with(&ck, &parts, &state, |tmp| {
            std::fs::write(tmp.join("log.txt"), log).unwrap();
            Ok(())
        })
    };
    let read = || (checkpoint::read_state(&ck).unwrap().step, std::fs::read_to_string(ck.join("log.txt")).unwrap());
    save(1, "one").unwrap();
    save(2, "two").unwrap();
    assert_eq!(read(), (2, "two".to_string()));

    let state = TrainerState { step: 3, ..Default::default() };
    let failed = checkpoint::save_with(&ck, &parts, &state, |tmp| Err(model::ModelError::checkpoint(tmp, "disk full")));
    assert!(failed.unwrap_err().to_string().contains("disk full"));
    assert!(checkpoint::exists(&ck).unwrap());
    assert_eq!(read(), (2, "two".to_string()));

    // The crash window: the previous checkpoint moved aside, the new one filled but not renamed in.
    let (old, tmp) = (dir.path().join(".ck.old"), dir.path().join(".ck.tmp"));
    std::fs::rename(&ck, &old).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    assert!(checkpoint::exists(&ck).unwrap(), "the moved-aside checkpoint is moved back");
    assert_eq!(read(), (2, "two".to_string()));
    assert!(!old.exists());
    // And a save after such a crash keeps going from there, leaving nothing beside it.
    std::fs::rename(&ck, &old).unwrap();
    save(3, "three").unwrap();
    assert_eq!(read(), (3, "three".to_string()));
    let mut beside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    beside.sort();
    assert_eq!(beside, ["ck"], "no .tmp, .old or .del is left");

    // A checkpoint deleted by hand stays deleted, even beside a stale moved-aside copy.
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join(checkpoint::TRAINER_STATE_FILE), "{}").unwrap();
    std::fs::remove_dir_all(&ck).unwrap();
    assert!(!checkpoint::exists(&ck).unwrap(), "no crash window: nothing to move back");
    save(4, "four").unwrap();
    assert_eq!(read(), (4, "four".to_string()));
    assert!(!old.exists(), "the stale copy is removed by the next save");
}
