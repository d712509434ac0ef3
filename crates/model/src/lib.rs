//! model
pub mod attention;
pub mod batch;
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
pub mod tokenizer;
pub mod train;

pub use config::{LlamaConfig, Preset};
pub use error::{ModelError, Result};
