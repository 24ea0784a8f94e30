//! Telemetry (SPEC §9): one span per hooked call, and (feature
//! `telemetry`) the exporters that write them somewhere an auditor can read.
//!
//! # The span
//!
//! Each hooked call emits `kest.verified.<operation>` through the
//! OpenTelemetry API, instrumentation scope [`SCOPE`] (`kest.core`), as a
//! child of the current OpenTelemetry context. A recorded call carries
//! [`attr::SIGNATURE`] (the entry's whole JWS), [`attr::ENTRY_HASH`],
//! [`attr::PARENT_HASH`], [`attr::PASSPORT`] (the passport JSON as of the
//! call; above [`PASSPORT_ATTRIBUTE_LIMIT`] (4 KiB) it is replaced by
//! [`attr::CHAIN_TIP`] and [`attr::CLAIM_CHECK`]), [`attr::ENTRY_ID`],
//! [`attr::WORKLOAD_ID`], [`attr::TRUST_SCORE`], [`attr::OPERATION`] and
//! [`attr::DECISION`] = `allow`. A refused call ends its span with status
//! error, [`attr::DECISION`] = `deny` (or `error` when the policy could not be
//! evaluated or the entry could not be recorded), [`attr::DENIED_POLICY`] and
//! [`attr::DENIED_TIER`]. `service.name` is a resource attribute of the
//! installed provider. With no provider the API is a no-op and nothing is
//! computed for the span.
//!
//! # Export (feature `telemetry`)
//!
//! [`init`] installs an `opentelemetry_sdk` tracer provider as the global
//! one, with one **batch** span processor per [`Exporter`]: the hook only
//! queues a finished span (a full queue drops spans, it never blocks), and an
//! export failure is logged with `tracing`, never returned to a call.
//! [`TelemetryGuard::shutdown`] flushes; dropping the guard flushes too, best
//! effort.
//!
//! ```
//! # #[cfg(feature = "telemetry")] {
//! use std::sync::Arc;
//! use kest::identity::StaticIdentity;
//! use kest::policy::MockPolicyEngine;
//! use kest::telemetry::{self, Exporter};
//! use kest::{CallContext, Kest, Lineage, Verified};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("spans.jsonl");
//! let guard = telemetry::init("billing", [Exporter::File(path.clone())]).unwrap();
//!
//! let kest = Arc::new(
//!     Kest::builder()
//!         .identity(Arc::new(StaticIdentity::from_seed("spiffe://example/billing", [7; 32])))
//!         .engine(Arc::new(MockPolicyEngine::allow_all()))
//!         .build()
//!         .unwrap(),
//! );
//! let hook = Verified::builder("charge").policy("allow").source_type("internal").build().unwrap();
//! Lineage::new().enter(|| hook.call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(42)))
//!     .unwrap();
//!
//! guard.shutdown().unwrap(); // flushes the batch
//! let line = std::fs::read_to_string(&path).unwrap();
//! assert!(line.contains("\"kest.verified.charge\""));
//! assert!(line.contains("\"billing\""));
//! # }
//! ```
//!
//! The file and stdout exporters write the OTLP/JSON mapping of
//! `ExportTraceServiceRequest`, one request per line, with the official
//! `opentelemetry-proto` types (hex trace and span ids, 64-bit integers as
//! strings) — what the OpenTelemetry Collector's file exporter writes. The
//! SQLite store (feature `sqlite`) has the schema [`SQLITE_SCHEMA`]. OTLP
//! (feature `otlp`) runs on a private Tokio runtime owned by the guard, so it
//! works whatever runtime (if any) the application uses.

mod config;
mod labels;
mod span;

#[cfg(feature = "telemetry")]
mod init;
#[cfg(feature = "telemetry")]
mod json_lines;
#[cfg(feature = "telemetry")]
mod layer;
#[cfg(feature = "otlp")]
mod otlp;
#[cfg(feature = "telemetry")]
mod recorder;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use config::{Exporter, OtlpProtocol, TelemetryConfig};
#[cfg(feature = "telemetry")]
pub use init::{TelemetryError, TelemetryGuard, init, init_from_config};
#[cfg(feature = "telemetry")]
pub use json_lines::to_otlp_json;

pub(crate) use labels::SpanLabels;
pub(crate) use span::{HookSpan, PassportDigest};

