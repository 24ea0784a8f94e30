//! Remote Cedar policies on a [Cedar Agent](https://github.com/permitio/cedar-agent)
//! server (SPEC §6.2, feature `remote`).
//!
//! Evaluating policy `send_email` sends
//!
//! ```text
//! POST {base}/v1/is_authorized
//! Content-Type: application/json
//!
//! {"principal": "Workload::\"<subject.workload>\"",
//!  "action":    "Action::\"send_email\"",
//!  "resource":  "Resource::\"<object.id, or environment.entry_id>\"",
//!  "context":   <the SPEC §6.1 document without nulls>}
//! ```
//!
//! — the same request as the in-process `CedarEngine` (feature `cedar`) builds
//! (entity ids are written as Cedar string literals, with `"` and `\`
//! escaped). The agent answers `{"decision": "Allow" | "Deny",
//! "diagnostics": {"reason": [...], "errors": [...]}}`; the decision is
//! [`Decision::Allow`] only for `"decision": "Allow"` with no diagnostics
//! error, [`Decision::Deny`] for `"Deny"` with none. Diagnostics errors
//! (Cedar skips a policy that errors, so an erroring `forbid` would not
//! block) are [`PolicyError::Evaluation`]; a connection error, a timeout
//! ([`DEFAULT_TIMEOUT`], 1 s, unless configured), an HTTP status other than
//! 200 or any other answer is [`PolicyError::Unavailable`] with a
//! [`RemoteFailure`]. Error messages are
//! short and fixed: the agent's diagnostics and error bodies are logged (a
//! `WARN` event), never put into the error. A request is sent once (no
//! retry, no redirect), over https unless the agent is on loopback; see
//! [`super::transport`].
//!
//! The context is converted before sending, as for the in-process engine:
//! `null` members and elements are dropped recursively (Cedar has no null);
//! a number that is not a 64-bit integer is an evaluation error. The agent
//! reads the context with Cedar's JSON format, in which an object with a
//! key `__entity`, `__extn` or `__expr` is an escape (an entity reference,
//! an extension value, an expression), not a record: a context with such a
//! key anywhere (e.g. in caller-supplied `object.attributes`) is refused
//! with an evaluation error rather than reinterpreted.
//!
//! # Scope of a decision: write policies per action
//!
//! The agent evaluates **every** policy it holds for each request; the
//! request cannot name policies. This engine keeps SPEC §6.2's rule "only
//! the requested policy is consulted" by scoping with the action: the
//! action is the policy name, so each policy loaded into the agent must
//! constrain its action, `action == Action::"send_email"`. A policy without
//! an action constraint applies to every policy name (an unscoped `forbid`
//! blocks them all, an unscoped `permit` allows them all). A name with no
//! policy for its action is therefore [`Decision::Deny`], not
//! [`PolicyError::UnknownPolicy`]: the agent cannot tell them apart.
//! Policies are loaded into the agent with its own API (`PUT
//! {base}/v1/policies` with `[{"id", "content"}]`, one Cedar policy per
//! entry, replacing the set; `POST {base}/v1/policies` adds one), or its
//! `--policies <file>` flag.
//!
//! Both paths of [`PolicyEngine`] work anywhere, as for
//! [`OpaEngine`](super::opa::OpaEngine): the synchronous path uses a
//! dedicated thread, so it does not panic inside a Tokio runtime.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde_json::{Map, Value};

pub use super::transport::DEFAULT_TIMEOUT;
use super::transport::{RemoteConfigError, RemoteFailure, Reply, Transport, base_url, sensitive};
use super::{BoxFuture, Decision, PolicyEngine, PolicyError, PolicyInput};

/// The entity type of request principals (as the in-process engine).
pub const PRINCIPAL_TYPE: &str = "Workload";
/// The entity type of request actions (the id is the policy name).
pub const ACTION_TYPE: &str = "Action";
/// The entity type of request resources.
pub const RESOURCE_TYPE: &str = "Resource";

/// Keys that Cedar's JSON format reads as escapes, never as record keys.
const ESCAPES: [&str; 3] = ["__entity", "__extn", "__expr"];

