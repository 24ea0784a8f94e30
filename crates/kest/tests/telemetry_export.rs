//! SPEC §9 export, end to end: `kest::telemetry::init` with each exporter,
//! hooked calls, `shutdown()`, then what arrived — at real OTLP receivers on
//! loopback (a tonic gRPC `TraceService` and an HTTP/protobuf endpoint,
//! decoded with the official `opentelemetry-proto` types), in an OTLP JSON
//! lines file and in the SQLite store. Exporters that fail never fail a call.
//!
//! Every test installs the global tracer provider, so they run one at a
//! time (`GLOBAL`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::future::Future as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use kest::identity::StaticIdentity;
use kest::policy::{Decision, MockPolicyEngine};
use kest::telemetry::{self, Exporter, OtlpProtocol, TelemetryGuard};
use kest::{CallContext, Kest, Lineage, Verified};
use kest_core::{KeySet, Passport, Signer as _, Verifier};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use sha2::{Digest as _, Sha256};

const WORKLOAD: &str = "spiffe://test/telemetry";
const SERVICE: &str = "kest-export-test";

static GLOBAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    GLOBAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn identity() -> Arc<StaticIdentity> {
    Arc::new(StaticIdentity::from_seed(WORKLOAD, [41u8; 32]))
}

fn keys() -> KeySet {
    let mut keys = KeySet::new();
    keys.insert(WORKLOAD, identity().public_key().unwrap()).unwrap();
    keys
}

fn runtime() -> Arc<Kest> {
    let engine = MockPolicyEngine::allow_all().with("never", Decision::Deny);
    Arc::new(Kest::builder().identity(identity()).engine(Arc::new(engine)).build().unwrap())
}

/// Two recorded calls and one denial in one flow; returns the passport.
fn run_calls(kest: &Arc<Kest>) -> Passport {
    let flow = Lineage::new();
    flow.enter(|| {
        for (i, op) in ["first", "second"].into_iter().enumerate() {
            let hook = Verified::builder(op).policy("allow").source_type("internal").build().unwrap();
            let value =
                hook.call(CallContext::new().runtime(kest), || Ok::<_, std::io::Error>(i * 10)).unwrap();
            assert_eq!(value, i * 10);
        }
        let denied = Verified::builder("third").policy("never").build().unwrap();
        assert!(denied.call(CallContext::new().runtime(kest), || Ok::<_, std::io::Error>(())).is_err());
    });
    flow.passport()
}

/// The value of an OTLP attribute as a string (ints in decimal).
fn value_str(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map(value_str).unwrap_or_default())).collect()
}

/// Every span of the requests, with its resource attributes and scope name.
fn flatten(requests: &[ExportTraceServiceRequest]) -> Vec<(HashMap<String, String>, String, Span)> {
    let mut out = Vec::new();
    for request in requests {
        for rs in &request.resource_spans {
            let resource = attrs(&rs.resource.as_ref().unwrap().attributes);
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                for span in &ss.spans {
                    out.push((resource.clone(), scope.clone(), span.clone()));
                }
            }
        }
    }
    out
}

