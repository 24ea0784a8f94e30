//! Remote Rego policies on an Open Policy Agent server (SPEC §6.2, feature
//! `remote`).
//!
//! Evaluating policy `kest.send_email` (or `kest/send_email`) sends
//!
//! ```text
//! POST {base}/v1/data/kest/send_email?strict-builtin-errors=true
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
//! `strict-builtin-errors=true` makes OPA fail the query when a built-in
//! function errors (an `http.send` that cannot connect, a malformed
//! `io.jwt.decode` input) instead of treating the expression as undefined,
//! which a rule written with `not` would turn into an allow.
//!
//! Everything else is an error, so a denial:
//!
//! - [`PolicyError::Evaluation`]: an answer without `result` (OPA's
//!   *undefined*: no policy at that path, or a rule without a default that
//!   did not match), or OPA's evaluation error (HTTP 500 with
//!   `"code": "internal_error"` and a list of `errors`, e.g. a built-in
//!   error or a conflict between rule outputs);
//! - [`PolicyError::Unavailable`] with a
//!   [`RemoteFailure`](super::transport::RemoteFailure): a connection
//!   error, a timeout ([`DEFAULT_TIMEOUT`], 1 s, unless configured), any
//!   other HTTP status than 200, an answer that is not a JSON object or is
//!   larger than [`MAX_RESPONSE_BYTES`].
//!
//! Error messages are short and fixed: OPA's own messages are logged (a
//! `WARN` event), never put into the error. A request is sent once, over
//! https unless the server is on loopback; see [`super::transport`].
//!
//! Policy names are paths of segments of ASCII letters, digits, `_` and
//! `-`, separated by `.` or `/`; anything else (an empty segment, `..`, a
//! space, a `%`) is refused before any request is sent.
//!
//! Both paths of [`PolicyEngine`] work anywhere: the asynchronous one uses a
//! shared [`reqwest::Client`] on the caller's Tokio runtime, and the
//! synchronous [`evaluate`](PolicyEngine::evaluate) hands the request to a
//! small dedicated thread with its own current-thread runtime, so it
//! neither panics inside a Tokio runtime nor needs one. The asynchronous
//! path needs a Tokio runtime with I/O and time enabled (as
//! `#[tokio::main]` has); polled outside any Tokio runtime it uses the
//! dedicated thread as well.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde_json::Value;

use super::transport::RemoteConfigError;
pub use super::transport::{DEFAULT_TIMEOUT, MAX_RESPONSE_BYTES};
use super::transport::{Reply, Transport, base_url, excerpt, sensitive};
use super::{BoxFuture, Decision, PolicyEngine, PolicyError, PolicyInput};

/// The query string of every Data API request.
const QUERY: &str = "strict-builtin-errors=true";

