//! Gradients reach every parameter, and they are the right gradients.
//!
//! candle-nn's fused kernels record no backward op, so a model built on them trains with some
//! parameters silently frozen while the loss still falls. These tests make that impossible here.

use candle_core::{DType, Device, Tensor};
use model::batch::Batch;
use model::dropout::Dropout;
use model::lm::{CausalLm, ScalarModel};
use model::{LlamaConfig, Preset};

fn smoke_config() -> LlamaConfig {
    let mut cfg = LlamaConfig::preset(Preset::Smoke, 61, 64);
    cfg.initializer_range = 0.1;
    cfg
}

fn toy_batch() -> Batch {
    // Different prompt and response lengths, so both kinds of padding are present.
    let pairs =
        [(vec![3u32, 9, 4], vec![7u32, 1, 2, 60]), (vec![5, 6, 11, 12, 13], vec![8, 2]), (vec![1], vec![9, 9, 9])];
    Batch::aligned(&pairs, &Device::Cpu).unwrap()
}

fn assert_all_params_have_nonzero_grads(params: &model::params::Params, grads: &candle_core::backprop::GradStore) {
    let mut missing = vec![];
    for (name, var) in params.iter() {
        match grads.get(var.as_tensor()) {
            None => missing.push(format!("{name}: no gradient")),
            Some(g) => {
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                if !(norm > 0.0 && norm.is_finite()) {
                    missing.push(format!("{name}: gradient norm^2 = {norm}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "parameters without a usable gradient:\n{}", missing.join("\n"));
}

#[test]
fn every_causal_lm_parameter_gets_a_nonzero_gradient() {
    for tied in [true, false] {
        let mut cfg = smoke_config();
        cfg.tie_word_embeddings = tied;
        cfg.attention_bias = Some(true);
        let lm = CausalLm::init(&cfg, 1, &Device::Cpu).unwrap();
        let batch = toy_batch();
        // With residual dropout on, as in SFT.
        let mut dropout = Dropout::new(0.2, 5);
        let loss = lm.lm_loss(&batch, Some(&mut dropout)).unwrap().mean().unwrap();
        let grads = loss.backward().unwrap();
        assert_all_params_have_nonzero_grads(lm.params(), &grads);
        // The policy path (log-probs and entropy, as PPO uses them).
        let s = lm.response_scores(&batch, true, None).unwrap();
        let obj = ((&s.logprobs + s.entropy.unwrap()).unwrap() * &s.mask).unwrap().sum_all().unwrap();
        assert_all_params_have_nonzero_grads(lm.params(), &obj.backward().unwrap());
    }
}

#[test]
fn every_scalar_model_parameter_gets_a_nonzero_gradient() {
    let lm = CausalLm::init(&smoke_config(), 2, &Device::Cpu).unwrap();
    let rm = ScalarModel::from_causal_lm(&lm, 0.1, 3).unwrap();
    let batch = toy_batch();
    let r = rm.rewards(&batch, None).unwrap();
    let v = rm.values(&batch, None).unwrap();
    let (_, mask) = batch.response_targets().unwrap();
    let obj = (r.sum_all().unwrap() + (v * mask).unwrap().sqr().unwrap().sum_all().unwrap()).unwrap();
    assert_all_params_have_nonzero_grads(rm.params(), &obj.backward().unwrap());
}

#[test]
fn frozen_models_record_no_graph() {
    let lm = CausalLm::init(&smoke_config(), 1, &Device::Cpu).unwrap();
    let frozen = lm.frozen().unwrap();
    let loss = frozen.lm_loss(&toy_batch(), None).unwrap().mean().unwrap();
    assert!(!loss.track_op(), "a frozen model's loss should not track a graph");
    let loss2 = lm.lm_loss(&toy_batch(), None).unwrap().mean().unwrap();
    let (a, b) = (loss.to_scalar::<f32>().unwrap(), loss2.to_scalar::<f32>().unwrap());
    assert_eq!(a, b);
}

/// Central finite differences against backprop for a sample of entries of every parameter tensor
/// of a one-layer model (the fused kernels, attention, SwiGLU, RMSNorm and the loss all on the path).
#[test]
fn gradients_match_finite_differences() {
    let mut cfg = smoke_config();
    cfg.num_hidden_layers = 1;
    cfg.tie_word_embeddings = false;
    cfg.attention_bias = Some(true);
    let lm = CausalLm::init(&cfg, 4, &Device::Cpu).unwrap();
    let batch = toy_batch();
    let loss_of = |lm: &CausalLm| -> f64 {
        lm.lm_loss(&batch, None).unwrap().mean().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    };
    let loss = lm.lm_loss(&batch, None).unwrap().mean().unwrap();
    let grads = loss.backward().unwrap();
    let eps = 1e-2f32;
    let mut checked = 0;
    for (name, var) in lm.params().iter() {
        let g: Vec<f32> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let orig: Vec<f32> = var.flatten_all().unwrap().to_vec1().unwrap();
        // The entries with the largest gradients, where the relative error of the estimate is small.
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &i in order.iter().take(3) {
            let mut bumped = orig.clone();
            let mut at = |delta: f32| {
                bumped[i] = orig[i] + delta;
                var.set(&Tensor::from_vec(bumped.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
                loss_of(&lm)
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
            var.set(&Tensor::from_vec(orig.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
            let an = g[i] as f64;
            assert!(
                (fd - an).abs() <= 2e-3 + 2e-2 * an.abs(),
                "{name}[{i}]: backprop {an:.6} vs finite difference {fd:.6}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20);
}