/// The SPEC §9 checks on what a receiver got for `run_calls`.
fn check_exported(requests: &[ExportTraceServiceRequest], passport: &Passport) {
    let mut spans: Vec<_> =
        flatten(requests).into_iter().filter(|(_, scope, _)| scope == "kest.core").collect();
    spans.sort_by_key(|(_, _, s)| s.start_time_unix_nano);
    assert_eq!(spans.len(), 3, "two recorded calls and one denial");
    let mut signatures = Vec::new();
    for (i, (resource, _, span)) in spans.iter().take(2).enumerate() {
        let entry = &passport.entries()[i];
        let a = attrs(&span.attributes);
        assert_eq!(resource["service.name"], SERVICE);
        assert_eq!(span.name, format!("kest.verified.{}", entry.payload().operation));
        assert_eq!(a["kest.signature"], entry.jws());
        assert_eq!(a["kest.entry_hash"], entry.hash().to_string());
        assert_eq!(a["kest.entry_id"], entry.payload().entry_id);
        assert_eq!(a["kest.workload_id"], WORKLOAD);
        assert_eq!(a["kest.trust_score"], "100");
        assert_eq!(a["kest.operation"], entry.payload().operation);
        assert_eq!(a["kest.decision"], "allow");
        let parent = if i == 0 { "0".to_owned() } else { passport.entries()[0].hash().to_string() };
        assert_eq!(a["kest.parent_hash"], parent);
        let inline: Vec<String> = serde_json::from_str(&a["kest.passport"]).unwrap();
        assert_eq!(inline.len(), i + 1);
        assert_eq!(span.status.as_ref().map_or(0, |s| s.code), 0);
        signatures.push(a["kest.signature"].clone());
    }
    // The signatures alone rebuild a passport that verifies against the
    // identity's key, every check on.
    let rebuilt = Verifier::new(keys())
        .semantic(true)
        .verify_json(&serde_json::to_string(&signatures).unwrap())
        .expect("the exported signatures verify");
    assert_eq!(rebuilt.len(), 2);
    assert_eq!(rebuilt.entries()[1].hash(), passport.entries()[1].hash());

    let (resource, _, denied) = &spans[2];
    let a = attrs(&denied.attributes);
    assert_eq!(resource["service.name"], SERVICE);
    assert_eq!(denied.name, "kest.verified.third");
    assert_eq!(a["kest.decision"], "deny");
    assert_eq!(a["kest.denied_policy"], "never");
    assert_eq!(a["kest.denied_tier"], "function");
    assert!(!a.contains_key("kest.signature"), "a denied call has no entry");
    let status = denied.status.as_ref().unwrap();
    assert_eq!(status.code, 2, "status error");
    assert!(status.message.contains("never"), "{}", status.message);
}

// ---------------------------------------------------------------- receivers

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl Received {
    fn take(&self) -> Vec<ExportTraceServiceRequest> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// A tonic OTLP/gRPC receiver on loopback.
fn grpc_receiver(rt: &tokio::runtime::Runtime) -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(received.clone());
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (addr, received)
}

/// An OTLP/HTTP protobuf receiver on loopback (`POST /v1/traces`).
fn http_receiver(rt: &tokio::runtime::Runtime) -> (SocketAddr, Received) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode, header};
    use prost::Message as _;

    let received = Received::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                assert_eq!(headers[header::CONTENT_TYPE], "application/x-protobuf");
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                store.0.lock().unwrap().push(request);
                let response = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
                (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-protobuf")], response)
            }
        }),
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

// -------------------------------------------------------------------- OTLP

#[test]
fn otlp_grpc_receiver_gets_every_span_with_the_spec_attributes() {
    let _serial = serial();
    let rt = server_runtime();
    let (addr, received) = grpc_receiver(&rt);
    let guard = telemetry::init(
        SERVICE,
        [Exporter::Otlp { protocol: OtlpProtocol::Grpc, endpoint: Some(format!("http://{addr}")) }],
    )
    .unwrap();
    let passport = run_calls(&runtime());
    guard.shutdown().unwrap();
    check_exported(&received.take(), &passport);
}

#[test]
fn otlp_http_receiver_gets_every_span_with_the_spec_attributes() {
    let _serial = serial();
    let rt = server_runtime();
    let (addr, received) = http_receiver(&rt);
    let guard = telemetry::init(
        SERVICE,
        [Exporter::Otlp {
            protocol: OtlpProtocol::HttpProtobuf,
            endpoint: Some(format!("http://{addr}/v1/traces")),
        }],
    )
    .unwrap();
    let passport = run_calls(&runtime());
    guard.shutdown().unwrap();
    check_exported(&received.take(), &passport);
}

