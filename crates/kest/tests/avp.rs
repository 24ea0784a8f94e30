//! `AvpEngine` (Amazon Verified Permissions) with the real
//! `aws-sdk-verifiedpermissions` client against a loopback server that
//! speaks the AVP JSON protocol (`awsJson1_0`, target
//! `VerifiedPermissions.IsAuthorized`) and decides with `cedar-policy`.
//! AVP is not in moto and cannot be installed here, so this server stands
//! in for it; the client code, request signing and error handling are the
//! SDK's own. Every failure denies, and a denied call never runs.
#![cfg(all(feature = "avp", feature = "cedar"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use cedar_policy::{Authorizer, Context, Entities, EntityId, EntityTypeName, EntityUid, PolicySet, Request};
use kest::aws::AwsSettings;
use kest::hook::{CallContext, Verified};
use kest::identity::StaticIdentity;
use kest::policy::avp::AvpEngine;
use kest::policy::context::example_context;
use kest::policy::{Decision, PolicyEngine, PolicyError, PolicyInput, RemoteFailure};
use kest::{Kest, Lineage};
use serde_json::{Value, json};

/// Policies per store: `ok` decides on trust, `erroring` reads a missing
/// attribute (a Cedar evaluation error), the other ids misbehave.
const OK_POLICIES: &str = r#"
permit(principal, action == Action::"send_email", resource)
when { context.subject.trust_score >= 50 && !(context.subject.taints.contains("unverified")) };
permit(principal, action == Action::"ask", resource);
"#;
const ERRORING_POLICIES: &str = r#"
forbid(principal, action == Action::"send_email", resource) when { context.no_such_attribute == 1 };
permit(principal, action == Action::"send_email", resource);
"#;

#[derive(Default)]
struct Seen {
    requests: Vec<Value>,
}

/// The AVP context map back to the JSON Cedar reads.
fn from_attribute(v: &Value) -> Value {
    let (kind, inner) = v.as_object().unwrap().iter().next().unwrap();
    match kind.as_str() {
        "string" | "long" | "boolean" => inner.clone(),
        "set" => Value::Array(inner.as_array().unwrap().iter().map(from_attribute).collect()),
        "record" => Value::Object(
            inner.as_object().unwrap().iter().map(|(k, v)| (k.clone(), from_attribute(v))).collect(),
        ),
        other => panic!("attribute kind {other} not expected"),
    }
}

fn uid(entity: &Value, ty: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(entity[ty].as_str().unwrap()).unwrap(),
        EntityId::new(entity[id].as_str().unwrap()),
    )
}

fn aws_error(status: StatusCode, kind: &str, message: &str) -> axum::response::Response {
    (
        status,
        [("x-amzn-errortype", kind), ("content-type", "application/x-amz-json-1.0")],
        json!({ "__type": kind, "message": message }).to_string(),
    )
        .into_response()
}

async fn is_authorized(seen: Arc<Mutex<Seen>>, headers: HeaderMap, body: String) -> axum::response::Response {
    if headers.get("x-amz-target").and_then(|v| v.to_str().ok()) != Some("VerifiedPermissions.IsAuthorized") {
        return aws_error(StatusCode::BAD_REQUEST, "UnknownOperationException", "unknown operation");
    }
    assert!(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256")),
        "the SDK signs its requests"
    );
    let request: Value = serde_json::from_str(&body).unwrap();
    seen.lock().unwrap().requests.push(request.clone());
    let policies = match request["policyStoreId"].as_str().unwrap() {
        "ps-ok" => OK_POLICIES,
        "ps-erroring" => ERRORING_POLICIES,
        "ps-broken" => {
            return aws_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException", "boom");
        }
        "ps-garbage" => return (StatusCode::OK, "this is not json").into_response(),
        "ps-throttled" => return aws_error(StatusCode::BAD_REQUEST, "ThrottlingException", "slow down"),
        _ => return aws_error(StatusCode::BAD_REQUEST, "ResourceNotFoundException", "no such policy store"),
    };
    let policies = PolicySet::from_str(policies).unwrap();
    let context: serde_json::Map<String, Value> = request["context"]["contextMap"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), from_attribute(v)))
        .collect();
    let req = Request::new(
        uid(&request["principal"], "entityType", "entityId"),
        uid(&request["action"], "actionType", "actionId"),
        uid(&request["resource"], "entityType", "entityId"),
        Context::from_json_value(Value::Object(context), None).unwrap(),
        None,
    )
    .unwrap();
    let answer = Authorizer::new().is_authorized(&req, &policies, &Entities::empty());
    let decision = match answer.decision() {
        cedar_policy::Decision::Allow => "ALLOW",
        cedar_policy::Decision::Deny => "DENY",
    };
    let errors: Vec<Value> =
        answer.diagnostics().errors().map(|e| json!({ "errorDescription": e.to_string() })).collect();
    let determining: Vec<Value> =
        answer.diagnostics().reason().map(|p| json!({ "policyId": p.to_string() })).collect();
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.0")],
        json!({ "decision": decision, "determiningPolicies": determining, "errors": errors }).to_string(),
    )
        .into_response()
}

/// The server on a free loopback port, in its own runtime thread.
struct Server {
    url: String,
    seen: Arc<Mutex<Seen>>,
    _rt: tokio::runtime::Runtime,
}

fn server() -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = seen.clone();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: String| is_authorized(state.clone(), headers, body)),
    );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { url, seen, _rt: rt }
}

