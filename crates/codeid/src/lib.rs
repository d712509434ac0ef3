//! Code identity for the crates that run pipeline stages.
//!
//! A stage's artifact key must change whenever the code that produced it could
//! behave differently, and must never depend on someone remembering to bump a
//! version. So each stage crate's `build.rs` calls [`emit`], which hashes:
//!
//! - the sources (`src/**`, `build.rs`, `Cargo.toml`, and any extra paths named
//!   in `[package.metadata.codeid] extra = [...]`) of the crate itself and of
//!   every workspace crate in its dependency closure, as recorded in
//!   `Cargo.lock`; Rust files without their comments, whitespace layout,
//!   trailing commas and inline test modules ([`normalize_rust`]), which cannot
//!   change what a stage computes;
//! - the name, version and checksum of every registry crate in that closure;
//! - the crate's enabled features and the compiler version.
//!
//! It exports the result to the crate as `CODE_IDENTITY` (a hex digest) and
//! `CODE_IDENTITY_PARTS` (a JSON object of per-part digests, so a reader can say
//! *which* crate changed), and registers every hashed path with
//! `cargo:rerun-if-changed` so the digest is recomputed exactly when needed.
//!
//! Key design decision: paths are hashed relative to the workspace root and
//! files in sorted order, so two clones of the same commit anywhere on disk get
//! the same identity.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Computes the identity of the calling crate and exports it to rustc.
/// Call from `build.rs`: `fn main() { codeid::emit(); }`.
pub fn emit() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let package = env("CARGO_PKG_NAME");
    let features: Vec<String> =
        std::env::vars().filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(|f| f.to_lowercase())).collect();
    let rustc = rustc_version();
    let identity = compute(&manifest_dir, &package, &features, &rustc)
        .unwrap_or_else(|e| panic!("codeid: cannot compute the code identity of `{package}`: {e}"));
    for path in &identity.watched {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=RUSTC");
    println!("cargo:rustc-env=CODE_IDENTITY={}", identity.digest);
    println!("cargo:rustc-env=CODE_IDENTITY_PARTS={}", identity.parts_json());
    println!("cargo:rustc-env=CODE_RUSTC_VERSION={rustc}");
    println!("cargo:rustc-env=CODE_TOOLS={}", identity.tools_json());
}

/// Dependencies whose versions are worth recording beside an artifact.
const NOTABLE: &[&str] =
    &["candle-core", "candle-nn", "tokenizers", "arrow", "parquet", "polars", "safetensors", "gemm"];

/// The result of hashing one crate's code closure.
#[derive(Debug, Clone)]
pub struct Identity {
    /// blake3 over every part, hex.
    pub digest: String,
    /// Per-part digests: one per workspace crate (`crate:NAME`), plus
    /// `registry` (all registry dependencies), `features` and `rustc`.
    pub parts: BTreeMap<String, String>,
    /// Paths whose change must recompute the identity.
    pub watched: Vec<PathBuf>,
    /// Versions of notable registry dependencies in the closure.
    pub tools: BTreeMap<String, String>,
}

impl Identity {
    /// `parts` as a one-line JSON object (keys and values need no escaping:
    /// crate names and hex digests).
    pub fn parts_json(&self) -> String {
        let body: Vec<String> = self.parts.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
        format!("{{{}}}", body.join(","))
    }

    /// `tools` as a one-line JSON object.
    pub fn tools_json(&self) -> String {
        let body: Vec<String> = self.tools.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
        format!("{{{}}}", body.join(","))
    }
}

