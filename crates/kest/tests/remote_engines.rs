//! Remote policy engines (SPEC §6.2): the OPA client against a loopback
//! server speaking OPA's Data API, and the Cedar Agent client against the
//! real `cedar-agent` binary (installed by `scripts/lib/cedar-agent.sh`).
//!
//! No assertion here is about time: a slow server is a stub whose handler
//! waits until the test releases it, and the test checks that the engine
//! gave up (a timeout error) while the stub had the request and had not
//! answered.
#![cfg(feature = "remote")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use kest::policy::cedar_agent::CedarAgentEngine;
use kest::policy::context::example_context;
use kest::policy::opa::{DEFAULT_TIMEOUT, OpaEngine};
use kest::policy::transport::{RemoteConfigError, RemoteFailure};
use kest::policy::{Decision, EvaluationContext, PolicyEngine, PolicyError, PolicyInput};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

// ---------------------------------------------------------------------------
// A loopback HTTP/1.1 server with canned answers, on its own runtime and
// thread (so a test may block its own runtime without blocking the server).

/// One request the stub received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// The path, without the query.
    path: String,
    /// The query string, if any.
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// The stub's answer to one request.
struct Canned {
    status: u16,
    body: String,
    /// Answer only once the test calls [`Stub::release`].
    hold: bool,
}

fn ok(body: Value) -> Canned {
    answer(200, body)
}

fn answer(status: u16, body: Value) -> Canned {
    Canned { status, body: body.to_string(), hold: false }
}

/// The shared state of a stub and its connections.
#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    /// Answers written.
    answered: AtomicUsize,
    /// Closed by [`Stub::release`]; held answers wait for it.
    gate: Option<Semaphore>,
}

type Handler = dyn Fn(&Seen) -> Canned + Send + Sync;

