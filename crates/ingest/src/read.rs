//! Reading user files into rows of named JSON values, whatever the container.
//!
//! Every reader yields the same thing: a list of [`Record`]s (a map of column
//! name to JSON value, plus where the row came from) and, for rows that
//! cannot even be read (a line that is not JSON, a CSV row with the wrong
//! number of fields), an entry in the [`Quarantine`]. What the columns *mean*
//! is decided later, in [`crate::formats`].
//!
//! | extension          | container                                   | `line` is          |
//! |--------------------|---------------------------------------------|--------------------|
//! | `.jsonl`, `.ndjson`| one JSON object per line                    | the line           |
//! | `.json`            | one array of objects (or JSON lines)        | the array index    |
//! | `.csv`, `.tsv`     | a header row, then rows                     | the line           |
//! | `.parquet`         | any string-like, numeric, list or struct columns | the row       |
//! | `.txt`, `.md`      | documents separated by blank lines (`text`) | the block's first line |

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type};
use arrow::datatypes::{UInt8Type, UInt16Type, UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

use crate::quarantine::{Origin, Quarantine, RowError};

/// One readable row.
#[derive(Debug, Clone)]
pub struct Record {
    pub origin: Origin,
    pub fields: Map<String, Value>,
}

/// The container of a file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Jsonl,
    Json,
    Csv { delimiter: u8 },
    Parquet,
    Txt,
}

impl Container {
    pub fn of(path: &str) -> Result<Container> {
        let ext = Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        Ok(match ext.as_str() {
            "jsonl" | "ndjson" => Container::Jsonl,
            "json" => Container::Json,
            "csv" => Container::Csv { delimiter: b',' },
            "tsv" => Container::Csv { delimiter: b'\t' },
            "parquet" => Container::Parquet,
            "txt" | "md" | "text" => Container::Txt,
            _ => bail!(
                "{path}: cannot tell the file's type from its extension `{ext}`; name it .jsonl, .json, .csv, .tsv, .parquet or .txt"
            ),
        })
    }
}

/// Reads every row of `path`; unreadable rows go to `q`. Fails only when the
/// file as a whole cannot be read.
pub fn read_file(path: &str, q: &mut Quarantine) -> Result<(Container, Vec<Record>)> {
    let container = Container::of(path)?;
    let (records, bad) = match container {
        Container::Parquet => read_parquet(path)?,
        _ => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
            let text = String::from_utf8(bytes).map_err(|e| {
                let line = e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
                anyhow!("{path}: line {line} is not valid UTF-8; save the file as UTF-8")
            })?;
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            match container {
                Container::Jsonl => read_jsonl(path, text),
                Container::Json => read_json(path, text)?,
                Container::Csv { delimiter } => read_csv(path, text, delimiter)?,
                Container::Txt => (read_txt(path, text), Vec::new()),
                Container::Parquet => unreachable!("handled above"),
            }
        }
    };
    q.count_rows(path, (records.len() + bad.len()) as u64);
    for (origin, err) in bad {
        q.bad(&origin, err);
    }
    Ok((container, records))
}

type Bad = Vec<(Origin, RowError)>;

fn origin(file: &str, line: usize, raw: &str) -> Origin {
    Origin { file: file.to_string(), line: line as i64, raw: raw.to_string() }
}

fn read_jsonl(file: &str, text: &str) -> (Vec<Record>, Bad) {
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let o = origin(file, i + 1, line);
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(fields)) => records.push(Record { origin: o, fields }),
            Ok(other) => bad.push((o, RowError::row(format!("expected a JSON object, got {}", kind_of(&other))))),
            Err(e) => bad.push((o, RowError::row(format!("not valid JSON: {e}")))),
        }
    }
    (records, bad)
}