/// Hashes the code closure of `package`, whose manifest lives in `manifest_dir`.
pub fn compute(manifest_dir: &Path, package: &str, features: &[String], rustc: &str) -> Result<Identity, String> {
    let root = workspace_root(manifest_dir)?;
    let lock_path = root.join("Cargo.lock");
    let lock = read_lock(&lock_path)?;
    let members = workspace_members(&root)?;
    let closure = closure(&lock, package)?;

    let mut parts = BTreeMap::new();
    let mut watched = vec![lock_path];
    let mut registry = blake3::Hasher::new();
    let mut tools = BTreeMap::new();
    for id in &closure {
        let pkg = &lock[id];
        if NOTABLE.contains(&pkg.name.as_str()) {
            tools.insert(pkg.name.clone(), pkg.version.clone());
        }
        match (&pkg.source, members.get(&pkg.name)) {
            (None, Some(dir)) => {
                let (digest, paths) = hash_member(&root, dir)?;
                parts.insert(format!("crate:{}", pkg.name), digest);
                watched.extend(paths);
            }
            _ => {
                registry.update(
                    format!(
                        "{}@{}#{}\n",
                        pkg.name,
                        pkg.version,
                        pkg.checksum.as_deref().or(pkg.source.as_deref()).unwrap_or("")
                    )
                    .as_bytes(),
                );
            }
        }
    }
    parts.insert("registry".into(), registry.finalize().to_hex().to_string());
    let mut features = features.to_vec();
    features.sort();
    parts.insert("features".into(), short_hash(features.join(",").as_bytes()));
    parts.insert("rustc".into(), short_hash(rustc.as_bytes()));

    let mut all = blake3::Hasher::new();
    for (k, v) in &parts {
        all.update(k.as_bytes()).update(b"=").update(v.as_bytes()).update(b"\n");
    }
    Ok(Identity { digest: all.finalize().to_hex().to_string(), parts, watched, tools })
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("codeid: {name} is not set; call codeid::emit() from build.rs"))
}

fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    std::process::Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn short_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..16].to_string()
}

fn workspace_root(start: &Path) -> Result<PathBuf, String> {
    let mut dir = Some(start);
    while let Some(d) = dir {
        if d.join("Cargo.lock").is_file() {
            return Ok(d.to_path_buf());
        }
        dir = d.parent();
    }
    Err(format!("no Cargo.lock above {}", start.display()))
}

struct LockedPackage {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
    dependencies: Vec<String>,
}

/// Packages keyed by `name version`.
fn read_lock(path: &Path) -> Result<BTreeMap<String, LockedPackage>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: toml::Table = text.parse().map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    let packages = doc.get("package").and_then(|p| p.as_array()).cloned().unwrap_or_default();
    for p in packages {
        let s = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let pkg = LockedPackage {
            name: s("name").ok_or("package without a name in Cargo.lock")?,
            version: s("version").unwrap_or_default(),
            source: s("source"),
            checksum: s("checksum"),
            dependencies: p
                .get("dependencies")
                .and_then(|d| d.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
        };
        out.insert(format!("{} {}", pkg.name, pkg.version), pkg);
    }
    Ok(out)
}

/// Resolves a `dependencies` entry of Cargo.lock (`name`, `name version`, or
/// `name version (source)`) to a package id.
fn resolve(lock: &BTreeMap<String, LockedPackage>, dep: &str) -> Option<String> {
    let mut words = dep.split_whitespace();
    let name = words.next()?;
    match words.next() {
        Some(version) => Some(format!("{name} {version}")).filter(|id| lock.contains_key(id)),
        None => lock.values().find(|p| p.name == name).map(|p| format!("{} {}", p.name, p.version)),
    }
}

fn closure(lock: &BTreeMap<String, LockedPackage>, package: &str) -> Result<BTreeSet<String>, String> {
    let start = lock
        .values()
        .find(|p| p.name == package && p.source.is_none())
        .map(|p| format!("{} {}", p.name, p.version))
        .ok_or_else(|| format!("`{package}` is not in Cargo.lock"))?;
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        for dep in &lock[&id].dependencies {
            if let Some(d) = resolve(lock, dep) {
                stack.push(d);
            }
        }
    }
    Ok(seen)
}

