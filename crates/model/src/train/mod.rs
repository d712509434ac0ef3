//! Training building blocks and the causal-LM training loops.
//!
//! The pieces are separate so that every stage composes the same ones with its own loss:
//! [`Grads`] (gradients by parameter name: accumulation, global-norm clipping), [`AdamW`] (decoupled
//! weight decay that skips norms, biases and optionally embeddings; per-prefix learning-rate
//! multipliers; state that is saved), [`LrSchedule`] (warmup + cosine), [`UpdateRule`] (the three
//! together), [`checkpoint`] (atomic, resumable, several models per checkpoint) and the seeded data
//! order in [`data`]. [`pretrain`] and [`sft`] are the two loops built from them; a reward-model or
//! PPO loop builds its own the same way (two models means two `AdamW`s and two checkpoint parts).
//!
//! Design decision: nothing in a run depends on hidden state. Data order is a function of
//! `(seed, step)`, dropout masks come from a ChaCha stream saved in the checkpoint, and parameters,
//! moments and gradients are walked in name order, so on CPU a run resumed from a checkpoint ends
//! with bit-identical weights to an uninterrupted one.

pub mod checkpoint;
pub mod data;
pub mod grads;
pub mod loops;
pub mod optim;
pub mod schedule;

pub use grads::Grads;
pub use loops::{
    PretrainConfig, RunDir, SftConfig, StepMetrics, TrainConfig, TrainEvent, TrainReport, UpdateRule, eval_loss,
    eval_stream, no_observer, pretrain, sft,
};
pub use optim::{AdamW, AdamWConfig, ParamGroup, group_of};
pub use schedule::LrSchedule;

use candle_core::Device;

use crate::error::{ModelError, Result};

/// The device named by `"cpu"`, `"cuda"` or `"cuda:N"`.
pub fn parse_device(name: &str) -> Result<Device> {
    let bad = |why: String| ModelError::Device(name.to_string(), why);
    match name.trim() {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map_err(|e| bad(format!("bad GPU ordinal: {e}")))?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(bad("this build has no CUDA support: rebuild with `--features cuda`".into()));
            }
            Device::new_cuda(ordinal).map_err(|e| bad(e.to_string()))
        }
        other => Err(bad(format!("unknown device {other:?}: use \"cpu\" or \"cuda:N\""))),
    }
}
