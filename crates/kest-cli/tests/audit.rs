//! `kest audit` over span exports: OTLP JSON lines (the Collector's file
//! exporter format), SQLite span stores and directories; a complete export
//! verifies, and every defect — a tampered row, a deleted span, an unknown
//! key, an export left out, an unreadable record — is named with the record
//! it is in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Command, Output};

use kest_core::encoding::{b64url_decode, b64url_encode};
use kest_core::{
    Ed25519Signer, EntryDraft, EntryHash, KeySet, Parents, Passport, Signer, TrustRules, sign_entry,
};
use serde_json::{Value, json};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const GATEWAY: &str = "spiffe://demo/gateway";
const WORKER: &str = "spiffe://demo/worker";

fn signer(p: &str) -> Ed25519Signer {
    Ed25519Signer::from_seed(p, if p == GATEWAY { [7; 32] } else { [9; 32] })
}

fn kest(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kest")).current_dir(dir).args(args).output().expect("run kest")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn report(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// One exported span of a recorded call.
struct Span {
    service: &'static str,
    span_id: String,
    attributes: Vec<(&'static str, Value)>,
    status_code: i64,
    name: String,
}

fn s(v: impl Into<String>) -> Value {
    json!({ "stringValue": v.into() })
}

/// The span the hook emits after recording `hash` in `passport`.
fn recorded_span(service: &'static str, n: u64, passport: &Passport, hash: &EntryHash) -> Span {
    let entry = passport.get(hash).unwrap();
    let p = entry.payload();
    Span {
        service,
        span_id: format!("{n:016x}"),
        name: format!("kest.verified.{}", p.operation),
        status_code: 0,
        attributes: vec![
            ("kest.signature", s(entry.jws())),
            ("kest.entry_hash", s(hash.to_string())),
            ("kest.parent_hash", s(p.parent_ids.join(","))),
            ("kest.passport", s(passport.to_json())),
            ("kest.entry_id", s(p.entry_id.clone())),
            ("kest.workload_id", s(entry.principal())),
            ("kest.trust_score", json!({ "intValue": p.trust_score.to_string() })),
            ("kest.operation", s(p.operation.clone())),
            ("kest.decision", s("allow")),
        ],
    }
}

/// One line: an `ExportTraceServiceRequest` in OTLP/JSON holding `spans`
/// (all of one service), as the Collector's file exporter writes it.
fn line(spans: &[&Span]) -> String {
    let service = spans[0].service;
    let spans: Vec<Value> = spans
        .iter()
        .map(|sp| {
            json!({
                "traceId": TRACE,
                "spanId": sp.span_id,
                "parentSpanId": "",
                "name": sp.name,
                "kind": 1,
                "startTimeUnixNano": "1700000000000000000",
                "endTimeUnixNano": "1700000000000100000",
                "attributes": sp.attributes.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect::<Vec<_>>(),
                "status": if sp.status_code == 0 { json!({}) } else { json!({ "code": sp.status_code, "message": "denied by policy" }) },
            })
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
            "scopeSpans": [{ "scope": { "name": "kest.core", "version": "0.1.0" }, "spans": spans }]
        }]
    })
    .to_string()
}

/// A request crossing two services: gateway records `ingest` and `plan`,
/// then worker records `fetch` and `answer`; a `send` is denied in worker.
struct Fixture {
    dir: tempfile::TempDir,
    gateway: Vec<Span>,
    worker: Vec<Span>,
    hashes: Vec<EntryHash>,
}

