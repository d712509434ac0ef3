//! Named parameters: the trainable state of a model, keyed by HF tensor names.
//!
//! [`Params`] is an ordered map from checkpoint name to candle [`Var`]. Models are built from it
//! through a [`VarBuilder`], either sharing the variables (trainable: gradients flow to them) or
//! detached from them (frozen: same storage, no autograd graph, so scoring is cheap). The optimizer
//! updates the variables in place, so every model built from a `Params` sees the new values.
//! Iteration order is the name order, which keeps initialisation and optimizer steps reproducible.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::fsutil;

/// How a freshly created parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Normal { std: f64 },
    Zeros,
    Ones,
}

/// A parameter's name, shape and initialiser.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

impl ParamSpec {
    fn new(name: impl Into<String>, shape: &[usize], init: Init) -> Self {
        ParamSpec { name: name.into(), shape: shape.to_vec(), init }
    }
}

/// The parameters of the trunk (`model.*`), as HF's `LlamaModel` names them. Initialisation follows
/// transformers (normal with `initializer_range`, ones for norms, zeros for biases), except that the
/// projections writing into the residual stream (`o_proj`, `down_proj`) are scaled by
/// `1/sqrt(2 * layers)` as in GPT-2, which keeps deep residual sums at unit scale.
pub fn trunk_specs(cfg: &LlamaConfig) -> Vec<ParamSpec> {
    let (d, hd, i) = (cfg.hidden_size, cfg.head_dim(), cfg.intermediate_size);
    let (nh, nkv) = (cfg.num_attention_heads, cfg.num_kv_heads());
    let std = cfg.initializer_range;
    let resid_std = std / (2.0 * cfg.num_hidden_layers as f64).sqrt();
    let normal = Init::Normal { std };
    let mut v = vec![ParamSpec::new("model.embed_tokens.weight", &[cfg.vocab_size, d], normal)];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        v.push(ParamSpec::new(format!("{p}.input_layernorm.weight"), &[d], Init::Ones));
        v.push(ParamSpec::new(format!("{p}.post_attention_layernorm.weight"), &[d], Init::Ones));
        for (name, out) in [("q_proj", nh * hd), ("k_proj", nkv * hd), ("v_proj", nkv * hd)] {
            v.push(ParamSpec::new(format!("{p}.self_attn.{name}.weight"), &[out, d], normal));
            if cfg.qkv_bias() {
                v.push(ParamSpec::new(format!("{p}.self_attn.{name}.bias"), &[out], Init::Zeros));
            }
        }
        v.push(ParamSpec::new(format!("{p}.self_attn.o_proj.weight"), &[d, nh * hd], Init::Normal { std: resid_std }));
        if cfg.o_bias() {
            v.push(ParamSpec::new(format!("{p}.self_attn.o_proj.bias"), &[d], Init::Zeros));
        }
        v.push(ParamSpec::new(format!("{p}.mlp.gate_proj.weight"), &[i, d], normal));
        v.push(ParamSpec::new(format!("{p}.mlp.up_proj.weight"), &[i, d], normal));
        v.push(ParamSpec::new(format!("{p}.mlp.down_proj.weight"), &[d, i], Init::Normal { std: resid_std }));
    }
    v.push(ParamSpec::new("model.norm.weight", &[d], Init::Ones));
    v
}

/// The parameters of a causal LM: the trunk plus `lm_head.weight` unless embeddings are tied.
pub fn causal_lm_specs(cfg: &LlamaConfig) -> Vec<ParamSpec> {
    let mut v = trunk_specs(cfg);
    if !cfg.tie_word_embeddings {
        v.push(ParamSpec::new(
            "lm_head.weight",
            &[cfg.vocab_size, cfg.hidden_size],
            Init::Normal { std: cfg.initializer_range },
        ));
    }
    v
}

/// The scalar head `score.weight` `[1, D]` (normal with `std`) and `score.bias` `[1]` (zero).
pub fn scalar_head_specs(cfg: &LlamaConfig, std: f64) -> Vec<ParamSpec> {
    vec![
        ParamSpec::new("score.weight", &[1, cfg.hidden_size], Init::Normal { std }),
        ParamSpec::new("score.bias", &[1], Init::Zeros),
    ]
}

