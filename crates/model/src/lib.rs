//! The shared model crate: a Llama-family decoder in candle, its heads, tokenizer and instruction
//! format, batched sampling, and the training building blocks every stage (SFT, RM, PPO) uses.
//!
//! It consumes and produces Hugging Face model directories (see [`hub`]); it knows nothing about
//! pipelines, artifacts or lineage.
//!
//! # Key design decision: every op on the training path has a backward kernel
//!
//! candle-nn's fused kernels (`ops::rms_norm`, `ops::softmax_last_dim`, `rotary_emb::rope*`) record
//! no backward op: gradients silently stop at them while the loss still falls. Composed candle ops
//! are differentiable but slow on a 2-core CPU (allocation and memory traffic, not arithmetic,
//! dominate). So RMSNorm, rotary embedding, SwiGLU, the per-token log-prob/entropy and the whole
//! causal attention are our own `CustomOp`s with forward and backward CPU kernels ([`ops`],
//! [`attention`]); each is tested against its composed version, and a test checks that every
//! parameter receives a non-zero gradient. On other devices the composed versions run.
//!
//! # Code map
//! - [`config`]: `LlamaConfig`, shaped like HF's `config.json`, presets `smoke`/`tiny`/`small`.
//! - [`model`]: the network (`Input`, `Transformer`, `Llama`, `ScalarHead`, `ScalarNet`), HF names.
//! - [`params`]: named parameters (`Params`), seeded init, safetensors IO.
//! - [`lm`]: what stages hold: `CausalLm` (policy / SFT / reference) and `ScalarModel` (reward /
//!   value), with losses, per-token scores, rewards, values, sampling, load and save.
//! - [`batch`]: THE batch layout (prompts left-padded, responses right-padded, positions count
//!   real tokens), shared by training and generation.
//! - [`generate`]: batched sampling with a preallocated [`kv_cache`], per-sequence seeds.
//! - [`tokenizer`]: `tokenizer.json` loading, BPE training, THE `InstructionFormat`.
//! - [`train`]: AdamW with parameter groups and saved state, warmup + cosine, gradient
//!   accumulation and clipping, atomic checkpoints, the pretraining and SFT loops.
//! - [`hub`], [`fsutil`]: model directories and crash-safe writes.
//!
//! Architecture Invariant: log-probs recomputed in training for a sampled sequence equal the ones
//! recorded at sampling time (same layout, same positions), to float rounding.
//!
//! Architecture Invariant: on the CPU, training is bit-for-bit reproducible from its seed, and a
//! run resumed from a checkpoint ends with the same weights as an uninterrupted one.
pub mod attention;
pub mod batch;
pub mod bench;
pub mod bundle;
pub mod config;
pub mod dropout;
pub mod error;
pub mod fsutil;
pub mod generate;
pub mod hub;
pub mod kv_cache;
pub mod lm;
pub mod model;
pub mod ops;
pub mod params;
pub mod runtime;
#[cfg(test)]
mod test_util;
pub mod tokenizer;
pub mod train;

pub use config::{LlamaConfig, Preset};
pub use error::{ModelError, Result};