struct Stub {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stub {
    fn start(handler: impl Fn(&Seen) -> Canned + Send + Sync + 'static) -> Stub {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State { gate: Some(Semaphore::new(0)), ..State::default() });
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let handler: Arc<Handler> = Arc::new(handler);
        let state2 = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            tokio::spawn(serve(stream, Arc::clone(&handler), Arc::clone(&state2)));
                        }
                    }
                }
            });
        });
        Stub { addr, state, stop: Some(stop), thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many answers the stub has written.
    fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }

    /// Lets held answers go.
    fn release(&self) {
        if let Some(gate) = &self.state.gate {
            gate.close();
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves HTTP/1.1 requests (keep-alive) on one connection.
async fn serve(mut stream: tokio::net::TcpStream, handler: Arc<Handler>, state: Arc<State>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let method = request_line.next().unwrap_or("").to_owned();
        let target = request_line.next().unwrap_or("");
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (target.to_owned(), None),
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let request = Seen { method, path, query, headers, body };
        state.seen.lock().unwrap().push(request.clone());
        let canned = handler(&request);
        if canned.hold
            && let Some(gate) = &state.gate
        {
            // Err once closed: the test released the stub.
            let _ = gate.acquire().await;
        }
        let response = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            canned.status,
            canned.body.len(),
            canned.body
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        state.answered.fetch_add(1, Ordering::SeqCst);
    }
}

/// A loopback address where nothing listens.
fn dead_address() -> String {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn context(trust: u8) -> EvaluationContext {
    let mut ctx = example_context();
    ctx.subject.trust_score = trust;
    ctx
}

fn input(trust: u8) -> PolicyInput {
    PolicyInput::new(context(trust))
}

/// Polls a future on this thread without any Tokio runtime.
fn block_on_without_tokio<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// OPA

/// What the stub puts in OPA's error bodies: it must never reach an error.
const INTERNALS: &str = "secret-internal-detail";

/// The query every Data API request must carry.
const STRICT: &str = "strict-builtin-errors=true";

/// A stub OPA: `kest/allow_*` allow, `kest/deny_*` deny, `kest/undefined` is
/// undefined, and so on, in the Data API's answer shapes. A request without
/// `?strict-builtin-errors=true` is refused (HTTP 400); `kest/slow` answers
/// only once the test releases the stub.
fn opa_stub() -> Stub {
    Stub::start(|seen| {
        let Some(policy) = seen.path.strip_prefix("/v1/data/") else {
            return answer(404, json!({"code": "not_found", "message": INTERNALS}));
        };
        if seen.query.as_deref() != Some(STRICT) {
            return answer(
                400,
                json!({"code": "invalid_parameter", "message": "strict-builtin-errors missing"}),
            );
        }
        match policy {
            "kest/allow_rule" => ok(json!({"result": true})),
            "kest/allow_package" => ok(json!({"result": {"allow": true, "reasons": []}})),
            "kest/deny_rule" => ok(json!({"result": false})),
            "kest/deny_package" => ok(json!({"result": {"allow": false}})),
            "kest/deny_package_without_allow" => ok(json!({"result": {}})),
            "kest/deny_string" => ok(json!({"result": "true"})),
            "kest/deny_number" => ok(json!({"result": {"allow": 1}})),
            "kest/custom" => ok(json!({"result": {"allow": false, "decision": {"permitted": true}}})),
            "kest/undefined" => ok(json!({})),
            "kest/undefined_warning" => {
                ok(json!({"warning": {"code": "api_usage_warning", "message": "'input' key missing"}}))
            }
            // What OPA answers when a built-in errors under
            // strict-builtin-errors (server/writer.ErrorAuto on a topdown
            // error).
            "kest/builtin_error" => answer(
                500,
                json!({
                    "code": "internal_error",
                    "message": "error(s) occurred while evaluating query",
                    "errors": [{
                        "code": "eval_builtin_error",
                        "message": format!("http.send: Post \"https://10.0.0.9/{INTERNALS}\": connection refused"),
                        "location": {"file": "/policies/kest.rego", "row": 7, "col": 5}
                    }]
                }),
            ),
            "kest/error_500" => answer(
                500,
                json!({"code": "internal_error", "message": format!("storage_internal_error: {INTERNALS}")}),
            ),
            "kest/error_400" => answer(
                400,
                json!({"code": "invalid_parameter", "message": format!("parsing input: {INTERNALS}")}),
            ),
            "kest/bad_json" => {
                Canned { status: 200, body: format!("{{\"result\": tru {INTERNALS}"), hold: false }
            }
            "kest/not_object" => Canned { status: 200, body: format!("[\"{INTERNALS}\"]"), hold: false },
            "kest/slow" => Canned { status: 200, body: json!({"result": true}).to_string(), hold: true },
            _ => ok(json!({})),
        }
    })
}

fn opa(stub: &Stub) -> OpaEngine {
    OpaEngine::builder(stub.url()).timeout(Duration::from_millis(300)).build().unwrap()
}

#[tokio::test]
async fn opa_request_is_a_data_api_post_with_the_context_as_input() {
    let stub = opa_stub();
    let engine = OpaEngine::builder(format!("{}/", stub.url())).bearer_token("t0ken").build().unwrap();
    let input = input(60);
    assert_eq!(engine.evaluate_async("kest.allow_rule", &input).await.unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate_async("kest/allow_rule", &input).await.unwrap(), Decision::Allow);
    let seen = stub.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/data/kest/allow_rule");
        assert_eq!(request.query.as_deref(), Some(STRICT));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("authorization"), Some("Bearer t0ken"));
        assert_eq!(request.json(), json!({ "input": input.json() }));
        // Nulls reach Rego as nulls (SPEC §6.1).
        assert_eq!(request.json()["input"]["subject"]["agent"], Value::Null);
        assert_eq!(request.json()["input"]["subject"]["trust_score"], 60);
    }
}

#[tokio::test]
async fn opa_allows_only_on_exactly_true() {
    let stub = opa_stub();
    let engine = opa(&stub);
    let input = input(60);
    for policy in ["kest.allow_rule", "kest.allow_package"] {
        assert_eq!(engine.evaluate_async(policy, &input).await.unwrap(), Decision::Allow, "{policy}");
    }
    for policy in [
        "kest.deny_rule",
        "kest.deny_package",
        "kest.deny_package_without_allow",
        "kest.deny_string",
        "kest.deny_number",
    ] {
        assert_eq!(engine.evaluate_async(policy, &input).await.unwrap(), Decision::Deny, "{policy}");
    }
    // The default reads `result.allow`, which is false here.
    assert_eq!(engine.evaluate_async("kest.custom", &input).await.unwrap(), Decision::Deny);
}

