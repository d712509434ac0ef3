//! The models the stages use: [`CausalLm`] (policy, SFT model, reference model) and
//! [`ScalarModel`] (reward model, value function), each a network plus its named [`Params`].
//!
//! A model is either trainable (its tensors are the variables, gradients reach them) or frozen
//! (detached tensors: no autograd graph is kept, so scoring a batch costs a forward pass only).
//! [`CausalLm::frozen`] is a frozen view of the same storage, which follows the optimizer's
//! updates; [`CausalLm::snapshot`] is a frozen deep copy, e.g. the reference policy of PPO.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::batch::Batch;
use crate::config::LlamaConfig;
use crate::dropout::Dropout;
use crate::error::{ModelError, Result};
use crate::generate::{self, Generation, SamplingConfig};
use crate::hub;
use crate::model::{Llama, ResponseLogprobs, ScalarNet, response_logprobs};
use crate::ops;
use crate::params::{self, Params};
use crate::tokenizer::Tokenizer;

/// The summed negative log-likelihood of a batch's targets and their number. Sum over micro-batches
/// and divide by the total count to get the token-mean of the whole batch.
#[derive(Debug, Clone)]
pub struct LmLoss {
    /// Scalar tensor (differentiable).
    pub nll_sum: Tensor,
    pub n_targets: usize,
}

impl LmLoss {
    /// Mean NLL per target token (0 when there are no targets).
    pub fn mean(&self) -> Result<Tensor> {
        Ok((&self.nll_sum / self.n_targets.max(1) as f64)?)
    }
}

/// Per-response-token outputs of the policy on an aligned batch, all `[B, R]`.
#[derive(Debug, Clone)]
pub struct PolicyScores {
    /// `log pi(y_i | x, y_<i)` of each response token under the unmodified (temperature 1) policy.
    pub logprobs: Tensor,
    /// Entropy of the policy's next-token distribution at each response position.
    pub entropy: Option<Tensor>,
    /// 1 on real response tokens, 0 on padding (f32).
    pub mask: Tensor,
}

/// A causal language model with its parameters.
#[derive(Debug, Clone)]
pub struct CausalLm {
    cfg: LlamaConfig,
    params: Params,
    net: Llama,
    trainable: bool,
}

impl CausalLm {
    /// A freshly initialised model (weights drawn from `seed`).
    pub fn init(cfg: &LlamaConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let params = Params::init(&params::causal_lm_specs(cfg), seed, device)?;
        CausalLm::from_params(cfg, params, true)
    }

    /// A model over existing parameters, checked against the config.
    pub fn from_params(cfg: &LlamaConfig, params: Params, trainable: bool) -> Result<Self> {
        params.check_against(&params::causal_lm_specs(cfg), Path::new("<params>"))?;
        let vb = if trainable { params.var_builder() } else { params.frozen_var_builder() };
        let net = Llama::load(vb, cfg)?;
        Ok(CausalLm { cfg: cfg.clone(), params, net, trainable })
    }