#[test]
fn otlp_works_under_an_application_runtime_and_dropping_the_guard_flushes() {
    // init, calls and the end of the guard inside a Tokio runtime: the
    // exporter's private runtime must neither nest nor be dropped there.
    let _serial = serial();
    let rt = server_runtime();
    let (addr, received) = grpc_receiver(&rt);
    let app = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let passport = app.block_on(async move {
        let guard = telemetry::init(
            SERVICE,
            [Exporter::Otlp { protocol: OtlpProtocol::Grpc, endpoint: Some(format!("http://{addr}")) }],
        )
        .unwrap();
        let passport = tokio::spawn(async { run_calls(&runtime()) }).await.unwrap();
        drop(guard); // best-effort flush on drop
        passport
    });
    check_exported(&received.take(), &passport);
}

#[test]
fn a_failed_init_inside_an_application_runtime_is_an_error_not_a_panic() {
    // The OTLP exporter's private runtime is already started when the file
    // exporter fails: it is stopped without blocking the async context.
    let _serial = serial();
    let app = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    app.block_on(async {
        let err = telemetry::init(
            SERVICE,
            [
                Exporter::Otlp { protocol: OtlpProtocol::Grpc, endpoint: Some("http://127.0.0.1:1".into()) },
                Exporter::File("/nonexistent-kest-dir/spans.jsonl".into()),
            ],
        )
        .unwrap_err();
        assert!(matches!(err, telemetry::TelemetryError::File { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent-kest-dir/spans.jsonl"), "{err}");
    });
}

// -------------------------------------------------------------------- file

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn file_export_is_otlp_json_lines_in_the_collector_format() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let guard = telemetry::init(SERVICE, [Exporter::File(path.clone())]).unwrap();
    let passport = run_calls(&runtime());
    guard.shutdown().unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    let mut requests = Vec::new();
    for line in text.lines() {
        // Each line is one ExportTraceServiceRequest in the OTLP/JSON
        // mapping, readable by the official types ...
        requests.push(serde_json::from_str::<ExportTraceServiceRequest>(line).unwrap());
    }
    check_exported(&requests, &passport);

    // ... and, as plain JSON, has the mapping's exact shapes.
    let mut checked = false;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let rs = &v["resourceSpans"][0];
        let service = rs["resource"]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|kv| kv["key"] == "service.name")
            .unwrap();
        assert_eq!(service["value"], serde_json::json!({ "stringValue": SERVICE }));
        let ss =
            rs["scopeSpans"].as_array().unwrap().iter().find(|s| s["scope"]["name"] == "kest.core").unwrap();
        for span in ss["spans"].as_array().unwrap() {
            if span["name"] != "kest.verified.second" {
                continue;
            }
            checked = true;
            assert!(is_lower_hex(span["traceId"].as_str().unwrap(), 32), "traceId is lowercase hex: {span}");
            assert!(is_lower_hex(span["spanId"].as_str().unwrap(), 16), "spanId is lowercase hex");
            let parent = span["parentSpanId"].as_str().unwrap_or("");
            assert!(parent.is_empty(), "no parent span (no trace was active): {parent}");
            for key in ["startTimeUnixNano", "endTimeUnixNano"] {
                let t = span[key].as_str().unwrap_or_else(|| panic!("{key} is a JSON string: {span}"));
                assert!(t.parse::<u64>().unwrap() > 1_600_000_000_000_000_000);
            }
            assert!(span["kind"].is_i64(), "enum as integer");
            assert!(
                span.get("trace_id").is_none() && span.get("start_time_unix_nano").is_none(),
                "camelCase"
            );
            let attr = |k: &str| {
                span["attributes"].as_array().unwrap().iter().find(|kv| kv["key"] == k).unwrap()["value"]
                    .clone()
            };
            assert_eq!(
                attr("kest.trust_score"),
                serde_json::json!({ "intValue": "100" }),
                "int64 as a string"
            );
            assert_eq!(attr("kest.decision"), serde_json::json!({ "stringValue": "allow" }));
            assert_eq!(
                attr("kest.signature"),
                serde_json::json!({ "stringValue": passport.entries()[1].jws() })
            );
            assert_eq!(
                attr("kest.entry_hash"),
                serde_json::json!({ "stringValue": passport.entries()[1].hash().to_string() })
            );
            // The entry records its span's trace id.
            assert_eq!(passport.entries()[1].payload().label("trace_id"), span["traceId"].as_str());
        }
        for span in ss["spans"].as_array().unwrap() {
            if span["name"] == "kest.verified.third" {
                assert_eq!(span["status"]["code"], 2, "status.code is an integer");
            }
        }
    }
    assert!(checked, "the sample span was found");
}