fn read_json(file: &str, text: &str) -> Result<(Vec<Record>, Bad)> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            // A `.json` file that is really JSON lines: read it as such.
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            if lines.next().is_some_and(|l| serde_json::from_str::<Map<String, Value>>(l).is_ok()) {
                return Ok(read_jsonl(file, text));
            }
            bail!(
                "{file}: not valid JSON ({e}); a .json file holds one array of objects, [{{...}}, {{...}}]; for one object per line, name it .jsonl"
            );
        }
    };
    let items = match value {
        Value::Array(items) => items,
        Value::Object(_) => vec![value],
        other => bail!("{file}: expected an array of objects, got {}", kind_of(&other)),
    };
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let raw = item.to_string();
        let o = origin(file, i + 1, &raw);
        match item {
            Value::Object(fields) => records.push(Record { origin: o, fields }),
            other => bad.push((o, RowError::row(format!("expected a JSON object, got {}", kind_of(&other))))),
        }
    }
    Ok((records, bad))
}

fn read_csv(file: &str, text: &str, delimiter: u8) -> Result<(Vec<Record>, Bad)> {
    let mut reader =
        csv::ReaderBuilder::new().delimiter(delimiter).flexible(true).has_headers(true).from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .with_context(|| format!("{file}: reading the header row"))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if headers.iter().all(String::is_empty) {
        bail!("{file}: the first row must name the columns (e.g. prompt,user_id)");
    }
    // Read everything first so each row's raw text is the bytes up to the next row.
    let mut rows: Vec<(usize, usize, std::result::Result<csv::StringRecord, String>)> = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let start = reader.position().clone();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let pos = record.position().cloned().unwrap_or(start);
                rows.push((pos.line() as usize, pos.byte() as usize, Ok(record.clone())));
            }
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(start.line() as usize);
                rows.push((line, start.byte() as usize, Err(e.to_string())));
                if !matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }) {
                    break;
                }
            }
        }
    }
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for i in 0..rows.len() {
        let (line, start, ref rec) = rows[i];
        let end = rows.get(i + 1).map_or(text.len(), |r| r.1).max(start);
        let raw = text.get(start..end).unwrap_or("").trim_end_matches(['\r', '\n']);
        let o = origin(file, line, raw);
        match rec {
            Err(e) => bad.push((o, RowError::row(format!("unreadable CSV row: {e}")))),
            Ok(r) if r.iter().all(|f| f.trim().is_empty()) => {}
            Ok(r) if r.len() != headers.len() => bad.push((
                o,
                RowError::row(format!(
                    "has {} fields but the header has {}; quote fields that contain the delimiter",
                    r.len(),
                    headers.len()
                )),
            )),
            Ok(r) => {
                let fields = headers
                    .iter()
                    .zip(r.iter())
                    .filter(|(h, _)| !h.is_empty())
                    .map(|(h, v)| (h.clone(), Value::String(v.to_string())))
                    .collect();
                records.push(Record { origin: o, fields });
            }
        }
    }
    Ok((records, bad))
}

/// One document per blank-line-separated block; `line` is its first line.
fn read_txt(file: &str, text: &str) -> Vec<Record> {
    let mut records = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut first = 0;
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().chain(std::iter::once(&"")).enumerate() {
        if line.trim().is_empty() {
            if !block.is_empty() {
                let doc = block.join("\n");
                let mut fields = Map::new();
                fields.insert("text".into(), Value::String(doc.clone()));
                records.push(Record { origin: origin(file, first + 1, &doc), fields });
                block.clear();
            }
        } else {
            if block.is_empty() {
                first = i;
            }
            block.push(line);
        }
    }
    records
}

