//! Parity with Hugging Face transformers: tiny random checkpoints saved by transformers load here
//! and give the same logits, and a directory we save loads in transformers with the same logits.
//! The fixtures and their reference logits come from `tests/fixtures/make_fixtures.py`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use model::lm::CausalLm;
use model::model::Input;
use model::{LlamaConfig, Preset};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Loads the checkpoint and compares our logits with transformers' on the recorded input.
fn check_parity(name: &str) {
    let dir = fixture(name);
    let reference = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids = reference["input_ids"].to_dtype(DType::U32).unwrap();
    let expected = &reference["logits"];
    let (b, t) = ids.dims2().unwrap();

    let lm = CausalLm::load(&dir, &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ids: Vec<u32> = ids.flatten_all().unwrap().to_vec1().unwrap();
    let input = Input::new(ids, &vec![1; b * t], b, &Device::Cpu).unwrap();
    let logits = lm.net().forward(&input, None, None).unwrap();
    assert_eq!(logits.dims(), expected.dims());
    let diff = (&logits - expected).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    let diff = diff.to_scalar::<f32>().unwrap();
    assert!(diff < 1e-4, "{name}: logits differ from transformers' by {diff}");
}

#[test]
fn llama_with_multi_head_attention_and_untied_embeddings_matches_transformers() {
    check_parity("llama-mha");
}

#[test]
fn llama_with_grouped_query_attention_tied_embeddings_and_bias_matches_transformers() {
    check_parity("llama-gqa-tied");
}

#[test]
fn qwen2_with_qkv_bias_from_bf16_weights_matches_transformers() {
    check_parity("qwen2-bias-bf16");
}

/// A directory our code saved, loaded by transformers (`make_fixtures.py` records its logits).
#[test]
fn a_directory_we_save_loads_in_transformers_with_the_same_logits() {
    let loaded_by: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("ours/loaded_by.json")).unwrap()).unwrap();
    assert_eq!(loaded_by["class"], "LlamaForCausalLM");
    check_parity("ours");
}

/// Regenerates `tests/fixtures/ours` (then run make_fixtures.py to record transformers' logits).
#[test]
#[ignore = "regenerates the fixture; run by hand, then make_fixtures.py"]
fn write_our_fixture() {
    let mut cfg = LlamaConfig::preset(Preset::Smoke, 64, 64);
    cfg.initializer_range = 0.2; // large weights so the logits are far from uniform
    let lm = CausalLm::init(&cfg, 7, &Device::Cpu).unwrap();
    let dir = fixture("ours");
    lm.save(&dir).unwrap();
}

/// HF's sharded layout (`model.safetensors.index.json` naming the shard of each tensor) loads too.
#[test]
fn a_sharded_checkpoint_loads_like_a_single_file() {
    let src = fixture("llama-mha");
    let dir = tempfile::tempdir().unwrap();
    let tensors = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        let shard: std::collections::HashMap<String, Tensor> =
            part.iter().map(|&n| (n.clone(), tensors[n].clone())).collect();
        candle_core::safetensors::save(&shard, dir.path().join(file)).unwrap();
        for n in part.iter() {
            weight_map.insert(n.to_string(), file.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    std::fs::copy(src.join("reference.safetensors"), dir.path().join("reference.safetensors")).unwrap();
    let sharded = CausalLm::load(dir.path(), &Device::Cpu).unwrap();
    let single = CausalLm::load(&src, &Device::Cpu).unwrap();
    for (name, var) in single.params().iter() {
        let other = sharded.params().get(name).unwrap();
        let d = (var.as_tensor() - other.as_tensor()).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{name}");
    }
}