fn engine(url: &str, store: &str) -> AvpEngine {
    AvpEngine::builder(store)
        .settings(
            AwsSettings::default()
                .region("us-east-1")
                .endpoint_url(url)
                .static_credentials("AKIAKESTTEST", "x")
                .timeout(Duration::from_secs(5)),
        )
        .build()
        .unwrap()
}

fn input(trust: u8, taints: &[&str]) -> PolicyInput {
    let mut ctx = example_context();
    ctx.subject.trust_score = trust;
    ctx.subject.taints = taints.iter().map(|t| (*t).to_owned()).collect();
    PolicyInput::new(ctx)
}

#[test]
fn decisions_follow_the_policy_store() {
    let s = server();
    let avp = engine(&s.url, "ps-ok");
    assert_eq!(avp.evaluate("send_email", &input(80, &[])), Ok(Decision::Allow));
    assert_eq!(avp.evaluate("send_email", &input(40, &[])), Ok(Decision::Deny));
    assert_eq!(avp.evaluate("send_email", &input(80, &["unverified"])), Ok(Decision::Deny));
    // A policy name with no policy for its action: deny.
    assert_eq!(avp.evaluate("delete_everything", &input(100, &[])), Ok(Decision::Deny));
    // The request: principal, action = the policy name, the §6.1 context
    // with nulls dropped and integers as longs.
    let seen = s.seen.lock().unwrap();
    let first = &seen.requests[0];
    assert_eq!(first["principal"], json!({ "entityType": "Workload", "entityId": "spiffe://demo/agent" }));
    assert_eq!(first["action"], json!({ "actionType": "Action", "actionId": "send_email" }));
    assert_eq!(first["resource"]["entityType"], "Resource");
    let context = &first["context"]["contextMap"];
    assert_eq!(context["subject"]["record"]["trust_score"], json!({ "long": 80 }));
    assert_eq!(context["subject"]["record"]["user"], json!({ "string": "alice" }));
    assert!(context["subject"]["record"].get("agent").is_none(), "null dropped: {context}");
    assert_eq!(context["environment"]["record"]["is_root"], json!({ "boolean": true }));
}

#[test]
fn every_failure_denies_with_a_typed_error() {
    let s = server();
    let failure = |store: &str| match engine(&s.url, store).evaluate("send_email", &input(80, &[])) {
        Err(e @ PolicyError::Remote { .. }) => RemoteFailure::of(&e).unwrap(),
        other => panic!("{store}: {other:?}"),
    };
    assert_eq!(failure("ps-missing"), RemoteFailure::Status(400));
    assert_eq!(failure("ps-throttled"), RemoteFailure::Status(400));
    assert_eq!(failure("ps-broken"), RemoteFailure::Status(500));
    assert_eq!(failure("ps-garbage"), RemoteFailure::UnexpectedAnswer);
    // Evaluation errors in the store: an erroring forbid must not let the
    // permit through.
    let err = engine(&s.url, "ps-erroring").evaluate("send_email", &input(80, &[])).unwrap_err();
    assert!(matches!(err, PolicyError::Evaluation { .. }), "{err:?}");
    // Unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = engine(&format!("http://127.0.0.1:{port}"), "ps-ok")
        .evaluate("send_email", &input(80, &[]))
        .unwrap_err();
    assert_eq!(RemoteFailure::of(&err), Some(RemoteFailure::Connect), "{err:?}");
    // A context value Cedar cannot hold is refused before any call.
    let before = s.seen.lock().unwrap().requests.len();
    let mut ctx = example_context();
    ctx.attributes.insert("ratio".into(), json!(0.5));
    let err = engine(&s.url, "ps-ok").evaluate("ask", &PolicyInput::new(ctx)).unwrap_err();
    assert!(matches!(err, PolicyError::Evaluation { .. }), "{err:?}");
    assert_eq!(s.seen.lock().unwrap().requests.len(), before);
}

#[test]
fn the_hook_runs_only_on_allow_sync_and_async() {
    let s = server();
    let kest = |store: &str| {
        Arc::new(
            Kest::builder()
                .identity(Arc::new(StaticIdentity::from_seed("spiffe://demo/agent", [3; 32])))
                .engine(Arc::new(engine(&s.url, store)))
                .build()
                .unwrap(),
        )
    };
    let ran = AtomicUsize::new(0);
    let call = |kest: &Arc<Kest>, op: &str| {
        let hook = Verified::builder(op).policy(op).source_type("system").build().unwrap();
        Lineage::new().enter(|| {
            hook.call(CallContext::new().runtime(kest), || {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            })
        })
    };
    // `ask` is permitted; `send_email` needs trust ≥ 50 (a system root has 100).
    call(&kest("ps-ok"), "ask").unwrap();
    call(&kest("ps-ok"), "send_email").unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    assert!(call(&kest("ps-ok"), "delete_everything").is_err());
    assert!(call(&kest("ps-broken"), "ask").is_err());
    assert!(call(&kest("ps-erroring"), "send_email").is_err());
    assert_eq!(ran.load(Ordering::SeqCst), 2, "no denied call ran");

    // The async path, inside a Tokio runtime.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let avp = engine(&s.url, "ps-ok");
    let i = input(80, &[]);
    assert_eq!(rt.block_on(avp.evaluate_async("send_email", &i)), Ok(Decision::Allow));
    let broken = engine(&s.url, "ps-broken");
    assert!(rt.block_on(broken.evaluate_async("send_email", &i)).is_err());
}
