//! The policy library (SPEC §12): seven formal access-control models, each a
//! Rego module and a Cedar policy set with identical decisions, embedded in
//! the crate (features `rego` and/or `cedar`).
//!
//! | model | policy name | decision |
//! |---|---|---|
//! | [`Model::BellLapadula`] | `kest/bell_lapadula` | no read up, no write down (also through the flow) |
//! | [`Model::Biba`] | `kest/biba` | no read down, no write up (integrity) |
//! | [`Model::BrewerNash`] | `kest/brewer_nash` | Chinese Wall over the user's history |
//! | [`Model::ClarkWilson`] | `kest/clark_wilson` | certified TPs on CDIs, separation of duty |
//! | [`Model::GoguenMeseguer`] | `kest/goguen_meseguer` | non-interference of taint domains |
//! | [`Model::Financial`] | `kest/financial` | risk, MFA, limits, four-eyes approval |
//! | [`Model::Security`] | `kest/security` | clearance, suspension, minimum trust |
//!
//! Every model decides from the §6.1 context only. Cedar cannot quantify
//! over the history or normalize mixed level forms, so each model has a
//! [`derive`] function computing a few facts (normalized levels, the
//! history facts) that go under `derived`; the Cedar policies decide from
//! `context.action` and those facts, the Rego modules from the plain context
//! (they compute the same facts themselves, under the same names). Use
//! [`prepare`] (or [`evaluate`], which applies it) before handing a context
//! to an engine: any caller-supplied `derived` member is replaced.
//!
//! ```
//! # #[cfg(all(feature = "rego", feature = "cedar"))] {
//! use kest::policy::library::{self, EngineKind, Model};
//! use kest::policy::Decision;
//!
//! let context = serde_json::json!({
//!     "action": "read",
//!     "subject": {"workload": "spiffe://demo/analyst", "user": "alice",
//!                 "attributes": {"clearance": "secret", "categories": ["nato"]}},
//!     "object": {"id": "doc-1", "attributes": {"classification": 1, "categories": ["nato"]}},
//! });
//! for engine in [EngineKind::Rego, EngineKind::Cedar] {
//!     let decision = library::evaluate(Model::BellLapadula, engine, &context).unwrap();
//!     assert_eq!(decision, Decision::Allow);
//! }
//! assert_eq!(library::derive(Model::BellLapadula, &context)["subject_level"], 2);
//! # }
//! ```

mod derive;

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde_json::Value;

use super::{Decision, PolicyError};

/// The level names, lowest first (the index is the level).
pub const LEVEL_NAMES: [&str; 4] = derive::LEVEL_NAMES;

/// One of the seven bundled models (SPEC §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Model {
    /// Bell-LaPadula: confidentiality (no read up, no write down).
    BellLapadula,
    /// Biba: integrity (no read down, no write up).
    Biba,
    /// Brewer-Nash: the Chinese Wall.
    BrewerNash,
    /// Clark-Wilson: certified transactions and separation of duty.
    ClarkWilson,
    /// Goguen-Meseguer: non-interference.
    GoguenMeseguer,
    /// Financial transactions: risk, MFA, limits, four-eyes approval.
    Financial,
    /// Security clearance.
    Security,
}

impl Model {
    /// All seven models, in SPEC §12 order.
    pub const ALL: [Model; 7] = [
        Model::BellLapadula,
        Model::Biba,
        Model::BrewerNash,
        Model::ClarkWilson,
        Model::GoguenMeseguer,
        Model::Financial,
        Model::Security,
    ];