/// Workspace member name -> directory, from the root manifest's
/// `workspace.members` (plain paths and `dir/*` globs).
fn workspace_members(root: &Path) -> Result<BTreeMap<String, PathBuf>, String> {
    let manifest = read_toml(&root.join("Cargo.toml"))?;
    let patterns: Vec<String> = manifest
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let mut dirs = vec![root.to_path_buf()];
    for pattern in patterns {
        match pattern.strip_suffix("/*") {
            Some(parent) => {
                let entries = fs::read_dir(root.join(parent)).map_err(|e| format!("{parent}: {e}"))?;
                dirs.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
            }
            None => dirs.push(root.join(pattern)),
        }
    }
    let mut members = BTreeMap::new();
    for dir in dirs {
        let Ok(manifest) = read_toml(&dir.join("Cargo.toml")) else {
            continue;
        };
        if let Some(name) = manifest.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str()) {
            members.insert(name.to_string(), dir);
        }
    }
    Ok(members)
}

fn read_toml(path: &Path) -> Result<toml::Table, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.parse().map_err(|e| format!("{}: {e}", path.display()))
}

/// Hashes a workspace member's code: `Cargo.toml`, `build.rs`, `src/**` and the
/// extra paths its manifest names. Returns the digest and the paths to watch.
fn hash_member(root: &Path, dir: &Path) -> Result<(String, Vec<PathBuf>), String> {
    let manifest = read_toml(&dir.join("Cargo.toml"))?;
    let mut roots = vec![dir.join("Cargo.toml"), dir.join("build.rs"), dir.join("src")];
    let extra = manifest
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("codeid"))
        .and_then(|c| c.get("extra"))
        .and_then(|e| e.as_array())
        .cloned()
        .unwrap_or_default();
    roots.extend(extra.iter().filter_map(|v| v.as_str()).map(|p| dir.join(p)));

    let mut files = Vec::new();
    for r in &roots {
        collect_files(r, &mut files);
    }
    let mut rel: Vec<(String, PathBuf)> = files.into_iter().map(|f| (relative(root, &f), f)).collect();
    rel.sort();
    rel.dedup();
    let mut hasher = blake3::Hasher::new();
    for (name, path) in &rel {
        let mut bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if let (true, Ok(text)) = (name.ends_with(".rs"), std::str::from_utf8(&bytes)) {
            bytes = normalize_rust(text).into_bytes();
        }
        hasher.update(name.as_bytes()).update(b"\0");
        hasher.update(&(bytes.len() as u64).to_le_bytes()).update(&bytes);
    }
    let watched = roots.into_iter().filter(|p| p.exists()).collect();
    Ok((hasher.finalize().to_hex()[..16].to_string(), watched))
}

/// A lexical piece of Rust source, as far as code identity needs to tell them apart.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// A string, byte-string, raw-string or char literal, verbatim.
    Literal(String),
    /// Any other character outside comments and whitespace.
    Char(char),
    /// A run of whitespace or comments.
    Gap,
}

