//! codeid