/// A policy engine on a remote Cedar Agent (see the
/// [module documentation](self)).
///
/// ```no_run
/// use kest::policy::{Decision, PolicyEngine, PolicyInput};
/// use kest::policy::cedar_agent::CedarAgentEngine;
///
/// // Loaded into the agent beforehand (PUT /v1/policies), scoped by action:
/// //   permit(principal, action == Action::"send_email", resource)
/// //   when { context.subject.trust_score >= 50 };
/// let engine = CedarAgentEngine::builder("https://cedar-agent.internal.example:8180")
///     .authorization("agent-token") // the agent's --authentication, if any
///     .build()
///     .unwrap();
/// let input = PolicyInput::new(kest::policy::context::example_context()); // trust 40
/// assert_eq!(engine.evaluate("send_email", &input).unwrap(), Decision::Deny);
/// ```
pub struct CedarAgentEngine {
    name: String,
    url: Url,
    transport: Transport,
}

impl fmt::Debug for CedarAgentEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CedarAgentEngine")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("timeout", &self.transport.timeout())
            .finish_non_exhaustive()
    }
}

impl CedarAgentEngine {
    /// A builder for a Cedar Agent at `base_url` (e.g.
    /// `https://cedar-agent.example:8180`, or `http://127.0.0.1:8180` on
    /// loopback, the agent's default port; a path prefix is kept).
    pub fn builder(base_url: impl Into<String>) -> CedarAgentEngineBuilder {
        CedarAgentEngineBuilder {
            base_url: base_url.into(),
            name: "cedar-agent".into(),
            timeout: DEFAULT_TIMEOUT,
            authorization: None,
            allow_insecure_http: false,
        }
    }

    /// An engine for a Cedar Agent at `base_url` with the defaults.
    ///
    /// # Errors
    ///
    /// As [`CedarAgentEngineBuilder::build`].
    pub fn new(base_url: impl Into<String>) -> Result<CedarAgentEngine, RemoteConfigError> {
        CedarAgentEngine::builder(base_url).build()
    }

    /// The JSON body of the `is_authorized` request.
    fn body(policy: &str, input: &PolicyInput) -> Result<Vec<u8>, PolicyError> {
        let evaluation = |message: String| PolicyError::Evaluation { policy: policy.to_owned(), message };
        if policy.is_empty() {
            return Err(evaluation("the policy name is empty".into()));
        }
        let ctx = input.context();
        let mut path = String::new();
        let context = without_nulls(input.json(), &mut path)
            .map_err(evaluation)?
            .unwrap_or_else(|| Value::Object(Map::new()));
        let resource = ctx.object.id.as_deref().unwrap_or(&ctx.environment.entry_id);
        let request = serde_json::json!({
            "principal": entity(PRINCIPAL_TYPE, &ctx.subject.workload),
            "action": entity(ACTION_TYPE, policy),
            "resource": entity(RESOURCE_TYPE, resource),
            "context": context,
        });
        serde_json::to_vec(&request).map_err(|e| evaluation(format!("cannot serialise the request: {e}")))
    }

    /// The decision in one answer of the agent.
    fn decide(&self, policy: &str, reply: Result<Reply, PolicyError>) -> Result<Decision, PolicyError> {
        let reply = reply?;
        let answer = self.transport.json_object(policy, &reply)?;
        let errors: Vec<String> = match answer.get("diagnostics").and_then(|d| d.get("errors")) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(errors)) => {
                errors.iter().map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned)).collect()
            }
            Some(other) => vec![other.to_string()],
        };
        if !errors.is_empty() {
            tracing::warn!(
                engine = %self.name,
                policy,
                errors = %errors.join("; "),
                "the Cedar Agent reported evaluation errors"
            );
            return Err(PolicyError::Evaluation {
                policy: policy.to_owned(),
                message: "the Cedar Agent reported evaluation errors".into(),
            });
        }
        match answer.get("decision").and_then(Value::as_str) {
            Some("Allow") => Ok(Decision::Allow),
            Some("Deny") => Ok(Decision::Deny),
            _ => Err(self.transport.bad_answer(
                policy,
                RemoteFailure::UnexpectedAnswer,
                &reply,
                "no decision `Allow` or `Deny`",
            )),
        }
    }
}