#[test]
fn a_large_passport_is_replaced_by_the_chain_tip_and_its_claim_id() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let guard = telemetry::init(SERVICE, [Exporter::File(path.clone())]).unwrap();
    let kest = runtime();
    let flow = Lineage::new();
    let hook = Verified::builder("step").policy("allow").source_type("internal").build().unwrap();
    let mut over = None;
    flow.enter(|| {
        for i in 0..12 {
            hook.call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(())).unwrap();
            if over.is_none() && flow.passport().to_json().len() > telemetry::PASSPORT_ATTRIBUTE_LIMIT {
                over = Some(i);
            }
        }
    });
    guard.shutdown().unwrap();
    let first_over = over.expect("12 entries exceed the limit");
    assert!(first_over >= 2, "a short passport is inline");
    let passport = flow.passport();
    let mut requests = Vec::new();
    for line in std::fs::read_to_string(&path).unwrap().lines() {
        requests.push(serde_json::from_str::<ExportTraceServiceRequest>(line).unwrap());
    }
    let mut spans: Vec<_> = flatten(&requests).into_iter().map(|(_, _, s)| s).collect();
    spans.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(spans.len(), 12);
    for (i, span) in spans.iter().enumerate() {
        let a = attrs(&span.attributes);
        assert_eq!(a["kest.signature"], passport.entries()[i].jws(), "the entry is always there");
        let prefix = kest_core::UnverifiedPassport::from_entries(
            passport.entries()[..=i].iter().map(|e| e.jws().to_owned()).collect(),
        )
        .to_json();
        if i < first_over {
            assert_eq!(a["kest.passport"], prefix);
            assert!(!a.contains_key("kest.chain_tip") && !a.contains_key("kest.claim_check"));
        } else {
            assert!(prefix.len() > telemetry::PASSPORT_ATTRIBUTE_LIMIT);
            assert!(!a.contains_key("kest.passport"), "span {i} carries no oversized passport");
            assert_eq!(a["kest.chain_tip"], passport.entries()[i].hash().to_string());
            // The claim id is content-addressed: recomputable from the
            // passport rebuilt from the entries (SHA-256 over the raw entry
            // hashes in passport order).
            let mut concat = Vec::new();
            for e in &passport.entries()[..=i] {
                concat.extend_from_slice(e.hash().as_bytes());
            }
            let digest = Sha256::digest(&concat);
            let id: uuid::Uuid = a["kest.claim_check"].parse().unwrap();
            assert_eq!(id.get_version_num(), 8);
            assert_eq!(id.as_bytes()[..6], digest[..6]);
            assert_eq!(id.as_bytes()[9..], digest[9..16]);
        }
    }
}

// ------------------------------------------------------------------ SQLite

