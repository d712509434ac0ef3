//! The Llama-family decoder: RMSNorm, rotary positions, grouped-query attention, SwiGLU MLP.
//!
//! Every module has a `load(vb, cfg)` constructor that asks the [`VarBuilder`] for the checkpoint's
//! own tensor names (`model.layers.N.self_attn.q_proj.weight`, ...), so a directory written by
//! transformers loads without a renaming table, and a `forward`.
//!
//! One forward serves training, scoring and cached decoding. Its input is an [`Input`]: token ids
//! `[B, T]`, the rotary position of every token, and an [`AttnMask`] saying which key columns are
//! real tokens. Padding anywhere in a row is allowed; positions count only real tokens, so a
//! sequence gets the same numbers whatever padding the batch adds around it.

use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::attention::attention;
use crate::config::LlamaConfig;
use crate::dropout::Dropout;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::ops::{self, AttnMask};

/// What one forward pass reads: token ids, their rotary positions and the attention mask.
#[derive(Debug, Clone)]
pub struct Input {
    /// `[B, T]` u32 token ids; padding columns may hold any id in range.
    pub ids: Tensor,
    /// `B * T` rotary positions, row-major: the number of real tokens before each column in its row
    /// (cached columns included).
    pub positions: Vec<u32>,
    /// Which key columns are real tokens, and where the query block starts.
    pub mask: AttnMask,
}

impl Input {
    /// An input from rows of ids and validity flags (`1` = real token), with positions counted from
    /// the flags. `offset` real tokens per row and `mask_prefix` columns are already in a KV cache.
    pub fn new(ids: Vec<u32>, valid: &[u8], batch: usize, device: &Device) -> Result<Self> {
        let t = ids.len() / batch.max(1);
        if ids.len() != batch * t || valid.len() != ids.len() {
            return Err(ModelError::Input(format!(
                "input: {} ids and {} flags do not make {batch} rows",
                ids.len(),
                valid.len()
            )));
        }
        let mut positions = Vec::with_capacity(ids.len());
        for row in valid.chunks(t.max(1)) {
            let mut p = 0u32;
            for &v in row {
                positions.push(p);
                p += u32::from(v != 0);
            }
        }
        let ids = Tensor::from_vec(ids, (batch, t), device)?;
        let mask = AttnMask { key_valid: Arc::new(valid.to_vec()), batch, keys: t, query_offset: 0 };
        Ok(Input { ids, positions, mask })
    }

    pub fn batch(&self) -> usize {
        self.mask.batch
    }

    /// Number of query columns.
    pub fn len(&self) -> usize {
        self.positions.len() / self.mask.batch.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

/// Precomputed rotary angles, HF convention: `inv_freq[i] = theta^(-2i/Dh)`.
#[derive(Debug, Clone)]
pub struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    max_positions: usize,
}

impl RopeTable {
    pub fn new(cfg: &LlamaConfig) -> Self {
        let dh = cfg.head_dim();
        let half = dh / 2;
        let theta = cfg.rope_theta();
        let n = cfg.max_position_embeddings;
        // transformers computes inv_freq in f32 from an f64 power; we round the same way.
        let inv_freq: Vec<f32> = (0..half).map(|i| (1.0 / theta.powf((2 * i) as f64 / dh as f64)) as f32).collect();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for &f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        RopeTable { cos, sin, half, max_positions: n }
    }

    /// `(cos, sin)`, each `[B, T, Dh/2]`, for `positions` (row-major `B * T`).
    pub fn gather(&self, positions: &[u32], b: usize, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let h = self.half;
        let mut cos = Vec::with_capacity(positions.len() * h);
        let mut sin = Vec::with_capacity(positions.len() * h);
        for &p in positions {
            let p = p as usize;
            if p >= self.max_positions {
                return Err(ModelError::Input(format!(
                    "position {p} is beyond max_position_embeddings ({}): shorten the sequence",
                    self.max_positions
                )));
            }
            cos.extend_from_slice(&self.cos[p * h..(p + 1) * h]);
            sin.extend_from_slice(&self.sin[p * h..(p + 1) * h]);
        }
        Ok((Tensor::from_vec(cos, (b, t, h), device)?, Tensor::from_vec(sin, (b, t, h), device)?))
    }
}

/// `y = x W^T (+ b)` over the last dimension of `x`, computed as one 2-D matmul.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().unwrap_or(&0);
        let out_dim = self.weight.dim(0)?;
        let x2 = x.reshape(((), in_dim))?; // (N, in)
        let mut y = ops::linear(&x2, &self.weight)?; // (N, out)
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = out_dim;
        }
        Ok(y.reshape(out_dims)?)
    }
}

