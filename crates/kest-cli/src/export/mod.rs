//! Reading span exports back (SPEC §9): OTLP JSON lines as the
//! OpenTelemetry Collector's file exporter writes them ([`otlp_json`]),
//! Kest's SQLite span store ([`sqlite`]), and directories of either.
//!
//! Every span is kept with its [`Origin`] (file and line, or database and
//! row) so an audit can name exactly which record is at fault. A record
//! that cannot be read is not skipped silently: it becomes a [`Problem`]
//! the audit reports, and an audit with problems is not valid.

mod otlp_json;
mod sqlite;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::CliError;

/// The instrumentation scope of Kest's spans.
pub const KEST_SCOPE: &str = "kest.core";
/// The name prefix of the span of a hooked call.
pub const SPAN_PREFIX: &str = "kest.verified.";

/// Where a span was read from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// Line `line` (1-based) of an OTLP JSON lines file.
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// Row `rowid` of the `spans` table of a SQLite store.
    Row {
        /// The database file.
        path: PathBuf,
        /// SQLite `rowid`.
        rowid: i64,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Line { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Row { path, rowid } => write!(f, "{} row {rowid}", path.display()),
        }
    }
}

/// One exported span, reduced to what an audit needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedSpan {
    /// Where it was read.
    pub origin: Origin,
    /// 32 lowercase hex.
    pub trace_id: String,
    /// 16 lowercase hex.
    pub span_id: String,
    /// The span name (`kest.verified.<operation>` for Kest's).
    pub name: String,
    /// Resource attribute `service.name`.
    pub service: Option<String>,
    /// Instrumentation scope name.
    pub scope: Option<String>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// Status message (the error of a refused call).
    pub status_message: Option<String>,
    /// The Kest attributes.
    pub kest: KestAttributes,
}

impl ExportedSpan {
    /// Whether this is the span of a hooked call (scope `kest.core` or a
    /// `kest.verified.` name).
    pub fn is_kest(&self) -> bool {
        self.scope.as_deref() == Some(KEST_SCOPE) || self.name.starts_with(SPAN_PREFIX)
    }
}

/// The `kest.*` attributes of a span (SPEC §9), as exported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KestAttributes {
    /// `kest.signature`: the entry's whole JWS.
    pub signature: Option<String>,
    /// `kest.entry_hash`.
    pub entry_hash: Option<String>,
    /// `kest.parent_hash`: the parents, comma-separated (`0` for a root).
    pub parent_hash: Option<String>,
    /// `kest.passport`: the passport after the call (JSON array of JWS).
    pub passport: Option<String>,
    /// `kest.chain_tip`: the tips, when the passport was too large to attach.
    pub chain_tip: Option<String>,
    /// `kest.claim_check`: the claim-check id of that passport.
    pub claim_check: Option<String>,
    /// `kest.entry_id`.
    pub entry_id: Option<String>,
    /// `kest.workload_id`.
    pub workload_id: Option<String>,
    /// `kest.trust_score`.
    pub trust_score: Option<i64>,
    /// `kest.operation`.
    pub operation: Option<String>,
    /// `kest.decision`: `allow`, `deny`, …
    pub decision: Option<String>,
    /// `kest.denied_policy`.
    pub denied_policy: Option<String>,
    /// `kest.denied_tier`.
    pub denied_tier: Option<String>,
}

impl KestAttributes {
    /// Sets the attribute `key` from a string value; `false` when `key` is
    /// not a string attribute of Kest.
    fn set_str(&mut self, key: &str, value: String) -> bool {
        let slot = match key {
            "kest.signature" => &mut self.signature,
            "kest.entry_hash" => &mut self.entry_hash,
            "kest.parent_hash" => &mut self.parent_hash,
            "kest.passport" => &mut self.passport,
            "kest.chain_tip" => &mut self.chain_tip,
            "kest.claim_check" => &mut self.claim_check,
            "kest.entry_id" => &mut self.entry_id,
            "kest.workload_id" => &mut self.workload_id,
            "kest.operation" => &mut self.operation,
            "kest.decision" => &mut self.decision,
            "kest.denied_policy" => &mut self.denied_policy,
            "kest.denied_tier" => &mut self.denied_tier,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

/// A record that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Stable kind: `malformed_record`, `unreadable_file`, `unsupported_store`, …
    pub kind: &'static str,
    /// Where.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

/// Everything read from the exports.
#[derive(Debug, Default)]
pub struct Export {
    /// The spans, in reading order.
    pub spans: Vec<ExportedSpan>,
    /// Records that could not be read.
    pub problems: Vec<Problem>,
    /// The files read.
    pub files: Vec<PathBuf>,
}

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// How deep directories are walked.
const MAX_DIR_DEPTH: usize = 16;

/// Reads every export named by `paths`: files (OTLP JSON lines or SQLite,
/// told apart by content) and directories (walked recursively, in name
/// order). A path that does not exist or cannot be opened is a usage error;
/// a file inside a directory that is neither format is a [`Problem`].
pub fn read(paths: &[PathBuf]) -> Result<Export, CliError> {
    let mut export = Export::default();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            read_dir(path, 0, &mut export)?;
        } else {
            read_file(path, &mut export)?;
        }
    }
    Ok(export)
}

fn read_dir(dir: &Path, depth: usize, export: &mut Export) -> Result<(), CliError> {
    if depth > MAX_DIR_DEPTH {
        export.problems.push(Problem {
            kind: "unreadable_file",
            location: dir.display().to_string(),
            message: format!("directories nested deeper than {MAX_DIR_DEPTH} levels are not read"),
        });
        return Ok(());
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CliError(format!("{}: {e}", dir.display())))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
    children.sort();
    for child in children {
        let name = child.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // SQLite's own companion files are read through the database.
        if name.ends_with("-wal") || name.ends_with("-shm") || name.ends_with("-journal") {
            continue;
        }
        if child.is_dir() {
            read_dir(&child, depth + 1, export)?;
        } else {
            read_file(&child, export)?;
        }
    }
    Ok(())
}

fn read_file(path: &Path, export: &mut Export) -> Result<(), CliError> {
    let mut head = [0u8; 16];
    let n = {
        use std::io::Read as _;
        let mut file = std::fs::File::open(path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        let mut n = 0;
        while n < head.len() {
            match file.read(head.get_mut(n..).unwrap_or_default()) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(CliError(format!("{}: {e}", path.display()))),
            }
        }
        n
    };
    export.files.push(path.to_owned());
    if n == head.len() && &head == SQLITE_MAGIC {
        sqlite::read(path, export);
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || head.starts_with(&[0x1f, 0x8b]) {
        export.problems.push(Problem {
            kind: "unsupported_store",
            location: path.display().to_string(),
            message: "compressed export (zstd/gzip): decompress it first".to_owned(),
        });
    } else {
        otlp_json::read(path, export)?;
    }
    Ok(())
}

/// Whether `s` is `len` lowercase hex digits, not all zero.
pub(crate) fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}