    /// Loads a HF model directory (trainable). A tied checkpoint that also stores `lm_head.weight`
    /// (some exporters write it) is accepted; the copy is ignored.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = hub::read_config(dir)?;
        let files = hub::weight_files(dir)?;
        let specs = params::causal_lm_specs(&cfg);
        let mut params =
            Params::load_safetensors(&files, device, |n| n.starts_with("model.") || n == "lm_head.weight")?;
        params.check_against(&specs, dir)?;
        params.retain_specs(&specs);
        CausalLm::from_params(&cfg, params, true)
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if needed). Add the tokenizer
    /// and instruction format with their own `save_to_dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io("create directory", dir, e))?;
        hub::write_config(dir, &self.cfg)?;
        self.params.save_safetensors(&dir.join(hub::WEIGHTS_FILE), |_| true)
    }

    /// A frozen view sharing this model's storage (sees later optimizer updates).
    pub fn frozen(&self) -> Result<Self> {
        CausalLm::from_params(&self.cfg, self.params.clone(), false)
    }

    /// A frozen deep copy (does not change when this model trains).
    pub fn snapshot(&self) -> Result<Self> {
        CausalLm::from_params(&self.cfg, self.params.deep_copy()?, false)
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn net(&self) -> &Llama {
        &self.net
    }

    pub fn device(&self) -> &Device {
        self.params.device()
    }

    pub fn is_trainable(&self) -> bool {
        self.trainable
    }

    /// Next-token NLL over the batch's loss mask (pretraining, SFT, the PPO-ptx term). Only the
    /// hidden states that predict a target are unembedded.
    pub fn lm_loss(&self, batch: &Batch, dropout: Option<&mut Dropout>) -> Result<LmLoss> {
        let h = self.net.model.forward(&batch.input, None, dropout)?; // (B, T, D)
        let (rows, targets) = batch.target_rows();
        let n = rows.len();
        if n == 0 {
            return Ok(LmLoss { nll_sum: (h.sum_all()? * 0.0)?, n_targets: 0 });
        }
        let dev = h.device();
        let d = h.dim(2)?;
        let h = h.reshape(((), d))?.index_select(&Tensor::from_vec(rows, n, dev)?, 0)?; // (N, D)
        let logits = self.net.logits(&h)?; // (N, V)
        let lp = ops::token_logprobs(&logits, &Tensor::from_vec(targets, n, dev)?)?; // (N,)
        Ok(LmLoss { nll_sum: lp.sum_all()?.neg()?, n_targets: n })
    }

    /// Log-probabilities (and optionally entropies) of the response tokens of an aligned batch, as
    /// `[B, R]`. Differentiable when the model is trainable.
    pub fn response_scores(
        &self,
        batch: &Batch,
        with_entropy: bool,
        dropout: Option<&mut Dropout>,
    ) -> Result<PolicyScores> {
        let h = self.net.model.forward(&batch.input, None, dropout)?; // (B, T, D)
        let ResponseLogprobs { logits, logprobs, mask } = response_logprobs(&h, batch, self.net.unembedding())?;
        let entropy = if with_entropy { Some(ops::entropy(&logits)?.reshape(logprobs.shape())?) } else { None };
        Ok(PolicyScores { logprobs, entropy, mask })
    }

    /// Samples continuations of `prompts`, one seed per prompt (see [`generate::generate`]).
    pub fn generate(&self, prompts: &[Vec<u32>], seeds: &[u64], cfg: &SamplingConfig) -> Result<Vec<Generation>> {
        let frozen;
        let net = if self.trainable {
            // Decoding never needs gradients: run it on detached weights.
            frozen = self.frozen()?;
            frozen.net()
        } else {
            &self.net
        };
        generate::generate(net, prompts, seeds, cfg)
    }
}

/// Where a scalar model's head comes from.
#[derive(Debug, Clone)]
pub enum HeadInit {
    /// Read `score.weight`/`score.bias` (and `score.loglik`, the likelihood term's coefficient, if
    /// there) from this safetensors file; an untied unembedding for the term comes from the
    /// directory's weights.
    File(std::path::PathBuf),
    /// Use the directory's `score.safetensors` if it has one, else draw a fresh head.
    DirOrRandom { std: f64, seed: u64 },
    /// Always draw a fresh head: weight ~ N(0, std^2), bias 0. A small random init (not zero) lets
    /// the head learn at a modest learning rate.
    Random { std: f64, seed: u64 },
}

/// A trunk plus scalar head: the reward model and the value function.
#[derive(Debug, Clone)]
pub struct ScalarModel {
    cfg: LlamaConfig,
    params: Params,
    net: ScalarNet,
    trainable: bool,
}

impl ScalarModel {
    fn specs(cfg: &LlamaConfig, likelihood: bool) -> Vec<params::ParamSpec> {
        let mut s = params::trunk_specs(cfg);
        s.extend(params::scalar_head_specs(cfg, 0.0));
        if likelihood {
            s.extend(params::likelihood_specs(cfg));
        }
        s
    }