use opentelemetry::trace::TraceContextExt as _;

/// The instrumentation scope name of the hook's spans.
///
/// ```
/// assert_eq!(kest::telemetry::SCOPE, "kest.core");
/// ```
pub const SCOPE: &str = "kest.core";

/// Above this many bytes of passport JSON, a span carries
/// [`attr::CHAIN_TIP`] and [`attr::CLAIM_CHECK`] instead of
/// [`attr::PASSPORT`]: 4096, the default inline threshold of the baggage
/// (SPEC §7.3), about three or four entries. Every span carries its own
/// entry, so the passport is always rebuildable from the export; repeating
/// it whole in every span would make a store grow with the square of the
/// flow length and the export cost grow with it.
///
/// ```
/// assert_eq!(kest::telemetry::PASSPORT_ATTRIBUTE_LIMIT, 4096);
/// ```
pub const PASSPORT_ATTRIBUTE_LIMIT: usize = 4096;

/// The schema of the SQLite span store (version [`SQLITE_SCHEMA_VERSION`]):
/// table `kest_schema` (one row, the version) and table `spans`, one row per
/// span with the `kest.*` attributes as columns and every other attribute as
/// a JSON object, indexed by trace id and entry hash.
///
/// ```
/// assert!(kest::telemetry::SQLITE_SCHEMA.contains("CREATE TABLE IF NOT EXISTS spans ("));
/// ```
pub const SQLITE_SCHEMA: &str = include_str!("schema.sql");

/// The version of [`SQLITE_SCHEMA`] recorded in `kest_schema`.
///
/// ```
/// assert_eq!(kest::telemetry::SQLITE_SCHEMA_VERSION, 1);
/// ```
pub const SQLITE_SCHEMA_VERSION: i64 = 1;

/// The span attribute keys of SPEC §9.
///
/// ```
/// use kest::telemetry::attr;
/// assert_eq!(attr::SIGNATURE, "kest.signature");
/// assert_eq!(attr::DECISION, "kest.decision");
/// ```
pub mod attr {
    /// The entry's whole JWS (compact serialization).
    pub const SIGNATURE: &str = "kest.signature";
    /// The entry hash (64 lowercase hex), as in `parent_ids` and chain tips.
    pub const ENTRY_HASH: &str = "kest.entry_hash";
    /// The entry's parents, comma-separated hashes, `"0"` for a root.
    pub const PARENT_HASH: &str = "kest.parent_hash";
    /// The passport JSON (array of JWS) as of the call.
    pub const PASSPORT: &str = "kest.passport";
    /// Instead of a passport above the size limit: the flow's tips in the
    /// format of the baggage `kest.chain_tip`.
    pub const CHAIN_TIP: &str = "kest.chain_tip";
    /// Instead of a passport above the size limit: its content-addressed id,
    /// a version 8 UUID whose custom bits are the first 16 bytes of SHA-256
    /// over the raw 32-byte entry hashes in passport order. The propagation
    /// layer's claim-check ids are random and short-lived, so the span
    /// records one anyone can recompute from the rebuilt passport.
    pub const CLAIM_CHECK: &str = "kest.claim_check";
    /// The entry id (UUID v7); on a denial, the id the entry would have had.
    pub const ENTRY_ID: &str = "kest.entry_id";
    /// The signing workload.
    pub const WORKLOAD_ID: &str = "kest.workload_id";
    /// The entry's trust score (integer 0..=100).
    pub const TRUST_SCORE: &str = "kest.trust_score";
    /// The operation name.
    pub const OPERATION: &str = "kest.operation";
    /// `allow` (recorded), `deny` (refused by policy) or `error`.
    pub const DECISION: &str = "kest.decision";
    /// The denying (or failing) policy.
    pub const DENIED_POLICY: &str = "kest.denied_policy";
    /// Its tier (`enterprise`, `platform`, `application`, `function`).
    pub const DENIED_TIER: &str = "kest.denied_tier";
    /// On a refused call, the stable error kind (`policy_denied`, ...).
    pub const ERROR_KIND: &str = "kest.error_kind";
}

/// Whether the current OpenTelemetry context carries a valid span.
///
/// ```
/// assert!(!kest::telemetry::has_active_trace());
/// ```
pub fn has_active_trace() -> bool {
    opentelemetry::Context::current().span().span_context().is_valid()
}
