//! Per-call values of a hooked call: identity baggage and resource, the
//! input hash, metadata, and the per-call overrides.

use std::sync::Arc;

use kest_core::TrustEvaluator;
use serde::Serialize;
use serde_json::{Map, Value};

use super::hash_json;
use crate::error::KestError;
use crate::identity::IdentityProvider;
use crate::policy::PolicyEngine;
use crate::runtime::Kest;

/// Per-call values: identity baggage and resource (each overriding the
/// flow's), the input hash, and per-call runtime / engine / identity /
/// evaluator overrides.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub(super) user: Option<String>,
    pub(super) agent: Option<String>,
    pub(super) task: Option<String>,
    pub(super) resource_id: Option<String>,
    pub(super) resource_attr: Option<Map<String, Value>>,
    pub(super) input_hash: Option<String>,
    pub(super) metadata: Option<Value>,
    pub(super) runtime: Option<Arc<Kest>>,
    pub(super) engine: Option<Arc<dyn PolicyEngine>>,
    pub(super) identity: Option<Arc<dyn IdentityProvider>>,
    pub(super) evaluator: Option<Arc<dyn TrustEvaluator>>,
    pub(super) subject_attributes: Map<String, Value>,
    pub(super) attributes: Map<String, Value>,
    pub(super) persisted: Vec<String>,
}

impl CallContext {
    /// No overrides.
    pub fn new() -> CallContext {
        CallContext::default()
    }
    /// The end user (else the flow's `kest.user`).
    pub fn user(self, user: impl Into<String>) -> Self {
        self.set_user(Some(user.into()))
    }
    /// The agent (else the flow's `kest.agent`).
    pub fn agent(self, agent: impl Into<String>) -> Self {
        self.set_agent(Some(agent.into()))
    }
    /// The task (else the flow's `kest.task`).
    pub fn task(self, task: impl Into<String>) -> Self {
        self.set_task(Some(task.into()))
    }
    /// The resource acted on.
    pub fn resource_id(self, id: impl Into<String>) -> Self {
        self.set_resource_id(Some(id.into()))
    }
    /// Resource attributes (policy `object.attributes`, label `kest.resource_attr`).
    pub fn resource_attr(mut self, attributes: Map<String, Value>) -> Self {
        self.resource_attr = Some(attributes);
        self
    }
    /// Sets or clears the end user (macro resolvers).
    pub fn set_user(mut self, user: Option<String>) -> Self {
        self.user = user;
        self
    }
    /// Sets or clears the agent (macro resolvers).
    pub fn set_agent(mut self, agent: Option<String>) -> Self {
        self.agent = agent;
        self
    }
    /// Sets or clears the task (macro resolvers).
    pub fn set_task(mut self, task: Option<String>) -> Self {
        self.task = task;
        self
    }
    /// Sets or clears the resource id (macro resolvers).
    pub fn set_resource_id(mut self, id: Option<String>) -> Self {
        self.resource_id = id;
        self
    }
    /// Hashes `inputs` (RFC 8785, SHA-256) into the entry's `input_hash`.
    pub fn inputs<T: Serialize>(mut self, inputs: &T) -> Result<Self, KestError> {
        self.input_hash = Some(hash_json(inputs, "inputs")?);
        Ok(self)
    }
    /// Caller metadata for the entry.
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }
    /// Uses this runtime for this call's identity, engine, trust rules and
    /// decision cache. The enterprise, platform and application tiers and
    /// the deviations still come from the process configuration
    /// ([`crate::configure`]) when one is installed: this runtime's own
    /// tier policies are evaluated *in addition*, its deviations are
    /// ignored (SPEC §5, no self-exemption).
    pub fn runtime(mut self, runtime: &Arc<Kest>) -> Self {
        self.runtime = Some(Arc::clone(runtime));
        self
    }
    /// Uses this engine for this call's function-tier policies only (the
    /// upper tiers are always evaluated by the configured engine).
    pub fn engine(mut self, engine: Arc<dyn PolicyEngine>) -> Self {
        self.engine = Some(engine);
        self
    }
    /// Signs this call's entry with this identity.
    pub fn identity(mut self, identity: Arc<dyn IdentityProvider>) -> Self {
        self.identity = Some(identity);
        self
    }
    /// Subject attributes for policy (`subject.attributes`: clearance,
    /// categories, roles, limits, …), merged over earlier ones.
    pub fn subject_attributes(mut self, attributes: Map<String, Value>) -> Self {
        self.subject_attributes.extend(attributes);
        self
    }
    /// A value from the call for policy (`attributes.<name>`, and
    /// `input.<name>` when the name is not a contract key — the reference's
    /// `context_map`).
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }
    /// [`CallContext::attribute`], also written into the entry's labels
    /// (strings as they are, other values as JSON). Names that are labels
    /// of Kest itself (`principal`, `trace_id`, `kest.*`) are refused when
    /// the call is prepared.
    pub fn persisted_attribute(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        self.attributes.insert(name.clone(), value.into());
        self.persisted.push(name);
        self
    }
    /// Uses this trust evaluator for this call.
    pub fn trust_evaluator(mut self, evaluator: Arc<dyn TrustEvaluator>) -> Self {
        self.evaluator = Some(evaluator);
        self
    }
}