/// The reward model's likelihood coefficient (see [`crate::model::LikelihoodTerm`]).
pub const LIKELIHOOD_COEF: &str = "score.loglik";

/// What a scalar model with the likelihood term has beyond trunk and head: the coefficient (ones:
/// set it after creating) and, when the embeddings are not tied, the unembedding.
pub fn likelihood_specs(cfg: &LlamaConfig) -> Vec<ParamSpec> {
    let mut v = vec![ParamSpec::new(LIKELIHOOD_COEF, &[1], Init::Ones)];
    if !cfg.tie_word_embeddings {
        v.push(ParamSpec::new(
            "lm_head.weight",
            &[cfg.vocab_size, cfg.hidden_size],
            Init::Normal { std: cfg.initializer_range },
        ));
    }
    v
}

/// An ordered map from tensor name to variable, all f32 on one device.
#[derive(Debug, Clone)]
pub struct Params {
    vars: BTreeMap<String, Var>,
    device: Device,
}

impl Params {
    pub fn new(device: &Device) -> Self {
        Params { vars: BTreeMap::new(), device: device.clone() }
    }

    /// Creates every parameter of `specs` with values drawn from a ChaCha stream seeded by `seed`,
    /// in name order, so the same seed gives the same weights on every machine.
    pub fn init(specs: &[ParamSpec], seed: u64, device: &Device) -> Result<Self> {
        let mut p = Params::new(device);
        p.init_missing(specs, seed)?;
        Ok(p)
    }

