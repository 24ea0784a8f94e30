//! The SQLite span store (feature `sqlite`): one row per span in the table
//! `spans` of [`SQLITE_SCHEMA`], the `kest.*` attributes as columns and
//! every other attribute as a JSON object; WAL mode; each batch written in
//! transactions of at most [`MAX_ROWS_PER_TRANSACTION`] rows.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, Status};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, params};
use serde_json::{Map, Value as Json};

use super::{SQLITE_SCHEMA, SQLITE_SCHEMA_VERSION, attr};

/// The largest number of rows written in one transaction.
pub(crate) const MAX_ROWS_PER_TRANSACTION: usize = 512;

/// The span attributes stored in their own columns, in column order after
/// `status_message`.
const KEST_COLUMNS: [&str; 13] = [
    attr::ENTRY_HASH,
    attr::SIGNATURE,
    attr::PARENT_HASH,
    attr::PASSPORT,
    attr::CHAIN_TIP,
    attr::CLAIM_CHECK,
    attr::ENTRY_ID,
    attr::WORKLOAD_ID,
    attr::TRUST_SCORE,
    attr::OPERATION,
    attr::DECISION,
    attr::DENIED_POLICY,
    attr::DENIED_TIER,
];

const INSERT: &str = "INSERT OR IGNORE INTO spans (trace_id, span_id, parent_span_id, name, service_name, \
     scope_name, start_time_unix_nano, end_time_unix_nano, status_code, status_message, kest_entry_hash, \
     kest_signature, kest_parent_hash, kest_passport, kest_chain_tip, kest_claim_check, kest_entry_id, \
     kest_workload_id, kest_trust_score, kest_operation, kest_decision, kest_denied_policy, \
     kest_denied_tier, attributes, resource) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
     ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)";

/// Writes span batches into the SQLite store.
pub(crate) struct SqliteExporter {
    path: PathBuf,
    conn: Mutex<Connection>,
    service_name: Option<String>,
    resource: String,
}

impl fmt::Debug for SqliteExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteExporter").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteExporter {
    /// Opens (or creates) the store: WAL mode, the schema, the version row.
    /// A store of another schema version is an error.
    pub(crate) fn open(path: &Path) -> Result<SqliteExporter, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Other(format!("journal mode is `{mode}`, not WAL")));
        }
        // A 16 MiB page cache keeps the B-tree pages an insert touches in
        // memory instead of reading them back from the OS on every batch.
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA cache_size=-16384;")?;
        conn.execute_batch(SQLITE_SCHEMA)?;
        conn.execute(
            "INSERT INTO kest_schema (version) SELECT ?1 WHERE NOT EXISTS (SELECT 1 FROM kest_schema)",
            [SQLITE_SCHEMA_VERSION],
        )?;
        let version: i64 = conn.query_row("SELECT MAX(version) FROM kest_schema", [], |r| r.get(0))?;
        if version != SQLITE_SCHEMA_VERSION {
            return Err(StoreError::Other(format!(
                "schema version {version}, expected {SQLITE_SCHEMA_VERSION}"
            )));
        }
        Ok(SqliteExporter {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            service_name: None,
            resource: "{}".into(),
        })
    }

    fn write(&self, batch: &[SpanData]) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Other("connection lock poisoned".into()))?;
        for chunk in batch.chunks(MAX_ROWS_PER_TRANSACTION) {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(INSERT)?;
                for span in chunk {
                    let row = Row::of(span);
                    let [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12] = row.kest;
                    insert.execute(params![
                        span.span_context.trace_id().to_string(),
                        span.span_context.span_id().to_string(),
                        (span.parent_span_id != SpanId::INVALID).then(|| span.parent_span_id.to_string()),
                        span.name.as_ref(),
                        self.service_name,
                        span.instrumentation_scope.name(),
                        unix_nanos(span.start_time),
                        unix_nanos(span.end_time),
                        row.status_code,
                        row.status_message,
                        c0,
                        c1,
                        c2,
                        c3,
                        c4,
                        c5,
                        c6,
                        c7,
                        c8,
                        c9,
                        c10,
                        c11,
                        c12,
                        row.attributes.as_ref(),
                        self.resource,
                    ])?;
                }
            }
            tx.commit()?;
        }
        Ok(())
    }
}

/// A store failure: SQLite's error or a check of ours.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// SQLite failed.
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    /// The store is not what we expect.
    #[error("{0}")]
    Other(String),
}

/// The computed columns of one span.
/// One span's row, borrowing the span's strings (nothing is copied on the
/// way into SQLite).
struct Row<'a> {
    status_code: i64,
    status_message: Option<&'a str>,
    kest: [Option<ToSqlOutput<'a>>; 13],
    attributes: Cow<'static, str>,
}

impl<'a> Row<'a> {
    fn of(span: &'a SpanData) -> Row<'a> {
        let (status_code, status_message) = match &span.status {
            Status::Unset => (0, None),
            Status::Ok => (1, None),
            Status::Error { description } => (2, Some(description.as_ref())),
        };
        let mut kest: [Option<ToSqlOutput<'a>>; 13] = Default::default();
        let mut others = Map::new();
        for KeyValue { key, value, .. } in &span.attributes {
            match KEST_COLUMNS.iter().position(|k| *k == key.as_str()) {
                Some(i) => {
                    if let Some(slot) = kest.get_mut(i) {
                        *slot = Some(sql_value(value));
                    }
                }
                None => {
                    others.insert(key.to_string(), json_value(value));
                }
            }
        }
        let attributes = if others.is_empty() {
            Cow::Borrowed("{}")
        } else {
            Cow::Owned(Json::Object(others).to_string())
        };
        Row { status_code, status_message, kest, attributes }
    }
}

fn sql_value(value: &Value) -> ToSqlOutput<'_> {
    use rusqlite::types::Value as Sql;
    match value {
        Value::I64(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
        Value::String(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_str().as_bytes())),
        Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
        Value::F64(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
        other => ToSqlOutput::Owned(Sql::Text(json_value(other).to_string())),
    }
}

fn json_value(value: &Value) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::I64(i) => Json::from(*i),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.to_string()),
        Value::Array(Array::Bool(v)) => v.iter().map(|b| Json::Bool(*b)).collect(),
        Value::Array(Array::I64(v)) => v.iter().map(|i| Json::from(*i)).collect(),
        Value::Array(Array::F64(v)) => {
            v.iter().map(|f| serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number)).collect()
        }
        Value::Array(Array::String(v)) => v.iter().map(|s| Json::String(s.to_string())).collect(),
        other => Json::String(other.to_string()),
    }
}

fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)).unwrap_or(0)
}

impl SpanExporter for SqliteExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.write(&batch).map_err(|e| {
            OTelSdkError::InternalFailure(format!("writing spans to `{}`: {e}", self.path.display()))
        })
    }

    fn set_resource(&mut self, resource: &Resource) {
        let mut map = BTreeMap::new();
        for (key, value) in resource.iter() {
            map.insert(key.to_string(), json_value(value));
        }
        self.service_name = map.get("service.name").and_then(Json::as_str).map(str::to_owned);
        self.resource = serde_json::to_string(&map).unwrap_or_else(|_| "{}".into());
    }

    fn shutdown_with_timeout(&self, _timeout: std::time::Duration) -> OTelSdkResult {
        // Fold the WAL back into the database so the file is complete on
        // its own once the service has stopped.
        let conn =
            self.conn.lock().map_err(|_| OTelSdkError::InternalFailure("connection lock poisoned".into()))?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(|e| {
            OTelSdkError::InternalFailure(format!("checkpointing `{}`: {e}", self.path.display()))
        })
    }
}