    /// The model name (`bell_lapadula`, …; the Rego package is
    /// `kest.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Model::BellLapadula => "bell_lapadula",
            Model::Biba => "biba",
            Model::BrewerNash => "brewer_nash",
            Model::ClarkWilson => "clark_wilson",
            Model::GoguenMeseguer => "goguen_meseguer",
            Model::Financial => "financial",
            Model::Security => "security",
        }
    }

    /// The policy name under which both engines hold the model
    /// (`kest/<name>`).
    pub fn policy_name(self) -> &'static str {
        match self {
            Model::BellLapadula => "kest/bell_lapadula",
            Model::Biba => "kest/biba",
            Model::BrewerNash => "kest/brewer_nash",
            Model::ClarkWilson => "kest/clark_wilson",
            Model::GoguenMeseguer => "kest/goguen_meseguer",
            Model::Financial => "kest/financial",
            Model::Security => "kest/security",
        }
    }

    /// The model a policy name refers to: `kest/<name>`, `kest.<name>` or
    /// the bare `<name>`.
    ///
    /// ```
    /// # #[cfg(any(feature = "rego", feature = "cedar"))] {
    /// use kest::policy::library::Model;
    /// assert_eq!(Model::from_policy_name("kest/biba"), Some(Model::Biba));
    /// assert_eq!(Model::from_policy_name("kest.security"), Some(Model::Security));
    /// assert_eq!(Model::from_policy_name("kest/allow"), None);
    /// # }
    /// ```
    pub fn from_policy_name(name: &str) -> Option<Model> {
        let bare = name.strip_prefix("kest/").or_else(|| name.strip_prefix("kest.")).unwrap_or(name);
        Model::ALL.into_iter().find(|m| m.name() == bare)
    }

    /// The Rego module (`package kest.<name>`, decision `allow`).
    pub fn rego(self) -> &'static str {
        match self {
            Model::BellLapadula => include_str!("../../../../../policies/models/rego/bell_lapadula.rego"),
            Model::Biba => include_str!("../../../../../policies/models/rego/biba.rego"),
            Model::BrewerNash => include_str!("../../../../../policies/models/rego/brewer_nash.rego"),
            Model::ClarkWilson => include_str!("../../../../../policies/models/rego/clark_wilson.rego"),
            Model::GoguenMeseguer => include_str!("../../../../../policies/models/rego/goguen_meseguer.rego"),
            Model::Financial => include_str!("../../../../../policies/models/rego/financial.rego"),
            Model::Security => include_str!("../../../../../policies/models/rego/security.rego"),
        }
    }

    /// The Cedar policy set (reads `context.action` and `context.derived`).
    pub fn cedar(self) -> &'static str {
        match self {
            Model::BellLapadula => include_str!("../../../../../policies/models/cedar/bell_lapadula.cedar"),
            Model::Biba => include_str!("../../../../../policies/models/cedar/biba.cedar"),
            Model::BrewerNash => include_str!("../../../../../policies/models/cedar/brewer_nash.cedar"),
            Model::ClarkWilson => include_str!("../../../../../policies/models/cedar/clark_wilson.cedar"),
            Model::GoguenMeseguer => {
                include_str!("../../../../../policies/models/cedar/goguen_meseguer.cedar")
            }
            Model::Financial => include_str!("../../../../../policies/models/cedar/financial.cedar"),
            Model::Security => include_str!("../../../../../policies/models/cedar/security.cedar"),
        }
    }

    /// The input contract: which attributes the model reads, and where, in
    /// the §6.1 context (one line per attribute).
    pub fn contract(self) -> &'static str {
        match self {
            Model::BellLapadula => {
                "action: \"read\", \"write\" or \"append\"\n\
                 subject.attributes.clearance: level (0..=3 or unclassified|confidential|secret|top_secret)\n\
                 subject.attributes.categories: array of strings\n\
                 object.attributes.classification: level\n\
                 object.attributes.categories: array of strings\n\
                 lineage.ancestors[]: action, resource_attributes.classification, resource_attributes.categories (optional)"
            }
            Model::Biba => {
                "action: \"read\", \"write\", \"append\" or \"invoke\"\n\
                 subject.attributes.integrity: level (0..=3 or unclassified|confidential|secret|top_secret)\n\
                 object.attributes.integrity: level"
            }
            Model::BrewerNash => {
                "subject.user: non-empty string\n\
                 object.attributes.dataset: string\n\
                 object.attributes.conflict_class: string\n\
                 lineage.ancestors[]: user, resource_attributes.conflict_class, resource_attributes.dataset"
            }
            Model::ClarkWilson => {
                "subject.user: non-empty string\n\
                 subject.attributes.authorized_tps: array of operation names\n\
                 object.attributes.cdi: string\n\
                 environment.operation: string\n\
                 attributes.certified_cdis: array of strings\n\
                 attributes.separate_from: array of operation names (may be empty)\n\
                 lineage.ancestors[]: user, operation"
            }
            Model::GoguenMeseguer => {
                "object.attributes.domain: string\n\
                 object.attributes.may_be_influenced_by: array of strings (optional)\n\
                 subject.taints: \"domain:<d>\" entries (Kest's own)"
            }
            Model::Financial => {
                "action: \"withdrawal\" or \"transfer\"\n\
                 attributes.risk_score: string (\"high\" denies)\n\
                 attributes.mfa_present: boolean (withdrawal)\n\
                 attributes.amount: integer (transfer)\n\
                 subject.attributes.limit: integer (transfer)\n\
                 subject.user: non-empty string (approval above the limit)\n\
                 object.id: string (approval above the limit)\n\
                 lineage.ancestors[]: action \"approve\", resource_id, user"
            }
            Model::Security => {
                "subject.attributes.clearance: level (0..=3 or unclassified|confidential|secret|top_secret)\n\
                 subject.attributes.suspended: boolean (optional, default false)\n\
                 subject.trust_score: integer\n\
                 object.attributes.classification: level\n\
                 object.attributes.min_trust: integer (optional, default 50)"
            }
        }
    }

    /// The decision rule in one sentence (SPEC §12).
    pub fn rule(self) -> &'static str {
        match self {
            Model::BellLapadula => {
                "read: subject dominates object; write/append: object dominates subject and every classified read upstream; other actions deny"
            }
            Model::Biba => {
                "read: object integrity >= subject integrity; write/append/invoke: subject integrity >= object integrity; other actions deny"
            }
            Model::BrewerNash => {
                "allow unless an ancestor of the same user accessed another dataset of the object's conflict class"
            }
            Model::ClarkWilson => {
                "cdi certified, operation an authorized TP of the subject, and no ancestor of the same user ran an operation in separate_from"
            }
            Model::GoguenMeseguer => {
                "deny when a domain:<d> taint names a domain that is neither the object's nor in its may_be_influenced_by"
            }
            Model::Financial => {
                "high risk denies; withdrawal needs MFA; transfer up to the limit, above it only with another user's approval of the resource"
            }
            Model::Security => {
                "clearance >= classification, not suspended, trust score >= min_trust (default 50)"
            }
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the seven models.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a policy model (bell_lapadula, biba, brewer_nash, clark_wilson, goguen_meseguer, financial, security)"
)]
pub struct UnknownModelError(pub String);