/// Rust source reduced to what can change a build's behaviour: comments (doc comments included)
/// are dropped, a run of whitespace becomes one space where it keeps two tokens apart (`let x`,
/// `& &`) and nothing elsewhere, trailing commas are dropped (see
/// [`trailing_comma`]: not the one of `(a,)`), and `#[cfg(test)] mod name { ... }` blocks are
/// dropped. Literals are kept byte for byte. So editing a comment, rewrapping lines as rustfmt does
/// (its trailing commas included) or changing a unit test leaves the identity, and every stored
/// artifact, as it was.
///
/// Key design decision: a lexer, not a parser. It knows just enough Rust to never mistake a `//`
/// inside a string (or a `'` of a lifetime) for something else; the rest passes through as
/// characters, so any edit to real code changes the result.
pub fn normalize_rust(src: &str) -> String {
    let pieces = drop_test_modules(lex(src));
    let mut out = String::with_capacity(src.len());
    let mut gap = false;
    let mut before = ' '; // nothing before the first piece
    let mut groups: Vec<Group> = Vec::new();
    let mut buf = [0u8; 4];
    for (i, p) in pieces.iter().enumerate() {
        let text = match p {
            Piece::Gap => {
                gap = true;
                continue;
            }
            Piece::Char(',') if trailing_comma(groups.last(), &pieces[i + 1..]) => continue,
            Piece::Literal(t) => t.as_str(),
            Piece::Char(c) => {
                match c {
                    '(' | '[' | '{' => groups.push(Group { open: *c, commas: 0, angle: false }),
                    ')' | ']' | '}' => drop(groups.pop()),
                    ',' | '<' => {
                        if let Some(g) = groups.last_mut() {
                            g.commas += usize::from(*c == ',');
                            g.angle |= *c == '<';
                        }
                    }
                    _ => {}
                }
                c.encode_utf8(&mut buf)
            }
        };
        let first = text.chars().next().unwrap_or(' ');
        // Whitespace stays (as one space) only where it keeps two tokens from reading as one.
        if std::mem::take(&mut gap) && would_join(before, first) {
            out.push(' ');
        }
        out.push_str(text);
        before = text.chars().last().unwrap_or(' ');
    }
    out
}

/// Whether `a` then `b`, with no whitespace between, could lex differently than with it: two
/// word characters (`let x`), or two punctuation characters that begin a longer token (`& &` is
/// not `&&`, `< =` is not `<=`, `/ /` is not a comment).
fn would_join(a: char, b: char) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    if word(a) || word(b) {
        return word(a) && word(b);
    }
    matches!(
        (a, b),
        ('=' | '!' | '<' | '>' | '+' | '-' | '*' | '/' | '%' | '^' | '&' | '|' | '.', '=')
            | ('&', '&')
            | ('|', '|')
            | ('<', '<' | '-')
            | ('>', '>')
            | ('-' | '=', '>')
            | (':', ':')
            | ('.', '.')
            | ('/', '/' | '*')
            | ('*', '/')
            | ('\'', _)
            | (_, '\'')
            | ('#', '!' | '[')
            | ('!', '[')
    )
}

/// An open bracket, brace or parenthesis: its commas so far and whether a `<` appeared, both
/// outside any group nested in it.
struct Group {
    open: char,
    commas: usize,
    angle: bool,
}

/// Whether a comma in `group`, followed by `rest`, is a trailing comma that changes nothing: one
/// before `}` or `]`, or before `)` when the parentheses already hold a comma of their own (`(a, b,)`
/// is `(a, b)`, but `(a,)` is a one-element tuple). A `<` in the parentheses keeps the comma, as its
/// commas may belong to generic arguments (`(HashMap<K, V>,)`).
fn trailing_comma(group: Option<&Group>, rest: &[Piece]) -> bool {
    match rest.iter().find(|p| **p != Piece::Gap) {
        Some(Piece::Char('}' | ']')) => true,
        Some(Piece::Char(')')) => group.is_some_and(|g| g.open == '(' && g.commas > 0 && !g.angle),
        _ => false,
    }
}

fn lex(src: &str) -> Vec<Piece> {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
            push_gap(&mut out);
            continue;
        }
        if ch == '/' && at(i + 1) == '/' {
            while i < n && c[i] != '\n' {
                i += 1;
            }
            push_gap(&mut out);
            continue;
        }
        if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < n {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            push_gap(&mut out);
            continue;
        }
        if let Some(end) = literal_end(&c, i) {
            out.push(Piece::Literal(c[i..end].iter().collect()));
            i = end;
            continue;
        }
        out.push(Piece::Char(ch));
        i += 1;
    }
    out
}