/// A policy engine on a remote OPA server (see the
/// [module documentation](self)).
///
/// ```no_run
/// use std::time::Duration;
/// use kest::policy::{Decision, PolicyEngine, PolicyInput};
/// use kest::policy::opa::OpaEngine;
///
/// let engine = OpaEngine::builder("https://opa.internal.example:8181")
///     .timeout(Duration::from_millis(500))
///     .build()
///     .unwrap();
/// let input = PolicyInput::new(kest::policy::context::example_context());
/// // POST https://opa.internal.example:8181/v1/data/kest/send_email?strict-builtin-errors=true
/// // {"input": …}
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
            .field("timeout", &self.transport.timeout())
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
    /// `https://opa.example:8181`, or `http://127.0.0.1:8181` on loopback;
    /// a path prefix is kept).
    pub fn builder(base_url: impl Into<String>) -> OpaEngineBuilder {
        OpaEngineBuilder {
            base_url: base_url.into(),
            name: "opa".into(),
            timeout: DEFAULT_TIMEOUT,
            decision_path: None,
            bearer_token: None,
            allow_insecure_http: false,
        }
    }

    /// An engine for an OPA server at `base_url` with the defaults.
    ///
    /// # Errors
    ///
    /// As [`OpaEngineBuilder::build`].
    pub fn new(base_url: impl Into<String>) -> Result<OpaEngine, RemoteConfigError> {
        OpaEngine::builder(base_url).build()
    }

    /// The URL a policy is queried at, or why the name is refused.
    fn url(&self, policy: &str) -> Result<Url, PolicyError> {
        let path = policy_path(policy)
            .map_err(|message| PolicyError::Evaluation { policy: policy.to_owned(), message })?;
        Url::parse(&format!("{}/{path}?{QUERY}", self.data_url)).map_err(|_| PolicyError::Evaluation {
            policy: policy.to_owned(),
            message: "cannot build the OPA URL".into(),
        })
    }

    fn body(input: &PolicyInput) -> Result<Vec<u8>, PolicyError> {
        serde_json::to_vec(&serde_json::json!({ "input": input.json() }))
            .map_err(|e| PolicyError::Config(format!("cannot serialise the OPA input: {e}")))
    }

    /// The decision in one answer of OPA.
    fn decide(&self, policy: &str, reply: Result<Reply, PolicyError>) -> Result<Decision, PolicyError> {
        let reply = reply?;
        if is_evaluation_error(&reply) {
            tracing::warn!(
                engine = %self.name,
                policy,
                status = reply.status,
                body = %excerpt(&reply.body),
                "OPA reported an evaluation error"
            );
            return Err(PolicyError::Evaluation {
                policy: policy.to_owned(),
                message: "OPA reported an evaluation error".into(),
            });
        }
        let answer = self.transport.json_object(policy, &reply)?;
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
        self.decide(policy, self.transport.post_blocking(policy, url, body))
    }

    fn evaluate_async<'a>(
        &'a self,
        policy: &'a str,
        input: &'a PolicyInput,
    ) -> BoxFuture<'a, Result<Decision, PolicyError>> {
        Box::pin(async move {
            let url = self.url(policy)?;
            let body = OpaEngine::body(input)?;
            self.decide(policy, self.transport.post(policy, url, body).await)
        })
    }
}

/// Builds an [`OpaEngine`]; obtained from [`OpaEngine::builder`].
///
/// ```
/// use std::time::Duration;
/// use kest::policy::opa::OpaEngine;
/// use kest::policy::transport::RemoteConfigError;
/// let engine = OpaEngine::builder("https://opa.example:8181")
///     .named("opa-platform")
///     .timeout(Duration::from_millis(250))
///     .decision_path("result.decision.permitted")
///     .bearer_token("s3cret")
///     .build()
///     .unwrap();
/// # use kest::policy::PolicyEngine;
/// assert_eq!(engine.name(), "opa-platform");
/// assert!(OpaEngine::builder("ftp://example").build().is_err());
/// // Plain http only on loopback, or when explicitly allowed.
/// assert!(OpaEngine::builder("http://127.0.0.1:8181").build().is_ok());
/// assert!(matches!(
///     OpaEngine::builder("http://opa.example:8181").build(),
///     Err(RemoteConfigError::InsecureHttp { .. })
/// ));
/// assert!(OpaEngine::builder("http://opa.example:8181").danger_allow_insecure_http(true).build().is_ok());
/// assert!(OpaEngine::builder("http://127.0.0.1:8181").decision_path("allow").build().is_err());
/// ```
#[derive(Clone)]
pub struct OpaEngineBuilder {
    base_url: String,
    name: String,
    timeout: Duration,
    decision_path: Option<String>,
    bearer_token: Option<String>,
    allow_insecure_http: bool,
}