#[test]
fn sqlite_store_holds_one_row_per_span_in_wal_mode() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.db");
    let guard = telemetry::init(SERVICE, [Exporter::Sqlite(db.clone())]).unwrap();
    let kest = runtime();
    let passport = run_calls(&kest);
    // Many more calls than one transaction holds (bounded batches).
    let hook = Verified::builder("bulk").policy("allow").source_type("internal").build().unwrap();
    for _ in 0..120 {
        let flow = Lineage::new();
        flow.enter(|| {
            for _ in 0..5 {
                hook.call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(())).unwrap();
            }
        });
    }
    guard.shutdown().unwrap();

    let conn = rusqlite::Connection::open(&db).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn.query_row("SELECT version FROM kest_schema", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 1);
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM kest_schema", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 1);
    let mut indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'spans' AND name LIKE 'spans_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    indexes.sort();
    assert_eq!(indexes, ["spans_entry_hash"], "trace lookups use the primary key");
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('spans')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(columns.len(), 25);
    assert_eq!(columns.first().map(String::as_str), Some("trace_id"));
    assert_eq!(columns.last().map(String::as_str), Some("resource"));

    let total: i64 = conn.query_row("SELECT COUNT(*) FROM spans", [], |r| r.get(0)).unwrap();
    assert_eq!(total, 3 + 600);
    let bulk: i64 =
        conn.query_row("SELECT COUNT(*) FROM spans WHERE kest_operation = 'bulk'", [], |r| r.get(0)).unwrap();
    assert_eq!(bulk, 600);

    // The second call, column by column.
    let entry = &passport.entries()[1];
    type Second = (String, String, Option<String>, String, String, String, i64, i64, i64, String);
    let row: Second = conn
        .query_row(
            "SELECT trace_id, span_id, parent_span_id, name, service_name, scope_name, status_code, \
             kest_trust_score, end_time_unix_nano - start_time_unix_nano, kest_signature \
             FROM spans WHERE kest_entry_hash = ?1",
            [entry.hash().to_string()],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            },
        )
        .unwrap();
    assert!(is_lower_hex(&row.0, 32) && is_lower_hex(&row.1, 16));
    assert_eq!(entry.payload().label("trace_id"), Some(row.0.as_str()));
    assert_eq!(row.2, None, "a root span has a NULL parent");
    assert_eq!(
        (row.3.as_str(), row.4.as_str(), row.5.as_str()),
        ("kest.verified.second", SERVICE, "kest.core")
    );
    assert_eq!((row.6, row.7), (0, 100));
    assert!(row.8 >= 0);
    assert_eq!(row.9, entry.jws());
    let (decision, parent_hash, passport_json, attributes, resource): (
        String,
        String,
        String,
        String,
        String,
    ) = conn
        .query_row(
            "SELECT kest_decision, kest_parent_hash, kest_passport, attributes, resource FROM spans \
             WHERE kest_entry_hash = ?1",
            [entry.hash().to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(decision, "allow");
    assert_eq!(parent_hash, passport.entries()[0].hash().to_string());
    assert_eq!(serde_json::from_str::<Vec<String>>(&passport_json).unwrap().len(), 2);
    let attributes: serde_json::Value = serde_json::from_str(&attributes).unwrap();
    assert!(attributes.as_object().unwrap().keys().all(|k| !k.starts_with("kest.")), "{attributes}");
    let resource: serde_json::Value = serde_json::from_str(&resource).unwrap();
    assert_eq!(resource["service.name"], SERVICE);

    let (decision, policy, tier, code, message): (String, String, String, i64, String) = conn
        .query_row(
            "SELECT kest_decision, kest_denied_policy, kest_denied_tier, status_code, status_message FROM spans \
             WHERE name = 'kest.verified.third'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!((decision.as_str(), policy.as_str(), tier.as_str(), code), ("deny", "never", "function", 2));
    assert!(message.contains("denied"), "{message}");
}

// ---------------------------------------------------------------- failures

#[test]
fn failing_exporters_never_fail_a_call_and_shutdown_flushes_the_others() {
    let _serial = serial();
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    let mut exporters = vec![
        Exporter::Otlp { protocol: OtlpProtocol::Grpc, endpoint: Some(format!("http://{closed}")) },
        Exporter::Otlp {
            protocol: OtlpProtocol::HttpProtobuf,
            endpoint: Some(format!("http://{closed}/v1/traces")),
        },
        Exporter::File(good.clone()),
    ];
    // Every write to /dev/full fails (ENOSPC).
    if std::path::Path::new("/dev/full").exists() {
        exporters.push(Exporter::File("/dev/full".into()));
    }
    let expect_file_failure = exporters.len() == 4;
    install_log_capture();
    let guard: TelemetryGuard = telemetry::init(SERVICE, exporters).unwrap();
    let passport = run_calls(&runtime());
    assert_eq!(passport.len(), 2, "both calls returned their values and were recorded");
    // Shutdown reports the failed exporters (or not), but flushes the
    // working one either way.
    let _ = guard.shutdown();
    // Each failure was logged with `tracing`, naming the exporter.
    let logged = FAILED_EXPORTS.lock().unwrap().clone();
    assert!(logged.contains(&format!("otlp-grpc:http://{closed}")), "{logged:?}");
    assert!(logged.contains(&format!("otlp-http:http://{closed}/v1/traces")), "{logged:?}");
    assert_eq!(logged.contains(&"file:/dev/full".to_owned()), expect_file_failure, "{logged:?}");
    assert!(!logged.iter().any(|e| e.ends_with("good.jsonl")), "{logged:?}");
    let text = std::fs::read_to_string(&good).unwrap();
    let requests: Vec<ExportTraceServiceRequest> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    check_exported(&requests, &passport);
}

/// The `exporter` field of every `tracing` event that has one.
static FAILED_EXPORTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct CaptureExporterField;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureExporterField {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        struct Visit(Option<String>);
        impl tracing::field::Visit for Visit {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "exporter" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut visit = Visit(None);
        event.record(&mut visit);
        if let Some(exporter) = visit.0 {
            FAILED_EXPORTS.lock().unwrap().push(exporter);
        }
    }
}

/// Captures events from every thread (the batch processors have their own).
fn install_log_capture() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let _ =
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(CaptureExporterField));
}

