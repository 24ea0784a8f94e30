//! Remote Rego policies on an Open Policy Agent server (SPEC §6.2, feature
//! `remote`).
//!
//! Evaluating policy `kest.send_email` (or `kest/send_email`) sends
//!
//! ```text
//! POST {base}/v1/data/kest/send_email
//! Content-Type: application/json
//!
//! {"input": <the SPEC §6.1 context document>}
//! ```
//!
//! to OPA's [Data API](https://www.openpolicyagent.org/docs/rest-api#get-a-document-with-input)
//! and reads the decision from the answer `{"result": …}`:
//!
//! - by default, [`Decision::Allow`] when `result` is exactly `true` (the
//!   path names a rule) or `result.allow` is exactly `true` (the path names
//!   a package); any other value, `false`, a string, a missing `allow`,
//!   denies;
//! - with [`OpaEngineBuilder::decision_path`], allow only when the value at
//!   that path of the answer (e.g. `result.decision.permitted`) is exactly
//!   `true`.
//!
//! Everything else is an error, so a denial: an answer without `result`
//! (OPA's *undefined*: no policy at that path, or a rule without a default
//! that did not match) is [`PolicyError::Evaluation`]; a connection error,
//! a timeout ([`DEFAULT_TIMEOUT`], 1 s, unless configured), an HTTP status
//! other than 200 (OPA's `{"code", "message"}` body is quoted in the
//! message) or an answer that is not a JSON object is
//! [`PolicyError::Unavailable`]. A request is sent once: there is no
//! automatic retry (reqwest's retry policy is set to *never*) and redirects
//! are not followed. Answers larger than [`MAX_RESPONSE_BYTES`] are errors.
//!
//! Policy names are paths of segments of ASCII letters, digits, `_` and
//! `-`, separated by `.` or `/`; anything else (an empty segment, `..`, a
//! space, a `%`) is refused before any request is sent.
//!
//! Both paths of [`PolicyEngine`] work anywhere: the asynchronous one uses a
//! shared [`reqwest::Client`] on the caller's Tokio runtime, and the
//! synchronous [`evaluate`](PolicyEngine::evaluate) hands the request to a
//! small dedicated thread with its own current-thread runtime and waits for
//! the answer, so it neither panics inside a Tokio runtime (as
//! `reqwest::blocking` would) nor needs one. That thread is started on the
//! first synchronous call and ends when the engine is dropped. The
//! asynchronous path needs a Tokio runtime with I/O and time enabled (as
//! `#[tokio::main]` has); polled outside any Tokio runtime it uses the
//! dedicated thread as well.

use std::fmt;
use std::sync::OnceLock;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Client, Url};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::{BoxFuture, Decision, PolicyEngine, PolicyError, PolicyInput};

/// The default time limit of one request (connect, send and read the
/// answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// The largest answer read from a remote engine (1 MiB); a larger one is an
/// error.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A policy engine on a remote OPA server (see the
/// [module documentation](self)).
///
/// ```no_run
/// use std::time::Duration;
/// use kest::policy::{Decision, PolicyEngine, PolicyInput};
/// use kest::policy::opa::OpaEngine;
///
/// let engine = OpaEngine::builder("http://127.0.0.1:8181")
///     .timeout(Duration::from_millis(500))
///     .build()
///     .unwrap();
/// let input = PolicyInput::new(kest::policy::context::example_context());
/// // POST http://127.0.0.1:8181/v1/data/kest/send_email {"input": …}
/// match engine.evaluate("kest.send_email", &input) {
///     Ok(Decision::Allow) => println!("allowed"),
///     Ok(Decision::Deny) => println!("denied"),
///     Err(e) => println!("denied: {e}"), // unreachable, timed out, undefined …
/// }
/// ```
pub struct OpaEngine {
    name: String,
    /// `{base}/v1/data` without a trailing slash.
    data_url: String,
    decision: DecisionPath,
    transport: Transport,
}

impl fmt::Debug for OpaEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpaEngine")
            .field("name", &self.name)
            .field("data_url", &self.data_url)
            .field("decision", &self.decision)
            .field("timeout", &self.transport.timeout)
            .finish_non_exhaustive()
    }
}

/// Where the decision is read in OPA's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DecisionPath {
    /// `result == true` or `result.allow == true`.
    Default,
    /// The value at these keys of the answer must be `true`.
    Keys(Vec<String>),
}

impl OpaEngine {
    /// A builder for an OPA server at `base_url` (e.g.
    /// `http://127.0.0.1:8181`; a path prefix is kept).
    pub fn builder(base_url: impl Into<String>) -> OpaEngineBuilder {
        OpaEngineBuilder {
            base_url: base_url.into(),
            name: "opa".into(),
            timeout: DEFAULT_TIMEOUT,
            decision_path: None,
            bearer_token: None,
        }
    }

