//! Policy engines. Every engine evaluates in Rust; Python only builds it.

use std::collections::HashMap;
use std::sync::Arc;

use kest::policy::cedar::CedarEngine as RsCedarEngine;
use kest::policy::cedar_agent::CedarAgentEngine as RsCedarAgentEngine;
use kest::policy::opa::OpaEngine as RsOpaEngine;
use kest::policy::rego::RegoEngine as RsRegoEngine;
use kest::policy::{Decision, PolicyEngine, PolicyError, PolicyInput};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::to_json;
use crate::errors;

/// A policy engine (base class of the engines below).
#[pyclass(subclass, frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct Engine {
    pub(crate) inner: Arc<dyn PolicyEngine>,
}

#[pymethods]
impl Engine {
    /// The engine's name (part of decision-cache keys).
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn __repr__(&self) -> String {
        format!("<policy engine `{}`>", self.inner.name())
    }
}

/// The engine behind [`MockEngine`]: a fixed answer per policy name, a
/// default for the others (none: unknown policies are errors, so deny).
/// Unlike `kest::policy::MockPolicyEngine` it does not record calls, so it
/// can stand in for an engine in throughput measurements.
#[derive(Debug)]
struct FixedEngine {
    default: Option<Decision>,
    answers: HashMap<String, Decision>,
}

impl PolicyEngine for FixedEngine {
    fn name(&self) -> &str {
        "mock"
    }
    fn evaluate(&self, policy: &str, _input: &PolicyInput) -> Result<Decision, PolicyError> {
        self.answers
            .get(policy)
            .copied()
            .or(self.default)
            .ok_or_else(|| PolicyError::UnknownPolicy(policy.to_owned()))
    }
}

/// A test engine: allows (or denies) every policy, with per-policy
/// exceptions. `allow_all=None` knows only the listed policies.
#[pyclass(extends = Engine, frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct MockEngine;

#[pymethods]
impl MockEngine {
    #[new]
    #[pyo3(signature = (allow_all = Some(true), *, allow = Vec::new(), deny = Vec::new()))]
    fn new(allow_all: Option<bool>, allow: Vec<String>, deny: Vec<String>) -> (Self, Engine) {
        let mut answers = HashMap::new();
        for name in allow {
            answers.insert(name, Decision::Allow);
        }
        for name in deny {
            answers.insert(name, Decision::Deny);
        }
        let engine = FixedEngine { default: allow_all.map(Decision::from_bool), answers };
        (MockEngine, Engine { inner: Arc::new(engine) })
    }
}

/// In-process Rego (regorus): `policies` maps a policy name to a Rego
/// module; a policy allows when its rule (default `allow`) is `true`.
#[pyclass(extends = Engine, frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct RegoEngine;

#[pymethods]
impl RegoEngine {
    /// `policies`: name → Rego module text; `directory`: load every
    /// `*.rego` under it; `query_rule`: the deciding rule for every policy
    /// (the reference's name); `rules`: per-policy rules; `data`: the
    /// `data` document; `rego_v0`: accept Rego v0 syntax (the reference's
    /// examples use it).
    #[new]
    #[pyo3(signature = (policies = None, *, directory = None, query_rule = None, rules = None, data = None, rego_v0 = false, name = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        policies: Option<HashMap<String, String>>,
        directory: Option<std::path::PathBuf>,
        query_rule: Option<String>,
        rules: Option<HashMap<String, String>>,
        data: Option<&Bound<'_, PyAny>>,
        rego_v0: bool,
        name: Option<String>,
    ) -> PyResult<(Self, Engine)> {
        let data = data.map(to_json).transpose()?;
        let policies = policies.unwrap_or_default();
        let engine = py
            .detach(move || {
                let mut b = RsRegoEngine::builder().rego_v0(rego_v0);
                for (n, text) in &policies {
                    b = b.policy(n.clone(), text.clone());
                    if let Some(rule) = &query_rule {
                        b = b.rule(n.clone(), rule.clone());
                    }
                }
                for (n, rule) in rules.unwrap_or_default() {
                    b = b.rule(n, rule);
                }
                if let Some(dir) = directory {
                    b = b.directory(dir);
                }
                if let Some(d) = data {
                    b = b.data(d);
                }
                if let Some(n) = name {
                    b = b.named(n);
                }
                b.build()
            })
            .map_err(|e| errors::config(e.to_string()))?;
        Ok((RegoEngine, Engine { inner: Arc::new(engine) }))
    }
}

/// In-process Cedar: `policies` maps a policy name to a Cedar policy set.
#[pyclass(extends = Engine, frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct CedarEngine;

