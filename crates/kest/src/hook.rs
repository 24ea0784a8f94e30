//! The verification hook (SPEC §5): policy before execution, a signed entry
//! after it, lineage carried to what follows.
//!
//! [`Verified`] is the wrapper API; `#[kest::verified(...)]` expands to it.
//!
//! ```
//! use std::sync::Arc;
//! use kest::hook::{CallContext, Verified};
//! use kest::identity::StaticIdentity;
//! use kest::lineage::Lineage;
//! use kest::policy::MockPolicyEngine;
//! use kest::Kest;
//!
//! let kest = Arc::new(
//!     Kest::builder()
//!         .identity(Arc::new(StaticIdentity::from_seed("spiffe://demo/agent", [1; 32])))
//!         .engine(Arc::new(MockPolicyEngine::allow_all()))
//!         .build()
//!         .unwrap(),
//! );
//! let ingest = Verified::builder("ingest").policy("allow").source_type("user_input").build().unwrap();
//! let flow = Lineage::new();
//! let answer = flow.enter(|| {
//!     ingest.call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(42))
//! });
//! assert_eq!(answer.unwrap(), 42);
//! let passport = flow.passport();
//! assert_eq!(passport.len(), 1);
//! assert_eq!(passport.entries()[0].payload().trust_score, 40);
//! ```

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use kest_core::entry::{LABEL_IDENTITY, LABEL_RESOURCE_ATTR, LABEL_TRACE_ID};
use kest_core::{
    Classification, Deviation, Entry, EntryDraft, EntryHash, KestEntry, Parents, TrustEvaluator, TrustRules,
    prepare_entry, sign_entry,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{HookError, KestError};
use crate::identity::IdentityProvider;
use crate::lineage::{FlowIdentity, Lineage};
use crate::policy::cache::{DecisionKey, context_digest};
use crate::policy::{
    Decision, Environment, EvaluationContext, Object, PolicyEngine, PolicyError, PolicyInput, Subject, Tier,
};
use crate::runtime::{ConfigError, Kest, global};
use crate::telemetry::HookSpan;

/// The taint added to the entry of an operation that failed.
pub const FAILED_EXECUTION: &str = "failed_execution";

/// A protected operation: its name, policies and lineage parameters,
/// validated once.
#[derive(Debug, Clone)]
pub struct Verified {
    operation: String,
    policies: Vec<String>,
    source_type: Option<String>,
    added_taints: Vec<String>,
    removed_taints: Vec<String>,
    trust_override: Option<i64>,
    classification: Classification,
    hash_inputs: bool,
    hash_output: bool,
    scope_name: Option<String>,
}

/// Builder for [`Verified`].
#[derive(Debug, Clone)]
pub struct VerifiedBuilder {
    spec: Verified,
}

impl Verified {
    /// Starts a hook for `operation`.
    pub fn builder(operation: impl Into<String>) -> VerifiedBuilder {
        VerifiedBuilder {
            spec: Verified {
                operation: operation.into(),
                policies: Vec::new(),
                source_type: None,
                added_taints: Vec::new(),
                removed_taints: Vec::new(),
                trust_override: None,
                classification: Classification::System,
                hash_inputs: false,
                hash_output: false,
                scope_name: None,
            },
        }
    }

    /// The operation name.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The function-tier policies.
    pub fn policies(&self) -> &[String] {
        &self.policies
    }

    /// Whether the caller should hash the inputs into `input_hash`.
    pub fn hashes_inputs(&self) -> bool {
        self.hash_inputs
    }

    /// Whether the output is hashed into `content_hash`.
    pub fn hashes_output(&self) -> bool {
        self.hash_output
    }

    /// The name a deviation's scope must give to cover this operation: the
    /// qualified name set with [`VerifiedBuilder::scope_name`], or else the
    /// operation name.
    pub fn scope_name(&self) -> &str {
        self.scope_name.as_deref().unwrap_or(&self.operation)
    }
}

impl VerifiedBuilder {
    /// Adds a function-tier policy (at least one is required).
    pub fn policy(mut self, name: impl Into<String>) -> Self {
        self.spec.policies.push(name.into());
        self
    }
    /// Adds several function-tier policies.
    pub fn policies<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.spec.policies.extend(names.into_iter().map(Into::into));
        self
    }
    /// The origin of the data this operation brings in.
    pub fn source_type(mut self, origin: impl Into<String>) -> Self {
        self.spec.source_type = Some(origin.into());
        self
    }
    /// A taint this operation adds.
    pub fn added_taint(mut self, taint: impl Into<String>) -> Self {
        self.spec.added_taints.push(taint.into());
        self
    }
    /// A taint this operation removes (needs a sanitizer or a trust override).
    pub fn removed_taint(mut self, taint: impl Into<String>) -> Self {
        self.spec.removed_taints.push(taint.into());
        self
    }
    /// Sanitizer override of the computed trust score.
    pub fn trust_override(mut self, score: i64) -> Self {
        self.spec.trust_override = Some(score);
        self
    }
    /// The node classification.
    pub fn classification(mut self, classification: Classification) -> Self {
        self.spec.classification = classification;
        self
    }
    /// Hash the operation's inputs into `input_hash` (the caller passes them
    /// through [`CallContext::inputs`]).
    pub fn hash_inputs(mut self, on: bool) -> Self {
        self.spec.hash_inputs = on;
        self
    }
    /// Hash the operation's output into `content_hash` (use
    /// [`Verified::call_hashed`] or the async twin).
    pub fn hash_output(mut self, on: bool) -> Self {
        self.spec.hash_output = on;
        self
    }

    /// Sets the name a deviation's scope must give to cover this operation
    /// (SPEC §5 "No self-exemption"): a qualified `module::path::fn`, so a
    /// function elsewhere with the same bare name is not covered.
    /// `#[kest::verified]` sets `module_path!()::fn`, or the `operation`
    /// given explicitly. Without it the operation name is the scope name.
    pub fn scope_name(mut self, name: impl Into<String>) -> Self {
        self.spec.scope_name = Some(name.into());
        self
    }

    /// Validates: an operation name, at least one policy, no empty names,
    /// taint removal only by a sanitizer or with an override, an override
    /// in 0..=100.
    pub fn build(self) -> Result<Verified, ConfigError> {
        let s = self.spec;
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if s.operation.is_empty() {
            return invalid("operation name must not be empty".into());
        }
        if s.policies.is_empty() {
            return invalid(format!(
                "`{}`: the policy list is empty (an empty list never allows)",
                s.operation
            ));
        }
        if s.policies.iter().any(String::is_empty) {
            return invalid(format!("`{}`: a policy name is empty", s.operation));
        }
        if !s.removed_taints.is_empty()
            && s.trust_override.is_none()
            && s.classification != Classification::Sanitizer
        {
            return invalid(format!(
                "`{}`: removed_taints needs trust_override or classification = sanitizer",
                s.operation
            ));
        }
        if let Some(o) = s.trust_override
            && !(0..=100).contains(&o)
        {
            return invalid(format!("`{}`: trust_override {o} is outside 0..=100", s.operation));
        }
        Ok(s)
    }
}