    /// An engine for an OPA server at `base_url` with the defaults.
    ///
    /// # Errors
    ///
    /// As [`OpaEngineBuilder::build`].
    pub fn new(base_url: impl Into<String>) -> Result<OpaEngine, PolicyError> {
        OpaEngine::builder(base_url).build()
    }

    /// The URL a policy is queried at, or why the name is refused.
    fn url(&self, policy: &str) -> Result<Url, PolicyError> {
        let path = policy_path(policy)
            .map_err(|message| PolicyError::Evaluation { policy: policy.to_owned(), message })?;
        Url::parse(&format!("{}/{path}", self.data_url)).map_err(|e| PolicyError::Evaluation {
            policy: policy.to_owned(),
            message: format!("cannot build the OPA URL: {e}"),
        })
    }

    fn body(input: &PolicyInput) -> Result<Vec<u8>, PolicyError> {
        serde_json::to_vec(&serde_json::json!({ "input": input.json() }))
            .map_err(|e| PolicyError::Config(format!("cannot serialise the OPA input: {e}")))
    }

    /// The decision in one answer of OPA.
    fn decide(&self, policy: &str, reply: Result<Reply, String>) -> Result<Decision, PolicyError> {
        let unavailable = |message: String| PolicyError::Unavailable { engine: self.name.clone(), message };
        let reply = reply.map_err(unavailable)?;
        if reply.status != 200 {
            return Err(unavailable(format!(
                "OPA answered HTTP {} for policy `{policy}`{}",
                reply.status,
                error_body(&reply.body)
            )));
        }
        let answer: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| unavailable(format!("OPA's answer for policy `{policy}` is not JSON: {e}")))?;
        let Value::Object(answer) = answer else {
            return Err(unavailable(format!("OPA's answer for policy `{policy}` is not a JSON object")));
        };
        let Some(result) = answer.get("result") else {
            return Err(PolicyError::Evaluation {
                policy: policy.to_owned(),
                message: "OPA's decision is undefined (no policy at that path, or a rule without a default \
                          that did not match)"
                    .into(),
            });
        };
        let allowed = match &self.decision {
            DecisionPath::Default => {
                *result == Value::Bool(true) || result.get("allow") == Some(&Value::Bool(true))
            }
            DecisionPath::Keys(keys) => {
                let mut value = Some(result);
                // keys[0] is `result`.
                for key in keys.iter().skip(1) {
                    value = value.and_then(|v| v.get(key.as_str()));
                }
                value == Some(&Value::Bool(true))
            }
        };
        Ok(Decision::from_bool(allowed))
    }
}

impl PolicyEngine for OpaEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn evaluate(&self, policy: &str, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let url = self.url(policy)?;
        let body = OpaEngine::body(input)?;
        self.decide(policy, self.transport.post_blocking(url, body))
    }

    fn evaluate_async<'a>(
        &'a self,
        policy: &'a str,
        input: &'a PolicyInput,
    ) -> BoxFuture<'a, Result<Decision, PolicyError>> {
        Box::pin(async move {
            let url = self.url(policy)?;
            let body = OpaEngine::body(input)?;
            self.decide(policy, self.transport.post(url, body).await)
        })
    }
}

/// Builds an [`OpaEngine`]; obtained from [`OpaEngine::builder`].
///
/// ```
/// use std::time::Duration;
/// use kest::policy::opa::OpaEngine;
/// let engine = OpaEngine::builder("http://127.0.0.1:8181")
///     .named("opa-platform")
///     .timeout(Duration::from_millis(250))
///     .decision_path("result.decision.permitted")
///     .bearer_token("s3cret")
///     .build()
///     .unwrap();
/// # use kest::policy::PolicyEngine;
/// assert_eq!(engine.name(), "opa-platform");
/// assert!(OpaEngine::builder("ftp://example").build().is_err());
/// assert!(OpaEngine::builder("http://127.0.0.1:8181").decision_path("allow").build().is_err());
/// ```
#[derive(Clone)]
pub struct OpaEngineBuilder {
    base_url: String,
    name: String,
    timeout: Duration,
    decision_path: Option<String>,
    bearer_token: Option<String>,
}