impl fmt::Debug for OpaEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpaEngineBuilder")
            .field("base_url", &self.base_url)
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("decision_path", &self.decision_path)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<redacted>"))
            .field("allow_insecure_http", &self.allow_insecure_http)
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

    /// **Dangerous**: accepts a plain `http://` base URL to a host that
    /// is not loopback, so contexts (identities, lineage) and decisions
    /// travel unauthenticated and in clear text, and anyone on the path can
    /// turn a deny into an allow. Logged as a `WARN` event when it takes
    /// effect. Without it (the default), such a URL is a
    /// [`RemoteConfigError::InsecureHttp`]; loopback `http://` and any
    /// `https://` URL need no option.
    pub fn danger_allow_insecure_http(mut self, allow: bool) -> OpaEngineBuilder {
        self.allow_insecure_http = allow;
        self
    }

    /// Checks the configuration and builds the HTTP client (no request is
    /// sent).
    ///
    /// # Errors
    ///
    /// [`RemoteConfigError::InsecureHttp`] for a plain `http://` base URL
    /// to a host that is not loopback (see
    /// [`danger_allow_insecure_http`](Self::danger_allow_insecure_http));
    /// [`RemoteConfigError::InvalidUrl`] for a base URL that is not
    /// `http(s)://` with a host, or has a query, a fragment or credentials;
    /// [`RemoteConfigError::ZeroTimeout`],
    /// [`RemoteConfigError::InvalidDecisionPath`] for a decision path that
    /// does not start with `result` or has an empty segment,
    /// [`RemoteConfigError::InvalidToken`], or
    /// [`RemoteConfigError::Client`] when the HTTP client cannot be built.
    pub fn build(self) -> Result<OpaEngine, RemoteConfigError> {
        let base = base_url(&self.base_url, self.allow_insecure_http)?;
        let decision = match self.decision_path {
            None => DecisionPath::Default,
            Some(path) => {
                let keys: Vec<String> = path.split('.').map(str::to_owned).collect();
                if keys.first().map(String::as_str) != Some("result") || keys.iter().any(String::is_empty) {
                    return Err(RemoteConfigError::InvalidDecisionPath { path });
                }
                DecisionPath::Keys(keys)
            }
        };
        let mut headers = HeaderMap::new();
        if let Some(token) = self.bearer_token {
            headers.insert(AUTHORIZATION, sensitive(&format!("Bearer {token}"))?);
        }
        let transport = Transport::new(&self.name, &base, self.timeout, headers)?;
        Ok(OpaEngine { name: self.name, data_url: format!("{}/v1/data", base.url), decision, transport })
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

/// OPA's answer to a query that failed to evaluate (a built-in error under
/// `strict-builtin-errors`, a conflict between rule outputs, …): HTTP 500
/// with `{"code": "internal_error", "message": …, "errors": [...]}`.
fn is_evaluation_error(reply: &Reply) -> bool {
    if reply.status != 500 {
        return false;
    }
    let Ok(Value::Object(error)) = serde_json::from_slice::<Value>(&reply.body) else {
        return false;
    };
    error.get("code").and_then(Value::as_str) == Some("internal_error")
        && error.get("errors").is_some_and(Value::is_array)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::transport::RemoteFailure;
    use super::super::transport::tests::Warnings;
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
    fn evaluation_errors() {
        let reply = |status, body: &str| Reply { status, body: body.as_bytes().to_vec() };
        let body =
            r#"{"code":"internal_error","message":"error(s) occurred while evaluating query","errors":[]}"#;
        assert!(is_evaluation_error(&reply(500, body)));
        assert!(!is_evaluation_error(&reply(200, body)));
        assert!(!is_evaluation_error(&reply(500, r#"{"code":"internal_error","message":"storage"}"#)));
        assert!(!is_evaluation_error(&reply(500, "<html>")));
    }

    #[test]
    fn queries_set_strict_builtin_errors() {
        let engine = OpaEngine::new("http://127.0.0.1:1/prefix/").unwrap();
        assert_eq!(
            engine.url("kest.send_email").unwrap().as_str(),
            "http://127.0.0.1:1/prefix/v1/data/kest/send_email?strict-builtin-errors=true"
        );
    }

    #[test]
    fn engine_answers_are_logged_not_returned() {
        let engine = OpaEngine::new("http://127.0.0.1:1").unwrap();
        let secret = "eval_builtin_error: http.send: dial tcp 10.1.2.3:443: secret-internal-detail";
        let reply = |status: u16, body: String| Ok(Reply { status, body: body.into_bytes() });
        let cases = [
            (
                500,
                serde_json::json!({"code": "internal_error", "message": "error(s)", "errors": [{"message": secret}]}),
            ),
            (500, serde_json::json!({"code": "internal_error", "message": secret})),
            (400, serde_json::json!({"code": "invalid_parameter", "message": secret})),
        ];
        for (status, body) in cases {
            let (err, logged) = Warnings::during(|| engine.decide("p", reply(status, body.to_string())));
            let err = err.unwrap_err();
            assert!(!format!("{err} {err:?}").contains("secret-internal-detail"), "{err:?}");
            assert!(logged.iter().any(|l| l.contains("secret-internal-detail")), "{logged:?}");
        }
        let (err, _) = Warnings::during(|| engine.decide("p", reply(200, format!("not json {secret}"))));
        assert_eq!(err.unwrap_err(), RemoteFailure::NotJson.into_error("opa"));
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<OpaEngine>();
    }
}
