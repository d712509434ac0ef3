//! Reading and writing Hugging Face model directories.
//!
//! A directory holds `config.json`, the weights (`model.safetensors`, or shards listed by
//! `model.safetensors.index.json`), and optionally `tokenizer.json`, our `instruction_format.json`
//! and, for reward/value models, `score.safetensors`. Weights in bf16/f16 are converted to f32 on
//! load; we always write f32.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::fsutil;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
pub const SCORE_FILE: &str = "score.safetensors";

/// Reads and validates `config.json`.
pub fn read_config(dir: &Path) -> Result<LlamaConfig> {
    let path = dir.join(CONFIG_FILE);
    if !path.exists() {
        return Err(ModelError::checkpoint(dir, "no config.json: is this a model directory?"));
    }
    let cfg: LlamaConfig = fsutil::read_json(&path)?;
    cfg.validate().map_err(|e| ModelError::checkpoint(&path, e.to_string()))?;
    Ok(cfg)
}

/// Writes `config.json`, recording that the weights are f32.
pub fn write_config(dir: &Path, cfg: &LlamaConfig) -> Result<()> {
    let mut cfg = cfg.clone();
    cfg.torch_dtype = "float32".into();
    fsutil::write_json(&dir.join(CONFIG_FILE), &cfg)
}

/// The safetensors files holding a directory's weights: the shards named by the index if there is
/// one, else `model.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(WEIGHTS_INDEX_FILE);
    if index.exists() {
        let v: serde_json::Value = fsutil::read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::checkpoint(&index, "no \"weight_map\" object"))?;
        let files: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
        if files.is_empty() {
            return Err(ModelError::checkpoint(&index, "the weight map names no files"));
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join(WEIGHTS_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(ModelError::checkpoint(
        dir,
        "no model.safetensors or model.safetensors.index.json (PyTorch .bin weights are not supported: \
         convert them with transformers' save_pretrained(safe_serialization=True))",
    ))
}
