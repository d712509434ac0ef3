//! The synthetic instruction world: everything the InstructGPT pipeline needs that the paper got from
//! people, generated offline from a seed.
//!
//! - **Consumes**: a seed and a size ([`WorldSize`]) or explicit counts ([`WorldConfig`]); the
//!   definitions under `datasets/world/` (entities, facts, templates, lexicons), embedded at compile
//!   time so nothing is read at run time.
//! - **Produces** (in memory; the `ingest` stage turns them into Parquet tables): the pretraining
//!   corpus with a validation slice ([`World::pretrain_docs`]), instruction prompts with users, families,
//!   suggested purposes and hidden [`TaskMeta`] ([`World::prompts`]), demonstrations written by
//!   labelers with habits ([`World::demonstrations`], [`writers`]), closed benchmarks ([`World::benchmarks`]); and, for the stages that
//!   read decoded text, the gold judge ([`judge::judge`]), simulated labelers ([`labelers::Pool`]),
//!   response degradations ([`degrade`]) and evaluation helpers ([`eval`]).
//!
//! Key design decision: the world's ground truth is known, so quality is measured, not guessed. The
//! judge is graded (partial credit, penalties by degree) so that samples rarely tie, and the labelers
//! are noisy variants of it calibrated to the paper's inter-labeler agreement on non-tied pairs.
//! Everything is a pure function of the seed: same seed, same bytes, on any machine.
//!
//! Architecture invariant: this crate knows nothing about pipelines, artifacts, tensors or Parquet.

pub mod benchmarks;
pub mod corpus;
pub mod data;
pub mod degrade;
pub mod eval;
pub mod judge;
pub mod labelers;
pub mod meta;
pub mod prompts;
pub mod seed;
mod slots;
pub mod text;
mod world;
pub mod writers;

pub use judge::{Axes, AxisWeights, Flags, Judgment, judge};
pub use labelers::{Agreement, Group, Labeler, Pool, Preference, agreement};
pub use meta::{
    BenchmarkItem, Constraint, Demonstration, DocKind, DocSplit, Family, Instruction, PretrainDoc, Prompt, Purpose,
    Response, Task, TaskMeta,
};
pub use prompts::ideal_response;
pub use world::{DEMO_HABIT_RATE, Gender, Person, Town, World, WorldConfig, WorldSize, WorldStats};
