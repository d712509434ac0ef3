//! AdamW with decoupled weight decay, parameter groups, and state that goes into checkpoints.
//!
//! candle-nn's `AdamW` keeps its moments private, so a run could not be resumed exactly; this one
//! exposes them as named tensors (`m.<param>`, `v.<param>`) saved next to the weights.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{CpuStorage, DType, Layout, Tensor, Var};
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
/// (e.g. `ParamGroup::new("score.", 10.0)`: a reward head learns faster than its trunk). Of
/// several matching groups the one with the longest prefix wins ([`group_of`]); unmatched
/// parameters use 1.
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
    fused: bool,
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

/// The group whose prefix is the longest that `name` starts with: where prefixes overlap
/// (`model.` and `model.norm`), the most specific one applies, whatever the order of `groups`.
pub fn group_of<'g>(groups: &'g [ParamGroup], name: &str) -> Option<&'g ParamGroup> {
    groups.iter().filter(|g| name.starts_with(&g.prefix)).max_by_key(|g| g.prefix.len())
}

impl AdamW {
    /// Zero moments for every variable of `params`.
    pub fn new(params: &Params, cfg: AdamWConfig, groups: Vec<ParamGroup>) -> Result<Self> {
        cfg.validate()?;
        let mut slots = Vec::with_capacity(params.len());
        for (name, var) in params.iter() {
            let lr_mult = group_of(&groups, name).map_or(1.0, |g| g.lr_mult);
            slots.push(Slot {
                name: name.clone(),
                var: var.clone(),
                m: var.zeros_like()?,
                v: var.zeros_like()?,
                lr_mult,
                decay: decays(name, var.dims(), cfg.decay_embeddings),
            });
        }
        Ok(AdamW { cfg, groups, slots, steps: 0, fused: true })
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
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for slot in &mut self.slots {
            let Some(g) = grads.get(&slot.name) else { continue };
            let u = Update {
                lr: lr * slot.lr_mult,
                beta1: b1,
                beta2: b2,
                bc1,
                bc2,
                eps: self.cfg.eps,
                decay: if slot.decay { self.cfg.weight_decay } else { 0.0 },
            };
            if self.fused && g.device().is_cpu() && g.dtype() == DType::F32 {
                u.apply_in_place(slot, &g.contiguous()?)?;
            } else {
                u.apply_composed(slot, g)?;
            }
        }
        Ok(())
    }

    /// Uses the composed (device-generic) update instead of the in-place CPU kernels; for tests
    /// that compare the two.
    pub fn with_fused_kernels(mut self, fused: bool) -> Self {
        self.fused = fused;
        self
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

/// One AdamW update of one tensor, with the bias corrections of the current step.
struct Update {
    lr: f64,
    beta1: f64,
    beta2: f64,
    bc1: f64,
    bc2: f64,
    eps: f64,
    /// Weight decay of this tensor (0 when it does not decay).
    decay: f64,
}

impl Update {
    /// Any device: candle ops, new tensors for the moments, `Var::set` for the parameter.
    fn apply_composed(&self, slot: &mut Slot, g: &Tensor) -> Result<()> {
        let m = ((&slot.m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
        let v = ((&slot.v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
        let step = ((&m / self.bc1)? / ((&v / self.bc2)?.sqrt()? + self.eps)?)?;
        let p = (slot.var.as_tensor().detach() * (1.0 - self.lr * self.decay))?;
        slot.var.set(&(p - (step * self.lr)?)?)?;
        slot.m = m;
        slot.v = v;
        Ok(())
    }

    /// CPU f32: three in-place passes (first moment, second moment, parameter) on the calling
    /// thread. No allocation and no thread pool: an update of a tiny model costs a few
    /// milliseconds whatever else the machine is doing.
    fn apply_in_place(&self, slot: &mut Slot, g: &Tensor) -> Result<()> {
        slot.m.inplace_op2(g, &Moment { beta: self.beta1 as f32, square: false })?;
        slot.v.inplace_op2(g, &Moment { beta: self.beta2 as f32, square: true })?;
        let apply = ApplyAdam {
            lr: self.lr as f32,
            bc1: self.bc1 as f32,
            bc2: self.bc2 as f32,
            eps: self.eps as f32,
            keep: (1.0 - self.lr * self.decay) as f32,
        };
        slot.var.as_tensor().inplace_op3(&slot.m, &slot.v, &apply)?;
        Ok(())
    }
}

fn slice_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("adamw: expected a contiguous tensor"),
    }
}

fn slice_f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (l.contiguous_offsets(), s) {
        (Some((a, b)), CpuStorage::F32(v)) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("adamw: expected a contiguous f32 tensor"),
    }
}

/// `m = beta * m + (1 - beta) * g` (or `g^2` for the second moment), in place.
struct Moment {
    beta: f32,
    square: bool,
}

impl candle_core::InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
        let g = slice_f32(g, gl)?;
        let m = slice_f32_mut(dst, dst_l)?;
        let (b, c) = (self.beta, 1.0 - self.beta);
        if self.square {
            m.iter_mut().zip(g).for_each(|(m, &g)| *m = b * *m + c * g * g);
        } else {
            m.iter_mut().zip(g).for_each(|(m, &g)| *m = b * *m + c * g);
        }
        Ok(())
    }
}

/// `p = keep * p - lr * (m / bc1) / (sqrt(v / bc2) + eps)`, in place.
struct ApplyAdam {
    lr: f32,
    bc1: f32,
    bc2: f32,
    eps: f32,
    keep: f32,
}

impl candle_core::InplaceOp3 for ApplyAdam {
    fn name(&self) -> &'static str {
        "adamw-apply"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        let (m, v) = (slice_f32(m, ml)?, slice_f32(v, vl)?);
        let p = slice_f32_mut(dst, dst_l)?;
        for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
            *p = self.keep * *p - self.lr * (m / self.bc1) / ((v / self.bc2).sqrt() + self.eps);
        }
        Ok(())
    }
}
