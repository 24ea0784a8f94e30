//! The evaluation context handed to every policy (SPEC §6.1).

use std::collections::HashSet;
use std::sync::Arc;

use kest_core::{Entry, EntryHash, LABEL_IDENTITY, LABEL_RESOURCE_ATTR, Passport};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The entry label recording the action a hooked call performed (SPEC
/// §6.1), read back into `lineage.ancestors[].action`.
pub const LABEL_ACTION: &str = "kest.action";

/// The entry label recording the resource id a hooked call acted on, read
/// back into `lineage.ancestors[].resource_id`.
pub const LABEL_RESOURCE: &str = "kest.resource";

/// Top-level keys of the context that call attributes never overwrite.
const CONTRACT_KEYS: [&str; 17] = [
    "derived",
    "subject",
    "object",
    "environment",
    "identity",
    "trust_score",
    "principal",
    "is_root",
    "origin",
    "chain_tip",
    "user",
    "agent",
    "task",
    "taints",
    "action",
    "attributes",
    "lineage",
];

/// A policy tier, evaluated in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Enterprise-wide policies (configuration).
    Enterprise,
    /// Platform policies (configuration).
    Platform,
    /// Application policies (configuration).
    #[serde(alias = "app")]
    Application,
    /// The function's own policies (the hook's `policy`).
    Function,
}

impl Tier {
    /// All tiers in evaluation order.
    pub const ALL: [Tier; 4] = [Tier::Enterprise, Tier::Platform, Tier::Application, Tier::Function];

    /// The lowercase name (`enterprise`, `platform`, `application`, `function`).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Enterprise => "enterprise",
            Tier::Platform => "platform",
            Tier::Application => "application",
            Tier::Function => "function",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Tier, String> {
        match s {
            "enterprise" => Ok(Tier::Enterprise),
            "platform" => Ok(Tier::Platform),
            "application" | "app" => Ok(Tier::Application),
            "function" => Ok(Tier::Function),
            other => Err(format!("`{other}` is not a tier (enterprise, platform, application, function)")),
        }
    }
}

/// `subject`: who is acting and with what lineage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subject {
    /// The workload id (signer).
    pub workload: String,
    /// End user, if known.
    pub user: Option<String>,
    /// Agent, if known.
    pub agent: Option<String>,
    /// Task / scope, if known.
    pub task: Option<String>,
    /// The trust score the new entry would get.
    pub trust_score: u8,
    /// The taints the new entry would carry (sorted).
    pub taints: Vec<String>,
    /// Subject attributes (clearance, categories, roles, limits, …) from
    /// resolvers or configuration.
    pub attributes: Map<String, Value>,
}

/// `object`: the resource acted on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    /// Resource id, if any.
    pub id: Option<String>,
    /// Resource attributes.
    pub attributes: Map<String, Value>,
}

/// `environment`: where in the lineage and which policies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Environment {
    /// Whether the new entry is a root.
    pub is_root: bool,
    /// The declared origin, if any.
    pub source_type: Option<String>,
    /// The first parent (tip) hash, or `"0"`.
    pub parent_hash: String,
    /// Policy names of the tier being evaluated.
    pub policy_names: Vec<String>,
    /// The tier being evaluated.
    pub policy_tier: Tier,
    /// Policies skipped by active deviations (`tier:policy`).
    pub active_deviations: Vec<String>,
    /// The operation.
    pub operation: String,
    /// The id the new entry will carry (a per-call field: not part of
    /// decision-cache keys).
    pub entry_id: String,
}

/// One entry of the verified history, as policies see it
/// (`lineage.ancestors[]`, SPEC §6.1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ancestor {
    /// The operation.
    pub operation: String,
    /// Who signed it.
    pub principal: String,
    /// The user it acted for (signed `kest.identity`), if any.
    pub user: Option<String>,
    /// The action (label `kest.action`), if recorded.
    pub action: Option<String>,
    /// The resource id (label `kest.resource`), if recorded.
    pub resource_id: Option<String>,
    /// The resource attributes (label `kest.resource_attr`), `{}` if none.
    pub resource_attributes: Map<String, Value>,
    /// Its classification.
    pub classification: String,
    /// Its trust score.
    pub trust_score: u8,
    /// Its accumulated taints.
    pub taints: Vec<String>,
    /// Its hash.
    pub entry_hash: String,
}