// ----------------------------------------------------------------- tracing

#[test]
fn a_tracing_span_is_the_parent_of_the_hook_span_in_the_same_trace() {
    use tracing_subscriber::layer::SubscriberExt as _;

    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let guard = telemetry::init(SERVICE, [Exporter::File(path.clone())]).unwrap();
    let subscriber = tracing_subscriber::registry().with(guard.tracing_layer());
    let kest = runtime();
    let flow = Lineage::new();
    tracing::subscriber::with_default(subscriber, || {
        let _request = tracing::info_span!("handle_request").entered();
        flow.enter(|| {
            Verified::builder("inner")
                .policy("allow")
                .source_type("internal")
                .build()
                .unwrap()
                .call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(()))
                .unwrap();
        });
    });
    guard.shutdown().unwrap();

    let requests = read_file_export(&path);
    let spans = flatten(&requests);
    let (_, scope, outer) =
        spans.iter().find(|(_, _, s)| s.name == "handle_request").expect("the tracing span");
    assert_eq!(scope, "kest.tracing");
    let (_, _, inner) =
        spans.iter().find(|(_, _, s)| s.name == "kest.verified.inner").expect("the hook span");
    assert_eq!(inner.trace_id, outer.trace_id, "one trace");
    assert_eq!(inner.parent_span_id, outer.span_id, "the tracing span is the parent");
    assert!(outer.parent_span_id.is_empty());
    let trace_hex: String = inner.trace_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(flow.passport().entries()[0].payload().label("trace_id"), Some(trace_hex.as_str()));
}

// ------------------------------------------------------------ configuration

