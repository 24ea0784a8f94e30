//! SPEC §9: each hooked call emits `kest.verified.<operation>` in scope
//! `kest.core` with the kest.* attributes, captured by an in-memory exporter.
//! (Its own test binary: it installs the global tracer provider.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use kest::identity::StaticIdentity;
use kest::policy::{Decision, MockPolicyEngine};
use kest::{CallContext, Kest, Lineage, Verified};
use opentelemetry::Value;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

#[test]
fn each_call_emits_a_span_with_the_entry_and_passport() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_resource(Resource::builder().with_service_name("kest-test").build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    let engine = MockPolicyEngine::allow_all().with("never", Decision::Deny);
    let kest = Arc::new(
        Kest::builder()
            .identity(Arc::new(StaticIdentity::from_seed("spiffe://test/otel", [31u8; 32])))
            .engine(Arc::new(engine))
            .build()
            .unwrap(),
    );
    let flow = Lineage::new();
    flow.enter(|| {
        for op in ["first", "second"] {
            Verified::builder(op)
                .policy("allow")
                .source_type("internal")
                .build()
                .unwrap()
                .call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(()))
                .unwrap();
        }
        let denied = Verified::builder("third").policy("never").build().unwrap();
        assert!(denied.call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(())).is_err());
    });
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 3);
    let passport = flow.passport();

    for (i, span) in spans.iter().take(2).enumerate() {
        let entry = &passport.entries()[i];
        assert_eq!(span.name, format!("kest.verified.{}", entry.payload().operation));
        assert_eq!(span.instrumentation_scope.name(), "kest.core");
        let attr =
            |k: &str| span.attributes.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.clone());
        assert_eq!(attr("kest.signature"), Some(Value::from(entry.jws().to_owned())));
        assert_eq!(attr("kest.entry_id"), Some(Value::from(entry.payload().entry_id.clone())));
        assert_eq!(attr("kest.workload_id"), Some(Value::from("spiffe://test/otel")));
        assert_eq!(attr("kest.trust_score"), Some(Value::I64(100)));
        assert_eq!(attr("kest.operation"), Some(Value::from(entry.payload().operation.clone())));
        assert_eq!(attr("kest.entry_hash"), Some(Value::from(entry.hash().to_string())));
        assert_eq!(attr("kest.decision"), Some(Value::from("allow")));
        let expected_parent = if i == 0 { "0".to_owned() } else { passport.entries()[0].hash().to_string() };
        assert_eq!(attr("kest.parent_hash"), Some(Value::from(expected_parent)));
        // The span's passport is the passport as of that call: an auditor
        // can rebuild and verify it from the export alone.
        let Some(Value::String(p)) = attr("kest.passport") else { panic!("no kest.passport") };
        let entries: Vec<String> = serde_json::from_str(p.as_str()).unwrap();
        assert_eq!(entries.len(), i + 1);
        assert_eq!(entries[i], entry.jws());
        // The entry carries the trace id of its span.
        let trace_id = format!("{:032x}", u128::from_be_bytes(span.span_context.trace_id().to_bytes()));
        assert_eq!(entry.payload().label("trace_id"), Some(trace_id.as_str()));
    }
    let denied = &spans[2];
    assert_eq!(denied.name, "kest.verified.third");
    assert!(matches!(denied.status, opentelemetry::trace::Status::Error { .. }));
    let attr = |k: &str| denied.attributes.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.clone());
    assert_eq!(attr("kest.denied_policy"), Some(Value::from("never")));
    assert_eq!(attr("kest.denied_tier"), Some(Value::from("function")));
    assert_eq!(attr("kest.decision"), Some(Value::from("deny")));
    assert_eq!(attr("kest.error_kind"), Some(Value::from("policy_denied")));
    assert!(attr("kest.signature").is_none());
    assert_eq!(passport.len(), 2);
}