#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm { weight: vb.get(size, "weight")?, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::rms_norm(x, &self.weight, self.eps)?)
    }
}

#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_kv_heads());
        let bias = cfg.qkv_bias();
        Ok(Attention {
            q_proj: Linear::load(vb.pp("q_proj"), d, nh * hd, bias)?,
            k_proj: Linear::load(vb.pp("k_proj"), d, nkv * hd, bias)?,
            v_proj: Linear::load(vb.pp("v_proj"), d, nkv * hd, bias)?,
            o_proj: Linear::load(vb.pp("o_proj"), nh * hd, d, cfg.o_bias())?,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
        })
    }

    /// `x` `[B, T, D]` -> `[B, T, D]`. With a cache, the new keys and values are written at the
    /// cache's current length and attention runs over everything cached so far.
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &AttnMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let n_rep = nh / nkv;
        let q = self.q_proj.forward(x)?.reshape((b, t, nh, hd))?; // (B, T, nh, hd)
        let k = self.k_proj.forward(x)?.reshape((b, t, nkv, hd))?; // (B, T, nkv, hd)
        let v = self.v_proj.forward(x)?.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?; // (B, nkv, T, hd)
        let q = ops::rope(&q, cos, sin)?; // (B, nh, T, hd)
        let k = ops::rope(&k, cos, sin)?; // (B, nkv, T, hd)
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?, // (B, nkv, Tk, hd) each
            None => (k, v),
        };
        // Grouped-query attention without copying keys: the n_rep query heads that share a key/value
        // head are stacked along the row axis (HF's repeat_kv maps query head g * n_rep + r to kv head g).
        let q = q.reshape((b, nkv, n_rep * t, hd))?; // (B, nkv, n_rep*T, hd)
        let y = attention(&q, &k, &v, mask, t, 1.0 / (hd as f64).sqrt())?; // (B, nkv, n_rep*T, hd)
        let y = y.reshape((b, nh, t, hd))?.transpose(1, 2)?.reshape((b, t, nh * hd))?; // (B, T, nh*hd)
        self.o_proj.forward(&y)
    }
}

#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate_proj: Linear::load(vb.pp("gate_proj"), d, i, false)?,
            up_proj: Linear::load(vb.pp("up_proj"), d, i, false)?,
            down_proj: Linear::load(vb.pp("down_proj"), i, d, false)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = ops::swiglu(&self.gate_proj.forward(x)?, &self.up_proj.forward(x)?)?;
        self.down_proj.forward(&h)
    }
}

#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(DecoderLayer {
            input_layernorm: RmsNorm::load(vb.pp("input_layernorm"), d, eps)?,
            self_attn: Attention::load(vb.pp("self_attn"), cfg)?,
            post_attention_layernorm: RmsNorm::load(vb.pp("post_attention_layernorm"), d, eps)?,
            mlp: Mlp::load(vb.pp("mlp"), cfg)?,
        })
    }

    /// Pre-norm residual block. Residual dropout (when training) hits each block's output before it
    /// joins the residual stream, as in GPT-2 and the InstructGPT paper.
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &AttnMask,
        cache: Option<(&mut KvCache, usize)>,
        mut dropout: Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let h = self.self_attn.forward(&self.input_layernorm.forward(x)?, cos, sin, mask, cache)?;
        let h = match dropout.as_deref_mut() {
            Some(d) => d.apply(&h)?,
            None => h,
        };
        let x = (x + h)?;
        let h = self.mlp.forward(&self.post_attention_layernorm.forward(&x)?)?;
        let h = match dropout {
            Some(d) => d.apply(&h)?,
            None => h,
        };
        Ok((x + h)?)
    }
}

/// The trunk (HF `LlamaModel`, tensors under `model.`): embeddings, decoder layers, final norm.
#[derive(Debug, Clone)]
pub struct Transformer {
    pub embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    rope: Arc<RopeTable>,
    cfg: LlamaConfig,
}

