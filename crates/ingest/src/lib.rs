//! User data into the pipeline's tables.
//!
//! Consumes files users have (JSONL, JSON, CSV/TSV, Parquet, plain text) in
//! the common instruction-tuning layouts, and produces the canonical tables
//! declared in `lineage::tables`:
//!
//! | stage                   | reads                                                  | writes |
//! |-------------------------|--------------------------------------------------------|--------|
//! | `ingest.world`          | the embedded synthetic world (no files)                | `pretrain_text`, `prompts`, `demonstrations`, `benchmarks`, `quarantine` |
//! | `ingest.prompts`        | prompts (any layout with a prompt)                     | `prompts`, `quarantine` |
//! | `ingest.demonstrations` | prompt/completion, Alpaca, chat `messages`             | `demonstrations`, `prompts`, `quarantine` |
//! | `ingest.preferences`    | TRL pairs (standard, conversational), HH-RLHF, K-way rankings | `rankings`, `comparisons`, `prompts`, `quarantine` |
//! | `ingest.text`           | `.txt` blocks, or a `text` column                      | `pretrain_text`, `quarantine` |
//! | `ingest.tokenizer`      | a `pretrain_text` table, or a user's `tokenizer.json`  | `model/tokenizer.json`, `model/special_tokens.json` |
//! | `ingest.export_labels`  | a `label_tasks` (or rankings-shaped) table             | `label_tasks` + `label_tasks.jsonl`, `label_tasks.csv` |
//! | `ingest.import_labels`  | the filled-in label file, and the exported tasks       | `rankings`, `comparisons`, `quarantine` |
//!
//! The code map: [`read`] turns a file into rows of named JSON values;
//! [`formats`] detects the layout and turns a row into an example (with
//! [`fields`] for single values and [`chat`] for conversations); [`hygiene`]
//! applies the paper's prompt hygiene (dedup, per-user cap, split by user, PII
//! scrubbing, length limits); [`quarantine`] keeps every rejected row;
//! [`stages`] holds the stage definitions.
//!
//! Key design decision: **no row is silently lost.** A malformed row goes to
//! the `quarantine` table with its file, line, field, reason and raw text, and
//! the step fails only when a file has more than `max_bad_fraction` of them,
//! with a message that names the file and the first bad row. Rows removed by
//! hygiene (duplicates, over the per-user cap, too long) are quarantined too,
//! with their reason, and counted in the metrics.

pub mod chat;
pub mod common;
pub mod fields;
pub mod formats;
pub mod hygiene;
pub mod pii;
pub mod quarantine;
pub mod read;
pub mod stages;
pub mod stats;

use lineage::stage;

/// The stages of this crate.
pub fn stages() -> Vec<Box<dyn lineage::Stage>> {
    vec![
        stage::<stages::world::WorldStage>(),
        stage::<stages::prompts::Prompts>(),
        stage::<stages::demonstrations::Demonstrations>(),
        stage::<stages::preferences::Preferences>(),
        stage::<stages::text::Text>(),
        stage::<stages::tokenizer::TokenizerStage>(),
        stage::<stages::labels::ExportLabels>(),
        stage::<stages::labels::ImportLabels>(),
    ]
}
