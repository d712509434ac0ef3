//! End-to-end tests over the smoke pipeline.