fn record(p: &mut Passport, op: &str, who: &str) -> EntryHash {
    let mut draft = EntryDraft::new(op);
    draft.parents = match p.tips() {
        [] => Parents::Root,
        tips => Parents::Explicit(tips.to_vec()),
    };
    let entry = p.prepare(&draft, who, &TrustRules::default()).unwrap();
    p.append(sign_entry(entry, &signer(who)).unwrap()).unwrap()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = KeySet::new();
    for p in [GATEWAY, WORKER] {
        keys.insert(p, signer(p).public_key().unwrap()).unwrap();
    }
    std::fs::write(dir.path().join("jwks.json"), keys.to_jwks().to_string()).unwrap();
    let mut gw_only = KeySet::new();
    gw_only.insert(GATEWAY, signer(GATEWAY).public_key().unwrap()).unwrap();
    std::fs::write(dir.path().join("gateway-only.json"), gw_only.to_jwks().to_string()).unwrap();

    let mut passport = Passport::new();
    let mut hashes = Vec::new();
    let mut gateway = Vec::new();
    let mut worker = Vec::new();
    for (n, (op, who)) in [("ingest", GATEWAY), ("plan", GATEWAY), ("fetch", WORKER), ("answer", WORKER)]
        .into_iter()
        .enumerate()
    {
        let hash = record(&mut passport, op, who);
        hashes.push(hash);
        let span =
            recorded_span(if who == GATEWAY { "gateway" } else { "worker" }, n as u64 + 1, &passport, &hash);
        if who == GATEWAY { gateway.push(span) } else { worker.push(span) }
    }
    worker.push(Span {
        service: "worker",
        span_id: format!("{:016x}", 99),
        name: "kest.verified.send".into(),
        status_code: 2,
        attributes: vec![
            ("kest.operation", s("send")),
            ("kest.decision", s("deny")),
            ("kest.denied_policy", s("no_exfiltration")),
            ("kest.denied_tier", s("function")),
        ],
    });
    Fixture { dir, gateway, worker, hashes }
}

impl Fixture {
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the gateway's spans one per line and the worker's as one batch.
    fn write(&self) {
        let gw: Vec<String> = self.gateway.iter().map(|s| line(&[s])).collect();
        std::fs::write(self.path("gateway.jsonl"), gw.join("\n") + "\n").unwrap();
        let wk: Vec<&Span> = self.worker.iter().collect();
        std::fs::write(self.path("worker.jsonl"), line(&wk) + "\n").unwrap();
    }

    fn audit(&self, args: &[&str]) -> Output {
        let mut all = vec!["audit", "--keys", "jwks.json", "--format", "json"];
        all.extend(args);
        kest(self.dir.path(), &all)
    }
}

fn trace(report: &Value) -> &Value {
    let traces = report["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{report:#}");
    &traces[0]
}

fn findings_of<'a>(t: &'a Value, kind: &str) -> Vec<&'a Value> {
    t["findings"].as_array().unwrap().iter().filter(|f| f["kind"] == kind).collect()
}

