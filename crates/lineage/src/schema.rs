//! Table schemas as constants, checked on read.
//!
//! A [`TableSpec`] is the contract between the stage that writes a table and
//! every stage that reads it. It is declared once (see [`crate::tables`]) as a
//! `const`, converts to an Arrow schema for writing, and checks a file's schema
//! on read with an error that names the file and the field.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema};

/// The column types our tables use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Utf8,
    Bool,
    Int32,
    Int64,
    UInt32,
    UInt64,
    Float32,
    Float64,
    ListUtf8,
    ListInt32,
    ListUInt32,
    ListFloat32,
    ListFloat64,
}

impl ColType {
    /// The Arrow type written for this column.
    pub fn data_type(self) -> DataType {
        let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, false)));
        match self {
            ColType::Utf8 => DataType::Utf8,
            ColType::Bool => DataType::Boolean,
            ColType::Int32 => DataType::Int32,
            ColType::Int64 => DataType::Int64,
            ColType::UInt32 => DataType::UInt32,
            ColType::UInt64 => DataType::UInt64,
            ColType::Float32 => DataType::Float32,
            ColType::Float64 => DataType::Float64,
            ColType::ListUtf8 => list(DataType::Utf8),
            ColType::ListInt32 => list(DataType::Int32),
            ColType::ListUInt32 => list(DataType::UInt32),
            ColType::ListFloat32 => list(DataType::Float32),
            ColType::ListFloat64 => list(DataType::Float64),
        }
    }

    /// Whether a type found in a file is acceptable for this column. Lists
    /// match on their element type only (child names and nullability differ
    /// between writers); `LargeUtf8` and `Utf8View` read as `Utf8`.
    fn accepts(self, found: &DataType) -> bool {
        let expected = self.data_type();
        match (&expected, found) {
            (DataType::Utf8, DataType::LargeUtf8 | DataType::Utf8View) => true,
            (DataType::List(e), DataType::List(f) | DataType::LargeList(f)) => {
                e.data_type() == f.data_type()
                    || (e.data_type() == &DataType::Utf8 && f.data_type() == &DataType::LargeUtf8)
            }
            _ => &expected == found,
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, Copy)]
pub struct Col {
    pub name: &'static str,
    pub ty: ColType,
    pub nullable: bool,
    pub doc: &'static str,
}

impl Col {
    pub const fn new(name: &'static str, ty: ColType, doc: &'static str) -> Col {
        Col { name, ty, nullable: false, doc }
    }

    pub const fn nullable(mut self) -> Col {
        self.nullable = true;
        self
    }
}

/// A table's declared schema.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    /// The table's name; its file in an artifact is `<name>.parquet`.
    pub name: &'static str,
    pub doc: &'static str,
    pub columns: &'static [Col],
}

/// A file whose schema does not match its declared table.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "{file}: table `{table}` has no field `{field}` (expected {expected:?}); the file was not written by this version of the pipeline, or the column mapping is wrong"
    )]
    Missing { file: String, table: &'static str, field: &'static str, expected: DataType },
    #[error("{file}: field `{field}` of table `{table}` has type {found:?}, expected {expected:?}")]
    WrongType { file: String, table: &'static str, field: &'static str, expected: DataType, found: DataType },
    #[error("{file}: field `{field}` of table `{table}` is nullable but must not be")]
    Nullable { file: String, table: &'static str, field: &'static str },
    #[error("{file}: table `{table}` has unexpected field `{field}`; declared fields: {declared}")]
    Unexpected { file: String, table: &'static str, field: String, declared: String },
}

impl TableSpec {
    /// The file name of this table inside an artifact.
    pub fn file_name(&self) -> String {
        format!("{}.parquet", self.name)
    }

    pub fn fields(&self) -> Vec<FieldRef> {
        self.columns.iter().map(|c| Arc::new(Field::new(c.name, c.ty.data_type(), c.nullable))).collect()
    }

    pub fn arrow_schema(&self) -> Schema {
        Schema::new(self.fields())
    }

    /// A short, stable digest of the declared schema: changes whenever a
    /// column is added, removed, renamed or retyped.
    pub fn fingerprint(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(self.name.as_bytes());
        for c in self.columns {
            h.update(format!("|{}:{:?}:{}", c.name, c.ty, c.nullable).as_bytes());
        }
        h.finalize().to_hex()[..16].to_string()
    }

    /// Checks a schema found in `file` against this declaration: every
    /// declared field present with its type, non-nullable fields declared so,
    /// and no undeclared fields.
    pub fn check(&self, found: &Schema, file: &Path) -> Result<(), SchemaError> {
        let file_name = file.display().to_string();
        for col in self.columns {
            let Ok(field) = found.field_with_name(col.name) else {
                return Err(SchemaError::Missing {
                    file: file_name,
                    table: self.name,
                    field: col.name,
                    expected: col.ty.data_type(),
                });
            };
            if !col.ty.accepts(field.data_type()) {
                return Err(SchemaError::WrongType {
                    file: file_name,
                    table: self.name,
                    field: col.name,
                    expected: col.ty.data_type(),
                    found: field.data_type().clone(),
                });
            }
            if field.is_nullable() && !col.nullable {
                return Err(SchemaError::Nullable { file: file_name, table: self.name, field: col.name });
            }
        }
        if let Some(extra) = found.fields().iter().find(|f| !self.columns.iter().any(|c| c.name == f.name())) {
            return Err(SchemaError::Unexpected {
                file: file_name,
                table: self.name,
                field: extra.name().clone(),
                declared: self.columns.iter().map(|c| c.name).collect::<Vec<_>>().join(", "),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TableSpec = TableSpec {
        name: "t",
        doc: "test",
        columns: &[
            Col::new("a", ColType::Utf8, ""),
            Col::new("b", ColType::ListFloat32, ""),
            Col::new("c", ColType::Int64, "").nullable(),
        ],
    };

    #[test]
    fn own_schema_checks() {
        T.check(&T.arrow_schema(), Path::new("x.parquet")).unwrap();
    }

    #[test]
    fn errors_name_file_and_field() {
        let s = Schema::new(vec![Field::new("a", DataType::Int32, false)]);
        let e = T.check(&s, Path::new("dir/x.parquet")).unwrap_err().to_string();
        assert!(e.contains("dir/x.parquet") && e.contains("`a`") && e.contains("Int32"), "{e}");
        let s = Schema::new(vec![Field::new("a", DataType::Utf8, false)]);
        let e = T.check(&s, Path::new("x.parquet")).unwrap_err().to_string();
        assert!(e.contains("no field `b`"), "{e}");
        let mut fields = T.fields();
        fields.push(Arc::new(Field::new("zz", DataType::Utf8, false)));
        let e = T.check(&Schema::new(fields), Path::new("x.parquet")).unwrap_err().to_string();
        assert!(e.contains("unexpected field `zz`"), "{e}");
    }

    #[test]
    fn fingerprint_tracks_columns() {
        const U: TableSpec = TableSpec { name: "t", doc: "", columns: &[Col::new("a", ColType::Utf8, "")] };
        assert_ne!(T.fingerprint(), U.fingerprint());
        assert_eq!(T.fingerprint(), T.fingerprint());
    }
}