    /// Creates the parameters of `specs` that are not present yet (e.g. a new scalar head).
    pub fn init_missing(&mut self, specs: &[ParamSpec], seed: u64) -> Result<()> {
        let mut sorted: Vec<&ParamSpec> = specs.iter().filter(|s| !self.vars.contains_key(&s.name)).collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for s in sorted {
            let n: usize = s.shape.iter().product();
            let data: Vec<f32> = match s.init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::Normal { std } => {
                    let dist = Normal::new(0.0f64, std)
                        .map_err(|e| ModelError::Config(format!("bad init std {std} for {}: {e}", s.name)))?;
                    (0..n).map(|_| dist.sample(&mut rng) as f32).collect()
                }
            };
            let t = Tensor::from_vec(data, s.shape.as_slice(), &self.device)?;
            self.vars.insert(s.name.clone(), Var::from_tensor(&t)?);
        }
        Ok(())
    }

    /// Reads tensors from safetensors files, converting any float dtype to f32. `keep` selects the
    /// names to load (e.g. only the trunk for a scalar model). A name present in two files is an error.
    pub fn load_safetensors(files: &[PathBuf], device: &Device, keep: impl Fn(&str) -> bool) -> Result<Self> {
        let mut p = Params::new(device);
        for f in files {
            let tensors = candle_core::safetensors::load(f, device)
                .map_err(|e| ModelError::checkpoint(f, format!("cannot read safetensors: {e}")))?;
            for (name, t) in tensors {
                if !keep(&name) {
                    continue;
                }
                if p.vars.contains_key(&name) {
                    return Err(ModelError::checkpoint(f, format!("tensor {name} appears in more than one file")));
                }
                let t = t.to_dtype(DType::F32)?;
                p.vars.insert(name, Var::from_tensor(&t)?);
            }
        }
        Ok(p)
    }

    /// Checks that every parameter of `specs` is present with the right shape, naming the first
    /// offender. Extra parameters are allowed (use [`Params::retain_specs`] to drop them).
    pub fn check_against(&self, specs: &[ParamSpec], origin: &Path) -> Result<()> {
        for s in specs {
            match self.vars.get(&s.name) {
                None => {
                    return Err(ModelError::checkpoint(
                        origin,
                        format!("tensor {} is missing: is this a checkpoint of the configured model?", s.name),
                    ));
                }
                Some(v) if v.dims() != s.shape.as_slice() => {
                    return Err(ModelError::checkpoint(
                        origin,
                        format!("tensor {} has shape {:?}, the config implies {:?}", s.name, v.dims(), s.shape),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Removes every parameter not in `specs` (e.g. `lm_head.weight` when a trunk becomes a reward
    /// model) and returns the names removed.
    pub fn retain_specs(&mut self, specs: &[ParamSpec]) -> Vec<String> {
        let keep: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let drop: Vec<String> = self.vars.keys().filter(|k| !keep.contains(k.as_str())).cloned().collect();
        for k in &drop {
            self.vars.remove(k);
        }
        drop
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    pub fn insert(&mut self, name: impl Into<String>, t: &Tensor) -> Result<()> {
        let t = t.to_device(&self.device)?.to_dtype(DType::F32)?;
        self.vars.insert(name.into(), Var::from_tensor(&t)?);
        Ok(())
    }

    /// `(name, var)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.vars.keys()
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Total number of scalar parameters.
    pub fn num_elements(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// A builder whose tensors ARE the variables: models built from it are trainable.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        let map: HashMap<String, Tensor> = self.vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        VarBuilder::from_tensors(map, DType::F32, &self.device)
    }

    /// A builder whose tensors share the variables' storage but are not tracked by autograd:
    /// models built from it are frozen views that follow the variables' in-place updates.
    pub fn frozen_var_builder(&self) -> VarBuilder<'static> {
        let map: HashMap<String, Tensor> = self.vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
        VarBuilder::from_tensors(map, DType::F32, &self.device)
    }

    /// A deep copy with fresh storage (e.g. a frozen reference model taken from the policy).
    pub fn deep_copy(&self) -> Result<Self> {
        let mut vars = BTreeMap::new();
        for (k, v) in &self.vars {
            vars.insert(k.clone(), Var::from_tensor(&v.as_tensor().copy()?)?);
        }
        Ok(Params { vars, device: self.device.clone() })
    }

    /// Sets every variable of `self` to `decay * self + (1 - decay) * src` (an exponential moving
    /// average of weights; the paper evaluates an EMA of the PPO policy with decay 0.992).
    pub fn ema_update(&self, src: &Params, decay: f64) -> Result<()> {
        for (k, v) in &self.vars {
            let s = src.vars.get(k).ok_or_else(|| ModelError::Input(format!("EMA source has no tensor {k}")))?;
            let new = ((v.as_tensor() * decay)? + (s.as_tensor() * (1.0 - decay))?)?;
            v.set(&new)?;
        }
        Ok(())
    }

    /// Copies values from `src` into the variables of `self` with the same names (shapes must match).
    pub fn assign_from(&self, src: &Params) -> Result<()> {
        for (k, v) in &self.vars {
            if let Some(s) = src.vars.get(k) {
                v.set(&s.as_tensor().detach())?;
            }
        }
        Ok(())
    }

    /// The tensors whose names satisfy `keep`, detached, for saving.
    pub fn tensors(&self, keep: impl Fn(&str) -> bool) -> BTreeMap<String, Tensor> {
        self.vars.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect()
    }

    /// Writes the tensors selected by `keep` to one safetensors file (atomically, with transformers'
    /// `{"format": "pt"}` metadata).
    pub fn save_safetensors(&self, path: &Path, keep: impl Fn(&str) -> bool) -> Result<()> {
        save_tensors(&self.tensors(keep), path)
    }
}

/// Writes named tensors to a safetensors file atomically, with `{"format": "pt"}` metadata so that
/// transformers accepts it.
pub fn save_tensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(cpu.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
        .map_err(|e| ModelError::checkpoint(path, format!("cannot serialise tensors: {e}")))?;
    fsutil::write_atomic(path, &bytes)
}

/// Reads every tensor of a safetensors file as f32 (for optimizer state and the like).
pub fn load_tensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let map = candle_core::safetensors::load(path, device)
        .map_err(|e| ModelError::checkpoint(path, format!("cannot read safetensors: {e}")))?;
    map.into_iter().map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?))).collect()
}