#[test]
fn the_kest_configuration_installs_telemetry() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.jsonl");
    let db = dir.path().join("env.db");
    let exporters = format!("file:{},sqlite:{}", file.display(), db.display());
    let kest = Kest::builder()
        .identity(identity())
        .engine(Arc::new(MockPolicyEngine::allow_all().with("never", Decision::Deny)))
        .with_env_lookup(|k| match k {
            "KEST_TELEMETRY_EXPORTERS" => Some(exporters.clone()),
            "OTEL_SERVICE_NAME" => Some("from-otel-env".into()),
            _ => None,
        })
        .unwrap()
        .build()
        .unwrap();
    let config = kest.telemetry().unwrap();
    assert_eq!(config.service_name(), "from-otel-env");
    let guard = telemetry::init_from_config(config).unwrap();
    let passport = run_calls(&Arc::new(kest));
    guard.shutdown().unwrap();
    let requests: Vec<ExportTraceServiceRequest> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let services: Vec<String> =
        flatten(&requests).into_iter().map(|(r, _, _)| r["service.name"].clone()).collect();
    assert_eq!(services, ["from-otel-env"; 3]);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let hashes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM spans WHERE kest_entry_hash IN (?1, ?2) AND service_name = 'from-otel-env'",
            [passport.entries()[0].hash().to_string(), passport.entries()[1].hash().to_string()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hashes, 2);

    // Misconfiguration is an error, never a silent default.
    let bad = |value: &'static str| {
        Kest::builder().with_env_lookup(move |k| (k == "KEST_TELEMETRY_EXPORTERS").then(|| value.to_owned()))
    };
    assert!(bad("kafka").is_err());
    assert!(bad("file:").is_err());
    assert!(bad("otlp-http:localhost:4318").is_err(), "an endpoint must be a URL");
    assert!(bad("stdout").unwrap().build().is_err(), "exporters without a service name");
}

/// Every line of an OTLP JSON lines export, parsed.
fn read_file_export(path: &std::path::Path) -> Vec<ExportTraceServiceRequest> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The spans of the requests, ordered by start time, as (name, kind, status
/// code, attributes).
fn span_shapes(requests: &[ExportTraceServiceRequest]) -> Vec<(String, i32, i32, HashMap<String, String>)> {
    let mut spans: Vec<Span> = flatten(requests)
        .into_iter()
        .filter(|(_, scope, _)| scope == "kest.core")
        .map(|(_, _, s)| s)
        .collect();
    spans.sort_by_key(|s| s.start_time_unix_nano);
    spans
        .into_iter()
        .map(|s| (s.name.clone(), s.kind, s.status.as_ref().map_or(0, |st| st.code), attrs(&s.attributes)))
        .collect()
}

#[test]
fn the_recorder_exports_the_same_spans_as_the_opentelemetry_api() {
    let _serial = serial();
    // Through the OpenTelemetry API: a provider installed by the
    // application, not by `kest::telemetry::init`.
    let memory = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let provider =
        opentelemetry_sdk::trace::SdkTracerProvider::builder().with_simple_exporter(memory.clone()).build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let api_passport = run_calls(&runtime());
    let finished = memory.get_finished_spans().unwrap();
    provider.shutdown().unwrap();
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(SERVICE).build();
    let line = telemetry::to_otlp_json(finished, &resource);
    let api = span_shapes(&[serde_json::from_str(&line).unwrap()]);

    // Through Kest's recorder (installed by init).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let guard = telemetry::init(SERVICE, [Exporter::File(path.clone())]).unwrap();
    let recorded_passport = run_calls(&runtime());
    guard.shutdown().unwrap();
    let requests = read_file_export(&path);
    check_exported(&requests, &recorded_passport);
    let recorded = span_shapes(&requests);

    assert_eq!(api.len(), 3);
    assert_eq!(recorded.len(), api.len());
    // Values that differ from run to run (new entries, new ids).
    let per_run = ["kest.signature", "kest.entry_hash", "kest.parent_hash", "kest.entry_id", "kest.passport"];
    for (i, ((a_name, a_kind, a_status, a_attrs), (r_name, r_kind, r_status, r_attrs))) in
        api.iter().zip(&recorded).enumerate()
    {
        assert_eq!((a_name, a_kind, a_status), (r_name, r_kind, r_status), "span {i}");
        let mut a_keys: Vec<&String> = a_attrs.keys().collect();
        let mut r_keys: Vec<&String> = r_attrs.keys().collect();
        a_keys.sort();
        r_keys.sort();
        assert_eq!(a_keys, r_keys, "span {i}: the same attributes");
        for (key, value) in a_attrs {
            if !per_run.contains(&key.as_str()) {
                assert_eq!(&r_attrs[key], value, "span {i}: {key}");
            }
        }
        if let Some(hash) = a_attrs.get("kest.entry_hash") {
            assert_eq!(hash, &api_passport.entries()[i].hash().to_string());
        }
    }
}

#[test]
fn force_flush_writes_the_hook_spans_without_stopping() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let guard = telemetry::init(SERVICE, [Exporter::File(path.clone())]).unwrap();
    let passport = run_calls(&runtime());
    guard.force_flush().unwrap();
    let requests = read_file_export(&path);
    check_exported(&requests, &passport);
    // Still recording after the flush.
    let flow = Lineage::new();
    flow.enter(|| {
        let hook = Verified::builder("after_flush").policy("allow").build().unwrap();
        hook.call(CallContext::new().runtime(&runtime()), || Ok::<_, std::io::Error>(())).unwrap();
    });
    guard.shutdown().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("kest.verified.after_flush"), "the span after the flush is exported at shutdown");
}