#[pymethods]
impl CedarEngine {
    /// `policies`: name → Cedar text; `entities`: the Cedar entities (the
    /// reference's list of entity dicts); `schema`: a JSON schema;
    /// `directory`: load `*.cedar` files.
    #[new]
    #[pyo3(signature = (policies = None, entities = None, *, schema = None, directory = None, name = None))]
    fn new(
        py: Python<'_>,
        policies: Option<HashMap<String, String>>,
        entities: Option<&Bound<'_, PyAny>>,
        schema: Option<&Bound<'_, PyAny>>,
        directory: Option<std::path::PathBuf>,
        name: Option<String>,
    ) -> PyResult<(Self, Engine)> {
        let entities = entities.map(to_json).transpose()?;
        let schema = schema.map(to_json).transpose()?;
        let policies = policies.unwrap_or_default();
        let engine = py
            .detach(move || {
                let mut b = RsCedarEngine::builder();
                for (n, text) in policies {
                    b = b.policy(n, text);
                }
                if let Some(dir) = directory {
                    b = b.directory(dir);
                }
                if let Some(e) = entities {
                    b = b.entities_json(e);
                }
                if let Some(s) = schema {
                    b = b.schema_json(s);
                }
                if let Some(n) = name {
                    b = b.named(n);
                }
                b.build()
            })
            .map_err(|e| errors::config(e.to_string()))?;
        Ok((CedarEngine, Engine { inner: Arc::new(engine) }))
    }
}

/// Routes policies to engines by name prefix (`{"cedar/": cedar, "": rego}`).
#[pyclass(extends = Engine, frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct RoutedEngine;

#[pymethods]
impl RoutedEngine {
    #[new]
    fn new(routes: &Bound<'_, PyDict>) -> PyResult<(Self, Engine)> {
        let mut routed = kest::policy::RoutedEngine::new();
        for (prefix, engine) in routes.iter() {
            let prefix: String = prefix.extract()?;
            let engine = engine.cast::<Engine>()?;
            routed = routed.route(prefix, Arc::clone(&engine.get().inner));
        }
        Ok((RoutedEngine, Engine { inner: Arc::new(routed) }))
    }
}

/// Seconds (a Python float) as a timeout.
fn timeout_of(seconds: Option<f64>) -> PyResult<Option<std::time::Duration>> {
    seconds
        .map(|s| {
            std::time::Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| errors::config("timeout must be a positive number of seconds"))
        })
        .transpose()
}

/// Rego policies on a remote Open Policy Agent server (its Data API:
/// `POST {url}/v1/data/<policy path>?strict-builtin-errors=true` with
/// `{"input": <context>}`). Allows only when the answer's `result` (or
/// `result.allow`, or the value at `decision_path`) is exactly `true`; an
/// undefined decision, an evaluation error, an unreachable server, a
/// timeout (default 1 s) or any other answer is an error, so the protected
/// function does not run. Plain `http` only to loopback unless
/// `danger_allow_insecure_http=True`.
#[pyclass(extends = Engine, frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct OpaEngine;

#[pymethods]
impl OpaEngine {
    #[new]
    #[pyo3(signature = (url, *, timeout = None, decision_path = None, bearer_token = None, name = None, danger_allow_insecure_http = false))]
    fn new(
        url: String,
        timeout: Option<f64>,
        decision_path: Option<String>,
        bearer_token: Option<String>,
        name: Option<String>,
        danger_allow_insecure_http: bool,
    ) -> PyResult<(Self, Engine)> {
        let mut b = RsOpaEngine::builder(url).danger_allow_insecure_http(danger_allow_insecure_http);
        if let Some(t) = timeout_of(timeout)? {
            b = b.timeout(t);
        }
        if let Some(p) = decision_path {
            b = b.decision_path(p);
        }
        if let Some(t) = bearer_token {
            b = b.bearer_token(t);
        }
        if let Some(n) = name {
            b = b.named(n);
        }
        let engine = b.build().map_err(|e| errors::config(e.to_string()))?;
        Ok((OpaEngine, Engine { inner: Arc::new(engine) }))
    }
}

/// Cedar policies on a remote Cedar Agent (`POST {url}/v1/is_authorized`;
/// the action is the policy name, so each policy loaded into the agent
/// must constrain its action). Allows only on `"decision": "Allow"`
/// without diagnostics errors; a diagnostics error, an unreachable agent,
/// a timeout (default 1 s), a refused token or any other answer is an
/// error, so the protected function does not run. `authorization` is the
/// agent's `--authentication` token. Plain `http` only to loopback unless
/// `danger_allow_insecure_http=True`.
#[pyclass(extends = Engine, frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct CedarAgentEngine;

#[pymethods]
impl CedarAgentEngine {
    #[new]
    #[pyo3(signature = (url, *, timeout = None, authorization = None, name = None, danger_allow_insecure_http = false))]
    fn new(
        url: String,
        timeout: Option<f64>,
        authorization: Option<String>,
        name: Option<String>,
        danger_allow_insecure_http: bool,
    ) -> PyResult<(Self, Engine)> {
        let mut b = RsCedarAgentEngine::builder(url).danger_allow_insecure_http(danger_allow_insecure_http);
        if let Some(t) = timeout_of(timeout)? {
            b = b.timeout(t);
        }
        if let Some(t) = authorization {
            b = b.authorization(t);
        }
        if let Some(n) = name {
            b = b.named(n);
        }
        let engine = b.build().map_err(|e| errors::config(e.to_string()))?;
        Ok((CedarAgentEngine, Engine { inner: Arc::new(engine) }))
    }
}
