//! model
pub mod config;
pub mod error;
pub mod ops;

pub use config::{LlamaConfig, Preset};
pub use error::{ModelError, Result};
