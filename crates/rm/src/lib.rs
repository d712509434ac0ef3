//! rm