impl FromStr for Model {
    type Err = UnknownModelError;

    /// Parses a model name or policy name (see [`Model::from_policy_name`]).
    fn from_str(s: &str) -> Result<Model, UnknownModelError> {
        Model::from_policy_name(s).ok_or_else(|| UnknownModelError(s.to_owned()))
    }
}

/// The derived facts of `model` for `context` (SPEC §12): the JSON object
/// both engines receive under `derived`. Pure; a missing or malformed input
/// leaves its fact out (so the rules needing it deny), `null` counts as
/// absent.
///
/// | model | facts |
/// |---|---|
/// | `bell_lapadula` | `subject_level`, `object_level`, `subject_categories`, `object_categories`, `max_read_level` (-1 without classified reads), `read_categories`, `read_history_valid` |
/// | `biba` | `subject_integrity`, `object_integrity` |
/// | `brewer_nash` | `user`, `dataset`, `conflict_class`, `other_dataset_in_class` |
/// | `clark_wilson` | `cdi`, `certified_cdis`, `operation`, `authorized_tps`, `user`, `separation_violated` (only when `separate_from` is an array) |
/// | `goguen_meseguer` | `domain`, `allowed_domains` (domain and may_be_influenced_by), `taint_domains` |
/// | `financial` | `user`, `risk_score`, `mfa_present`, `amount`, `limit`, `approved_by_other_user` |
/// | `security` | `subject_level`, `object_level`, `suspended`, `trust_score`, `min_trust` |
///
/// ```
/// # #[cfg(any(feature = "rego", feature = "cedar"))] {
/// use kest::policy::library::{derive, Model};
/// let context = serde_json::json!({
///     "subject": {"user": "bob"},
///     "object": {"attributes": {"dataset": "bank-b", "conflict_class": "banks"}},
///     "lineage": {"ancestors": [{"user": "bob", "resource_attributes":
///         {"dataset": "bank-a", "conflict_class": "banks"}}]},
/// });
/// assert_eq!(derive(Model::BrewerNash, &context)["other_dataset_in_class"], true);
/// # }
/// ```
pub fn derive(model: Model, context: &Value) -> Value {
    derive::derive(model, context)
}

