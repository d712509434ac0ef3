//! world
pub mod data;
pub mod meta;
pub mod seed;
pub mod text;
