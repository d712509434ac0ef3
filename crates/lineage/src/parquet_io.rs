//! Reading and writing declared tables as Parquet.
//!
//! Rows are plain serde structs (see [`crate::tables`]), converted with
//! serde_arrow against the table's declared schema. Every file we write
//! carries its lineage in the Parquet key-value metadata, so a file copied out
//! of the store still says which artifact made it and from what.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::schema::TableSpec;

/// Prefix of our keys in the Parquet key-value metadata.
pub const META_PREFIX: &str = "instructgpt.";

/// What a table file says about where it came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileLineage {
    pub artifact_key: String,
    pub stage: String,
    pub step: String,
    /// Input name -> content hash of each upstream artifact.
    pub inputs: BTreeMap<String, String>,
}

impl FileLineage {
    fn key_values(&self, spec: &TableSpec) -> Vec<KeyValue> {
        let inputs = serde_json::to_string(&self.inputs).unwrap_or_default();
        [
            ("artifact_key", self.artifact_key.clone()),
            ("stage", self.stage.clone()),
            ("step", self.step.clone()),
            ("inputs", inputs),
            ("table", spec.name.to_string()),
            ("schema_fingerprint", spec.fingerprint()),
        ]
        .into_iter()
        .map(|(k, v)| KeyValue::new(format!("{META_PREFIX}{k}"), v))
        .collect()
    }
}

/// Rows and schema of a written table, for the manifest.
#[derive(Debug, Clone)]
pub struct WrittenTable {
    pub rows: u64,
}

fn writer_properties(spec: &TableSpec, lineage: &FileLineage) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_key_value_metadata(Some(lineage.key_values(spec)))
        .build()
}

/// Writes `rows` as the table `spec` to `path` (fsynced before returning).
pub fn write_rows<T: Serialize>(
    path: &Path,
    spec: &TableSpec,
    rows: &[T],
    lineage: &FileLineage,
) -> Result<WrittenTable> {
    let batch = serde_arrow::to_record_batch(&spec.fields(), &rows)
        .with_context(|| format!("converting rows of table `{}` to Arrow", spec.name))?;
    write_batches(path, spec, &[batch], lineage)
}

/// Writes record batches (which must have the declared schema) as the table.
pub fn write_batches(
    path: &Path,
    spec: &TableSpec,
    batches: &[RecordBatch],
    lineage: &FileLineage,
) -> Result<WrittenTable> {
    let schema = Arc::new(spec.arrow_schema());
    for b in batches {
        spec.check(&b.schema(), path)?;
    }
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(writer_properties(spec, lineage)))?;
    let mut rows = 0u64;
    for b in batches {
        // Cast to the declared schema so nullability metadata matches exactly.
        let b = RecordBatch::try_new(schema.clone(), b.columns().to_vec())?;
        rows += b.num_rows() as u64;
        writer.write(&b)?;
    }
    let file = writer.into_inner()?;
    file.sync_all()?;
    Ok(WrittenTable { rows })
}

/// Reads a declared table, checking its schema first.
pub fn read_rows<T: DeserializeOwned>(path: &Path, spec: &TableSpec) -> Result<Vec<T>> {
    let batches = read_batches(path, Some(spec))?;
    let mut out = Vec::new();
    for b in &batches {
        let rows: Vec<T> = serde_arrow::from_record_batch(b)
            .with_context(|| format!("{}: reading rows of table `{}`", path.display(), spec.name))?;
        out.extend(rows);
    }
    Ok(out)
}

/// Reads all record batches of a Parquet file, checking the schema against
/// `spec` when given.
pub fn read_batches(path: &Path, spec: Option<&TableSpec>) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    if let Some(spec) = spec {
        spec.check(builder.schema(), path)?;
    }
    let reader = builder.build()?;
    reader.collect::<std::result::Result<Vec<_>, _>>().with_context(|| format!("reading {}", path.display()))
}

/// The Arrow schema and row count of a Parquet file, without reading data.
pub fn schema_and_rows(path: &Path) -> Result<(Arc<Schema>, u64)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let rows = builder.metadata().file_metadata().num_rows() as u64;
    Ok((builder.schema().clone(), rows))
}

/// Our lineage keys from a Parquet file's key-value metadata (prefix removed).
pub fn read_lineage(path: &Path) -> Result<BTreeMap<String, String>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .ok_or_else(|| anyhow!("{}: no key-value metadata", path.display()))?;
    Ok(kv
        .iter()
        .filter_map(|e| {
            let k = e.key.strip_prefix(META_PREFIX)?;
            Some((k.to_string(), e.value.clone().unwrap_or_default()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{content_digest, file_digest};
    use crate::tables::{PRETRAIN_TEXT, PretrainTextRow};

    fn rows() -> Vec<PretrainTextRow> {
        (0..5)
            .map(|i| PretrainTextRow {
                doc_id: format!("d{i}"),
                text: format!("the cat sat {i} times"),
                kind: "story".into(),
                split: "train".into(),
                source: "world".into(),
            })
            .collect()
    }

    #[test]
    fn round_trip_with_lineage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pretrain_text.parquet");
        let lineage = FileLineage {
            artifact_key: "k1".into(),
            stage: "s".into(),
            step: "st".into(),
            inputs: [("text".to_string(), "abc".to_string())].into(),
        };
        let w = write_rows(&path, &PRETRAIN_TEXT, &rows(), &lineage).unwrap();
        assert_eq!(w.rows, 5);
        let back: Vec<PretrainTextRow> = read_rows(&path, &PRETRAIN_TEXT).unwrap();
        assert_eq!(back, rows());
        let meta = read_lineage(&path).unwrap();
        assert_eq!(meta["artifact_key"], "k1");
        assert_eq!(meta["table"], "pretrain_text");
        assert_eq!(meta["schema_fingerprint"], PRETRAIN_TEXT.fingerprint());
        assert!(meta["inputs"].contains("abc"));
    }

    #[test]
    fn content_digest_ignores_lineage_but_not_data() {
        let dir = tempfile::tempdir().unwrap();
        let digest = |name: &str, key: &str, rows: &[PretrainTextRow]| {
            let path = dir.path().join(format!("{name}.parquet"));
            let lineage = FileLineage { artifact_key: key.into(), ..Default::default() };
            write_rows(&path, &PRETRAIN_TEXT, rows, &lineage).unwrap();
            let full = file_digest(&path).unwrap();
            (full.clone(), content_digest(&path, &full).unwrap())
        };
        let (full_a, content_a) = digest("a", "key-one", &rows());
        let (full_b, content_b) = digest("b", "key-two", &rows());
        assert_ne!(full_a, full_b, "the key is in the bytes");
        assert_eq!(content_a, content_b, "but not in the content");
        let mut other = rows();
        other[2].text.push('!');
        let (_, content_c) = digest("c", "key-one", &other);
        assert_ne!(content_a, content_c);
    }

    #[test]
    fn reading_a_mismatched_table_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        write_rows(&path, &PRETRAIN_TEXT, &rows(), &FileLineage::default()).unwrap();
        let err = read_rows::<crate::tables::PromptRow>(&path, &crate::tables::PROMPTS).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("x.parquet") && msg.contains("prompt_id"), "{msg}");
    }
}