    /// A trained reward model from `dir` (its trunk, `score.*` head and likelihood term), after
    /// checking that it reads token ids as `reader` writes them, so that its scores of another
    /// model's samples mean something. Trainable, as loaded: the caller freezes or copies it.
    pub fn load_reward(dir: &Path, reader: &Tokenizer, device: &Device) -> Result<Self> {
        if let Some(d) = Tokenizer::from_dir(dir)?.id_mismatch(reader) {
            return Err(ModelError::checkpoint(
                dir,
                format!(
                    "this reward model's tokenizer.json (\"this one\") maps tokens to ids differently from the \
                     tokenizer of the model whose samples it would score ({d}): its scores would mean nothing"
                ),
            ));
        }
        Self::load(dir, HeadInit::File(dir.join(hub::SCORE_FILE)), device)
    }

    /// Trunk from a model directory, head as `head` says. A head with the likelihood term
    /// (`score.loglik`) keeps an untied checkpoint's `lm_head`; otherwise an LM's `lm_head` is dropped.
    pub fn load(dir: &Path, head: HeadInit, device: &Device) -> Result<Self> {
        let cfg = hub::read_config(dir)?;
        let files = hub::weight_files(dir)?;
        let mut params =
            Params::load_safetensors(&files, device, |n| n.starts_with("model.") || n == "lm_head.weight")?;
        params.check_against(&params::trunk_specs(&cfg), dir)?;
        let (file, random) = match head {
            HeadInit::File(f) => (Some(f), None),
            HeadInit::DirOrRandom { std, seed } => {
                let f = dir.join(hub::SCORE_FILE);
                if f.exists() { (Some(f), None) } else { (None, Some((std, seed))) }
            }
            HeadInit::Random { std, seed } => (None, Some((std, seed))),
        };
        if let Some(f) = file {
            for (name, t) in params::load_tensors(&f, device)? {
                if name.starts_with("score.") {
                    params.insert(name, &t)?;
                }
            }
            params.check_against(&params::scalar_head_specs(&cfg, 0.0), &f)?;
            if params.get(params::LIKELIHOOD_COEF).is_some() {
                params.check_against(&params::likelihood_specs(&cfg), dir).map_err(|e| {
                    ModelError::checkpoint(
                        dir,
                        format!(
                            "{} has a likelihood term ({}), which reads the unembedding: {e}",
                            f.display(),
                            params::LIKELIHOOD_COEF
                        ),
                    )
                })?;
            }
        }
        if let Some((std, seed)) = random {
            params.init_missing(&params::scalar_head_specs(&cfg, std), seed)?;
        }
        let likelihood = params.get(params::LIKELIHOOD_COEF).is_some();
        params.retain_specs(&ScalarModel::specs(&cfg, likelihood));
        ScalarModel::from_params(&cfg, params, true)
    }

    /// A scalar model whose trunk is a copy of `lm`'s and whose head is fresh.
    pub fn from_causal_lm(lm: &CausalLm, head_std: f64, seed: u64) -> Result<Self> {
        ScalarModel::from_causal_lm_with_likelihood(lm, head_std, seed, None)
    }

    /// Like [`ScalarModel::from_causal_lm`], plus, with `Some(coef)`, the likelihood term (see
    /// [`crate::model::LikelihoodTerm`]) with coefficient `coef`, reading `lm`'s unembedding.
    pub fn from_causal_lm_with_likelihood(lm: &CausalLm, head_std: f64, seed: u64, coef: Option<f64>) -> Result<Self> {
        let cfg = lm.config();
        let mut params = lm.params().deep_copy()?;
        // The trunk, and the unembedding when the term reads an untied one.
        params.retain_specs(&if coef.is_some() { params::causal_lm_specs(cfg) } else { params::trunk_specs(cfg) });
        params.init_missing(&params::scalar_head_specs(cfg, head_std), seed)?;
        if let Some(c) = coef {
            params.insert(params::LIKELIHOOD_COEF, &Tensor::new(&[c as f32], lm.device())?)?;
        }
        ScalarModel::from_params(cfg, params, true)
    }

