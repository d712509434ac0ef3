//! blake3 digests of files, and the content digest of a Parquet table.
//!
//! Every file has two digests. `blake3` covers its bytes and is what `verify`
//! checks. `content` is what the artifact's identity is made of: for most files
//! the same, but for a Parquet file it leaves out the footer's key-value
//! metadata, because that metadata carries lineage (the artifact's own key).
//! Were the key part of the content, an upstream step that reruns and produces
//! the same data would still produce new bytes, and nothing downstream could
//! stay cached (no early cutoff).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use parquet::file::metadata::ParquetMetaDataReader;

/// The blake3 digest of a file's bytes, hex.
pub fn file_digest(path: &Path) -> io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// The digest of a file's content, as it enters the artifact's content hash.
/// For Parquet files: the data pages, the schema, the row groups' column
/// layout and statistics, but not the key-value metadata.
pub fn content_digest(path: &Path, full_digest: &str) -> io::Result<String> {
    if path.extension().is_some_and(|e| e == "parquet") {
        parquet_content_digest(path)
    } else {
        Ok(full_digest.to_string())
    }
}

fn parquet_content_digest(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < 12 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: too short for Parquet", path.display())));
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8))?;
    file.read_exact(&mut tail)?;
    if &tail[4..] != b"PAR1" {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a Parquet file", path.display())));
    }
    let footer_len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    let data_end = len.checked_sub(8 + footer_len).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: Parquet footer longer than the file", path.display()))
    })?;

    let mut hasher = blake3::Hasher::new();
    file.seek(SeekFrom::Start(0))?;
    io::copy(&mut (&mut file).take(data_end), &mut hasher)?;

    // The footer minus key-value metadata: schema, row counts, statistics.
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&File::open(path)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
    let meta = metadata.file_metadata();
    hasher.update(format!("rows={}\n", meta.num_rows()).as_bytes());
    for col in meta.schema_descr().columns() {
        hasher.update(format!("col={} {:?}\n", col.path(), col.physical_type()).as_bytes());
    }
    for rg in metadata.row_groups() {
        hasher.update(format!("rg rows={} bytes={}\n", rg.num_rows(), rg.total_byte_size()).as_bytes());
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// The digest and size of a file, or of a directory tree (blake3 over its
/// files' relative paths and digests, in order).
pub fn path_digest(path: &Path) -> io::Result<(String, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if meta.is_file() {
        return Ok((file_digest(path)?, meta.len()));
    }
    let mut files = Vec::new();
    walk(path, path, &mut files)?;
    files.sort();
    let mut h = blake3::Hasher::new();
    let mut bytes = 0;
    for rel in files {
        let p = path.join(&rel);
        bytes += std::fs::metadata(&p)?.len();
        h.update(rel.as_bytes()).update(b"\0").update(file_digest(&p)?.as_bytes()).update(b"\n");
    }
    Ok((h.finalize().to_hex().to_string(), bytes))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            walk(root, &p, out)?;
        } else {
            let rel = p.strip_prefix(root).expect("under root");
            out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
        }
    }
    Ok(())
}

/// blake3 of a string, hex.
pub fn digest_str(s: &str) -> String {
    blake3::hash(s.as_bytes()).to_hex().to_string()
}

/// The first `n` characters of a digest, for display.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}
