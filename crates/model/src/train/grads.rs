//! Gradients by parameter name: accumulation over micro-batches and global-norm clipping.

use std::collections::BTreeMap;

use candle_core::Tensor;
use candle_core::backprop::GradStore;

use crate::error::Result;
use crate::params::Params;

/// Gradients keyed by parameter name, in name order (so norms are summed in a fixed order).
#[derive(Debug, Clone, Default)]
pub struct Grads {
    map: BTreeMap<String, Tensor>,
}

impl Grads {
    /// The gradients of `params`' variables found in a backward pass's store. Variables the loss
    /// does not depend on are absent.
    pub fn from_store(params: &Params, store: &GradStore) -> Self {
        let map = params
            .iter()
            .filter_map(|(name, var)| store.get(var.as_tensor()).map(|g| (name.clone(), g.clone())))
            .collect();
        Grads { map }
    }

    /// `loss.backward()` and [`Grads::from_store`] in one call.
    pub fn backward(loss: &Tensor, params: &Params) -> Result<Self> {
        let store = loss.backward()?;
        Ok(Grads::from_store(params, &store))
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.map.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.map.iter()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Names of `params` that received no gradient.
    pub fn missing(&self, params: &Params) -> Vec<String> {
        params.names().filter(|n| !self.map.contains_key(*n)).cloned().collect()
    }

    /// Adds `other` into `self` (gradient accumulation: the sum over micro-batches).
    pub fn accumulate(&mut self, other: Grads) -> Result<()> {
        for (name, g) in other.map {
            let sum = match self.map.remove(&name) {
                Some(acc) => (acc + g)?,
                None => g,
            };
            self.map.insert(name, sum);
        }
        Ok(())
    }

    /// Multiplies every gradient by `s`.
    pub fn scale(&mut self, s: f64) -> Result<()> {
        for g in self.map.values_mut() {
            *g = (&*g * s)?;
        }
        Ok(())
    }

    /// The L2 norm of all gradients together.
    pub fn global_norm(&self) -> Result<f64> {
        let mut sq = 0f64;
        for g in self.map.values() {
            sq += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        }
        Ok(sq.sqrt())
    }

    /// Scales the gradients so their global norm is at most `max_norm`; returns the norm before
    /// clipping (what training logs as `grad_norm`).
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        if norm.is_finite() && norm > max_norm {
            self.scale(max_norm / (norm + 1e-6))?;
        }
        Ok(norm)
    }
}