#[test]
fn a_complete_export_rebuilds_and_verifies_the_passport() {
    let f = fixture();
    f.write();
    let out = f.audit(&["gateway.jsonl", "worker.jsonl"]);
    let r = report(&out);
    assert_eq!(code(&out), 0, "{r:#}");
    assert_eq!(r["valid"], true);
    let t = trace(&r);
    assert_eq!(t["trace_id"], TRACE);
    assert_eq!(t["entries"], 4);
    assert_eq!(t["principals"], json!([GATEWAY, WORKER]));
    assert_eq!(t["services"], json!(["gateway", "worker"]));
    assert_eq!(t["roots"], json!([f.hashes[0].to_string()]));
    assert_eq!(t["tips"], json!([f.hashes[3].to_string()]));
    // The rebuilt passport is the original, in order, and verifies on its own.
    let rebuilt: Vec<String> = t["passport"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| EntryHash::of(j.as_str().unwrap()).to_string())
        .collect();
    assert_eq!(rebuilt, f.hashes.iter().map(ToString::to_string).collect::<Vec<_>>());
    std::fs::write(f.path("rebuilt.json"), t["passport"].to_string()).unwrap();
    let v = kest(f.dir.path(), &["verify", "--semantic", "--keys", "jwks.json", "rebuilt.json"]);
    assert_eq!(code(&v), 0, "{}", String::from_utf8_lossy(&v.stdout));
    // The refused call is reported with its policy and tier, and is not a defect.
    let denials = t["denials"].as_array().unwrap();
    assert_eq!(denials.len(), 1);
    assert_eq!(denials[0]["operation"], "send");
    assert_eq!(denials[0]["policy"], "no_exfiltration");
    assert_eq!(denials[0]["tier"], "function");
    assert_eq!(denials[0]["service"], "worker");

    // Text: verdict, counts and the denial.
    let out = kest(f.dir.path(), &["audit", "--keys", "jwks.json", "gateway.jsonl", "worker.jsonl"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 0, "{text}");
    assert!(text.contains(&format!("trace {TRACE}: VALID — 4 entries, 1 denial")), "{text}");
    assert!(text.contains("denied `send` in worker by policy no_exfiltration (function tier)"), "{text}");
}

#[test]
fn a_directory_and_a_duplicate_copy_are_read_once() {
    let f = fixture();
    f.write();
    let exports = f.path("exports/collector");
    std::fs::create_dir_all(&exports).unwrap();
    std::fs::copy(f.path("gateway.jsonl"), exports.join("gateway.json")).unwrap();
    std::fs::copy(f.path("worker.jsonl"), exports.join("worker.json")).unwrap();
    // The same spans again through another file: counted once.
    let out = f.audit(&["exports", "worker.jsonl"]);
    let r = report(&out);
    assert_eq!(code(&out), 0, "{r:#}");
    assert_eq!(trace(&r)["entries"], 4);
}

#[test]
fn an_export_left_out_is_reported_as_incomplete() {
    let f = fixture();
    f.write();
    // The worker's spans alone: its first entry names the gateway's tip.
    let out = f.audit(&["worker.jsonl"]);
    let r = report(&out);
    assert_eq!(code(&out), 1, "{r:#}");
    let t = trace(&r);
    assert_eq!(t["valid"], false);
    let missing = findings_of(t, "missing_parent");
    assert_eq!(missing.len(), 1, "{t:#}");
    assert_eq!(missing[0]["entry_hash"], f.hashes[1].to_string());
    assert!(missing[0]["location"].as_str().unwrap().ends_with("worker.jsonl:1"), "{t:#}");
    // The worker's span passports hold the gateway's two entries.
    let unrecorded: Vec<&str> =
        findings_of(t, "unrecorded_entry").iter().map(|f| f["entry_hash"].as_str().unwrap()).collect();
    assert!(unrecorded.contains(&f.hashes[0].to_string().as_str()), "{t:#}");
    assert!(unrecorded.contains(&f.hashes[1].to_string().as_str()), "{t:#}");
    assert_eq!(t["error"]["kind"], "dangling_parent", "{t:#}");
}

#[test]
fn a_deleted_span_is_named() {
    let f = fixture();
    f.write();
    // Delete the gateway's second span (`plan`).
    let text = std::fs::read_to_string(f.path("gateway.jsonl")).unwrap();
    let kept: Vec<&str> = text.lines().take(1).collect();
    std::fs::write(f.path("gateway.jsonl"), kept.join("\n") + "\n").unwrap();
    let out = f.audit(&["gateway.jsonl", "worker.jsonl"]);
    let r = report(&out);
    assert_eq!(code(&out), 1, "{r:#}");
    let t = trace(&r);
    let missing = findings_of(t, "missing_parent");
    assert_eq!(missing.len(), 1, "{t:#}");
    assert_eq!(missing[0]["entry_hash"], f.hashes[1].to_string());
    assert!(missing[0]["message"].as_str().unwrap().contains("`fetch`"), "{t:#}");
    assert!(missing[0]["message"].as_str().unwrap().contains("no exported span records it"), "{t:#}");
    let unrecorded = findings_of(t, "unrecorded_entry");
    assert!(unrecorded.iter().all(|u| u["entry_hash"] == f.hashes[1].to_string()), "{t:#}");
    assert!(!unrecorded.is_empty());
}

/// The payload of `jws` with `edit` applied, re-encoded; the signature is
/// kept (so it no longer verifies).
fn tamper_payload(jws: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = jws.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&b64url_decode(parts[1]).unwrap()).unwrap();
    edit(&mut payload);
    let bytes = serde_json_canonicalizer::to_vec(&payload).unwrap();
    format!("{}.{}.{}", parts[0], b64url_encode(&bytes), parts[2])
}

