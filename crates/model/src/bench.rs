//! Benchmarks as library functions (xtask calls [`run`]; `cargo run --release -p model --example
//! bench` prints them).
//!
//! Measured: the machine's fp32 GEMM rate through candle (a 1024^3 product and a model-shaped one),
//! training throughput of a causal LM (forward + backward + clip + AdamW, split into phases), the
//! model-FLOPs utilisation of that training as a fraction of the measured GEMM rate, and decode
//! throughput with the KV cache at several batch sizes. No timing is asserted anywhere: the report is
//! for people and dashboards.

use std::fmt;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::config::{LlamaConfig, Preset};
use crate::error::Result;
use crate::generate::SamplingConfig;
use crate::lm::CausalLm;
use crate::train::{AdamW, AdamWConfig, Grads, LrSchedule, UpdateRule};

/// What to measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BenchConfig {
    pub preset: Preset,
    pub vocab_size: usize,
    /// `"cpu"` or `"cuda:N"`.
    pub device: String,
    /// Training: sequences of `seq_len` tokens, `batch_size` per step.
    pub seq_len: usize,
    pub batch_size: usize,
    /// Timed training steps (after `warmup_steps` untimed ones).
    pub train_steps: usize,
    pub warmup_steps: usize,
    /// Decoding: prompt length, new tokens per sequence, batch sizes to try.
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub decode_batches: Vec<usize>,
    /// Repetitions of each GEMM (after one warmup).
    pub gemm_reps: usize,
    /// Square GEMM size and the model-shaped `(m, k, n)`.
    pub gemm_square: usize,
    pub gemm_model_shape: (usize, usize, usize),
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            preset: Preset::Tiny,
            vocab_size: 2048,
            device: "cpu".into(),
            seq_len: 256,
            batch_size: 8,
            train_steps: 5,
            warmup_steps: 2,
            prompt_len: 32,
            new_tokens: 64,
            decode_batches: vec![1, 32],
            gemm_reps: 10,
            gemm_square: 1024,
            gemm_model_shape: (2048, 128, 512),
        }
    }
}