/// Per-call values: identity baggage and resource (each overriding the
/// flow's), the input hash, and per-call runtime / engine / identity /
/// evaluator overrides.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    user: Option<String>,
    agent: Option<String>,
    task: Option<String>,
    resource_id: Option<String>,
    resource_attr: Option<Map<String, Value>>,
    input_hash: Option<String>,
    metadata: Option<Value>,
    runtime: Option<Arc<Kest>>,
    engine: Option<Arc<dyn PolicyEngine>>,
    identity: Option<Arc<dyn IdentityProvider>>,
    evaluator: Option<Arc<dyn TrustEvaluator>>,
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
    /// Uses this runtime instead of the global one.
    pub fn runtime(mut self, runtime: &Arc<Kest>) -> Self {
        self.runtime = Some(Arc::clone(runtime));
        self
    }
    /// Uses this engine for this call.
    pub fn engine(mut self, engine: Arc<dyn PolicyEngine>) -> Self {
        self.engine = Some(engine);
        self
    }
    /// Signs this call's entry with this identity.
    pub fn identity(mut self, identity: Arc<dyn IdentityProvider>) -> Self {
        self.identity = Some(identity);
        self
    }
    /// Uses this trust evaluator for this call.
    pub fn trust_evaluator(mut self, evaluator: Arc<dyn TrustEvaluator>) -> Self {
        self.evaluator = Some(evaluator);
        self
    }
}