impl PolicyEngine for CedarAgentEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn evaluate(&self, policy: &str, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let body = CedarAgentEngine::body(policy, input)?;
        self.decide(policy, self.transport.post_blocking(policy, self.url.clone(), body))
    }

    fn evaluate_async<'a>(
        &'a self,
        policy: &'a str,
        input: &'a PolicyInput,
    ) -> BoxFuture<'a, Result<Decision, PolicyError>> {
        Box::pin(async move {
            let body = CedarAgentEngine::body(policy, input)?;
            self.decide(policy, self.transport.post(policy, self.url.clone(), body).await)
        })
    }
}

/// Builds a [`CedarAgentEngine`]; obtained from [`CedarAgentEngine::builder`].
///
/// ```
/// use std::time::Duration;
/// use kest::policy::cedar_agent::CedarAgentEngine;
/// use kest::policy::transport::RemoteConfigError;
/// let engine = CedarAgentEngine::builder("https://cedar-agent.example:8180")
///     .named("cedar-platform")
///     .timeout(Duration::from_millis(300))
///     .build()
///     .unwrap();
/// # use kest::policy::PolicyEngine;
/// assert_eq!(engine.name(), "cedar-platform");
/// assert!(CedarAgentEngine::builder("127.0.0.1:8180").build().is_err());
/// // Plain http only on loopback, or when explicitly allowed.
/// assert!(CedarAgentEngine::builder("http://localhost:8180").build().is_ok());
/// assert!(matches!(
///     CedarAgentEngine::builder("http://cedar-agent.example:8180").build(),
///     Err(RemoteConfigError::InsecureHttp { .. })
/// ));
/// ```
#[derive(Clone)]
pub struct CedarAgentEngineBuilder {
    base_url: String,
    name: String,
    timeout: Duration,
    authorization: Option<String>,
    allow_insecure_http: bool,
}

impl fmt::Debug for CedarAgentEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CedarAgentEngineBuilder")
            .field("base_url", &self.base_url)
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("authorization", &self.authorization.as_ref().map(|_| "<redacted>"))
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}

impl CedarAgentEngineBuilder {
    /// The engine name (part of decision-cache keys; default
    /// `cedar-agent`). Give two engines on different agents different
    /// names.
    pub fn named(mut self, name: impl Into<String>) -> CedarAgentEngineBuilder {
        self.name = name.into();
        self
    }

    /// The time limit of one request, from connecting to reading the whole
    /// answer (default [`DEFAULT_TIMEOUT`], 1 s). Must not be zero.
    pub fn timeout(mut self, timeout: Duration) -> CedarAgentEngineBuilder {
        self.timeout = timeout;
        self
    }

    /// The token of an agent started with `--authentication <token>` (or
    /// `CEDAR_AGENT_AUTHENTICATION`): sent as the whole `Authorization`
    /// header value, which the agent compares with its token as is (no
    /// `Bearer` prefix).
    pub fn authorization(mut self, token: impl Into<String>) -> CedarAgentEngineBuilder {
        self.authorization = Some(token.into());
        self
    }

