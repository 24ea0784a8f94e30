//! Kest's SQLite span store (SPEC §9): one row per span in table `spans`,
//! the Kest attributes as columns, schema version in `kest_schema`.
//! Opened read-only; an audit never writes to the evidence.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, Row};

use super::{Export, ExportedSpan, KestAttributes, Origin, Problem, is_hex_id};

/// The schema version this reader understands.
const SCHEMA_VERSION: i64 = 1;

const QUERY: &str = "SELECT rowid, trace_id, span_id, name, service_name, scope_name, status_code, \
    status_message, kest_signature, kest_entry_hash, kest_parent_hash, kest_passport, kest_chain_tip, \
    kest_claim_check, kest_entry_id, kest_workload_id, kest_trust_score, kest_operation, kest_decision, \
    kest_denied_policy, kest_denied_tier FROM spans ORDER BY rowid";

/// Reads every row of the store at `path`; a store that cannot be read, or
/// a row that does not hold a span, becomes a [`Problem`].
pub(super) fn read(path: &Path, export: &mut Export) {
    let location = path.display().to_string();
    let problem = |kind, message: String| Problem { kind, location: location.clone(), message };
    let conn = match Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) {
        Ok(c) => c,
        Err(e) => return export.problems.push(problem("unreadable_file", format!("SQLite: {e}"))),
    };
    match conn.query_row("SELECT version FROM kest_schema", [], |r| r.get::<_, i64>(0)) {
        Ok(SCHEMA_VERSION) => {}
        Ok(other) => {
            return export.problems.push(problem(
                "unsupported_store",
                format!("span store schema version {other}; this kest reads version {SCHEMA_VERSION}"),
            ));
        }
        Err(e) => {
            return export.problems.push(problem(
                "unsupported_store",
                format!("not a Kest span store (table kest_schema: {e})"),
            ));
        }
    }
    let mut stmt = match conn.prepare(QUERY) {
        Ok(s) => s,
        Err(e) => return export.problems.push(problem("unsupported_store", format!("table spans: {e}"))),
    };
    let rows = match stmt.query_map([], |row| Ok(convert(path, row))) {
        Ok(rows) => rows,
        Err(e) => return export.problems.push(problem("unreadable_file", format!("SQLite: {e}"))),
    };
    for row in rows {
        match row {
            Ok(Ok(span)) => export.spans.push(span),
            Ok(Err((rowid, message))) => export.problems.push(Problem {
                kind: "malformed_record",
                location: format!("{location} row {rowid}"),
                message,
            }),
            Err(e) => export.problems.push(problem("malformed_record", format!("SQLite: {e}"))),
        }
    }
}

/// One row as a span, or its rowid and what is wrong with it.
fn convert(path: &Path, row: &Row<'_>) -> Result<ExportedSpan, (i64, String)> {
    let rowid: i64 = row.get(0).map_err(|e| (0, e.to_string()))?;
    let fail = |e: rusqlite::Error| (rowid, format!("column: {e}"));
    let text = |i: usize| row.get::<_, Option<String>>(i).map_err(fail);
    let trace_id = text(1)?.unwrap_or_default();
    let span_id = text(2)?.unwrap_or_default();
    if !is_hex_id(&trace_id, 32) {
        return Err((rowid, "trace_id is not 32 lowercase hex digits".to_owned()));
    }
    if !is_hex_id(&span_id, 16) {
        return Err((rowid, "span_id is not 16 lowercase hex digits".to_owned()));
    }
    let status_code: i64 = row.get(6).map_err(fail)?;
    Ok(ExportedSpan {
        origin: Origin::Row { path: path.to_owned(), rowid },
        trace_id,
        span_id,
        name: text(3)?.unwrap_or_default(),
        service: text(4)?,
        scope: text(5)?,
        status_code: i32::try_from(status_code)
            .map_err(|_| (rowid, "status_code out of range".to_owned()))?,
        status_message: text(7)?.filter(|m| !m.is_empty()),
        kest: KestAttributes {
            signature: text(8)?,
            entry_hash: text(9)?,
            parent_hash: text(10)?,
            passport: text(11)?,
            chain_tip: text(12)?,
            claim_check: text(13)?,
            entry_id: text(14)?,
            workload_id: text(15)?,
            trust_score: row.get::<_, Option<i64>>(16).map_err(fail)?,
            operation: text(17)?,
            decision: text(18)?,
            denied_policy: text(19)?,
            denied_tier: text(20)?,
        },
    })
}