/// Lowercase hex SHA-256 of the RFC 8785 form of `value`.
pub fn hash_json<T: Serialize>(value: &T, what: &'static str) -> Result<String, KestError> {
    let bytes = kest_core::json::canonicalize(value).map_err(|e| KestError::Hash { what, message: e.0 })?;
    use sha2::Digest as _;
    Ok(kest_core::encoding::hex_lower(&sha2::Sha256::digest(&bytes)))
}

/// Everything decided before the operation runs.
struct Pending {
    identity: Arc<dyn IdentityProvider>,
    lineage: Lineage,
    parents: Vec<Arc<Entry>>,
    draft: EntryDraft,
    rules: TrustRules,
    entry: KestEntry,
    span: HookSpan,
}

/// One policy to check.
struct Check {
    tier: Tier,
    policy: String,
    /// `None`: the context could not be keyed, so this call is not cached.
    key: Option<DecisionKey>,
}

/// The evaluation plan of one call.
struct Plan {
    engine: Arc<dyn PolicyEngine>,
    runtime: Arc<Kest>,
    checks: Vec<Check>,
    /// Per tier: the evaluated names, the skipped ones (deviations).
    context: ContextParts,
}

struct ContextParts {
    subject: Subject,
    object: Object,
    is_root: bool,
    source_type: Option<String>,
    tips: Vec<String>,
    operation: String,
    entry_id: String,
    tiers: Vec<(Tier, Vec<String>, Vec<String>)>,
}

#[derive(Serialize)]
struct DigestMaterial<'a> {
    subject: &'a Subject,
    object: &'a Object,
    is_root: bool,
    source_type: &'a Option<String>,
    tips: &'a [String],
    operation: &'a str,
}

impl ContextParts {
    fn for_tier(&self, tier: Tier) -> EvaluationContext {
        let (names, skipped) = self
            .tiers
            .iter()
            .find(|(t, _, _)| *t == tier)
            .map(|(_, n, s)| (n.clone(), s.clone()))
            .unwrap_or_default();
        EvaluationContext {
            subject: self.subject.clone(),
            object: self.object.clone(),
            environment: Environment {
                is_root: self.is_root,
                source_type: self.source_type.clone(),
                parent_hash: self.tips.first().cloned().unwrap_or_else(|| "0".into()),
                policy_names: names,
                policy_tier: tier,
                active_deviations: skipped,
                operation: self.operation.clone(),
                entry_id: self.entry_id.clone(),
            },
            tips: self.tips.clone(),
        }
    }
}

fn default_runtime() -> Result<Arc<Kest>, KestError> {
    static DEFAULT: OnceLock<Result<Arc<Kest>, ConfigError>> = OnceLock::new();
    DEFAULT.get_or_init(|| Kest::builder().build().map(Arc::new)).clone().map_err(KestError::Config)
}

