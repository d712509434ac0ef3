//! AdamW with decoupled weight decay, parameter groups, and state that goes into checkpoints.
//!
//! candle-nn's `AdamW` keeps its moments private, so a run could not be resumed exactly; this one
//! exposes them as named tensors (`m.<param>`, `v.<param>`) saved next to the weights.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::fsutil;
use crate::params::{self, Params};
use crate::train::grads::Grads;

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const OPTIMIZER_STATE_FILE: &str = "optimizer.json";

/// AdamW hyperparameters (the learning rate itself comes from the schedule at every step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (`p -= lr * weight_decay * p`), applied to matrices only: norms and
    /// biases never decay.
    pub weight_decay: f64,
    /// Whether the token embedding (and a tied unembedding) decays too.
    pub decay_embeddings: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, decay_embeddings: false }
    }
}

impl AdamWConfig {
    pub fn validate(&self) -> Result<()> {
        let ok = (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps > 0.0
            && self.weight_decay >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(ModelError::Config(format!("AdamW needs betas in [0, 1), eps > 0 and weight_decay >= 0; got {self:?}")))
        }
    }
}

/// Parameters whose name starts with `prefix` train at `lr_mult` times the scheduled learning rate
/// (e.g. `ParamGroup::new("score.", 10.0)`: a reward head learns faster than its trunk). The first
/// matching group wins; unmatched parameters use 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamGroup {
    pub prefix: String,
    pub lr_mult: f64,
}

impl ParamGroup {
    pub fn new(prefix: impl Into<String>, lr_mult: f64) -> Self {
        ParamGroup { prefix: prefix.into(), lr_mult }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    lr_mult: f64,
    decay: bool,
}

/// What `optimizer.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedState {
    steps: u64,
    config: AdamWConfig,
    groups: Vec<ParamGroup>,
}

/// AdamW over the variables of one [`Params`]. Two models (policy and value function) get two
/// optimizers.
pub struct AdamW {
    cfg: AdamWConfig,
    groups: Vec<ParamGroup>,
    slots: Vec<Slot>,
    steps: u64,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdamW({} tensors, {} steps, {:?})", self.slots.len(), self.steps, self.cfg)
    }
}

/// Whether weight decay applies to the parameter `name` of shape `dims`.
pub fn decays(name: &str, dims: &[usize], decay_embeddings: bool) -> bool {
    let embedding = name.contains("embed_tokens") || name == "lm_head.weight";
    dims.len() >= 2 && (decay_embeddings || !embedding)
}

impl AdamW {
    /// Zero moments for every variable of `params`.
    pub fn new(params: &Params, cfg: AdamWConfig, groups: Vec<ParamGroup>) -> Result<Self> {
        cfg.validate()?;
        let mut slots = Vec::with_capacity(params.len());
        for (name, var) in params.iter() {
            let lr_mult = groups.iter().find(|g| name.starts_with(&g.prefix)).map_or(1.0, |g| g.lr_mult);
            slots.push(Slot {
                name: name.clone(),
                var: var.clone(),
                m: var.zeros_like()?,
                v: var.zeros_like()?,
                lr_mult,
                decay: decays(name, var.dims(), cfg.decay_embeddings),
            });
        }
        Ok(AdamW { cfg, groups, slots, steps: 0 })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// Number of updates applied so far (drives the bias correction).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Names of the parameters that decay (for logs and tests).
    pub fn decayed(&self) -> Vec<&str> {
        self.slots.iter().filter(|s| s.decay).map(|s| s.name.as_str()).collect()
    }

    /// The learning-rate multiplier of a parameter.
    pub fn lr_mult(&self, name: &str) -> Option<f64> {
        self.slots.iter().find(|s| s.name == name).map(|s| s.lr_mult)
    }

    /// One update at learning rate `lr`. Parameters without a gradient are left alone (their
    /// moments are not decayed either, as in PyTorch).
    pub fn step(&mut self, grads: &Grads, lr: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        for slot in &mut self.slots {
            let Some(g) = grads.get(&slot.name) else { continue };
            let lr = lr * slot.lr_mult;
            let m = ((&slot.m * b1)? + (g * (1.0 - b1))?)?;
            let v = ((&slot.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.cfg.eps)?)?;
            let p = slot.var.as_tensor().detach();
            let p = if slot.decay { (&p * (1.0 - lr * self.cfg.weight_decay))? } else { p };
            slot.var.set(&(p - (update * lr)?)?)?;
            slot.m = m;
            slot.v = v;
        }
        Ok(())
    }

    /// Writes `optimizer.safetensors` (moments) and `optimizer.json` (step count, config) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut t = BTreeMap::new();
        for s in &self.slots {
            t.insert(format!("m.{}", s.name), s.m.clone());
            t.insert(format!("v.{}", s.name), s.v.clone());
        }
        params::save_tensors(&t, &dir.join(OPTIMIZER_FILE))?;
        let state = SavedState { steps: self.steps, config: self.cfg.clone(), groups: self.groups.clone() };
        fsutil::write_json(&dir.join(OPTIMIZER_STATE_FILE), &state)
    }

    /// Restores the state written by [`AdamW::save`]. The parameter names must match; the config
    /// and groups of `self` are kept (a resumed run may change them on purpose).
    pub fn load_state(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join(OPTIMIZER_FILE);
        let device = match self.slots.first() {
            Some(s) => s.var.device().clone(),
            None => return Ok(()),
        };
        let mut t = params::load_tensors(&path, &device)?;
        for s in &mut self.slots {
            let (m, v) = match (t.remove(&format!("m.{}", s.name)), t.remove(&format!("v.{}", s.name))) {
                (Some(m), Some(v)) => (m, v),
                _ => return Err(ModelError::checkpoint(&path, format!("no optimizer state for {}", s.name))),
            };
            if m.dims() != s.var.dims() || v.dims() != s.var.dims() {
                return Err(ModelError::checkpoint(
                    &path,
                    format!(
                        "optimizer state for {} has shape {:?}, the parameter {:?}",
                        s.name,
                        m.dims(),
                        s.var.dims()
                    ),
                ));
            }
            s.m = m;
            s.v = v;
        }
        if let Some(extra) = t.keys().next() {
            return Err(ModelError::checkpoint(
                &path,
                format!("optimizer state {extra} matches no parameter: was it saved for another model?"),
            ));
        }
        let state: SavedState = fsutil::read_json(&dir.join(OPTIMIZER_STATE_FILE))?;
        self.steps = state.steps;
        Ok(())
    }
}