#[tokio::test]
async fn opa_decision_path_is_configurable() {
    let stub = opa_stub();
    let engine = OpaEngine::builder(stub.url()).decision_path("result.decision.permitted").build().unwrap();
    let input = input(60);
    assert_eq!(engine.evaluate_async("kest.custom", &input).await.unwrap(), Decision::Allow);
    // `result.allow` no longer counts.
    assert_eq!(engine.evaluate_async("kest.allow_package", &input).await.unwrap(), Decision::Deny);
    let engine = OpaEngine::builder(stub.url()).decision_path("result").build().unwrap();
    assert_eq!(engine.evaluate_async("kest.allow_rule", &input).await.unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate_async("kest.allow_package", &input).await.unwrap(), Decision::Deny);
    for bad in ["", "allow", "result.", "result..allow", ".result"] {
        assert!(OpaEngine::builder(stub.url()).decision_path(bad).build().is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn opa_undefined_decision_is_an_error() {
    let stub = opa_stub();
    let engine = opa(&stub);
    for policy in ["kest.undefined", "kest.undefined_warning", "kest.no_such_policy"] {
        let err = engine.evaluate_async(policy, &input(60)).await.unwrap_err();
        assert!(matches!(&err, PolicyError::Evaluation { policy: p, .. } if p == policy), "{err:?}");
        assert!(err.to_string().contains("undefined"), "{err}");
    }
}

/// Every Data API request, through both paths, sets
/// `strict-builtin-errors=true`, so a built-in error is an evaluation
/// error (deny) rather than an undefined expression a `not` could turn into
/// an allow.
#[tokio::test]
async fn opa_queries_set_strict_builtin_errors() {
    let stub = opa_stub();
    let engine = opa(&stub);
    assert_eq!(engine.evaluate_async("kest.allow_rule", &input(60)).await.unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate("kest/deny_rule", &input(60)).unwrap(), Decision::Deny);
    let e = OpaEngine::builder(format!("{}/", stub.url())).decision_path("result").build().unwrap();
    assert_eq!(e.evaluate_async("kest.allow_rule", &input(60)).await.unwrap(), Decision::Allow);
    let seen = stub.seen();
    assert_eq!(seen.len(), 3);
    for request in &seen {
        assert_eq!(request.query.as_deref(), Some(STRICT), "{request:?}");
    }
    // A built-in error is an evaluation error, through both paths, and
    // OPA's message stays out of it.
    for err in [
        engine.evaluate_async("kest.builtin_error", &input(90)).await.unwrap_err(),
        engine.evaluate("kest.builtin_error", &input(90)).unwrap_err(),
    ] {
        assert!(
            matches!(&err, PolicyError::Evaluation { policy, .. } if policy == "kest.builtin_error"),
            "{err:?}"
        );
        let text = format!("{err} {err:?}");
        assert!(!text.contains(INTERNALS) && !text.contains("http.send"), "{text}");
    }
}

#[tokio::test]
async fn opa_error_statuses_and_bad_answers_are_errors_without_retry() {
    let stub = opa_stub();
    let engine = opa(&stub);
    let input = input(90);
    let expected = [
        ("kest.error_500", RemoteFailure::Status(500)),
        ("kest.error_400", RemoteFailure::Status(400)),
        ("kest.bad_json", RemoteFailure::NotJson),
        ("kest.not_object", RemoteFailure::UnexpectedAnswer),
    ];
    for (policy, failure) in expected {
        let err = engine.evaluate_async(policy, &input).await.unwrap_err();
        assert_eq!(err, failure.into_error("opa"), "{policy}");
        assert_eq!(RemoteFailure::of(&err), Some(failure));
        // Concise: the engine's body (logged) is not in the error.
        assert!(!format!("{err} {err:?}").contains(INTERNALS), "{err:?}");
    }
    assert_eq!(
        engine.evaluate_async("kest.error_500", &input).await.unwrap_err().to_string(),
        "policy engine `opa` unavailable: HTTP 500"
    );
    // The same through the synchronous path.
    assert_eq!(engine.evaluate("kest.error_500", &input), Err(RemoteFailure::Status(500).into_error("opa")));
    assert_eq!(engine.evaluate("kest.bad_json", &input), Err(RemoteFailure::NotJson.into_error("opa")));
    // Each evaluation sent exactly one request: no automatic retry.
    let paths: Vec<String> = stub.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        [
            "/v1/data/kest/error_500",
            "/v1/data/kest/error_400",
            "/v1/data/kest/bad_json",
            "/v1/data/kest/not_object",
            "/v1/data/kest/error_500",
            "/v1/data/kest/error_500",
            "/v1/data/kest/bad_json"
        ]
    );
}

/// A server that has the request but does not answer within the timeout:
/// the engine gives up with a timeout error (deny), through both paths,
/// while the stub is still holding its answer; one request per evaluation.
#[tokio::test]
async fn opa_slow_server_beyond_the_timeout_is_an_error() {
    let stub = opa_stub();
    let engine = opa(&stub); // 300 ms
    let err = engine.evaluate_async("kest.slow", &input(90)).await.unwrap_err();
    assert_eq!(err, RemoteFailure::Timeout.into_error("opa"));
    assert_eq!(RemoteFailure::of(&err), Some(RemoteFailure::Timeout));
    assert_eq!(stub.seen().len(), 1, "the stub received the request");
    assert_eq!(stub.answered(), 0, "and had not answered");
    // Synchronous path, inside this runtime.
    let err = engine.evaluate("kest.slow", &input(90)).unwrap_err();
    assert_eq!(err, RemoteFailure::Timeout.into_error("opa"));
    assert_eq!(stub.seen().len(), 2, "one request per evaluation, no retry");
    assert_eq!(stub.answered(), 0);
    // Released, the stub answers into closed connections: nothing changes.
    stub.release();
    assert_eq!(engine.evaluate_async("kest.allow_rule", &input(60)).await.unwrap(), Decision::Allow);
}

#[test]
fn opa_default_timeout_is_one_second() {
    assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(1));
    let stub = opa_stub();
    let engine = OpaEngine::new(stub.url()).unwrap();
    assert!(format!("{engine:?}").contains("timeout: 1s"), "{engine:?}");
    let err = engine.evaluate("kest.slow", &input(90)).unwrap_err();
    assert_eq!(RemoteFailure::of(&err), Some(RemoteFailure::Timeout), "{err:?}");
    assert_eq!(stub.seen().len(), 1);
    assert_eq!(stub.answered(), 0);
}

/// TC-09: a policy server that cannot be reached denies — an error, never
/// `Ok(Allow)` — through both paths.
#[tokio::test]
async fn tc09_unreachable_policy_server_denies() {
    let engine = OpaEngine::new(dead_address()).unwrap();
    let input = input(100);
    let sync = engine.evaluate("kest.allow", &input);
    assert_eq!(sync, Err(RemoteFailure::Connect.into_error("opa")));
    let asynchronous = engine.evaluate_async("kest.allow", &input).await;
    assert_eq!(asynchronous, Err(RemoteFailure::Connect.into_error("opa")));
    let message = sync.unwrap_err().to_string();
    assert!(message.contains("opa") && message.to_lowercase().contains("connect"), "{message}");
    // The same from a thread outside any runtime.
    let engine2 = OpaEngine::new(dead_address()).unwrap();
    let out = std::thread::spawn(move || engine2.evaluate("kest.allow", &PolicyInput::new(context(100))))
        .join()
        .unwrap();
    assert_eq!(out, Err(RemoteFailure::Connect.into_error("opa")));
}

#[test]
fn opa_sync_evaluate_outside_a_runtime() {
    let stub = opa_stub();
    let engine = opa(&stub);
    assert!(tokio::runtime::Handle::try_current().is_err());
    assert_eq!(engine.evaluate("kest.allow_rule", &input(60)).unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate("kest.deny_rule", &input(60)).unwrap(), Decision::Deny);
    // Many threads at once through the one dedicated thread.
    let engine = Arc::new(engine);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                let policy = if i % 2 == 0 { "kest.allow_rule" } else { "kest.deny_package" };
                engine.evaluate(policy, &input(60)).unwrap() == Decision::from_bool(i % 2 == 0)
            })
        })
        .collect();
    assert!(threads.into_iter().all(|t| t.join().unwrap()));
    // The async path polled without any Tokio runtime.
    let out = block_on_without_tokio(engine.evaluate_async("kest.allow_package", &input(60)));
    assert_eq!(out.unwrap(), Decision::Allow);
}

