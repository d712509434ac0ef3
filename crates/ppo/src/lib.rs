//! ppo (stages land in a later change).

pub mod math;

/// The stages of this crate.
pub fn stages() -> Vec<Box<dyn lineage::Stage>> {
    Vec::new()
}