fn read_parquet(file: &str) -> Result<(Vec<Record>, Bad)> {
    let f = File::open(file).with_context(|| format!("opening {file}"))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .with_context(|| format!("{file}: not a readable Parquet file"))?
        .build()
        .with_context(|| format!("{file}: not a readable Parquet file"))?;
    let (mut records, mut bad) = (Vec::new(), Vec::new());
    let mut line = 0;
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {file}"))?;
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            line += 1;
            let mut fields = Map::new();
            let mut error = None;
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                let value = cell(column, row).unwrap_or_else(|e| {
                    error.get_or_insert_with(|| RowError::new(field.name(), e));
                    // The cell as Arrow shows it (bytes for binary), for the quarantine table.
                    format!("{:?}", column.slice(row, 1)).into()
                });
                fields.insert(field.name().clone(), value);
            }
            let o = origin(file, line, &Value::Object(fields.clone()).to_string());
            match error {
                Some(e) => bad.push((o, e)),
                None => records.push(Record { origin: o, fields }),
            }
        }
    }
    Ok((records, bad))
}

/// One Arrow cell as JSON: strings, numbers, booleans, lists and structs;
/// anything else as its display string. Binary cells must hold UTF-8 text:
/// anything else is the error, which quarantines the row.
fn cell(a: &ArrayRef, i: usize) -> std::result::Result<Value, String> {
    if a.is_null(i) {
        return Ok(Value::Null);
    }
    let list = |values: ArrayRef| -> std::result::Result<Value, String> {
        Ok(Value::Array((0..values.len()).map(|j| cell(&values, j)).collect::<std::result::Result<_, _>>()?))
    };
    let utf8 = |bytes: &[u8]| match std::str::from_utf8(bytes) {
        Ok(s) => Ok(Value::String(s.to_string())),
        Err(e) => Err(format!("binary value is not UTF-8 text (invalid byte at offset {})", e.valid_up_to())),
    };
    let float = |x: f64| serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null);
    Ok(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i).into(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i).into(),
        DataType::Utf8View => a.as_string_view().value(i).into(),
        DataType::Binary => utf8(a.as_binary::<i32>().value(i))?,
        DataType::LargeBinary => utf8(a.as_binary::<i64>().value(i))?,
        DataType::BinaryView => utf8(a.as_binary_view().value(i))?,
        DataType::Boolean => a.as_boolean().value(i).into(),
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float32 => float(a.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        DataType::List(_) => list(a.as_list::<i32>().value(i))?,
        DataType::LargeList(_) => list(a.as_list::<i64>().value(i))?,
        DataType::ListView(_) => list(a.as_list_view::<i32>().value(i))?,
        DataType::FixedSizeList(_, _) => list(a.as_fixed_size_list().value(i))?,
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut m = Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                m.insert(f.name().clone(), cell(c, i).map_err(|e| format!("{}: {e}", f.name()))?);
            }
            Value::Object(m)
        }
        // A dictionary cell is its value's cell (not a cast, which would turn binary that is not
        // UTF-8 into a null without a word).
        DataType::Dictionary(key, _) => {
            let k = match key.as_ref() {
                DataType::Int8 => a.as_dictionary::<Int8Type>().keys().value(i) as usize,
                DataType::Int16 => a.as_dictionary::<Int16Type>().keys().value(i) as usize,
                DataType::Int32 => a.as_dictionary::<Int32Type>().keys().value(i) as usize,
                DataType::Int64 => a.as_dictionary::<Int64Type>().keys().value(i) as usize,
                DataType::UInt8 => a.as_dictionary::<UInt8Type>().keys().value(i) as usize,
                DataType::UInt16 => a.as_dictionary::<UInt16Type>().keys().value(i) as usize,
                DataType::UInt32 => a.as_dictionary::<UInt32Type>().keys().value(i) as usize,
                DataType::UInt64 => a.as_dictionary::<UInt64Type>().keys().value(i) as usize,
                other => return Err(format!("dictionary keys of type {other} are not supported")),
            };
            cell(a.as_any_dictionary().values(), k)?
        }
        // Dates, decimals...: as text.
        _ => match arrow::compute::cast(&a.slice(i, 1), &DataType::Utf8) {
            Ok(s) => cell(&s, 0)?,
            Err(_) => Value::String(format!("{:?}", a.slice(i, 1))),
        },
    })
}

