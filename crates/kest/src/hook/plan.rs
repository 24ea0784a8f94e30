//! Steps 1–5 of the lifecycle (SPEC §5): resolve the runtime, identity and
//! engines, read the ambient lineage, compute trust and taints, and build
//! the evaluation plan — every tier in order, deviations of the *process
//! configuration* only, one decision-cache key per check — then evaluate
//! it.
//!
//! No self-exemption: the enterprise, platform and application tiers and
//! the deviations always come from the process configuration (the global
//! runtime when one is installed); a per-call engine applies to the
//! function tier only, a per-call runtime can add tier policies but never
//! remove any, and a call whose deviations skip every policy is refused.

use std::sync::{Arc, OnceLock};

use crate::policy::context::{Ancestor, LABEL_ACTION, LABEL_RESOURCE, ancestors};

use kest_core::{Deviation, Entry, EntryDraft, EntryHash, KestEntry, Parents, TrustRules, prepare_entry};
use kest_core::{LABEL_IDENTITY, LABEL_RESOURCE_ATTR, LABEL_SOURCE_TYPE, LABEL_TRACE_ID};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{CallContext, Verified};
use crate::error::KestError;
use crate::identity::IdentityProvider;
use crate::lineage::{FlowIdentity, Lineage, Snapshot};
use crate::policy::cache::{DecisionKey, context_digest};
use crate::policy::{
    Decision, DecisionCache, Environment, EvaluationContext, Object, PolicyEngine, PolicyError, PolicyInput,
    Subject, Tier,
};
use crate::runtime::{ConfigError, Kest, global};
use crate::telemetry::HookSpan;

/// The entry label recording an RFC 8693 delegation chain (a JSON array of
/// the actors behind the current one).
pub const LABEL_DELEGATION: &str = "kest.delegation";

/// Everything decided before the operation runs.
pub(super) struct Pending {
    pub(super) identity: Arc<dyn IdentityProvider>,
    pub(super) lineage: Lineage,
    pub(super) parents: Vec<Arc<Entry>>,
    pub(super) draft: EntryDraft,
    pub(super) rules: TrustRules,
    pub(super) entry: KestEntry,
    pub(super) span: HookSpan,
}

/// One policy to check, with the engine that decides it.
struct Check {
    tier: Tier,
    policy: String,
    engine: Arc<dyn PolicyEngine>,
    /// `None`: the context could not be keyed, so this call is not cached.
    key: Option<DecisionKey>,
}

/// The evaluation plan of one call.
pub(super) struct Plan {
    cache: Arc<DecisionCache>,
    checks: Vec<Check>,
    context: ContextParts,
}

/// Per tier: the evaluated policy names and the ones deviations skipped.
#[derive(Serialize)]
struct TierPlan {
    tier: Tier,
    evaluated: Vec<String>,
    skipped: Vec<String>,
}

struct ContextParts {
    subject: Subject,
    object: Object,
    is_root: bool,
    source_type: Option<String>,
    tips: Vec<String>,
    operation: String,
    entry_id: String,
    tiers: Vec<TierPlan>,
    action: String,
    attributes: Map<String, Value>,
    /// The flow and the parents the history is read from, once, on the
    /// first decision not in the cache (the tips already key the cache:
    /// the history behind them cannot differ).
    lineage: Lineage,
    parent_hashes: Vec<EntryHash>,
    ancestors: OnceLock<Arc<Vec<Ancestor>>>,
}

/// What a decision depends on: the whole context except the per-call
/// `entry_id` — including every tier's policy names and active deviations
/// (SPEC §6.2).
#[derive(Serialize)]
struct DigestMaterial<'a> {
    subject: &'a Subject,
    object: &'a Object,
    is_root: bool,
    source_type: &'a Option<String>,
    tips: &'a [String],
    operation: &'a str,
    tiers: &'a [TierPlan],
    action: &'a str,
    attributes: &'a Map<String, Value>,
}

impl ContextParts {
    fn digest(&self) -> Option<[u8; 32]> {
        context_digest(&DigestMaterial {
            subject: &self.subject,
            object: &self.object,
            is_root: self.is_root,
            source_type: &self.source_type,
            tips: &self.tips,
            operation: &self.operation,
            tiers: &self.tiers,
            action: &self.action,
            attributes: &self.attributes,
        })
    }