#[tokio::test(flavor = "current_thread")]
async fn opa_sync_evaluate_inside_a_current_thread_runtime() {
    let stub = opa_stub();
    let engine = opa(&stub);
    assert!(tokio::runtime::Handle::try_current().is_ok());
    assert_eq!(engine.evaluate("kest.allow_rule", &input(60)).unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate("kest.deny_rule", &input(60)).unwrap(), Decision::Deny);
    // Mixed with the async path on the same engine.
    assert_eq!(engine.evaluate_async("kest.allow_package", &input(60)).await.unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate("kest.allow_package", &input(60)).unwrap(), Decision::Allow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opa_sync_evaluate_inside_a_multi_thread_runtime() {
    let stub = opa_stub();
    let engine = Arc::new(opa(&stub));
    assert_eq!(engine.evaluate("kest.allow_rule", &input(60)).unwrap(), Decision::Allow);
    let e = Arc::clone(&engine);
    let spawned = tokio::spawn(async move { e.evaluate("kest.allow_package", &input(60)) });
    assert_eq!(spawned.await.unwrap().unwrap(), Decision::Allow);
    let e = Arc::clone(&engine);
    let blocking = tokio::task::spawn_blocking(move || e.evaluate("kest.deny_rule", &input(60)));
    assert_eq!(blocking.await.unwrap().unwrap(), Decision::Deny);
}

#[tokio::test]
async fn opa_refuses_bad_policy_names_before_any_request() {
    let stub = opa_stub();
    let engine = opa(&stub);
    for bad in
        ["", "kest..allow", "../admin", "kest/../admin", "kest/", "kest allow", "kest%2Fallow", "kest?x=1"]
    {
        let err = engine.evaluate_async(bad, &input(60)).await.unwrap_err();
        assert!(matches!(err, PolicyError::Evaluation { .. }), "{bad:?}: {err:?}");
        assert!(engine.evaluate(bad, &input(60)).is_err(), "{bad:?}");
    }
    assert!(stub.seen().is_empty());
}

#[test]
fn opa_builder_checks_its_configuration() {
    for bad in ["", "127.0.0.1:8181", "file:///tmp/x", "http://x/?q=1", "https://user:pw@opa.example"] {
        assert!(matches!(OpaEngine::new(bad), Err(RemoteConfigError::InvalidUrl { .. })), "{bad:?}");
    }
    assert!(!OpaEngine::new("https://user:pw@opa.example").unwrap_err().to_string().contains("pw"));
    let zero = OpaEngine::builder("http://127.0.0.1:1").timeout(Duration::ZERO).build();
    assert_eq!(zero.unwrap_err(), RemoteConfigError::ZeroTimeout);
    let token = OpaEngine::builder("http://127.0.0.1:1").bearer_token("bad\ntoken").build();
    assert_eq!(token.unwrap_err(), RemoteConfigError::InvalidToken);
    let path = OpaEngine::builder("http://127.0.0.1:1").decision_path("allow").build();
    assert_eq!(path.unwrap_err(), RemoteConfigError::InvalidDecisionPath { path: "allow".into() });
    // Into the crate-wide error, for `?` in code returning PolicyError.
    assert!(matches!(PolicyError::from(RemoteConfigError::ZeroTimeout), PolicyError::Config(_)));
    let engine = OpaEngine::builder("http://127.0.0.1:1").bearer_token("s3cret").build().unwrap();
    assert_eq!(engine.name(), "opa");
    assert!(!format!("{engine:?}").contains("s3cret"));
    let builder = OpaEngine::builder("http://127.0.0.1:1").bearer_token("s3cret");
    assert!(!format!("{builder:?}").contains("s3cret"));
}

/// SPEC §7.5: remote engines use https, except on loopback, unless the
/// insecure option is set explicitly. Checked at build, before any request.
#[test]
fn remote_engines_use_https_except_on_loopback() {
    let opa =
        |url: &str, insecure: bool| OpaEngine::builder(url).danger_allow_insecure_http(insecure).build();
    let cedar = |url: &str, insecure: bool| {
        CedarAgentEngine::builder(url).danger_allow_insecure_http(insecure).build()
    };
    for (url, host) in [
        ("http://opa.example:8181", "opa.example"),
        ("http://10.0.0.7:8181", "10.0.0.7"),
        ("http://0.0.0.0:8181", "0.0.0.0"),
        ("http://localhost.example.com", "localhost.example.com"),
        ("http://[::ffff:127.0.0.1]:8181", "[::ffff:7f00:1]"),
    ] {
        // Refused by default, and with the option explicitly off.
        let err = opa(url, false).unwrap_err();
        assert!(
            matches!(&err, RemoteConfigError::InsecureHttp { host: h, .. } if h == host),
            "{url}: {err:?}"
        );
        let err = cedar(url, false).unwrap_err();
        assert!(
            matches!(&err, RemoteConfigError::InsecureHttp { host: h, .. } if h == host),
            "{url}: {err:?}"
        );
        assert!(matches!(OpaEngine::new(url), Err(RemoteConfigError::InsecureHttp { .. })), "{url}");
        assert!(matches!(CedarAgentEngine::new(url), Err(RemoteConfigError::InsecureHttp { .. })), "{url}");
        // Allowed only when asked for (and logged).
        assert!(opa(url, true).is_ok(), "{url}");
        assert!(cedar(url, true).is_ok(), "{url}");
    }
    // https anywhere, http on loopback: no option needed.
    for url in [
        "https://opa.example:8181",
        "https://10.0.0.7/prefix/",
        "http://127.0.0.1:8181",
        "http://127.0.0.2:8181",
        "http://localhost:8181",
        "http://[::1]:8181",
    ] {
        assert!(OpaEngine::new(url).is_ok(), "{url}");
        assert!(CedarAgentEngine::new(url).is_ok(), "{url}");
    }
}

// ---------------------------------------------------------------------------
// Cedar Agent: the request and answer shapes against the stub.

#[tokio::test]
async fn cedar_agent_request_shape_and_answers_against_a_stub() {
    let stub = Stub::start(|seen| match seen.json()["action"].as_str() {
        Some(r#"Action::"allow""#) => {
            ok(json!({"decision": "Allow", "diagnostics": {"reason": ["p"], "errors": []}}))
        }
        Some(r#"Action::"allow_bare""#) => ok(json!({"decision": "Allow"})),
        Some(r#"Action::"deny""#) => {
            ok(json!({"decision": "Deny", "diagnostics": {"reason": [], "errors": []}}))
        }
        Some(r#"Action::"allow_with_errors""#) => ok(
            json!({"decision": "Allow", "diagnostics": {"reason": ["p"], "errors": [format!("while evaluating policy `q`: {INTERNALS}")]}}),
        ),
        Some(r#"Action::"lowercase""#) => ok(json!({"decision": "allow"})),
        Some(r#"Action::"bool""#) => ok(json!({"decision": true})),
        _ => answer(
            400,
            json!({"reason": "You have malformed a bad request", "description": INTERNALS, "code": 400}),
        ),
    });
    let engine = CedarAgentEngine::builder(stub.url()).authorization("agent-token").build().unwrap();
    let mut ctx = context(60);
    ctx.object.id = Some("doc-1".into());
    let input = PolicyInput::new(ctx);
    assert_eq!(engine.evaluate_async("allow", &input).await.unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate_async("allow_bare", &input).await.unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate_async("deny", &input).await.unwrap(), Decision::Deny);
    // Diagnostics errors deny, and stay in the logs.
    let err = engine.evaluate_async("allow_with_errors", &input).await.unwrap_err();
    assert!(matches!(err, PolicyError::Evaluation { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(INTERNALS), "{err:?}");
    let unexpected = RemoteFailure::UnexpectedAnswer.into_error("cedar-agent");
    assert_eq!(engine.evaluate_async("lowercase", &input).await, Err(unexpected.clone()));
    assert_eq!(engine.evaluate_async("bool", &input).await, Err(unexpected));
    let err = engine.evaluate_async("other", &input).await.unwrap_err();
    assert_eq!(err, RemoteFailure::Status(400).into_error("cedar-agent"));
    assert!(!format!("{err} {err:?}").contains(INTERNALS) && !err.to_string().contains("malformed"), "{err}");

    let request = &stub.seen()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/is_authorized");
    assert_eq!(request.header("authorization"), Some("agent-token"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    assert_eq!(body["principal"], r#"Workload::"spiffe://demo/agent""#);
    assert_eq!(body["action"], r#"Action::"allow""#);
    assert_eq!(body["resource"], r#"Resource::"doc-1""#);
    // The §6.1 document without its nulls.
    let mut expected = input.json().clone();
    for (section, key) in [("subject", "agent"), ("subject", "task")] {
        expected[section].as_object_mut().unwrap().remove(key);
    }
    assert_eq!(body["context"], expected);
    assert!(!body.to_string().contains("null"));
}

// ---------------------------------------------------------------------------
// Cedar Agent: the real binary.

const TOKEN: &str = "kest-test-token";

/// The `cedar-agent` binary: `KEST_CEDAR_AGENT`, else on `PATH`, else where
/// `scripts/lib/cedar-agent.sh` installs it. Missing is a failure, never a
/// skip.
fn cedar_agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KEST_CEDAR_AGENT") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "KEST_CEDAR_AGENT={} is not a file", path.display());
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("cedar-agent")).find(|p| p.is_file()));
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|cache| cache.join("kest-rs/cedar-agent/bin/cedar-agent"))
        .filter(|p| p.is_file());
    on_path.or(cache).unwrap_or_else(|| {
        panic!(
            "the cedar-agent binary is missing: ./scripts/test installs it; by hand: \
             `source scripts/lib/cedar-agent.sh && ensure_cedar_agent` (exports KEST_CEDAR_AGENT)"
        )
    })
}

/// A running agent on a free loopback port, killed on drop.
struct Agent {
    child: Child,
    url: String,
    log: tempfile::NamedTempFile,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts an agent requiring [`TOKEN`] and loads the test policies.
    async fn start() -> Agent {
        let binary = cedar_agent_binary();
        let client = reqwest::Client::new();
        for _attempt in 0..3 {
            let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = tempfile::NamedTempFile::new().unwrap();
            let child = Command::new(&binary)
                .args(["--addr", "127.0.0.1", "--port", &port.to_string(), "--authentication", TOKEN])
                .args(["--log-level", "warn"])
                .env("ROCKET_CLI_COLORS", "false")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.reopen().unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut agent = Agent { child, url: format!("http://127.0.0.1:{port}"), log };
            // Waits for the agent to listen (up to 600 polls, 50 ms apart).
            for poll in 0.. {
                if agent.child.try_wait().unwrap().is_some() {
                    break; // exited (port taken?): try another port
                }
                let ready = client
                    .get(format!("{}/v1/", agent.url))
                    .header("Authorization", TOKEN)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    agent.load_policies(&client).await;
                    return agent;
                }
                assert!(poll < 600, "cedar-agent did not start: {}", agent.stderr());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!("cedar-agent exited at start: {}", agent.stderr());
        }
        panic!("cedar-agent did not start on a free port in 3 attempts");
    }

    /// Loads the policies through the agent's REST API (`PUT /v1/policies`),
    /// each scoped by its action (= the kest policy name).
    async fn load_policies(&self, client: &reqwest::Client) {
        let policies = json!([
            {"id": "send_email", "content":
                r#"permit(principal, action == Action::"send_email", resource) when { context.subject.trust_score >= 50 };"#},
            {"id": "invoke", "content": r#"permit(principal, action == Action::"invoke", resource);"#},
            {"id": "broken", "content":
                r#"permit(principal, action == Action::"broken", resource) when { context.no_such_attribute == 1 };"#},
        ]);
        let response = client
            .put(format!("{}/v1/policies", self.url))
            .header("Authorization", TOKEN)
            .json(&policies)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "PUT /v1/policies: {status}: {body}");
        let loaded: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(loaded.as_array().map(Vec::len), Some(3), "{body}");
    }

    fn engine(&self) -> CedarAgentEngine {
        CedarAgentEngine::builder(&self.url).authorization(TOKEN).build().unwrap()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

#[tokio::test]
async fn cedar_agent_allows_and_denies_per_action() {
    let agent = Agent::start().await;
    let engine = agent.engine();
    // example_context() has nulls (agent, task, object.id): dropped, or the
    // agent would refuse the context.
    assert_eq!(engine.evaluate_async("send_email", &input(60)).await.unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate_async("send_email", &input(50)).await.unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate_async("send_email", &input(49)).await.unwrap(), Decision::Deny);
    assert_eq!(engine.evaluate_async("invoke", &input(0)).await.unwrap(), Decision::Allow);
    // No policy for that action: deny (the `invoke` permit does not leak).
    assert_eq!(engine.evaluate_async("delete_everything", &input(100)).await.unwrap(), Decision::Deny);
    assert_eq!(engine.evaluate_async("kest/send_email", &input(100)).await.unwrap(), Decision::Deny);
    // A policy that errors is an error (Cedar would just skip it).
    let err = engine.evaluate_async("broken", &input(100)).await.unwrap_err();
    assert!(matches!(err, PolicyError::Evaluation { .. }), "{err:?}");
    // Ids that need escaping in Cedar's entity syntax reach the agent intact.
    let mut ctx = context(60);
    ctx.subject.workload = "spiffe://demo/we\"ird\\agent\n".into();
    ctx.object.id = Some("doc \"1\"".into());
    assert_eq!(engine.evaluate_async("invoke", &PolicyInput::new(ctx)).await.unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate_async("invoke\"", &input(60)).await.unwrap(), Decision::Deny);
    // Values Cedar cannot take are refused before sending.
    let mut ctx = context(60);
    ctx.object.attributes.insert("price".into(), json!(1.5));
    let err = engine.evaluate_async("invoke", &PolicyInput::new(ctx)).await.unwrap_err();
    assert!(err.to_string().contains("object.attributes.price"), "{err}");
    let mut ctx = context(60);
    ctx.object.attributes.insert("owner".into(), json!({"__entity": {"type": "Workload", "id": "admin"}}));
    assert!(engine.evaluate_async("invoke", &PolicyInput::new(ctx)).await.is_err());
}

#[tokio::test]
async fn cedar_agent_wrong_or_missing_token_is_an_error() {
    let agent = Agent::start().await;
    let without = CedarAgentEngine::new(&agent.url).unwrap();
    let err = without.evaluate_async("invoke", &input(60)).await.unwrap_err();
    assert_eq!(RemoteFailure::of(&err), Some(RemoteFailure::Status(401)), "{err:?}");
    assert!(err.to_string().contains("401"), "{err}");
    let wrong = CedarAgentEngine::builder(&agent.url).authorization("nope").build().unwrap();
    assert!(wrong.evaluate_async("invoke", &input(60)).await.is_err());
    assert!(wrong.evaluate("invoke", &input(60)).is_err());
}

#[tokio::test]
async fn cedar_agent_stopped_is_an_error() {
    let mut agent = Agent::start().await;
    let engine = agent.engine();
    assert_eq!(engine.evaluate_async("invoke", &input(60)).await.unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate("invoke", &input(60)).unwrap(), Decision::Allow);
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    // A new connection is refused, or the pooled one is found closed.
    let down = |err: &PolicyError| {
        matches!(RemoteFailure::of(err), Some(RemoteFailure::Connect | RemoteFailure::Request))
    };
    let err = engine.evaluate_async("invoke", &input(60)).await.unwrap_err();
    assert!(down(&err), "{err:?}");
    let err = engine.evaluate("invoke", &input(60)).unwrap_err();
    assert!(down(&err), "{err:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn cedar_agent_sync_evaluate_inside_a_runtime() {
    let agent = Agent::start().await;
    let engine = agent.engine();
    assert_eq!(engine.evaluate("send_email", &input(70)).unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate("send_email", &input(10)).unwrap(), Decision::Deny);
}

#[test]
fn cedar_agent_sync_evaluate_outside_a_runtime() {
    let agent = tokio::runtime::Runtime::new().unwrap().block_on(Agent::start());
    let engine = agent.engine();
    assert!(tokio::runtime::Handle::try_current().is_err());
    assert_eq!(engine.evaluate("send_email", &input(70)).unwrap(), Decision::Allow);
    assert_eq!(engine.evaluate("send_email", &input(10)).unwrap(), Decision::Deny);
    assert_eq!(engine.evaluate("nothing_loaded", &input(100)).unwrap(), Decision::Deny);
}
