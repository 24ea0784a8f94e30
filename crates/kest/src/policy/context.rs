//! The evaluation context handed to every policy (SPEC §6.1).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
        serde_json::json!({
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
        })
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
    }
}