/// "a string", "a number", ... for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_bad_lines_are_quarantined_with_line_numbers() {
        let (records, bad) = read_jsonl("f.jsonl", "{\"a\": 1}\n\nnot json\n[1]\n{\"a\": 2}\n");
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].origin.line, 5);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].0.line, 3);
        assert!(bad[0].1.reason.contains("not valid JSON"));
        assert!(bad[1].1.reason.contains("a list"));
    }

    #[test]
    fn csv_rows_keep_lines_and_raw_text() {
        let text = "prompt,user_id\n\"multi\nline\",u1\nbad,row,extra\nok,u2\n";
        let (records, bad) = read_csv("f.csv", text, b',').unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].fields["prompt"], "multi\nline");
        assert_eq!(records[0].origin.line, 2);
        assert_eq!(records[1].origin.line, 5);
        assert_eq!(records[1].origin.raw, "ok,u2");
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0.line, 4);
        assert_eq!(bad[0].0.raw, "bad,row,extra");
    }

    #[test]
    fn txt_blocks_are_documents() {
        let r = read_txt("f.txt", "one\ntwo\n\n\nthree\n");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].fields["text"], "one\ntwo");
        assert_eq!(r[1].origin.line, 5);
    }

    #[test]
    fn json_array_and_json_lines_in_a_json_file() {
        let (r, bad) = read_json("f.json", "[{\"a\": 1}, 3]").unwrap();
        assert_eq!((r.len(), bad.len()), (1, 1));
        assert_eq!(bad[0].0.line, 2);
        let (r, _) = read_json("f.json", "{\"a\": 1}\n{\"a\": 2}\n").unwrap();
        assert_eq!(r.len(), 2);
        assert!(read_json("f.json", "[{\"a\": ").unwrap_err().to_string().contains("f.json: not valid JSON"));
    }

    #[test]
    fn parquet_binary_cells_that_are_not_utf8_quarantine_their_row_naming_the_column() {
        use arrow::array::{BinaryArray, RecordBatch, StringArray};
        use arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("prompt", DataType::Binary, false),
            Field::new("user_id", DataType::Utf8, false),
        ]));
        let prompts = BinaryArray::from(vec![b"fine text".as_ref(), b"bad \xff byte".as_ref(), b"more".as_ref()]);
        let users = StringArray::from(vec!["u1", "u2", "u3"]);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(prompts), Arc::new(users)]).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();

        let file = path.to_str().unwrap();
        let mut q = Quarantine::default();
        let (_, records) = read_file(file, &mut q).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].fields["prompt"], "fine text");
        assert_eq!(records[1].origin.line, 3, "rows keep their numbers in the file");
        assert_eq!(q.bad_count(), 1);
        let row = &q.rows()[0];
        assert_eq!((row.line, row.field.as_str()), (2, "prompt"));
        assert!(row.reason.contains("not UTF-8") && row.raw.contains("u2") && row.raw.contains("255"), "{row:?}");

        // The same through a dictionary-encoded column, which Arrow's default cast would null.
        use arrow::array::{DictionaryArray, Int32Array};
        let path = dir.path().join("d.parquet");
        let values = BinaryArray::from(vec![b"fine text".as_ref(), b"bad \xff byte".as_ref()]);
        let dict =
            DictionaryArray::<arrow::datatypes::Int32Type>::try_new(Int32Array::from(vec![0, 1, 0]), Arc::new(values))
                .unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("prompt", dict.data_type().clone(), false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(dict)]).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let mut q = Quarantine::default();
        let (_, records) = read_file(path.to_str().unwrap(), &mut q).unwrap();
        assert_eq!(
            records.iter().map(|r| r.fields["prompt"].clone()).collect::<Vec<_>>(),
            ["fine text", "fine text"],
            "{:?}",
            q.rows()
        );
        assert_eq!((q.bad_count(), q.rows()[0].line, q.rows()[0].field.as_str()), (1, 2, "prompt"), "{:?}", q.rows());
    }
}