impl Transformer {
    /// `vb` points at the trunk's prefix (usually `model`).
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        cfg.validate()?;
        let embed_tokens = vb.pp("embed_tokens").get((cfg.vocab_size, cfg.hidden_size), "weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(vb.pp("layers").pp(i.to_string()), cfg))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(vb.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)?;
        Ok(Transformer { embed_tokens, layers, norm, rope: Arc::new(RopeTable::new(cfg)), cfg: cfg.clone() })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Final-normed hidden states `[B, T, D]`. With a cache, `input` holds the new columns only; the
    /// cache grows by `T` columns. Passing `dropout` switches residual dropout on (training).
    pub fn forward(
        &self,
        input: &Input,
        mut cache: Option<&mut KvCache>,
        mut dropout: Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let (b, t) = input.ids.dims2()?;
        let device = input.ids.device();
        let (cos, sin) = self.rope.gather(&input.positions, b, t, device)?;
        let mut x = self.embed_tokens.index_select(&input.ids.flatten_all()?, 0)?.reshape((b, t, ()))?; // (B, T, D)
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            x = layer.forward(&x, &cos, &sin, &input.mask, c, dropout.as_deref_mut())?;
        }
        if let Some(c) = cache {
            c.advance(t)?;
        }
        self.norm.forward(&x)
    }
}

/// A causal language model: the trunk plus the unembedding `lm_head` (tied to `embed_tokens` when
/// the config says so).
#[derive(Debug, Clone)]
pub struct Llama {
    pub model: Transformer,
    lm_head: Tensor,
}

impl Llama {
    /// `vb` points at the checkpoint root (tensors `model.*` and `lm_head.weight`).
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let model = Transformer::load(vb.pp("model"), cfg)?;
        let lm_head = load_unembedding(&vb, cfg, &model)?;
        Ok(Llama { model, lm_head })
    }

    /// The unembedding `[V, D]` (the embedding itself when tied).
    pub fn unembedding(&self) -> &Tensor {
        &self.lm_head
    }

    pub fn config(&self) -> &LlamaConfig {
        self.model.config()
    }

    /// Logits `[B, T, V]` for every column.
    pub fn forward(&self, input: &Input, cache: Option<&mut KvCache>, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let h = self.model.forward(input, cache, dropout)?;
        self.logits(&h)
    }

    /// Unembeds hidden states `[.., D]` into logits `[.., V]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let dims = hidden.dims().to_vec();
        let d = *dims.last().unwrap_or(&0);
        let logits = ops::linear(&hidden.reshape(((), d))?, &self.lm_head)?; // (N, V)
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = self.lm_head.dim(0)?;
        }
        Ok(logits.reshape(out)?)
    }

    /// Logits of the last column of each row only, `[B, V]`: what decoding needs.
    pub fn last_logits(&self, input: &Input, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let h = self.model.forward(input, cache, None)?;
        let t = h.dim(1)?;
        self.logits(&h.narrow(1, t - 1, 1)?.squeeze(1)?)
    }
}

/// The scalar head of the reward and value models: `Linear(D -> 1)` with bias, saved as
/// `score.weight` `[1, D]` and `score.bias` `[1]`.
#[derive(Debug, Clone)]
pub struct ScalarHead {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl ScalarHead {
    /// `vb` points at the head's prefix (`score`).
    pub fn load(vb: VarBuilder, hidden: usize) -> Result<Self> {
        Ok(ScalarHead { weight: vb.get((1, hidden), "weight")?, bias: vb.get(1, "bias")? })
    }

    /// Hidden states `[.., D]` -> scalars `[..]`.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let dims = hidden.dims().to_vec();
        let d = *dims.last().unwrap_or(&0);
        let y = hidden.reshape(((), d))?.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?; // (N, 1)
        Ok(y.reshape(&dims[..dims.len() - 1])?)
    }
}

/// The unembedding `[V, D]` of a checkpoint (`vb` at its root): the tied `embed_tokens`, or
/// `lm_head.weight`.
fn load_unembedding(vb: &VarBuilder, cfg: &LlamaConfig, model: &Transformer) -> Result<Tensor> {
    if cfg.tie_word_embeddings {
        Ok(model.embed_tokens.clone())
    } else {
        Ok(vb.pp("lm_head").get((cfg.vocab_size, cfg.hidden_size), "weight")?)
    }
}

