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
    let cfg = AdamWConfig { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1, decay_embeddings: false };
    let p = one_param("w", &[1.0, -2.0, 0.5, 3.0], &[2, 2]);
    let mut opt = AdamW::new(&p, cfg.clone(), vec![]).unwrap();
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