/// `context` with `derived` set to [`derive`]`(model, context)` (replacing
/// any `derived` member the caller supplied). A context that is not a JSON
/// object is returned unchanged (every engine denies it).
pub fn prepare(model: Model, context: &Value) -> Value {
    let mut prepared = context.clone();
    if let Value::Object(members) = &mut prepared {
        members.insert("derived".into(), derive(model, context));
    }
    prepared
}

/// The `(policy name, Rego module)` pairs of the seven models.
#[cfg(feature = "rego")]
pub fn rego_policies() -> Vec<(&'static str, &'static str)> {
    Model::ALL.iter().map(|m| (m.policy_name(), m.rego())).collect()
}

/// The `(policy name, Cedar policy set)` pairs of the seven models.
#[cfg(feature = "cedar")]
pub fn cedar_policies() -> Vec<(&'static str, &'static str)> {
    Model::ALL.iter().map(|m| (m.policy_name(), m.cedar())).collect()
}

/// An in-process engine to evaluate a model with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EngineKind {
    /// The Rego engine ([`RegoEngine`](super::rego::RegoEngine)).
    #[cfg(feature = "rego")]
    Rego,
    /// The Cedar engine ([`CedarEngine`](super::cedar::CedarEngine)).
    #[cfg(feature = "cedar")]
    Cedar,
}

impl EngineKind {
    /// The engines compiled in.
    pub const ALL: &'static [EngineKind] = &[
        #[cfg(feature = "rego")]
        EngineKind::Rego,
        #[cfg(feature = "cedar")]
        EngineKind::Cedar,
    ];

    /// `rego` or `cedar`.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "rego")]
            EngineKind::Rego => "rego",
            #[cfg(feature = "cedar")]
            EngineKind::Cedar => "cedar",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = String;

    /// `rego` or `cedar` (when compiled in).
    fn from_str(s: &str) -> Result<EngineKind, String> {
        EngineKind::ALL
            .iter()
            .copied()
            .find(|e| e.name() == s)
            .ok_or_else(|| format!("`{s}` is not an engine compiled in (rego, cedar)"))
    }
}

/// The Rego engine holding the seven models (built once, on first use).
///
/// # Errors
///
/// The construction error, should a bundled module not compile (a bug,
/// covered by the tests).
#[cfg(feature = "rego")]
pub fn rego_engine() -> Result<&'static super::rego::RegoEngine, PolicyError> {
    static ENGINE: OnceLock<Result<super::rego::RegoEngine, PolicyError>> = OnceLock::new();
    ENGINE.get_or_init(|| super::rego::RegoEngine::new(rego_policies())).as_ref().map_err(Clone::clone)
}

/// The Cedar engine holding the seven models (built once, on first use).
///
/// # Errors
///
/// The construction error, should a bundled policy set not parse (a bug,
/// covered by the tests).
#[cfg(feature = "cedar")]
pub fn cedar_engine() -> Result<&'static super::cedar::CedarEngine, PolicyError> {
    static ENGINE: OnceLock<Result<super::cedar::CedarEngine, PolicyError>> = OnceLock::new();
    ENGINE.get_or_init(|| super::cedar::CedarEngine::new(cedar_policies())).as_ref().map_err(Clone::clone)
}

/// Evaluates `model` on the plain §6.1 `context` with `engine`, after
/// [`prepare`] (so the caller never supplies `derived`).
///
/// # Errors
///
/// [`PolicyError::Evaluation`] when the context is not a JSON object or the
/// engine cannot evaluate it (e.g. a floating-point number anywhere in the
/// context for Cedar); every error means deny.
pub fn evaluate(model: Model, engine: EngineKind, context: &Value) -> Result<Decision, PolicyError> {
    if !context.is_object() {
        return Err(PolicyError::Evaluation {
            policy: model.policy_name().to_owned(),
            message: "the context is not a JSON object".into(),
        });
    }
    let prepared = prepare(model, context);
    match engine {
        #[cfg(feature = "rego")]
        EngineKind::Rego => rego_engine()?.evaluate_json(model.policy_name(), &prepared),
        #[cfg(feature = "cedar")]
        EngineKind::Cedar => cedar_engine()?.evaluate_json(model.policy_name(), &prepared),
    }
}