/// What an unembedding says about the response tokens of an aligned batch, all from the columns
/// that predict them (column `P - 1 + i` predicts response token `i`).
#[derive(Debug, Clone)]
pub struct ResponseLogprobs {
    /// `[B * R, V]`.
    pub logits: Tensor,
    /// `log p(y_i | x, y_<i)`, `[B, R]` (padding entries hold the log-prob of the fill id).
    pub logprobs: Tensor,
    /// `[B, R]` f32, 1 on real response tokens.
    pub mask: Tensor,
}

/// The response tokens' log-probabilities of an aligned batch from final-normed hidden states
/// `[B, T, D]` and an unembedding `[V, D]`: the policy's scores and a reward's likelihood term.
pub fn response_logprobs(hidden: &Tensor, batch: &crate::batch::Batch, unembed: &Tensor) -> Result<ResponseLogprobs> {
    let p = batch.response_start()?;
    let (b, r) = (batch.rows, batch.response_width);
    let (targets, mask) = batch.response_targets()?;
    let d = hidden.dim(2)?;
    let h = hidden.narrow(1, p - 1, r)?.reshape((b * r, d))?; // (B*R, D)
    let logits = ops::linear(&h, unembed)?; // (B*R, V)
    let logprobs = ops::token_logprobs(&logits, &targets.flatten_all()?)?.reshape((b, r))?;
    Ok(ResponseLogprobs { logits, logprobs, mask })
}

/// A reward model's likelihood term: `coef` times the mean log-probability of the response's tokens
/// under the trunk's own language-model head (`score.loglik` `[1]`; the unembedding is the tied
/// embedding, or `lm_head.weight` kept beside the trunk).
#[derive(Debug, Clone)]
pub struct LikelihoodTerm {
    pub coef: Tensor,
    pub lm_head: Tensor,
}

impl LikelihoodTerm {
    /// `coef * mean_i log p(y_i | x, y_<i)` over each row's response tokens, `[B]`, from the
    /// final-normed hidden states `[B, T, D]` of an aligned batch.
    pub fn forward(&self, hidden: &Tensor, batch: &crate::batch::Batch) -> Result<Tensor> {
        let ResponseLogprobs { logprobs, mask, .. } = response_logprobs(hidden, batch, &self.lm_head)?;
        let n = mask.sum(1)?.maximum(1f32)?;
        let mean = ((logprobs * &mask)?.sum(1)? / n)?; // (B,)
        Ok(mean.broadcast_mul(&self.coef)?)
    }
}

/// Trunk plus scalar head: the reward model and the value function.
#[derive(Debug, Clone)]
pub struct ScalarNet {
    pub model: Transformer,
    pub score: ScalarHead,
    /// Reward models only, and only when trained with one (see [`LikelihoodTerm`]).
    pub likelihood: Option<LikelihoodTerm>,
}

impl ScalarNet {
    /// `likelihood`: whether the checkpoint has the likelihood term (`score.loglik`, and
    /// `lm_head.weight` when the embeddings are not tied).
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig, likelihood: bool) -> Result<Self> {
        let model = Transformer::load(vb.pp("model"), cfg)?;
        let score = ScalarHead::load(vb.pp("score"), cfg.hidden_size)?;
        let likelihood = if likelihood {
            let lm_head = load_unembedding(&vb, cfg, &model)?;
            Some(LikelihoodTerm { coef: vb.pp("score").get(1, "loglik")?, lm_head })
        } else {
            None
        };
        Ok(ScalarNet { model, score, likelihood })
    }

    /// Scalars `[B, T]` at every column.
    pub fn forward(&self, input: &Input, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let h = self.model.forward(input, None, dropout)?;
        self.score.forward(&h)
    }
}

/// Mean of `x` over the last axis where `mask` (same shape, f32 0/1) is 1; 0 when the mask is empty.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let n = mask.sum_all()?.to_dtype(DType::F32)?;
    let n = n.maximum(1f32)?;
    Ok((x * mask)?.sum_all()?.broadcast_div(&n)?)
}

/// `log_softmax` over the vocabulary, differentiable (used only by reference code and tests).
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(logits, D::Minus1)?)
}