    fn ancestors(&self) -> Arc<Vec<Ancestor>> {
        Arc::clone(self.ancestors.get_or_init(|| {
            let parents = &self.parent_hashes;
            Arc::new(self.lineage.with_passport(|passport| ancestors(passport, parents)))
        }))
    }

    /// The context one check's policy sees (the history only for a policy
    /// that may read it).
    fn for_check(&self, check: &Check) -> EvaluationContext {
        self.for_tier(check.tier, check.engine.reads_lineage(&check.policy))
    }

    fn for_tier(&self, tier: Tier, with_lineage: bool) -> EvaluationContext {
        let (names, skipped) = self
            .tiers
            .iter()
            .find(|t| t.tier == tier)
            .map(|t| (t.evaluated.clone(), t.skipped.clone()))
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
            action: self.action.clone(),
            attributes: self.attributes.clone(),
            ancestors: with_lineage.then(|| self.ancestors()),
        }
    }
}

fn default_runtime() -> Result<Arc<Kest>, KestError> {
    static DEFAULT: OnceLock<Result<Arc<Kest>, ConfigError>> = OnceLock::new();
    DEFAULT.get_or_init(|| Kest::builder().build().map(Arc::new)).clone().map_err(KestError::Config)
}

/// The process configuration (tiers, deviations) and the runtime of this
/// call (identity, engine, trust rules, cache). They are the same runtime
/// unless a per-call runtime is given while a global one is installed.
struct Runtimes {
    process: Arc<Kest>,
    call: Arc<Kest>,
}

impl Runtimes {
    fn resolve(call: &CallContext) -> Result<Runtimes, KestError> {
        let process = match (global(), &call.runtime) {
            (Some(global), _) => global,
            (None, Some(rt)) => Arc::clone(rt),
            (None, None) => default_runtime()?,
        };
        let call = call.runtime.clone().unwrap_or_else(|| Arc::clone(&process));
        Ok(Runtimes { process, call })
    }

    fn distinct(&self) -> bool {
        !Arc::ptr_eq(&self.process, &self.call)
    }
}

/// A policy and the engine that decides it.
type PolicyWithEngine = (String, Arc<dyn PolicyEngine>);

/// An ordered list of (policy, engine) for one tier, without repeats.
fn tier_entries(
    runtimes: &Runtimes,
    tier: Tier,
    function: &[String],
    function_engine: &Option<Arc<dyn PolicyEngine>>,
) -> Result<Vec<PolicyWithEngine>, KestError> {
    let mut out: Vec<PolicyWithEngine> = Vec::new();
    let mut add = |names: &[String], engine: &Option<Arc<dyn PolicyEngine>>| -> Result<(), KestError> {
        for name in names {
            if out.iter().any(|(n, _)| n == name) {
                continue;
            }
            let engine = engine.clone().ok_or(KestError::NoEngine)?;
            out.push((name.clone(), engine));
        }
        Ok(())
    };
    if tier == Tier::Function {
        add(function, function_engine)?;
    } else {
        add(runtimes.process.tier_policies(tier), &runtimes.process.engine)?;
        if runtimes.distinct() {
            let engine = runtimes.call.engine.clone().or_else(|| runtimes.process.engine.clone());
            add(runtimes.call.tier_policies(tier), &engine)?;
        }
    }
    Ok(out)
}

/// The root origin of an entry point's flow caps what a root may claim:
/// the declared origin is kept only when it is known and scores no higher.
fn root_origin(declared: Option<&str>, ingress: Option<&str>, rules: &TrustRules) -> Option<String> {
    match (declared, ingress) {
        (declared, None) => declared.map(str::to_owned),
        (None, Some(ingress)) => Some(ingress.to_owned()),
        (Some(declared), Some(ingress)) => {
            match (rules.origins.score(declared), rules.origins.score(ingress)) {
                (Some(d), Some(i)) if d <= i => Some(declared.to_owned()),
                // An unknown declared origin stays, so preparing the entry fails.
                (None, _) => Some(declared.to_owned()),
                _ => Some(ingress.to_owned()),
            }
        }
    }
}