impl Verified {
    /// Steps 1–5 of the lifecycle: resolve, read lineage, compute trust and
    /// taints, and build the evaluation plan.
    fn prepare(&self, call: &CallContext) -> Result<(Pending, Plan), KestError> {
        // 1. identity and engine: per call → runtime → error.
        let runtime = match (&call.runtime, global()) {
            (Some(rt), _) => Arc::clone(rt),
            (None, Some(rt)) => rt,
            (None, None) => default_runtime()?,
        };
        let identity =
            call.identity.clone().or_else(|| runtime.identity.clone()).ok_or(KestError::NoIdentity)?;
        let engine = call.engine.clone().or_else(|| runtime.engine.clone()).ok_or(KestError::NoEngine)?;

        // 2. ambient lineage (a call outside any flow is a root of its own).
        let lineage = Lineage::current().unwrap_or_default();
        let snapshot = lineage.snapshot();

        // 3. user / agent / task / resource.
        let FlowIdentity { user, agent, task, .. } = snapshot.identity;
        let user = call.user.clone().or(user);
        let agent = call.agent.clone().or(agent);
        let task = call.task.clone().or(task);

        // 4. trust and taints from the parents.
        let mut rules = runtime.trust.clone();
        if let Some(e) = &call.evaluator {
            rules.evaluator = Arc::clone(e);
        }
        let draft = self.draft(&snapshot.tips, &user, &agent, &task, call)?;
        let parent_refs: Vec<&Entry> = snapshot.parents.iter().map(|p| p.as_ref()).collect();
        let mut entry = prepare_entry(&parent_refs, &draft, identity.principal(), &rules)?;

        // 5. the plan: every tier in order, deviations skipped.
        let deviations = runtime.active_deviations(&self.operation);
        let mut tiers = Vec::with_capacity(4);
        let mut checks = Vec::new();
        let mut applied: Vec<Deviation> = Vec::new();
        let mut evaluated: [Vec<String>; 4] = Default::default();
        for (slot, tier) in Tier::ALL.into_iter().enumerate() {
            let names: &[String] =
                if tier == Tier::Function { &self.policies } else { runtime.tier_policies(tier) };
            let mut run = Vec::with_capacity(names.len());
            let mut skipped = Vec::new();
            for name in names {
                match deviations
                    .iter()
                    .find(|d| d.policy == *name && d.tier.parse::<Tier>().ok() == Some(tier))
                {
                    Some(d) => {
                        skipped.push(name.clone());
                        applied.push(Deviation {
                            policy: name.clone(),
                            tier: tier.as_str().to_owned(),
                            reason: d.reason.clone(),
                            approver: d.approver.clone(),
                            extra: Map::new(),
                        });
                    }
                    None => run.push(name.clone()),
                }
            }
            evaluated[slot] = run.clone();
            tiers.push((tier, run, skipped));
        }
        entry.policy_context.deviations = applied;
        let [enterprise, platform, application, function] = evaluated;
        entry.policy_context.enterprise_policies = enterprise;
        entry.policy_context.platform_policies = platform;
        entry.policy_context.app_policies = application;
        entry.policy_context.function_policies = function;

        let tips: Vec<String> = snapshot.tips.iter().map(EntryHash::to_string).collect();
        let context = ContextParts {
            subject: Subject {
                workload: identity.principal().to_owned(),
                user,
                agent,
                task,
                trust_score: entry.trust_score,
                taints: entry.taints.clone(),
            },
            object: Object {
                id: call.resource_id.clone(),
                attributes: call.resource_attr.clone().unwrap_or_default(),
            },
            is_root: snapshot.parents.is_empty(),
            source_type: entry.label(kest_core::entry::LABEL_SOURCE_TYPE).map(str::to_owned),
            tips,
            operation: self.operation.clone(),
            entry_id: entry.entry_id.clone(),
            tiers,
        };
        let base = context_digest(&DigestMaterial {
            subject: &context.subject,
            object: &context.object,
            is_root: context.is_root,
            source_type: &context.source_type,
            tips: &context.tips,
            operation: &context.operation,
        });
        for (tier, names, _) in &context.tiers {
            for name in names {
                checks.push(Check {
                    tier: *tier,
                    policy: name.clone(),
                    key: base.map(|b| DecisionKey::new(engine.name(), *tier, name, b)),
                });
            }
        }
        let span = HookSpan::start(&self.operation);
        if let Some(trace_id) = span.trace_id() {
            entry.labels.insert(LABEL_TRACE_ID.into(), Value::String(trace_id));
        }
        let pending = Pending { identity, lineage, parents: snapshot.parents, draft, rules, entry, span };
        Ok((pending, Plan { engine, runtime, checks, context }))
    }