fn set_attr(span: &mut Span, key: &str, value: Value) {
    for (k, v) in &mut span.attributes {
        if *k == key {
            *v = value;
            return;
        }
    }
    panic!("no attribute {key}");
}

#[test]
fn a_tampered_entry_is_named_with_its_record() {
    let mut f = fixture();
    // The worker's `fetch` entry is edited to say it ran something else.
    let jws = f.worker[0].attributes[0].1["stringValue"].as_str().unwrap().to_owned();
    let forged = tamper_payload(&jws, |p| p["operation"] = json!("fetch_internal"));
    set_attr(&mut f.worker[0], "kest.signature", s(forged));
    f.write();
    let out = f.audit(&["gateway.jsonl", "worker.jsonl"]);
    let r = report(&out);
    assert_eq!(code(&out), 1, "{r:#}");
    let t = trace(&r);
    assert_eq!(t["error"]["kind"], "bad_signature", "{t:#}");
    assert!(t["error"]["location"].as_str().unwrap().ends_with("worker.jsonl:1"), "{t:#}");
    assert!(
        t["error"]["message"].as_str().unwrap().contains("`fetch_internal` by spiffe://demo/worker"),
        "{t:#}"
    );
    // The span's other attributes still describe the original entry.
    let mismatch: Vec<String> =
        findings_of(t, "span_mismatch").iter().map(|f| f["message"].as_str().unwrap().to_owned()).collect();
    assert!(mismatch.iter().any(|m| m.starts_with("kest.entry_hash is")), "{mismatch:?}");
    assert!(mismatch.iter().any(|m| m.starts_with("kest.operation is `fetch`")), "{mismatch:?}");
    // Its child now names a parent no span records.
    assert_eq!(findings_of(t, "missing_parent")[0]["entry_hash"], f.hashes[2].to_string());
}

#[test]
fn a_tampered_attribute_is_named() {
    let mut f = fixture();
    set_attr(&mut f.gateway[1], "kest.trust_score", json!({ "intValue": "100" }));
    set_attr(&mut f.gateway[1], "kest.workload_id", s("spiffe://demo/admin"));
    f.write();
    let out = f.audit(&["gateway.jsonl", "worker.jsonl"]);
    let r = report(&out);
    assert_eq!(code(&out), 1, "{r:#}");
    let t = trace(&r);
    assert!(t["error"].is_null(), "the entries themselves verify: {t:#}");
    let mismatch = findings_of(t, "span_mismatch");
    assert_eq!(mismatch.len(), 2, "{t:#}");
    for m in &mismatch {
        assert!(m["location"].as_str().unwrap().ends_with("gateway.jsonl:2"), "{m:#}");
        assert_eq!(m["entry_hash"], f.hashes[1].to_string());
    }
    let messages: Vec<&str> = mismatch.iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert!(messages.iter().any(|m| m.contains("kest.trust_score is `100`")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("kest.workload_id is `spiffe://demo/admin`")), "{messages:?}");
}

#[test]
fn a_removed_signature_is_an_unsigned_span() {
    let mut f = fixture();
    f.gateway[0].attributes.retain(|(k, _)| *k != "kest.signature");
    f.write();
    let r = report(&f.audit(&["gateway.jsonl", "worker.jsonl"]));
    let t = trace(&r);
    let unsigned = findings_of(t, "unsigned_span");
    assert_eq!(unsigned.len(), 1, "{t:#}");
    assert!(unsigned[0]["location"].as_str().unwrap().ends_with("gateway.jsonl:1"));
    assert_eq!(findings_of(t, "missing_parent").len(), 1);
}