    /// The same weights (shared storage) without the likelihood term: the value function a reward
    /// model with one starts from (a value is the head's scalar at each column).
    pub fn without_likelihood(&self) -> Result<Self> {
        let mut params = self.params.clone();
        params.retain_specs(&ScalarModel::specs(&self.cfg, false));
        ScalarModel::from_params(&self.cfg, params, self.trainable)
    }

    pub fn from_params(cfg: &LlamaConfig, params: Params, trainable: bool) -> Result<Self> {
        let likelihood = params.get(params::LIKELIHOOD_COEF).is_some();
        params.check_against(&ScalarModel::specs(cfg, likelihood), Path::new("<params>"))?;
        let vb = if trainable { params.var_builder() } else { params.frozen_var_builder() };
        let net = ScalarNet::load(vb, cfg, likelihood)?;
        Ok(ScalarModel { cfg: cfg.clone(), params, net, trainable })
    }

    /// The likelihood term's coefficient, when the model has one.
    pub fn likelihood_coef(&self) -> Result<Option<f64>> {
        match &self.net.likelihood {
            Some(l) => Ok(Some(l.coef.to_vec1::<f32>()?[0] as f64)),
            None => Ok(None),
        }
    }

    /// Writes `config.json`, the trunk to `model.safetensors` (with `lm_head.weight` when the
    /// likelihood term reads an untied one) and the head to `score.safetensors`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io("create directory", dir, e))?;
        hub::write_config(dir, &self.cfg)?;
        self.params
            .save_safetensors(&dir.join(hub::WEIGHTS_FILE), |n| n.starts_with("model.") || n == "lm_head.weight")?;
        self.params.save_safetensors(&dir.join(hub::SCORE_FILE), |n| n.starts_with("score."))
    }

    pub fn frozen(&self) -> Result<Self> {
        ScalarModel::from_params(&self.cfg, self.params.clone(), false)
    }

    pub fn snapshot(&self) -> Result<Self> {
        ScalarModel::from_params(&self.cfg, self.params.deep_copy()?, false)
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn net(&self) -> &ScalarNet {
        &self.net
    }

    pub fn device(&self) -> &Device {
        self.params.device()
    }

    pub fn is_trainable(&self) -> bool {
        self.trainable
    }

    /// Scalars at every column, `[B, T]`.
    pub fn scalars(&self, batch: &Batch, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        self.net.forward(&batch.input, dropout)
    }

    /// The reward: the scalar at the last real token of each row, `[B]`, plus the likelihood term
    /// when the model has one (then `batch` must be aligned, a prompt then the response, with a
    /// prompt of at least one token in some row).
    pub fn rewards(&self, batch: &Batch, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let h = self.net.model.forward(&batch.input, None, dropout)?; // (B, T, D)
        let s = self.net.score.forward(&h)?; // (B, T)
        let idx: Vec<u32> = batch.last_valid().iter().enumerate().map(|(b, &t)| (b * batch.width + t) as u32).collect();
        let idx = Tensor::from_vec(idx, batch.rows, s.device())?;
        let last = s.flatten_all()?.index_select(&idx, 0)?;
        match &self.net.likelihood {
            Some(l) => Ok((last + l.forward(&h, batch)?)?),
            None => Ok(last),
        }
    }

    /// Values at every response position of an aligned batch, `[B, R]`: entry `i` is the value of the
    /// state before response token `i` (the same columns that give the policy's log-probs).
    pub fn values(&self, batch: &Batch, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let p = batch.response_start()?;
        let s = self.scalars(batch, dropout)?; // (B, T)
        Ok(s.narrow(1, p - 1, batch.response_width)?)
    }
}