#[test]
fn stopping_an_earlier_guard_leaves_the_later_recorder_installed() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first.jsonl"), dir.path().join("second.jsonl"));
    let earlier = telemetry::init(SERVICE, [Exporter::File(first.clone())]).unwrap();
    let later = telemetry::init(SERVICE, [Exporter::File(second.clone())]).unwrap();
    earlier.shutdown().unwrap();
    let passport = run_calls(&runtime());
    later.shutdown().unwrap();
    check_exported(&read_file_export(&second), &passport);
    assert!(read_file_export(&first).is_empty(), "the earlier guard's exporter saw none of the calls");
}

/// An engine whose asynchronous decision never comes (a remote engine that
/// hangs): the call is still being authorized when it is dropped.
#[derive(Debug)]
struct Hangs;

impl kest::policy::PolicyEngine for Hangs {
    fn name(&self) -> &str {
        "hangs"
    }
    fn evaluate(
        &self,
        _policy: &str,
        _input: &kest::policy::PolicyInput,
    ) -> Result<Decision, kest::policy::PolicyError> {
        Ok(Decision::Deny)
    }
    fn evaluate_async<'a>(
        &'a self,
        _policy: &'a str,
        _input: &'a kest::policy::PolicyInput,
    ) -> kest::policy::BoxFuture<'a, Result<Decision, kest::policy::PolicyError>> {
        Box::pin(std::future::pending())
    }
}

#[test]
fn a_call_dropped_while_it_is_authorized_still_leaves_its_span() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let guard = telemetry::init(SERVICE, [Exporter::File(path.clone())]).unwrap();
    let kest = Arc::new(Kest::builder().identity(identity()).engine(Arc::new(Hangs)).build().unwrap());
    let hook = Verified::builder("hangs").policy("remote").build().unwrap();
    let ran = std::sync::atomic::AtomicBool::new(false);
    {
        let call = hook.call_async(CallContext::new().runtime(&kest), async {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        });
        let mut call = std::pin::pin!(call);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending(), "the engine has not decided");
        // Dropped here: a cancelled request.
    }
    guard.shutdown().unwrap();
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "the operation never ran");
    let spans = span_shapes(&read_file_export(&path));
    assert_eq!(spans.len(), 1, "{spans:?}");
    let (name, _, status, attributes) = &spans[0];
    assert_eq!(name, "kest.verified.hangs");
    assert_eq!(*status, 2, "status error");
    assert_eq!(attributes["kest.decision"], "error");
    assert_eq!(attributes["kest.error_kind"], "abandoned");
    assert!(!attributes.contains_key("kest.signature"), "nothing was signed");
}
