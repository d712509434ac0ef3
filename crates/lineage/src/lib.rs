//! Artifacts with content-hashed lineage, and the interface every stage
//! implements.
//!
//! Consumes nothing and produces nothing itself: it is the layer between the
//! pipeline runner (`xtask`) and the stage crates. It owns
//!
//! - the **store** ([`store`]): complete, verified artifact directories, one
//!   lock per key, atomic publishing (write, fsync, rename; manifest last);
//! - the **manifest** ([`manifest`]) and the two hashes: the *key*, known
//!   before running ([`key`]), and the *content hash*, known after;
//! - the **stage interface** ([`stage`]): typed parameters, declared inputs,
//!   the context a stage reads and writes through, and the executor;
//! - every **table schema** ([`tables`]), declared once and checked on read,
//!   with Parquet IO that stamps lineage into each file ([`parquet_io`]).
//!
//! Key design decision: a downstream key is made of its inputs' *content*
//! hashes, not their keys, and a Parquet file's content digest leaves out the
//! lineage stamped into its footer. So an upstream step that reruns and
//! produces the same data leaves everything downstream cached (early cutoff).

pub mod cli;
pub mod hash;
pub mod key;
pub mod log;
pub mod manifest;
pub mod parquet_io;
pub mod schema;
pub mod stage;
pub mod store;
pub mod tables;
pub mod testing;

pub use manifest::Manifest;
pub use schema::{Col, ColType, TableSpec};
pub use stage::{
    Arity, CodeIdentity, InputArtifact, InputSpec, Outcome, ParamError, Progress, Stage, StageContext, StepRequest,
    TypedStage, Validate, derive_seed, execute, stage,
};
pub use store::{Artifact, Store};