impl fmt::Debug for OpaEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpaEngineBuilder")
            .field("base_url", &self.base_url)
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("decision_path", &self.decision_path)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl OpaEngineBuilder {
    /// The engine name (part of decision-cache keys; default `opa`). Give
    /// two engines on different servers different names.
    pub fn named(mut self, name: impl Into<String>) -> OpaEngineBuilder {
        self.name = name.into();
        self
    }

    /// The time limit of one request, from connecting to reading the whole
    /// answer (default [`DEFAULT_TIMEOUT`], 1 s). Must not be zero.
    pub fn timeout(mut self, timeout: Duration) -> OpaEngineBuilder {
        self.timeout = timeout;
        self
    }

    /// Reads the decision at this dot-separated path of OPA's answer, which
    /// must start with `result` (e.g. `result`, `result.allow`,
    /// `result.decision.permitted`): allow only when the value there is
    /// exactly `true`. Without it: `result` or `result.allow` is `true`.
    pub fn decision_path(mut self, path: impl Into<String>) -> OpaEngineBuilder {
        self.decision_path = Some(path.into());
        self
    }

    /// Sends `Authorization: Bearer <token>` (OPA's `--authentication=token`).
    pub fn bearer_token(mut self, token: impl Into<String>) -> OpaEngineBuilder {
        self.bearer_token = Some(token.into());
        self
    }

    /// Checks the configuration and builds the HTTP client (no request is
    /// sent).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Config`] for a base URL that is not `http://` or
    /// `https://` with a host (or has a query or fragment), a zero timeout,
    /// a decision path that does not start with `result` or has an empty
    /// segment, a token that is not a valid header value, or an HTTP client
    /// that cannot be built.
    pub fn build(self) -> Result<OpaEngine, PolicyError> {
        let base = base_url(&self.base_url)?;
        let decision = match self.decision_path {
            None => DecisionPath::Default,
            Some(path) => {
                let keys: Vec<String> = path.split('.').map(str::to_owned).collect();
                if keys.first().map(String::as_str) != Some("result") || keys.iter().any(String::is_empty) {
                    return Err(PolicyError::Config(format!(
                        "OPA decision path `{path}` must be `result` or start with `result.` and have no empty \
                         segment"
                    )));
                }
                DecisionPath::Keys(keys)
            }
        };
        let mut headers = HeaderMap::new();
        if let Some(token) = self.bearer_token {
            headers.insert(AUTHORIZATION, sensitive(&format!("Bearer {token}"))?);
        }
        let transport = Transport::new(self.timeout, headers)?;
        Ok(OpaEngine { name: self.name, data_url: format!("{base}/v1/data"), decision, transport })
    }
}

/// `kest.send_email` / `kest/send_email` → `kest/send_email`, or why the
/// name is not a policy path.
fn policy_path(policy: &str) -> Result<String, String> {
    let valid_chars =
        policy.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if !valid_chars || policy.split(['.', '/']).any(str::is_empty) {
        return Err(format!(
            "`{policy}` is not an OPA policy path (segments of ASCII letters, digits, `_` and `-`, separated \
             by `.` or `/`)"
        ));
    }
    Ok(policy.replace('.', "/"))
}

