//! Policy engines. Every engine evaluates in Rust; Python only builds it.

use std::collections::HashMap;
use std::sync::Arc;

use kest::policy::cedar::CedarEngine as RsCedarEngine;
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
