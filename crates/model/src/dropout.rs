//! Residual dropout with our own seeded RNG.
//!
//! candle's CPU random number generator cannot be seeded, so the masks come from a ChaCha stream
//! whose full state (seed, stream, word position) is saved in checkpoints: a resumed run draws the
//! same masks as an uninterrupted one.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The saved state of a ChaCha8 stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: [u8; 32],
    pub stream: u64,
    /// As a decimal string: JSON numbers cannot hold a u128.
    pub word_pos: String,
}

impl RngState {
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        RngState { seed: rng.get_seed(), stream: rng.get_stream(), word_pos: rng.get_word_pos().to_string() }
    }

    pub fn restore(&self) -> Result<ChaCha8Rng> {
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        let pos: u128 = self
            .word_pos
            .parse()
            .map_err(|e| crate::ModelError::Input(format!("bad RNG word position {:?}: {e}", self.word_pos)))?;
        rng.set_word_pos(pos);
        Ok(rng)
    }
}

/// Inverted dropout: zeroes each element with probability `p` and scales the rest by `1/(1-p)`.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    rng: ChaCha8Rng,
}

impl Dropout {
    pub fn new(p: f64, seed: u64) -> Self {
        Dropout { p: p as f32, rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    pub fn p(&self) -> f64 {
        self.p as f64
    }

    pub fn state(&self) -> RngState {
        RngState::capture(&self.rng)
    }

    pub fn set_state(&mut self, s: &RngState) -> Result<()> {
        self.rng = s.restore()?;
        Ok(())
    }

    pub fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let scale = 1.0 / keep;
        let mask: Vec<f32> =
            (0..x.elem_count()).map(|_| if self.rng.random::<f32>() < keep { scale } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        Ok((x * mask)?)
    }
}