impl Ancestor {
    /// The view of one entry.
    pub fn of(entry: &Entry) -> Ancestor {
        let payload = entry.payload();
        let label_json = |name: &str| -> Option<Value> { serde_json::from_str(payload.label(name)?).ok() };
        let user = label_json(LABEL_IDENTITY)
            .and_then(|id| id.get("user").and_then(Value::as_str).map(str::to_owned));
        let resource_attributes = match label_json(LABEL_RESOURCE_ATTR) {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        Ancestor {
            operation: payload.operation.clone(),
            principal: entry.principal().to_owned(),
            user,
            action: payload.label(LABEL_ACTION).map(str::to_owned),
            resource_id: payload.label(LABEL_RESOURCE).map(str::to_owned),
            resource_attributes,
            classification: payload.classification.as_str().to_owned(),
            trust_score: payload.trust_score,
            taints: payload.taints.clone(),
            entry_hash: entry.hash().to_string(),
        }
    }
}

/// Every entry reachable from `parents` in `passport`, in passport order
/// (the new entry's history). Linear in the passport.
pub fn ancestors(passport: &Passport, parents: &[EntryHash]) -> Vec<Ancestor> {
    let mut reachable: HashSet<EntryHash> = HashSet::new();
    let mut stack: Vec<EntryHash> = parents.to_vec();
    while let Some(hash) = stack.pop() {
        if reachable.insert(hash)
            && let Some(entry) = passport.get(&hash)
        {
            stack.extend(entry.parents().iter().copied());
        }
    }
    passport.entries().iter().filter(|e| reachable.contains(&e.hash())).map(|e| Ancestor::of(e)).collect()
}

/// The whole evaluation context (SPEC §6.1): the nested contract plus the
/// flat keys that keep policies written for the reference working.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationContext {
    /// Who.
    pub subject: Subject,
    /// On what.
    pub object: Object,
    /// Where in the lineage.
    pub environment: Environment,
    /// All current tip hashes (`chain_tip`), empty for a root.
    pub tips: Vec<String>,
    /// The action (the hook's `action`, default the operation name).
    pub action: String,
    /// Values from the call (the reference's `context_map`), also written at
    /// the top level when their name is not a contract key.
    pub attributes: Map<String, Value>,
    /// The verified history: every entry reachable from the new entry's
    /// parents, in passport order; `None` for a policy its engine declares
    /// history-free ([`super::PolicyEngine::reads_lineage`]), which then gets
    /// no `lineage` member at all.
    pub ancestors: Option<Arc<Vec<Ancestor>>>,
}

impl EvaluationContext {
    /// The JSON document given to Rego as `input` (and, without nulls, to
    /// Cedar as `context`).
    ///
    /// ```
    /// # use kest::policy::*;
    /// # let ctx = kest::policy::context::example_context();
    /// let v = ctx.to_json();
    /// assert_eq!(v["subject"]["trust_score"], 40);
    /// assert_eq!(v["trust_score"], 40);
    /// assert_eq!(v["chain_tip"], "0");
    /// ```
    pub fn to_json(&self) -> Value {
        let s = &self.subject;
        let chain_tip = if self.tips.is_empty() { "0".to_owned() } else { self.tips.join(",") };
        let mut json = serde_json::json!({
            "subject": s,
            "object": self.object,
            "environment": self.environment,
            "identity": s.workload,
            "trust_score": s.trust_score,
            "principal": s.workload,
            "is_root": self.environment.is_root,
            "origin": self.environment.source_type,
            "chain_tip": chain_tip,
            "user": s.user.clone().unwrap_or_default(),
            "agent": s.agent.clone().unwrap_or_default(),
            "task": s.task.clone().unwrap_or_default(),
            "taints": s.taints,
            "action": self.action,
            "attributes": self.attributes,
        });
        if let Value::Object(top) = &mut json {
            if let Some(ancestors) = &self.ancestors {
                top.insert("lineage".into(), serde_json::json!({ "ancestors": **ancestors }));
            }
            for (name, value) in &self.attributes {
                if !CONTRACT_KEYS.contains(&name.as_str()) {
                    top.insert(name.clone(), value.clone());
                }
            }
        }
        json
    }
}

/// A small context for examples and tests: a root step by a user-input
/// origin.
#[doc(hidden)]
pub fn example_context() -> EvaluationContext {
    EvaluationContext {
        subject: Subject {
            workload: "spiffe://demo/agent".into(),
            user: Some("alice".into()),
            agent: None,
            task: None,
            trust_score: 40,
            taints: vec![],
            attributes: Map::new(),
        },
        object: Object { id: None, attributes: Map::new() },
        environment: Environment {
            is_root: true,
            source_type: Some("user_input".into()),
            parent_hash: "0".into(),
            policy_names: vec!["allow".into()],
            policy_tier: Tier::Function,
            active_deviations: vec![],
            operation: "ask".into(),
            entry_id: "01900000-0000-7000-8000-000000000000".into(),
        },
        tips: vec![],
        action: "ask".into(),
        attributes: Map::new(),
        ancestors: Some(Arc::new(Vec::new())),
    }
}