/// If a string, byte-string, raw-string or char literal starts at `i`, the index just past it.
fn literal_end(c: &[char], i: usize) -> Option<usize> {
    let n = c.len();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let ch = c[i];
    let after_ident = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
    // Raw strings: r"..", r#".."#, br#".."#.
    if !after_ident && (ch == 'r' || (ch == 'b' && at(i + 1) == 'r')) {
        let mut j = i + if ch == 'b' { 2 } else { 1 };
        let hashes = c[j.min(n)..].iter().take_while(|&&h| h == '#').count();
        j += hashes;
        if at(j) == '"' {
            j += 1;
            while j < n && !(c[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#')) {
                j += 1;
            }
            return Some((j + 1 + hashes).min(n));
        }
    }
    let end = match ch {
        '"' => {
            let mut j = i + 1;
            while j < n && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        }
        // A char literal ('a', '\n', '\'', '\u{..}'), or else a lifetime or label.
        '\'' if at(i + 1) == '\\' => {
            let mut j = i + 3;
            while j < n && c[j] != '\'' {
                j += 1;
            }
            j + 1
        }
        '\'' if at(i + 2) == '\'' => i + 3,
        _ => return None,
    };
    Some(end.min(n))
}

fn push_gap(out: &mut Vec<Piece>) {
    if out.last() != Some(&Piece::Gap) {
        out.push(Piece::Gap);
    }
}

/// Drops every `#[cfg(test)] mod name { ... }` (an inline test module; `mod name;` in its own file
/// stays, as that file is hashed anyway).
fn drop_test_modules(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out = Vec::with_capacity(pieces.len());
    let mut i = 0;
    while i < pieces.len() {
        if let Some(end) = test_module_end(&pieces, i) {
            i = end;
            push_gap(&mut out);
        } else {
            out.push(pieces[i].clone());
            i += 1;
        }
    }
    out
}

/// If a test module starts at `i`, the index just past its closing brace.
fn test_module_end(p: &[Piece], i: usize) -> Option<usize> {
    let mut k = i;
    let expect = |text: &str, k: &mut usize| {
        for want in text.chars() {
            while p.get(*k) == Some(&Piece::Gap) {
                *k += 1;
            }
            if p.get(*k) != Some(&Piece::Char(want)) {
                return false;
            }
            *k += 1;
        }
        true
    };
    if !(expect("#[cfg(test)]", &mut k) && expect("mod", &mut k)) || p.get(k) != Some(&Piece::Gap) {
        return None;
    }
    k += 1;
    while matches!(p.get(k), Some(Piece::Char(c)) if c.is_alphanumeric() || *c == '_') {
        k += 1;
    }
    if !expect("{", &mut k) {
        return None;
    }
    let mut depth = 1;
    while k < p.len() && depth > 0 {
        match p[k] {
            Piece::Char('{') => depth += 1,
            Piece::Char('}') => depth -= 1,
            _ => {}
        }
        k += 1;
    }
    (depth == 0).then_some(k)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
    } else if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            collect_files(&entry.path(), out);
        }
    }
}

