//! model
pub mod config;
pub mod dropout;
pub mod error;
pub mod fsutil;
pub mod kv_cache;
pub mod model;
pub mod ops;
pub mod params;

pub use config::{LlamaConfig, Preset};
pub use error::{ModelError, Result};