impl Verified {
    /// Steps 1–5 of the lifecycle: resolve, read lineage, compute trust and
    /// taints, and build the evaluation plan.
    fn prepare(&self, call: &CallContext) -> Result<(Pending, Plan), KestError> {
        // 1. runtimes, identity and engines: per call → runtime → error.
        let runtimes = Runtimes::resolve(call)?;
        let identity = call
            .identity
            .clone()
            .or_else(|| runtimes.call.identity.clone())
            .or_else(|| runtimes.process.identity.clone())
            .ok_or(KestError::NoIdentity)?;
        // No execution without lineage: an identity that cannot sign now
        // (an expired token) fails before the operation runs.
        identity
            .ready()
            .map_err(|source| KestError::NotReady { workload: identity.principal().to_owned(), source })?;
        let function_engine = call
            .engine
            .clone()
            .or_else(|| runtimes.call.engine.clone())
            .or_else(|| runtimes.process.engine.clone());

        // 2. ambient lineage (a call outside any flow is a root of its own).
        let lineage = Lineage::current().unwrap_or_default();
        let snapshot = lineage.snapshot();

        // 3. user / agent / task / resource.
        let FlowIdentity { user, agent, task, delegation, .. } = snapshot.identity.clone();
        let user = call.user.clone().or(user);
        let agent = call.agent.clone().or(agent);
        let task = call.task.clone().or(task);

        // 4. trust and taints from the parents.
        let mut rules = runtimes.call.trust.clone();
        if let Some(e) = &call.evaluator {
            rules.evaluator = Arc::clone(e);
        }
        let mut draft = self.draft(&snapshot, &rules, &user, &agent, &task, call)?;
        if !delegation.is_empty() {
            let chain = serde_json::to_string(&delegation)
                .map_err(|e| KestError::Hash { what: "delegation label", message: e.to_string() })?;
            draft.labels.insert(LABEL_DELEGATION.into(), chain);
        }
        let parent_refs: Vec<&Entry> = snapshot.parents.iter().map(|p| p.as_ref()).collect();
        let mut entry = prepare_entry(&parent_refs, &draft, identity.principal(), &rules)?;

        // 5. the plan: every tier in order, process deviations skipped.
        let deviations = runtimes.process.active_deviations(self.scope_name());
        let mut tiers = Vec::with_capacity(4);
        let mut planned: Vec<(Tier, String, Arc<dyn PolicyEngine>)> = Vec::new();
        let mut applied: Vec<Deviation> = Vec::new();
        for tier in Tier::ALL {
            let mut evaluated = Vec::new();
            let mut skipped = Vec::new();
            for (name, engine) in tier_entries(&runtimes, tier, &self.policies, &function_engine)? {
                match deviations.iter().find(|d| d.policy == name && d.tier == tier) {
                    Some(d) => {
                        applied.push(Deviation {
                            policy: name.clone(),
                            tier: tier.as_str().to_owned(),
                            reason: d.reason.clone(),
                            approver: d.approver.clone(),
                            extra: Map::new(),
                        });
                        skipped.push(name);
                    }
                    None => {
                        evaluated.push(name.clone());
                        planned.push((tier, name, engine));
                    }
                }
            }
            tiers.push(TierPlan { tier, evaluated, skipped });
        }
        if planned.is_empty() && !runtimes.process.allows_fully_deviated() {
            return Err(KestError::NoPolicyEvaluated {
                operation: self.operation.clone(),
                skipped: applied.iter().map(|d| format!("{}:{}", d.tier, d.policy)).collect(),
            });
        }
        entry.policy_context.deviations = applied;
        let names = |tier: Tier| {
            tiers.iter().find(|t| t.tier == tier).map(|t| t.evaluated.clone()).unwrap_or_default()
        };
        entry.policy_context.enterprise_policies = names(Tier::Enterprise);
        entry.policy_context.platform_policies = names(Tier::Platform);
        entry.policy_context.app_policies = names(Tier::Application);
        entry.policy_context.function_policies = names(Tier::Function);

        let context = ContextParts {
            subject: Subject {
                workload: identity.principal().to_owned(),
                user,
                agent,
                task,
                trust_score: entry.trust_score,
                taints: entry.taints.clone(),
                attributes: call.subject_attributes.clone(),
            },
            object: Object {
                id: call.resource_id.clone(),
                attributes: call.resource_attr.clone().unwrap_or_default(),
            },
            is_root: snapshot.parents.is_empty(),
            source_type: entry.label(LABEL_SOURCE_TYPE).map(str::to_owned),
            tips: snapshot.tips.iter().map(EntryHash::to_string).collect(),
            operation: self.operation.clone(),
            entry_id: entry.entry_id.clone(),
            tiers,
            action: self.action().to_owned(),
            attributes: call.attributes.clone(),
            lineage: lineage.clone(),
            parent_hashes: snapshot.tips.clone(),
            ancestors: OnceLock::new(),
        };
        let digest = context.digest();
        let checks = planned
            .into_iter()
            .map(|(tier, policy, engine)| {
                let key = digest.map(|d| DecisionKey::new(&engine, tier, &policy, d));
                Check { tier, policy, engine, key }
            })
            .collect();
        let span = HookSpan::start(&self.span_labels);
        if let Some(trace_id) = span.trace_id() {
            entry.labels.insert(LABEL_TRACE_ID.into(), Value::String(trace_id));
        }
        let Snapshot { parents, .. } = snapshot;
        let pending = Pending { identity, lineage, parents, draft, rules, entry, span };
        Ok((pending, Plan { cache: Arc::clone(&runtimes.call.cache), checks, context }))
    }