    /// **Dangerous**: accepts a plain `http://` base URL to a host that
    /// is not loopback, so contexts (identities, lineage), decisions and the
    /// agent's token travel unauthenticated and in clear text. Logged as a
    /// `WARN` event when it takes effect. Without it (the default), such a
    /// URL is a [`RemoteConfigError::InsecureHttp`]; loopback `http://` and
    /// any `https://` URL need no option.
    pub fn danger_allow_insecure_http(mut self, allow: bool) -> CedarAgentEngineBuilder {
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
    /// [`RemoteConfigError::InvalidToken`], or
    /// [`RemoteConfigError::Client`] when the HTTP client cannot be built.
    pub fn build(self) -> Result<CedarAgentEngine, RemoteConfigError> {
        let base = base_url(&self.base_url, self.allow_insecure_http)?;
        let url = Url::parse(&format!("{}/v1/is_authorized", base.url)).map_err(|_| {
            RemoteConfigError::InvalidUrl { url: base.url.clone(), reason: "cannot be extended with a path" }
        })?;
        let mut headers = HeaderMap::new();
        if let Some(token) = self.authorization {
            headers.insert(AUTHORIZATION, sensitive(&token)?);
        }
        let transport = Transport::new(&self.name, &base, self.timeout, headers)?;
        Ok(CedarAgentEngine { name: self.name, url, transport })
    }
}

/// `Type::"id"` with the id as a Cedar string literal.
fn entity(entity_type: &str, id: &str) -> String {
    let mut out = String::with_capacity(entity_type.len() + id.len() + 4);
    out.push_str(entity_type);
    out.push_str("::\"");
    for c in id.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The context in Cedar's JSON format: `null` members and elements dropped
/// recursively; non-integer numbers and escape keys refused. `None` for
/// `null` itself. `path` names the value in error messages.
fn without_nulls(value: &Value, path: &mut String) -> Result<Option<Value>, String> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Number(n) if n.as_i64().is_none() => {
            return Err(format!(
                "context value `{path}` = {n} is not representable in Cedar (64-bit integers only)"
            ));
        }
        Value::Bool(_) | Value::Number(_) | Value::String(_) => value.clone(),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.extend(without_nulls(item, path)?);
            }
            Value::Array(out)
        }
        Value::Object(members) => {
            let mut out = Map::new();
            for (key, value) in members {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                if ESCAPES.contains(&key.as_str()) {
                    return Err(format!(
                        "context key `{path}` would be read by the Cedar Agent as an escape, not a record key"
                    ));
                }
                let converted = without_nulls(value, path)?;
                path.truncate(len);
                if let Some(converted) = converted {
                    out.insert(key.clone(), converted);
                }
            }
            Value::Object(out)
        }
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::transport::tests::Warnings;
    use super::*;

    #[test]
    fn entities_are_cedar_literals() {
        assert_eq!(entity("Workload", "spiffe://demo/agent"), r#"Workload::"spiffe://demo/agent""#);
        assert_eq!(entity("Action", "a\"b\\c\nd\u{1}"), r#"Action::"a\"b\\c\nd\u{1}""#);
    }

    #[test]
    fn context_conversion() {
        let json = serde_json::json!({"a": null, "b": {"c": null, "d": [1, null, {"e": null}]}, "f": "x"});
        let out = without_nulls(&json, &mut String::new()).unwrap().unwrap();
        assert_eq!(out, serde_json::json!({"b": {"d": [1, {}]}, "f": "x"}));
        let err =
            without_nulls(&serde_json::json!({"object": {"attributes": {"price": 1.5}}}), &mut String::new())
                .unwrap_err();
        assert!(err.contains("`object.attributes.price`"), "{err}");
        let err = without_nulls(&serde_json::json!({"n": u64::MAX}), &mut String::new()).unwrap_err();
        assert!(err.contains("`n`"), "{err}");
        for escape in ESCAPES {
            let json = serde_json::json!({"object": {"attributes": {"owner": {escape: "x"}}}});
            let err = without_nulls(&json, &mut String::new()).unwrap_err();
            assert!(err.contains(&format!("`object.attributes.owner.{escape}`")), "{err}");
        }
    }

    #[test]
    fn agent_answers_are_logged_not_returned() {
        let engine = CedarAgentEngine::new("http://127.0.0.1:1").unwrap();
        let secret = "while evaluating policy `internal-policy-7`: secret-internal-detail";
        let reply = |status: u16, body: String| Ok(Reply { status, body: body.into_bytes() });
        let answers = [
            (
                200,
                serde_json::json!({"decision": "Allow", "diagnostics": {"reason": [], "errors": [secret]}}),
            ),
            (400, serde_json::json!({"reason": secret, "description": secret, "code": 400})),
            (200, serde_json::json!({"decision": secret})),
        ];
        for (status, body) in answers {
            let (err, logged) = Warnings::during(|| engine.decide("p", reply(status, body.to_string())));
            let err = err.unwrap_err();
            assert!(!format!("{err} {err:?}").contains("secret-internal-detail"), "{err:?}");
            assert!(logged.iter().any(|l| l.contains("secret-internal-detail")), "{logged:?}");
        }
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CedarAgentEngine>();
    }
}