    fn draft(
        &self,
        tips: &[EntryHash],
        user: &Option<String>,
        agent: &Option<String>,
        task: &Option<String>,
        call: &CallContext,
    ) -> Result<EntryDraft, KestError> {
        let mut draft = EntryDraft::new(self.operation.clone());
        draft.classification = self.classification;
        draft.source_type = self.source_type.clone();
        draft.added_taints = self.added_taints.clone();
        draft.removed_taints = self.removed_taints.clone();
        draft.trust_override = self.trust_override;
        draft.parents = if tips.is_empty() { Parents::Root } else { Parents::Explicit(tips.to_vec()) };
        if user.is_some() || agent.is_some() || task.is_some() {
            // A struct, not a `json!` map: the member order (`user`, `agent`,
            // `task`, as SPEC §2.1 writes it) must not depend on whether some
            // crate in the build turned on serde_json's `preserve_order`.
            #[derive(Serialize)]
            struct IdentityLabel<'a> {
                user: &'a Option<String>,
                agent: &'a Option<String>,
                task: &'a Option<String>,
            }
            let label = serde_json::to_string(&IdentityLabel { user, agent, task })
                .map_err(|e| KestError::Hash { what: "identity label", message: e.to_string() })?;
            draft.labels.insert(LABEL_IDENTITY.into(), label);
        }
        if let Some(attr) = &call.resource_attr {
            draft.labels.insert(LABEL_RESOURCE_ATTR.into(), Value::Object(attr.clone()).to_string());
        }
        draft.input_hash = call.input_hash.clone().unwrap_or_default();
        draft.metadata = call.metadata.clone().unwrap_or(Value::Null);
        Ok(draft)
    }

    /// Concludes one check: a cached or fresh decision, or the error that
    /// stops the call.
    fn conclude(
        &self,
        plan: &Plan,
        pending: &Pending,
        check: &Check,
        result: Result<Decision, PolicyError>,
    ) -> Result<(), KestError> {
        match result {
            Ok(Decision::Allow) => {
                if let Some(key) = &check.key {
                    plan.runtime.cache.put(key.clone(), Decision::Allow);
                }
                Ok(())
            }
            Ok(Decision::Deny) => {
                if let Some(key) = &check.key {
                    plan.runtime.cache.put(key.clone(), Decision::Deny);
                }
                tracing::warn!(
                    entry_id = %pending.entry.entry_id,
                    policy = %check.policy,
                    tier = %check.tier,
                    workload = %pending.identity.principal(),
                    operation = %self.operation,
                    "kest: policy denied execution"
                );
                Err(KestError::Denied {
                    policy: check.policy.clone(),
                    tier: check.tier,
                    operation: self.operation.clone(),
                    entry_id: pending.entry.entry_id.clone(),
                    workload: pending.identity.principal().to_owned(),
                })
            }
            Err(source) => {
                tracing::warn!(
                    entry_id = %pending.entry.entry_id,
                    policy = %check.policy,
                    tier = %check.tier,
                    workload = %pending.identity.principal(),
                    error = %source,
                    "kest: policy could not be evaluated; denying"
                );
                Err(KestError::PolicyFailed {
                    policy: check.policy.clone(),
                    tier: check.tier,
                    operation: self.operation.clone(),
                    source,
                })
            }
        }
    }

    fn authorize(&self, call: &CallContext) -> Result<Pending, KestError> {
        let (pending, plan) = self.prepare(call)?;
        for check in &plan.checks {
            let result = match check.key.as_ref().and_then(|k| plan.runtime.cache.get(k)) {
                Some(d) => Ok(d),
                None => {
                    let input = PolicyInput::new(plan.context.for_tier(check.tier));
                    plan.engine.evaluate(&check.policy, &input)
                }
            };
            if let Err(e) = self.conclude(&plan, &pending, check, result) {
                pending.span.end_denied(&e);
                return Err(e);
            }
        }
        Ok(pending)
    }

    async fn authorize_async(&self, call: &CallContext) -> Result<Pending, KestError> {
        let (pending, plan) = self.prepare(call)?;
        for check in &plan.checks {
            let result = match check.key.as_ref().and_then(|k| plan.runtime.cache.get(k)) {
                Some(d) => Ok(d),
                None => {
                    let input = PolicyInput::new(plan.context.for_tier(check.tier));
                    plan.engine.evaluate_async(&check.policy, &input).await
                }
            };
            if let Err(e) = self.conclude(&plan, &pending, check, result) {
                pending.span.end_denied(&e);
                return Err(e);
            }
        }
        Ok(pending)
    }

    /// Steps 7–9: sign, append, emit telemetry.
    fn record(&self, pending: Pending, outcome: Outcome) -> Result<EntryHash, KestError> {
        let Pending { identity, lineage, parents, mut draft, rules, mut entry, span } = pending;
        match outcome {
            Outcome::Success { content_hash } => entry.content_hash = content_hash,
            Outcome::Failed => {
                // Recompute with the failure taint and a zero override so the
                // entry stays consistent for semantic verification.
                draft.added_taints.push(FAILED_EXECUTION.into());
                draft.trust_override = Some(0);
                let parent_refs: Vec<&Entry> = parents.iter().map(|p| p.as_ref()).collect();
                let failed = prepare_entry(&parent_refs, &draft, identity.principal(), &rules)?;
                entry.added_taints = failed.added_taints;
                entry.taints = failed.taints;
                entry.trust_score = failed.trust_score;
                entry.labels.extend(failed.labels);
            }
        }
        let signed = sign_entry(entry, identity.as_ref())?;
        let jws = signed.entry().jws().to_owned();
        let trust = signed.entry().payload().trust_score;
        let entry_id = signed.entry().payload().entry_id.clone();
        let hash = lineage.append(signed)?;
        span.end_recorded(&jws, &hash, &entry_id, identity.principal(), trust, &lineage);
        Ok(hash)
    }

    /// Runs a fallible operation under the hook. A denial or engine error
    /// means `f` never runs. An `Err` or a panic from `f` is recorded as a
    /// `failed_execution` entry, then returned (or resumed) unchanged.
    pub fn call<T, E>(&self, call: CallContext, f: impl FnOnce() -> Result<T, E>) -> Result<T, HookError<E>> {
        self.call_inner(call, f, |_| Ok(String::new()))
    }

    /// [`Verified::call`], also hashing the output into `content_hash` when
    /// the hook was built with `hash_output(true)`.
    pub fn call_hashed<T: Serialize, E>(
        &self,
        call: CallContext,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, HookError<E>> {
        let on = self.hash_output;
        self.call_inner(call, f, move |v| if on { hash_json(v, "output") } else { Ok(String::new()) })
    }

    fn call_inner<T, E>(
        &self,
        call: CallContext,
        f: impl FnOnce() -> Result<T, E>,
        hash: impl FnOnce(&T) -> Result<String, KestError>,
    ) -> Result<T, HookError<E>> {
        let pending = self.authorize(&call).map_err(HookError::Kest)?;
        let lineage = pending.lineage.clone();
        let result = lineage.enter(|| catch_unwind(AssertUnwindSafe(f)));
        self.finish(pending, result, hash)
    }

    fn finish<T, E>(
        &self,
        pending: Pending,
        result: std::thread::Result<Result<T, E>>,
        hash: impl FnOnce(&T) -> Result<String, KestError>,
    ) -> Result<T, HookError<E>> {
        match result {
            Ok(Ok(value)) => {
                let content_hash = match hash(&value) {
                    Ok(h) => h,
                    Err(e) => {
                        pending.span.end_denied(&e);
                        return Err(HookError::Kest(e));
                    }
                };
                self.record(pending, Outcome::Success { content_hash }).map_err(HookError::Kest)?;
                Ok(value)
            }
            Ok(Err(error)) => {
                if let Err(e) = self.record(pending, Outcome::Failed) {
                    tracing::error!(operation = %self.operation, error = %e, "kest: could not record the failed execution");
                }
                Err(HookError::Operation(error))
            }
            Err(panic) => {
                if let Err(e) = self.record(pending, Outcome::Failed) {
                    tracing::error!(operation = %self.operation, error = %e, "kest: could not record the panicked execution");
                }
                resume_unwind(panic)
            }
        }
    }

    /// Async twin of [`Verified::call`]: remote engines are awaited, the
    /// future runs inside the flow, panics are recorded and resumed.
    pub async fn call_async<T, E, F>(&self, call: CallContext, future: F) -> Result<T, HookError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_async_inner(call, future, |_| Ok(String::new())).await
    }

    /// Async twin of [`Verified::call_hashed`].
    pub async fn call_async_hashed<T: Serialize, E, F>(
        &self,
        call: CallContext,
        future: F,
    ) -> Result<T, HookError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let on = self.hash_output;
        self.call_async_inner(
            call,
            future,
            move |v| if on { hash_json(v, "output") } else { Ok(String::new()) },
        )
        .await
    }

    async fn call_async_inner<T, E, F>(
        &self,
        call: CallContext,
        future: F,
        hash: impl FnOnce(&T) -> Result<String, KestError>,
    ) -> Result<T, HookError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let pending = self.authorize_async(&call).await.map_err(HookError::Kest)?;
        let scoped = pending.lineage.scope(CatchUnwind { future: Box::pin(future) });
        let result = scoped.await;
        self.finish(pending, result, hash)
    }
}

enum Outcome {
    Success { content_hash: String },
    Failed,
}

/// Polls a future inside `catch_unwind`.
struct CatchUnwind<F> {
    future: Pin<Box<F>>,
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.future.as_mut();
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