/// A path relative to the workspace root with `/` separators and `..` folded,
/// so identities do not depend on where the clone lives.
fn relative(root: &Path, path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    let stripped = path.strip_prefix(root).unwrap_or(path);
    for c in stripped.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn identity_is_stable_and_covers_the_closure() {
        let dir = workspace();
        let a = compute(&dir, "codeid", &[], "rustc x").unwrap();
        let b = compute(&dir, "codeid", &[], "rustc x").unwrap();
        assert_eq!(a.digest, b.digest);
        assert!(a.parts.contains_key("crate:codeid"), "{:?}", a.parts);
        let c = compute(&dir, "codeid", &["cuda".into()], "rustc x").unwrap();
        assert_ne!(a.digest, c.digest, "features are part of the identity");
        let d = compute(&dir, "codeid", &[], "rustc y").unwrap();
        assert_ne!(a.digest, d.digest, "the compiler is part of the identity");
    }

    #[test]
    fn comments_whitespace_and_test_modules_do_not_change_the_code() {
        let base = "fn f(x: u32) -> u32 {\n    x + 1\n}\n";
        let same = [
            "fn f(x:u32)->u32{x+1}",
            "/// Adds one.\nfn f(x: u32) -> u32 {\n    // the answer\n    x + 1 /* inline */\n}\n",
            "fn f(x: u32)\n    -> u32 { x + 1 }",
            "fn f(x: u32) -> u32 {\n    x + 1\n}\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() { assert_eq!(super::f(1), 2); let s = \"}\"; }\n}\n",
            "//! Module doc.\n/* a /* nested */ block */ fn f(x: u32) -> u32 {\n    x + 1\n}\n",
        ];
        for s in same {
            assert_eq!(normalize_rust(s), normalize_rust(base), "{s}");
        }
        let different = [
            "fn f(x: u32) -> u32 {\n    x + 2\n}\n",
            "fnf(x: u32) -> u32 {\n    x + 1\n}\n",
            "fn f(x: u32) -> u32 {\n    x +1\n}\nfn g() {}",
            "fn f(x: u64) -> u64 {\n    x + 1\n}\n",
            // cfg(test) on something that is not an inline module stays.
            "fn f(x: u32) -> u32 {\n    x + 1\n}\n#[cfg(test)]\nfn helper() {}\n",
        ];
        for s in different {
            assert_ne!(normalize_rust(s), normalize_rust(base), "{s}");
        }
    }

    #[test]
    fn literals_are_kept_verbatim() {
        // Comment markers and whitespace inside literals are code.
        let cases = [
            ("let u = \"http://a  b\"; // c", "let u = \"http://a  b\";"),
            ("let r = r#\"a \" // b\"#; /* c */", "let r = r#\"a \" // b\"#;"),
            ("let q = '\"'; let s = \"/*\"; let t = '\\''; // x", "let q = '\"'; let s = \"/*\"; let t = '\\'';"),
            ("fn f<'a>(x: &'a str) -> &'a str { x } // lifetimes", "fn f<'a>(x: &'a str) -> &'a str { x }"),
            ("let b = br\"//\"; let e = \"a\\\"//b\";", "let b = br\"//\"; let e = \"a\\\"//b\";"),
        ];
        for (src, want) in cases {
            assert_eq!(normalize_rust(src), normalize_rust(want), "{src}");
        }
        assert_eq!(normalize_rust(cases[0].0), "let u=\"http://a  b\";");
        assert_ne!(normalize_rust("let s = \"a b\";"), normalize_rust("let s = \"a  b\";"));
    }

    #[test]
    fn rewrapping_as_rustfmt_does_is_not_a_change() {
        let one_line = "let s = S { a: f(x, y), b: [1, 2] };\nmatch v { A => 1, B => 2 }\nfn g(a: u8, b: u8) {}";
        let wrapped = "let s = S {\n    a: f(\n        x, y),\n    b: [\n        1,\n        2,\n    ],\n};\nmatch v {\n    A => 1,\n    B => 2,\n}\nfn g(\n    a: u8,\n    b: u8,\n) {\n}";
        assert_eq!(normalize_rust(wrapped), normalize_rust(one_line));
        // Where the space or the comma is part of the meaning, it stays.
        let pairs = [
            ("let t = (a,);", "let t = (a);"),
            ("let t: (HashMap<K, V>,) = x;", "let t: (HashMap<K, V>) = x;"),
            ("let b = x & &y;", "let b = x && y;"),
            ("let r: &'a T = v;", "let r: & 'a T = v;"),
            ("let x = a < -b;", "let x = a <-b;"),
            ("pub fn f() {}", "pubfn f() {}"),
        ];
        for (a, b) in pairs {
            assert_ne!(normalize_rust(a), normalize_rust(b), "{a} vs {b}");
        }
    }

    #[test]
    fn relative_paths_fold_parent_dirs() {
        let root = Path::new("/ws");
        assert_eq!(relative(root, Path::new("/ws/crates/world/../../datasets/world/a.toml")), "datasets/world/a.toml");
    }
}
