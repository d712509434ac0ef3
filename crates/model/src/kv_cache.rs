//! A preallocated key/value cache for decoding.
//!
//! Each layer owns two buffers `[B, n_kv_heads, capacity, head_dim]` allocated once; a decode step
//! writes its new column in place (`slice_set`) and attends over a narrowed view, so the cache never
//! grows or copies.

use candle_core::{DType, Device, Tensor};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};

#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// A cache for `batch` rows of up to `capacity` columns.
    pub fn new(cfg: &LlamaConfig, batch: usize, capacity: usize, device: &Device) -> Result<Self> {
        let shape = (batch, cfg.num_kv_heads(), capacity, cfg.head_dim());
        let mut keys = Vec::with_capacity(cfg.num_hidden_layers);
        let mut values = Vec::with_capacity(cfg.num_hidden_layers);
        for _ in 0..cfg.num_hidden_layers {
            keys.push(Tensor::zeros(shape, DType::F32, device)?);
            values.push(Tensor::zeros(shape, DType::F32, device)?);
        }
        Ok(KvCache { keys, values, len: 0, capacity })
    }

    /// Columns filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets the contents (the buffers are kept).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Writes `k`, `v` `[B, nkv, T, hd]` of `layer` at the current length and returns views of all
    /// cached columns `[B, nkv, len + T, hd]`.
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        if self.len + t > self.capacity {
            return Err(ModelError::Input(format!(
                "KV cache overflow: {} + {t} columns exceed its capacity of {}",
                self.len, self.capacity
            )));
        }
        let (kc, vc) = (&self.keys[layer], &self.values[layer]);
        kc.slice_set(&k.detach(), 2, self.len)?;
        vc.slice_set(&v.detach(), 2, self.len)?;
        Ok((kc.narrow(2, 0, self.len + t)?, vc.narrow(2, 0, self.len + t)?))
    }

    /// Marks `t` more columns as filled (after every layer has appended them).
    pub(crate) fn advance(&mut self, t: usize) -> Result<()> {
        self.len += t;
        Ok(())
    }
}
