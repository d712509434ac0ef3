//! The crate's typed error.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages say what failed, where, and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (shape mismatch, unsupported op on a device, ...).
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file could not be parsed or written.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A config (model, training, generation) breaks one of its rules.
    #[error("invalid config: {0}")]
    Config(String),

    /// A checkpoint or model directory is missing something or has the wrong shapes.
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    /// The tokenizer could not be loaded, trained or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The device string is not one of "cpu" or "cuda:N", or the device is not available.
    #[error("device {0:?}: {1}")]
    Device(String, String),

    /// Inputs to a function do not fit together (empty batch, token out of range, ...).
    #[error("{0}")]
    Input(String),

    /// A training observer asked to stop, or returned an error of its own.
    #[error("stopped by the step observer: {0}")]
    Observer(String),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { action, path: path.into(), source }
    }
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ModelError::Checkpoint { path: path.into(), msg: msg.into() }
    }
}