    fn draft(
        &self,
        snapshot: &Snapshot,
        rules: &TrustRules,
        user: &Option<String>,
        agent: &Option<String>,
        task: &Option<String>,
        call: &CallContext,
    ) -> Result<EntryDraft, KestError> {
        let mut draft = EntryDraft::new(self.operation.clone());
        draft.classification = self.classification;
        draft.source_type = if snapshot.tips.is_empty() {
            root_origin(self.source_type.as_deref(), snapshot.ingress_origin.as_deref(), rules)
        } else {
            self.source_type.clone()
        };
        draft.added_taints = self.added_taints.clone();
        draft.removed_taints = self.removed_taints.clone();
        draft.trust_override = self.trust_override;
        draft.parents =
            if snapshot.tips.is_empty() { Parents::Root } else { Parents::Explicit(snapshot.tips.clone()) };
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
        draft.labels.insert(LABEL_ACTION.into(), self.action().to_owned());
        if let Some(id) = &call.resource_id {
            draft.labels.insert(LABEL_RESOURCE.into(), id.clone());
        }
        for name in &call.persisted {
            if name == "principal" || name == LABEL_TRACE_ID || name.starts_with("kest.") {
                return Err(KestError::Config(ConfigError::Invalid(format!(
                    "`{}`: attribute `{name}` cannot be persisted: it is a label of Kest itself",
                    self.operation
                ))));
            }
            let value = match call.attributes.get(name) {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => continue,
            };
            draft.labels.insert(name.clone(), value);
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
        fresh: bool,
    ) -> Result<(), KestError> {
        match result {
            Ok(decision) => {
                // Only a fresh decision is stored: re-storing a cached one
                // would take the shard's write lock on every call.
                if fresh && let Some(key) = &check.key {
                    plan.cache.put(key.clone(), decision);
                }
                if decision.is_allow() {
                    return Ok(());
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

    /// The cached decision for a check, if any.
    fn cached(plan: &Plan, check: &Check) -> Option<Decision> {
        check.key.as_ref().and_then(|k| plan.cache.get(k))
    }

    /// Prepares and evaluates every check (synchronous engines path).
    pub(super) fn authorize(&self, call: &CallContext) -> Result<Pending, KestError> {
        let (pending, plan) = self.prepare(call)?;
        for check in &plan.checks {
            let cached = Self::cached(&plan, check);
            let fresh = cached.is_none();
            let result = match cached {
                Some(d) => Ok(d),
                None => {
                    let input = PolicyInput::new(plan.context.for_check(check));
                    check.engine.evaluate(&check.policy, &input)
                }
            };
            if let Err(e) = self.conclude(&plan, &pending, check, result, fresh) {
                pending.span.end_error(&e);
                return Err(e);
            }
        }
        Ok(pending)
    }

    /// Prepares and evaluates every check, awaiting remote engines.
    pub(super) async fn authorize_async(&self, call: &CallContext) -> Result<Pending, KestError> {
        let (pending, plan) = self.prepare(call)?;
        for check in &plan.checks {
            let cached = Self::cached(&plan, check);
            let fresh = cached.is_none();
            let result = match cached {
                Some(d) => Ok(d),
                None => {
                    let input = PolicyInput::new(plan.context.for_check(check));
                    check.engine.evaluate_async(&check.policy, &input).await
                }
            };
            if let Err(e) = self.conclude(&plan, &pending, check, result, fresh) {
                pending.span.end_error(&e);
                return Err(e);
            }
        }
        Ok(pending)
    }
}