#[test]
fn a_span_from_an_unknown_key_is_named() {
    let f = fixture();
    f.write();
    let out = kest(
        f.dir.path(),
        &["audit", "--keys", "gateway-only.json", "--format", "json", "gateway.jsonl", "worker.jsonl"],
    );
    let r = report(&out);
    assert_eq!(code(&out), 1, "{r:#}");
    let t = trace(&r);
    assert_eq!(t["error"]["kind"], "unknown_signer", "{t:#}");
    assert_eq!(t["error"]["entry_hash"], f.hashes[2].to_string());
    assert!(t["error"]["location"].as_str().unwrap().ends_with("worker.jsonl:1"), "{t:#}");
}

#[test]
fn an_unreadable_record_fails_the_audit() {
    let f = fixture();
    f.write();
    let mut text = std::fs::read_to_string(f.path("gateway.jsonl")).unwrap();
    text.push_str("{\"resourceSpans\": [ truncated\n");
    std::fs::write(f.path("gateway.jsonl"), text).unwrap();
    let out = f.audit(&["gateway.jsonl", "worker.jsonl"]);
    let r = report(&out);
    assert_eq!(code(&out), 1, "{r:#}");
    assert_eq!(r["kind"], "malformed_record");
    assert!(r["problems"][0]["location"].as_str().unwrap().ends_with("gateway.jsonl:3"), "{r:#}");
    // The trace itself is still audited and valid.
    assert_eq!(trace(&r)["valid"], true);
}

#[test]
fn trace_selection() {
    let f = fixture();
    f.write();
    let out = f.audit(&["--trace", TRACE, "gateway.jsonl", "worker.jsonl"]);
    assert_eq!(code(&out), 0);
    let other = "0af7651916cd43dd8448eb211c80319c";
    let out = f.audit(&["--trace", other, "gateway.jsonl", "worker.jsonl"]);
    let r = report(&out);
    assert_eq!(code(&out), 1, "{r:#}");
    assert_eq!(r["kind"], "trace_not_found");
    let out = f.audit(&["--trace", "XYZ", "gateway.jsonl"]);
    assert_eq!(code(&out), 2);
    assert_eq!(report(&out)["kind"], "usage");
    // A missing file is a usage error, named.
    let out = f.audit(&["nope.jsonl"]);
    assert_eq!(code(&out), 2);
    assert!(report(&out)["message"].as_str().unwrap().contains("nope.jsonl"));
}

/// The SQLite span store schema, as the `sqlite` exporter creates it.
const SCHEMA: &str = include_str!("../../kest/src/telemetry/schema.sql");

fn sqlite_store(f: &Fixture, path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn.execute("INSERT INTO kest_schema (version) VALUES (1)", []).unwrap();
    for span in f.gateway.iter().chain(&f.worker) {
        let attr = |k: &str| {
            span.attributes.iter().find(|(key, _)| *key == k).map(|(_, v)| match v.get("stringValue") {
                Some(s) => s.as_str().unwrap().to_owned(),
                None => v["intValue"].as_str().unwrap().to_owned(),
            })
        };
        conn.execute(
            "INSERT INTO spans (trace_id, span_id, parent_span_id, name, service_name, scope_name, \
             start_time_unix_nano, end_time_unix_nano, status_code, status_message, kest_entry_hash, \
             kest_signature, kest_parent_hash, kest_passport, kest_entry_id, kest_workload_id, kest_trust_score, \
             kest_operation, kest_decision, kest_denied_policy, kest_denied_tier, attributes, resource) \
             VALUES (?1, ?2, NULL, ?3, ?4, 'kest.core', 1, 2, ?5, NULL, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
             ?16, '{}', '{}')",
            rusqlite::params![
                TRACE,
                span.span_id,
                span.name,
                span.service,
                span.status_code,
                attr("kest.entry_hash"),
                attr("kest.signature"),
                attr("kest.parent_hash"),
                attr("kest.passport"),
                attr("kest.entry_id"),
                attr("kest.workload_id"),
                attr("kest.trust_score").map(|t| t.parse::<i64>().unwrap()),
                attr("kest.operation"),
                attr("kest.decision"),
                attr("kest.denied_policy"),
                attr("kest.denied_tier"),
            ],
        )
        .unwrap();
    }
}

