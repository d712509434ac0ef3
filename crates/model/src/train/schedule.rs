//! Linear warmup then cosine decay of the learning rate.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// `lr(step)`: rises linearly from `peak_lr / warmup_steps` to `peak_lr` over the first
/// `warmup_steps` updates, then follows half a cosine down to `min_lr_ratio * peak_lr` at
/// `total_steps`, and stays there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub min_lr_ratio: f64,
}

impl LrSchedule {
    pub fn new(peak_lr: f64, warmup_steps: u64, total_steps: u64, min_lr_ratio: f64) -> Self {
        LrSchedule { peak_lr, warmup_steps, total_steps, min_lr_ratio }
    }

    /// A constant learning rate.
    pub fn constant(lr: f64) -> Self {
        LrSchedule { peak_lr: lr, warmup_steps: 0, total_steps: 0, min_lr_ratio: 1.0 }
    }

    pub fn validate(&self) -> Result<()> {
        let peak_ok = self.peak_lr.is_finite() && self.peak_lr >= 0.0;
        if !peak_ok || !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(ModelError::Config(format!(
                "learning rate schedule needs peak_lr >= 0 and min_lr_ratio in [0, 1]; got {self:?}"
            )));
        }
        Ok(())
    }

    /// The learning rate of update number `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        let min = self.peak_lr * self.min_lr_ratio;
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        if step >= self.total_steps || self.total_steps <= self.warmup_steps {
            return if self.total_steps == 0 { self.peak_lr } else { min };
        }
        let progress = (step - self.warmup_steps) as f64 / (self.total_steps - self.warmup_steps) as f64;
        min + 0.5 * (self.peak_lr - min) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_floor() {
        let s = LrSchedule::new(1.0, 10, 110, 0.1);
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.55).abs() < 1e-12);
        assert!((s.lr(110) - 0.1).abs() < 1e-12);
        assert!((s.lr(500) - 0.1).abs() < 1e-12);
        assert!((0..110).all(|i| s.lr(i + 1) <= s.lr(i) + 1e-12 || i < 10));
        assert_eq!(LrSchedule::constant(0.3).lr(1000), 0.3);
    }
}
