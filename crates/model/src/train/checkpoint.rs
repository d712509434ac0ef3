//! Resumable training checkpoints, written atomically.
//!
//! A checkpoint is a directory:
//!
//! ```text
//! trainer_state.json          step, epoch, data position, RNG states, the caller's extras
//! <part>/config.json          one sub-directory per trained model ("" = the root itself);
//! <part>/model.safetensors    each is a loadable model directory (score.safetensors too for a
//! <part>/optimizer.*          scalar model) plus its optimizer state
//! ...                         the caller's own files (`save_with`: a training log, rollouts),
//!                             written before trainer_state.json, which marks it complete
//! ```
//!
//! It is filled under a temporary name, fsynced and renamed into place, so a crash leaves the
//! previous checkpoint or the new one, never a mixture. Restoring writes into the existing
//! variables of a model (shapes and names checked), so the model objects built on them stay valid.
//! Together with seeded data order and dropout, resuming from a checkpoint continues a run
//! bit-for-bit on CPU.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::LlamaConfig;
use crate::dropout::RngState;
use crate::error::{ModelError, Result};
use crate::fsutil;
use crate::hub;
use crate::params::Params;
use crate::train::optim::AdamW;

pub const TRAINER_STATE_FILE: &str = "trainer_state.json";

/// Everything besides weights and optimizer moments that a resumed run needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer updates done.
    pub step: u64,
    /// Current epoch (0-based) and position inside it (e.g. batches consumed), for data order.
    pub epoch: u64,
    pub position: u64,
    /// Named RNG streams (dropout, sampling, ...).
    #[serde(default)]
    pub rngs: BTreeMap<String, RngState>,
    /// Anything else the caller wants back (e.g. PPO's adaptive KL coefficient).
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// One trained model in a checkpoint.
pub struct ModelPart<'a> {
    /// Sub-directory name; "" puts the model files at the checkpoint's root.
    pub name: &'a str,
    pub config: &'a LlamaConfig,
    pub params: &'a Params,
    pub optimizer: Option<&'a AdamW>,
}

/// The directory of part `name` inside checkpoint `dir`.
pub fn part_dir(dir: &Path, name: &str) -> PathBuf {
    if name.is_empty() { dir.to_path_buf() } else { dir.join(name) }
}

/// Whether `dir` holds a complete checkpoint, after moving back one that a save interrupted between
/// its renames had left aside (see [`fsutil::recover_dir`]).
pub fn exists(dir: &Path) -> Result<bool> {
    fsutil::recover_dir(dir)?;
    Ok(dir.join(TRAINER_STATE_FILE).is_file())
}

/// Writes model files (config, weights split into `model.safetensors` and `score.safetensors`) into
/// an existing directory.
pub fn write_model_files(dir: &Path, config: &LlamaConfig, params: &Params) -> Result<()> {
    hub::write_config(dir, config)?;
    params.save_safetensors(&dir.join(hub::WEIGHTS_FILE), |n| !n.starts_with("score."))?;
    if params.names().any(|n| n.starts_with("score.")) {
        params.save_safetensors(&dir.join(hub::SCORE_FILE), |n| n.starts_with("score."))?;
    }
    Ok(())
}

/// Saves a checkpoint to `dir`, replacing any previous one atomically.
pub fn save(dir: &Path, parts: &[ModelPart<'_>], state: &TrainerState) -> Result<()> {
    save_with(dir, parts, state, |_| Ok(()))
}

/// As [`save`], with `extra` writing the caller's own files (a training log, rollouts) into the new
/// checkpoint before `trainer_state.json` marks it complete: they are replaced together with the
/// weights, so a resumed run never pairs a checkpoint with another step's files.
pub fn save_with(
    dir: &Path,
    parts: &[ModelPart<'_>],
    state: &TrainerState,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    fsutil::replace_dir_atomic(dir, |tmp| {
        for part in parts {
            let pd = part_dir(tmp, part.name);
            std::fs::create_dir_all(&pd).map_err(|e| ModelError::io("create directory", &pd, e))?;
            write_model_files(&pd, part.config, part.params)?;
            if let Some(opt) = part.optimizer {
                opt.save(&pd)?;
            }
        }
        extra(tmp)?;
        fsutil::write_json(&tmp.join(TRAINER_STATE_FILE), state)
    })
}

/// Reads `trainer_state.json`.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    fsutil::read_json(&dir.join(TRAINER_STATE_FILE))
}

/// Loads part `name`'s weights into `params` (every parameter must be there with its shape) and,
/// if given, its optimizer state.
pub fn restore_part(dir: &Path, name: &str, params: &Params, optimizer: Option<&mut AdamW>) -> Result<()> {
    let pd = part_dir(dir, name);
    let mut files = vec![pd.join(hub::WEIGHTS_FILE)];
    if pd.join(hub::SCORE_FILE).exists() {
        files.push(pd.join(hub::SCORE_FILE));
    }
    let saved = Params::load_safetensors(&files, params.device(), |_| true)?;
    for (n, var) in params.iter() {
        match saved.get(n) {
            Some(s) if s.dims() == var.dims() => {}
            Some(s) => {
                return Err(ModelError::checkpoint(
                    &pd,
                    format!("{n} has shape {:?} in the checkpoint but {:?} in the model", s.dims(), var.dims()),
                ));
            }
            None => return Err(ModelError::checkpoint(&pd, format!("the checkpoint has no tensor {n}"))),
        }
    }
    params.assign_from(&saved)?;
    if let Some(opt) = optimizer {
        opt.load_state(&pd)?;
    }
    Ok(())
}