#[test]
fn a_sqlite_store_round_trips_and_a_tampered_row_is_named() {
    let f = fixture();
    sqlite_store(&f, &f.path("spans.db"));
    let out = f.audit(&["spans.db"]);
    let r = report(&out);
    assert_eq!(code(&out), 0, "{r:#}");
    assert_eq!(trace(&r)["entries"], 4);
    assert_eq!(trace(&r)["denials"].as_array().unwrap().len(), 1);

    // Edit the third row's entry (drop a taint the lineage implies): the
    // verifier names that row.
    let conn = rusqlite::Connection::open(f.path("spans.db")).unwrap();
    let (rowid, jws): (i64, String) = conn
        .query_row("SELECT rowid, kest_signature FROM spans WHERE kest_operation = 'fetch'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let forged = tamper_payload(&jws, |p| p["taints"] = json!(["reviewed"]));
    conn.execute("UPDATE spans SET kest_signature = ?1 WHERE rowid = ?2", rusqlite::params![forged, rowid])
        .unwrap();
    drop(conn);
    let out = f.audit(&["spans.db"]);
    let r = report(&out);
    assert_eq!(code(&out), 1, "{r:#}");
    let t = trace(&r);
    assert_eq!(t["error"]["kind"], "taint_mismatch", "{t:#}");
    assert!(t["error"]["location"].as_str().unwrap().ends_with(&format!("spans.db row {rowid}")), "{t:#}");

    // Delete a row as well: its child names the missing parent (and the
    // forged row's child still names the original `fetch`).
    let conn = rusqlite::Connection::open(f.path("spans.db")).unwrap();
    conn.execute("DELETE FROM spans WHERE kest_operation = 'plan'", []).unwrap();
    drop(conn);
    let r = report(&f.audit(&["spans.db"]));
    let missing: Vec<String> = findings_of(trace(&r), "missing_parent")
        .iter()
        .map(|m| m["entry_hash"].as_str().unwrap().to_owned())
        .collect();
    let mut expected = vec![f.hashes[1].to_string(), f.hashes[2].to_string()];
    expected.sort();
    assert_eq!(missing, expected);
}

#[test]
fn a_database_that_is_not_a_span_store_is_reported() {
    let f = fixture();
    f.write();
    let conn = rusqlite::Connection::open(f.path("other.db")).unwrap();
    conn.execute_batch("CREATE TABLE t (x INTEGER);").unwrap();
    drop(conn);
    let out = f.audit(&["gateway.jsonl", "worker.jsonl", "other.db"]);
    let r = report(&out);
    assert_eq!(code(&out), 1, "{r:#}");
    assert_eq!(r["problems"][0]["kind"], "unsupported_store", "{r:#}");
}

#[test]
fn viz_draws_a_trace_from_exports() {
    let f = fixture();
    f.write();
    let out = kest(
        f.dir.path(),
        &["viz", "--format", "svg", "--keys", "jwks.json", "--trace", TRACE, "gateway.jsonl", "worker.jsonl"],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let svg = String::from_utf8(out.stdout).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    // One node per entry, in passport order; the refused call has no hash.
    let hashes: Vec<String> =
        doc.descendants().filter_map(|n| n.attribute("data-entry-hash")).map(str::to_owned).collect();
    let mut expected: Vec<String> = f.hashes.iter().map(ToString::to_string).collect();
    expected.push(String::new());
    assert_eq!(hashes, expected);
    let denied: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class").is_some_and(|c| c.split(' ').any(|c| c == "denied")))
        .collect();
    assert_eq!(denied.len(), 1, "{svg}");
    assert!(svg.contains("send"), "the denied operation is drawn");
    assert!(svg.contains("no_exfiltration"), "with its policy");

    // A trace that is not in the exports: invalid, exit 1.
    let out = kest(f.dir.path(), &["viz", "--trace", "0af7651916cd43dd8448eb211c80319c", "gateway.jsonl"]);
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stdout).contains("trace_not_found"));
    // Several inputs need --trace.
    let out = kest(f.dir.path(), &["viz", "gateway.jsonl", "worker.jsonl"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn viz_draws_a_baggage_value() {
    let f = fixture();
    let t = {
        f.write();
        let out = f.audit(&["gateway.jsonl", "worker.jsonl"]);
        trace(&report(&out)).clone()
    };
    let mut b = kest_core::baggage::Baggage::new();
    b.set("kest.passport", t["passport"].to_string()).unwrap();
    std::fs::write(f.path("baggage.txt"), b.to_header().unwrap()).unwrap();
    let out = kest(f.dir.path(), &["viz", "--baggage", "--keys", "jwks.json", "baggage.txt"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 0, "{text}");
    assert!(text.starts_with("passport: 4 entries, verified"), "{text}");
    std::fs::write(f.path("bad.txt"), "kest.passport=%ZZ").unwrap();
    let out = kest(f.dir.path(), &["viz", "--baggage", "bad.txt"]);
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stdout).contains("malformed_baggage"));
}

#[test]
fn the_demo_exports_its_runs_for_kest_audit() {
    for (format, file) in [("file", "spans.jsonl"), ("sqlite", "spans.db")] {
        let dir = tempfile::tempdir().unwrap();
        let out = kest(dir.path(), &["demo", "--out", "d", "--export", format]);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("kest audit --keys"), "says how to audit");
        let d = dir.path().join("d");
        let out = kest(&d, &["audit", "--keys", "jwks.json", "--format", "json", file]);
        let r = report(&out);
        assert_eq!(code(&out), 0, "{format}: {r:#}");
        let traces = r["traces"].as_array().unwrap();
        assert_eq!(traces.len(), 3, "one trace per run: {r:#}");
        // Run 1's trace rebuilds exactly the passport the demo wrote.
        let passport: Vec<String> =
            serde_json::from_str(&std::fs::read_to_string(d.join("passport.json")).unwrap()).unwrap();
        let run1 = traces.iter().find(|t| t["denials"].as_array().unwrap().is_empty()).expect("run 1");
        let mut rebuilt: Vec<String> =
            run1["passport"].as_array().unwrap().iter().map(|j| j.as_str().unwrap().to_owned()).collect();
        let mut expected = passport.clone();
        rebuilt.sort();
        expected.sort();
        assert_eq!(rebuilt, expected, "{format}");
        // Run 2: the refused send_email, with the policy and tier that refused it.
        let run2 = traces
            .iter()
            .find(|t| t["denials"].as_array().unwrap().iter().any(|d| d["operation"] == "send_email"))
            .expect("run 2");
        let denial = &run2["denials"][0];
        assert_eq!(denial["tier"], "function");
        assert!(denial["policy"].as_str().unwrap().ends_with("kest/send_email"), "{denial:#}");
        // --force replaces the store instead of appending to it.
        let again = kest(dir.path(), &["demo", "--out", "d", "--export", format]);
        assert_eq!(code(&again), 2, "refuses to overwrite");
        let again = kest(dir.path(), &["demo", "--out", "d", "--force", "--export", format]);
        assert_eq!(code(&again), 0);
        let r = report(&kest(&d, &["audit", "--keys", "jwks.json", "--format", "json", file]));
        assert_eq!(r["traces"].as_array().unwrap().len(), 3, "{format}: not the old runs and the new");
    }
}