impl BenchConfig {
    /// A seconds-long configuration for smoke tests.
    pub fn smoke() -> Self {
        BenchConfig {
            preset: Preset::Smoke,
            vocab_size: 64,
            seq_len: 16,
            batch_size: 2,
            train_steps: 1,
            warmup_steps: 1,
            prompt_len: 4,
            new_tokens: 4,
            decode_batches: vec![1, 3],
            gemm_reps: 1,
            gemm_square: 64,
            gemm_model_shape: (64, 32, 48),
            ..BenchConfig::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmResult {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub gflops: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeResult {
    pub batch: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    /// Generated tokens per second over the whole call (prefill included).
    pub tokens_per_s: f64,
    pub ms_per_step: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub threads: usize,
    /// Parameters of the model (tied embeddings counted once).
    pub params: usize,
    pub gemm_square: GemmResult,
    pub gemm_model: GemmResult,
    /// Real tokens trained per second (forward + backward + optimizer).
    pub train_tokens_per_s: f64,
    pub train_step_ms: f64,
    /// Mean milliseconds per step in each phase.
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    /// Training FLOPs per token: `6 * matmul params` (the LM head included, tied or not) plus
    /// attention scores and mixing, `12 * layers * seq_len * hidden`.
    pub train_flops_per_token: f64,
    /// Achieved training FLOP/s divided by the square GEMM rate.
    pub mfu: f64,
    pub decode: Vec<DecodeResult>,
}

fn gemm(m: usize, k: usize, n: usize, reps: usize, device: &Device) -> Result<GemmResult> {
    let a = Tensor::randn(0f32, 1.0, (m, k), device)?;
    let b = Tensor::randn(0f32, 1.0, (k, n), device)?;
    let _ = a.matmul(&b)?;
    device.synchronize()?;
    let t0 = Instant::now();
    for _ in 0..reps {
        let c = a.matmul(&b)?;
        drop(c);
    }
    device.synchronize()?;
    let s = t0.elapsed().as_secs_f64();
    Ok(GemmResult { m, k, n, gflops: 2.0 * (m * k * n * reps) as f64 / s / 1e9 })
}

/// Training FLOPs per token of `cfg` at context `seq_len`.
pub fn train_flops_per_token(cfg: &LlamaConfig, seq_len: usize) -> f64 {
    let (d, hd, i) = (cfg.hidden_size, cfg.head_dim(), cfg.intermediate_size);
    let (nh, nkv, l) = (cfg.num_attention_heads, cfg.num_kv_heads(), cfg.num_hidden_layers);
    let per_layer = d * nh * hd * 2 + d * nkv * hd * 2 + 3 * d * i;
    let matmul_params = l * per_layer + cfg.vocab_size * d;
    6.0 * matmul_params as f64 + 12.0 * (l * seq_len * nh * hd) as f64
}

fn random_tokens(n: usize, vocab: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// Runs every benchmark of `cfg`.
pub fn run(cfg: &BenchConfig) -> Result<BenchReport> {
    crate::runtime::tune_allocator();
    let device = crate::train::parse_device(&cfg.device)?;
    let model_cfg =
        LlamaConfig::preset(cfg.preset, cfg.vocab_size, (cfg.seq_len + 1).max(cfg.prompt_len + cfg.new_tokens));
    let gemm_square = gemm(cfg.gemm_square, cfg.gemm_square, cfg.gemm_square, cfg.gemm_reps, &device)?;
    let (m, k, n) = cfg.gemm_model_shape;
    let gemm_model = gemm(m, k, n, cfg.gemm_reps, &device)?;

    // Training: forward, backward, clip + AdamW, timed separately.
    let lm = CausalLm::init(&model_cfg, 0, &device)?;
    let mut rule = UpdateRule {
        optimizer: AdamW::new(lm.params(), AdamWConfig::default(), vec![])?,
        schedule: LrSchedule::constant(1e-4),
        grad_clip: 1.0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (mut fwd, mut bwd, mut opt, mut tokens) = (0f64, 0f64, 0f64, 0usize);
    for step in 0..cfg.warmup_steps + cfg.train_steps {
        let docs: Vec<Vec<u32>> =
            (0..cfg.batch_size).map(|_| random_tokens(cfg.seq_len + 1, cfg.vocab_size, &mut rng)).collect();
        let batch = Batch::documents(&docs, &device)?;
        let t0 = Instant::now();
        let loss = lm.lm_loss(&batch, None)?.mean()?;
        let _ = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let mut grads = Grads::backward(&loss, lm.params())?;
        device.synchronize()?;
        let t2 = Instant::now();
        rule.apply(&mut grads)?;
        device.synchronize()?;
        let t3 = Instant::now();
        if step >= cfg.warmup_steps {
            fwd += (t1 - t0).as_secs_f64();
            bwd += (t2 - t1).as_secs_f64();
            opt += (t3 - t2).as_secs_f64();
            tokens += batch.num_tokens();
        }
    }
    let steps = cfg.train_steps.max(1) as f64;
    let total = fwd + bwd + opt;
    let train_tokens_per_s = tokens as f64 / total.max(1e-12);
    let flops = train_flops_per_token(&model_cfg, cfg.seq_len);
    let mfu = flops * train_tokens_per_s / (gemm_square.gflops * 1e9);

    // Decoding with the KV cache, every row generating exactly `new_tokens` (no stop token).
    let frozen = lm.frozen()?;
    let sampling = SamplingConfig { max_new_tokens: cfg.new_tokens, temperature: 1.0, ..SamplingConfig::default() };
    let mut decode = Vec::new();
    for &b in &cfg.decode_batches {
        let prompts: Vec<Vec<u32>> = (0..b).map(|_| random_tokens(cfg.prompt_len, cfg.vocab_size, &mut rng)).collect();
        let seeds: Vec<u64> = (0..b as u64).collect();
        let _ = frozen.generate(&prompts[..1], &seeds[..1], &sampling)?; // warm up
        let t0 = Instant::now();
        let out = frozen.generate(&prompts, &seeds, &sampling)?;
        let s = t0.elapsed().as_secs_f64();
        let generated: usize = out.iter().map(|g| g.tokens.len()).sum();
        decode.push(DecodeResult {
            batch: b,
            prompt_len: cfg.prompt_len,
            new_tokens: cfg.new_tokens,
            tokens_per_s: generated as f64 / s,
            ms_per_step: 1e3 * s / cfg.new_tokens.max(1) as f64,
        });
    }
    Ok(BenchReport {
        config: cfg.clone(),
        threads: rayon::current_num_threads(),
        params: lm.params().num_elements(),
        gemm_square,
        gemm_model,
        train_tokens_per_s,
        train_step_ms: 1e3 * total / steps,
        forward_ms: 1e3 * fwd / steps,
        backward_ms: 1e3 * bwd / steps,
        optimizer_ms: 1e3 * opt / steps,
        train_flops_per_token: flops,
        mfu,
        decode,
    })
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "model {:?}: {} parameters, vocab {}, device {}, {} threads",
            c.preset, self.params, c.vocab_size, c.device, self.threads
        )?;
        for g in [&self.gemm_square, &self.gemm_model] {
            writeln!(f, "gemm {}x{}x{} (m x k x n): {:.1} GFLOP/s", g.m, g.k, g.n, g.gflops)?;
        }
        writeln!(
            f,
            "train (batch {} x {} tokens): {:.0} tokens/s, {:.1} ms/step (forward {:.1}, backward {:.1}, optimizer {:.1})",
            c.batch_size,
            c.seq_len,
            self.train_tokens_per_s,
            self.train_step_ms,
            self.forward_ms,
            self.backward_ms,
            self.optimizer_ms
        )?;
        writeln!(
            f,
            "train MFU: {:.1}% of the {}^3 GEMM rate ({:.2} MFLOP/token, {:.1} GFLOP/s achieved)",
            100.0 * self.mfu,
            c.gemm_square,
            self.train_flops_per_token / 1e6,
            self.train_flops_per_token * self.train_tokens_per_s / 1e9
        )?;
        for d in &self.decode {
            writeln!(
                f,
                "decode batch {:>3} (prompt {}, {} new): {:.0} tokens/s, {:.2} ms/step",
                d.batch, d.prompt_len, d.new_tokens, d.tokens_per_s, d.ms_per_step
            )?;
        }
        Ok(())
    }
}