/// ` (code: message)` from OPA's error body, when it has one.
fn error_body(body: &[u8]) -> String {
    let Ok(Value::Object(error)) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let code = error.get("code").and_then(Value::as_str).unwrap_or("");
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    if code.is_empty() && message.is_empty() {
        return String::new();
    }
    let mut text = format!(": {code}: {message}");
    if text.len() > 500 {
        let mut end = 500;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The base URL without a trailing slash, checked.
pub(crate) fn base_url(base: &str) -> Result<String, PolicyError> {
    let parsed =
        Url::parse(base).map_err(|e| PolicyError::Config(format!("remote engine URL `{base}`: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(PolicyError::Config(format!(
            "remote engine URL `{base}` must be http:// or https:// with a host"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(PolicyError::Config(format!(
            "remote engine URL `{base}` must not have a query or fragment"
        )));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// A header value that is never printed.
pub(crate) fn sensitive(value: &str) -> Result<HeaderValue, PolicyError> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| PolicyError::Config("the authentication token is not a valid header value".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// One HTTP answer: status and body.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The HTTP status code.
    pub(crate) status: u16,
    /// The body (at most [`MAX_RESPONSE_BYTES`]).
    pub(crate) body: Vec<u8>,
}

/// Sends JSON POSTs for the remote engines, from async code (the caller's
/// runtime) or from sync code (a dedicated thread with its own runtime).
/// Shared with [`super::cedar_agent`].
pub(crate) struct Transport {
    pub(crate) timeout: Duration,
    headers: HeaderMap,
    /// For the caller's runtime.
    client: Client,
    /// The dedicated thread's queue, started on first use; `None` when it
    /// could not be started.
    worker: OnceLock<Option<UnboundedSender<Job>>>,
}

/// One request for the dedicated thread, and where its answer goes.
struct Job {
    url: Url,
    body: Vec<u8>,
    reply: Box<dyn FnOnce(Result<Reply, String>) + Send>,
}

/// Extra time the synchronous path waits for the dedicated thread beyond
/// the request timeout (which the thread enforces itself).
const GRACE: Duration = Duration::from_millis(500);

impl Transport {
    /// A transport sending `headers` with every request.
    pub(crate) fn new(timeout: Duration, headers: HeaderMap) -> Result<Transport, PolicyError> {
        if timeout.is_zero() {
            return Err(PolicyError::Config("a remote engine's timeout must not be zero".into()));
        }
        let client = client(timeout, &headers)
            .map_err(|e| PolicyError::Config(format!("cannot build the HTTP client: {}", chain(&e))))?;
        Ok(Transport { timeout, headers, client, worker: OnceLock::new() })
    }

    /// POSTs `body` (JSON) to `url`; on the caller's Tokio runtime when
    /// there is one, else through the dedicated thread.
    pub(crate) async fn post(&self, url: Url, body: Vec<u8>) -> Result<Reply, String> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return send(&self.client, url, body, self.timeout).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(url, body, Box::new(move |reply| drop(tx.send(reply))))?;
        rx.await.unwrap_or_else(|_| Err("the request was dropped".into()))
    }

    /// POSTs `body` (JSON) to `url` and blocks until the answer, the
    /// timeout or an error. Safe inside and outside a Tokio runtime.
    pub(crate) fn post_blocking(&self, url: Url, body: Vec<u8>) -> Result<Reply, String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(url, body, Box::new(move |reply| drop(tx.send(reply))))?;
        match rx.recv_timeout(self.timeout + GRACE) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) => Err(format!("timed out after {:?}", self.timeout)),
            Err(RecvTimeoutError::Disconnected) => Err("the request was dropped".into()),
        }
    }

    fn submit(
        &self,
        url: Url,
        body: Vec<u8>,
        reply: Box<dyn FnOnce(Result<Reply, String>) + Send>,
    ) -> Result<(), String> {
        let worker = self.worker.get_or_init(|| spawn_worker(self.timeout, self.headers.clone()));
        let Some(worker) = worker else {
            return Err("cannot start the HTTP thread of the synchronous path".into());
        };
        worker
            .send(Job { url, body, reply })
            .map_err(|_| "the HTTP thread of the synchronous path has stopped".into())
    }
}

/// Starts the dedicated thread: a current-thread runtime running every
/// queued request concurrently, until the queue's sender (the transport) is
/// dropped.
fn spawn_worker(timeout: Duration, headers: HeaderMap) -> Option<UnboundedSender<Job>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let spawned = std::thread::Builder::new().name("kest-policy-http".into()).spawn(move || {
        runtime.block_on(async move {
            // Built here: its connections belong to this runtime.
            let client = client(timeout, &headers).map_err(|e| chain(&e));
            while let Some(job) = rx.recv().await {
                match &client {
                    Ok(client) => {
                        let client = client.clone();
                        tokio::spawn(async move {
                            (job.reply)(send(&client, job.url, job.body, timeout).await);
                        });
                    }
                    Err(e) => (job.reply)(Err(format!("cannot build the HTTP client: {e}"))),
                }
            }
        });
    });
    spawned.ok().map(|_| tx)
}

fn client(timeout: Duration, headers: &HeaderMap) -> Result<Client, reqwest::Error> {
    Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .retry(reqwest::retry::never())
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers.clone())
        .build()
}

/// One POST, answer read up to [`MAX_RESPONSE_BYTES`].
async fn send(client: &Client, url: Url, body: Vec<u8>, timeout: Duration) -> Result<Reply, String> {
    let describe = |e: reqwest::Error| {
        if e.is_timeout() { format!("timed out after {timeout:?}") } else { chain(&e) }
    };
    let mut response = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(describe)?;
    let status = response.status().as_u16();
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Reply { status, body: out })
}

/// An error and its sources, `a: b: c` (reqwest's own message alone says
/// little).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn policy_paths() {
        assert_eq!(policy_path("kest.send_email").unwrap(), "kest/send_email");
        assert_eq!(policy_path("kest/send-email").unwrap(), "kest/send-email");
        assert_eq!(policy_path("allow").unwrap(), "allow");
        for bad in ["", ".", "a..b", "a/../b", "../a", "a/", "/a", "a//b", "a b", "a%2F", "a?b", "ä", "a\\b"]
        {
            assert!(policy_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base_urls() {
        assert_eq!(base_url("http://127.0.0.1:8181/").unwrap(), "http://127.0.0.1:8181");
        assert_eq!(base_url("https://opa.example/prefix/").unwrap(), "https://opa.example/prefix");
        for bad in ["127.0.0.1:8181", "ftp://x", "http://x/?a=1", "http://x/#f", "unix:/tmp/s"] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_bodies() {
        assert_eq!(error_body(br#"{"code":"internal_error","message":"boom"}"#), ": internal_error: boom");
        assert_eq!(error_body(b"<html>"), "");
        let long = format!(r#"{{"code":"x","message":"{}"}}"#, "é".repeat(400));
        assert!(error_body(long.as_bytes()).ends_with('…'));
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<OpaEngine>();
    }
}
