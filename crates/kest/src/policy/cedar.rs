//! In-process Cedar policy engine on [`cedar_policy`] (SPEC §6.2, feature
//! `cedar`).
//!
//! A policy name maps to its own Cedar policy set (one or more Cedar
//! policies). Evaluating a name consults **only** that set — a name the
//! engine does not hold is [`PolicyError::UnknownPolicy`], never a fallback
//! to the other sets. The request is
//!
//! - principal `Workload::"<subject.workload>"`,
//! - action `Action::"<policy name>"`,
//! - resource `Resource::"<object.id>"`, or `Resource::"<environment.entry_id>"`
//!   when the context has no object id,
//! - context: the SPEC §6.1 document with `null` values dropped recursively
//!   (Cedar has no null), the nested objects as nested records and arrays
//!   as sets. Both `context.subject.trust_score` and the flat
//!   `context.trust_score` exist. Values are taken literally: Cedar's JSON
//!   escapes (`__entity`, `__extn`) in caller-supplied attributes stay
//!   plain records.
//!
//! The decision is [`Decision::Allow`] only when Cedar answers `Allow` and
//! reports no evaluation error. Cedar skips a policy that errors, so an
//! erroring `forbid` would not block; here any evaluation error is a
//! [`PolicyError::Evaluation`] (deny) instead. Context values Cedar cannot
//! represent (e.g. floating-point numbers in `object.attributes`) are an
//! evaluation error too.
//!
//! With a schema, every policy set is validated at construction (strict
//! mode) and every request (action, context) is validated against it; the
//! schema must then declare the `Workload` and `Resource` entity types, one
//! action per policy name and the context attributes.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Entities, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use serde_json::Value;

use super::{Decision, PolicyEngine, PolicyError, PolicyInput};

/// The entity type of request principals.
pub const PRINCIPAL_TYPE: &str = "Workload";
/// The entity type of request actions (the id is the policy name).
pub const ACTION_TYPE: &str = "Action";
/// The entity type of request resources.
pub const RESOURCE_TYPE: &str = "Resource";

/// The bundled Cedar policies (`policies/cedar/` at the repository root),
/// as `(policy name, Cedar text)`, embedded at compile time so a demo needs
/// no files at run time.
///
/// | name | decision |
/// |------|----------|
/// | `invoke` | permits every request for action `invoke` |
/// | `send_email` | `context.subject.trust_score >= 50` unless the taints contain `confidential` |
/// | `kest/<model>` | the seven models of the [policy library](super::library) (`policies/models/cedar/`) |
///
/// ```
/// # #[cfg(feature = "cedar")] {
/// use kest::policy::cedar::{bundled_cedar, CedarEngine};
/// let engine = CedarEngine::new(bundled_cedar()).unwrap();
/// assert_eq!(engine.policy_names().len(), 2 + 7);
/// assert!(engine.policy_names().contains(&"kest/bell_lapadula"));
/// # }
/// ```
pub fn bundled_cedar() -> Vec<(&'static str, &'static str)> {
    let mut policies = HISTORY_FREE.to_vec();
    policies.extend(super::library::cedar_policies());
    policies
}

/// The bundled policies that never read `context.lineage` (the models do:
/// their derived facts come from it).
const HISTORY_FREE: [(&str, &str); 2] = [
    ("invoke", include_str!("../../../../policies/cedar/invoke.cedar")),
    ("send_email", include_str!("../../../../policies/cedar/send_email.cedar")),
];

/// An in-process Cedar engine (see the [module documentation](self)).
///
/// ```
/// # #[cfg(feature = "cedar")] {
/// use kest::policy::{Decision, PolicyEngine, PolicyInput};
/// use kest::policy::cedar::CedarEngine;
///
/// let engine = CedarEngine::new([
///     ("ask", r#"permit(principal, action, resource) when { context.trust_score >= 30 };"#),
///     ("admin", r#"permit(principal == Workload::"spiffe://demo/admin", action, resource);"#),
/// ])
/// .unwrap();
///
/// let input = PolicyInput::new(kest::policy::context::example_context()); // trust 40
/// assert_eq!(engine.evaluate("ask", &input).unwrap(), Decision::Allow);
/// assert_eq!(engine.evaluate("admin", &input).unwrap(), Decision::Deny);
/// assert!(engine.evaluate("other", &input).is_err()); // unknown: never the other sets
/// # }
/// ```
#[derive(Debug)]
pub struct CedarEngine {
    name: String,
    policies: HashMap<String, PolicySet>,
    schema: Option<Schema>,
    entities: Entities,
    authorizer: Authorizer,
    history_free: std::collections::HashSet<String>,
}

impl CedarEngine {
    /// Builds an engine from `(policy name, Cedar policies)` pairs, without
    /// schema or entities.
    pub fn new<N, T>(policies: impl IntoIterator<Item = (N, T)>) -> Result<CedarEngine, PolicyError>
    where
        N: Into<String>,
        T: Into<String>,
    {
        policies.into_iter().fold(CedarEngine::builder(), |b, (n, t)| b.policy(n, t)).build()
    }

    /// A builder (schema, entities, directories, engine name).
    pub fn builder() -> CedarEngineBuilder {
        CedarEngineBuilder::default()
    }

    /// The policy names this engine answers for (sorted).
    pub fn policy_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.policies.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    fn request_from(
        &self,
        policy: &str,
        principal: &str,
        resource: &str,
        json: &Value,
    ) -> Result<Request, String> {
        let principal = uid(PRINCIPAL_TYPE, principal)?;
        let action = uid(ACTION_TYPE, policy)?;
        let resource = uid(RESOURCE_TYPE, resource)?;
        let context = context(json)?;
        Request::new(principal, action, resource, context, self.schema.as_ref())
            .map_err(|e| format!("request does not match the schema: {e}"))
    }

    /// Evaluates `policy` on a JSON context document directly (for contexts
    /// built elsewhere, e.g. by `kest policy eval` and
    /// [`library::evaluate`](super::library::evaluate)). The request is
    /// built from the document as [`PolicyEngine::evaluate`] builds it from
    /// the typed context: principal `Workload::"<subject.workload>"`,
    /// resource `Resource::"<object.id>"` or `Resource::"<environment.entry_id>"`;
    /// a missing (or non-string) id is the empty id.
    ///
    /// # Errors
    ///
    /// As [`PolicyEngine::evaluate`]: an unknown policy, a context Cedar
    /// cannot represent, or an evaluation error.
    pub fn evaluate_json(&self, policy: &str, json: &Value) -> Result<Decision, PolicyError> {
        // The bundled formal models decide from facts Cedar cannot compute
        // (history, mixed level forms): derive them here, so every caller —
        // the hook included — hands over the plain §6.1 context.
        let prepared =
            super::library::Model::from_policy_name(policy).map(|m| super::library::prepare(m, json));
        let json = prepared.as_ref().unwrap_or(json);
        let text = |path: &[&str]| {
            path.iter().try_fold(json, |v, k| v.get(*k)).and_then(Value::as_str).map(str::to_owned)
        };
        let principal = text(&["subject", "workload"]).unwrap_or_default();
        let resource =
            text(&["object", "id"]).or_else(|| text(&["environment", "entry_id"])).unwrap_or_default();
        let set = self.policies.get(policy).ok_or_else(|| PolicyError::UnknownPolicy(policy.to_owned()))?;
        let request = self
            .request_from(policy, &principal, &resource, json)
            .map_err(|message| PolicyError::Evaluation { policy: policy.to_owned(), message })?;
        self.decide(policy, set, &request)
    }

    fn decide(&self, policy: &str, set: &PolicySet, request: &Request) -> Result<Decision, PolicyError> {
        let response = self.authorizer.is_authorized(request, set, &self.entities);
        let errors: Vec<String> = response.diagnostics().errors().map(ToString::to_string).collect();
        if !errors.is_empty() {
            return Err(PolicyError::Evaluation { policy: policy.to_owned(), message: errors.join("; ") });
        }
        Ok(Decision::from_bool(response.decision() == cedar_policy::Decision::Allow))
    }
}

impl PolicyEngine for CedarEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn reads_lineage(&self, policy: &str) -> bool {
        !self.history_free.contains(policy)
    }

    fn evaluate(&self, policy: &str, input: &PolicyInput) -> Result<Decision, PolicyError> {
        self.evaluate_json(policy, input.json())
    }
}

/// Builds a [`CedarEngine`]; obtained from [`CedarEngine::builder`].
///
/// ```
/// # #[cfg(feature = "cedar")] {
/// use kest::policy::cedar::CedarEngine;
/// let engine = CedarEngine::builder()
///     .named("cedar-platform")
///     .policy("ask", r#"permit(principal in Group::"agents", action, resource);"#)
///     .entities_json(serde_json::json!([
///         {"uid": {"type": "Workload", "id": "spiffe://demo/agent"}, "attrs": {},
///          "parents": [{"type": "Group", "id": "agents"}]},
///         {"uid": {"type": "Group", "id": "agents"}, "attrs": {}, "parents": []}
///     ]))
///     .build()
///     .unwrap();
/// # use kest::policy::{Decision, PolicyEngine, PolicyInput};
/// # let input = PolicyInput::new(kest::policy::context::example_context());
/// # assert_eq!(engine.evaluate("ask", &input).unwrap(), Decision::Allow);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CedarEngineBuilder {
    name: String,
    policies: Vec<(String, String)>,
    directories: Vec<std::path::PathBuf>,
    schema: Option<SchemaSource>,
    entities: Option<Value>,
    history_free: std::collections::HashSet<String>,
}

#[derive(Debug, Clone)]
enum SchemaSource {
    Json(Value),
    Cedar(String),
}

impl Default for CedarEngineBuilder {
    fn default() -> CedarEngineBuilder {
        CedarEngineBuilder {
            name: "cedar".into(),
            policies: Vec::new(),
            directories: Vec::new(),
            schema: None,
            entities: None,
            history_free: std::collections::HashSet::new(),
        }
    }
}

impl CedarEngineBuilder {
    /// Declares that `policy` never reads the verified history
    /// (`context.lineage`): the hook then spares computing and converting
    /// it for that policy. A policy declared so that reads it anyway sees
    /// none — declare only what you wrote. The bundled `invoke` and
    /// `send_email` are declared automatically with their bundled text.
    pub fn history_free(mut self, policy: impl Into<String>) -> CedarEngineBuilder {
        self.history_free.insert(policy.into());
        self
    }

    /// Adds a policy name with its Cedar text (one or more Cedar policies;
    /// the decision combines exactly these).
    pub fn policy(mut self, name: impl Into<String>, text: impl Into<String>) -> CedarEngineBuilder {
        self.policies.push((name.into(), text.into()));
        self
    }

    /// Loads every `*.cedar` file directly in `dir` at
    /// [`build`](CedarEngineBuilder::build), named by its file stem
    /// (`send_email.cedar` → `send_email`).
    pub fn directory(mut self, dir: impl AsRef<Path>) -> CedarEngineBuilder {
        self.directories.push(dir.as_ref().to_path_buf());
        self
    }

    /// A schema in Cedar's JSON schema format: policies are validated with
    /// it at construction and requests at evaluation.
    pub fn schema_json(mut self, schema: Value) -> CedarEngineBuilder {
        self.schema = Some(SchemaSource::Json(schema));
        self
    }

    /// A schema in Cedar's human-readable schema format (see
    /// [`schema_json`](CedarEngineBuilder::schema_json)).
    pub fn schema_cedar(mut self, schema: impl Into<String>) -> CedarEngineBuilder {
        self.schema = Some(SchemaSource::Cedar(schema.into()));
        self
    }

    /// Entities (Cedar's entities JSON format) for `in` / attribute checks
    /// on principals and resources.
    pub fn entities_json(mut self, entities: Value) -> CedarEngineBuilder {
        self.entities = Some(entities);
        self
    }

    /// The engine name (part of decision-cache keys; default `cedar`).
    pub fn named(mut self, name: impl Into<String>) -> CedarEngineBuilder {
        self.name = name.into();
        self
    }

    /// Parses (and, with a schema, validates) every policy set.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Compile`] naming the policy that does not parse or
    /// validate; [`PolicyError::Config`] for a duplicate name, an
    /// unreadable directory, a bad schema or bad entities.
    pub fn build(self) -> Result<CedarEngine, PolicyError> {
        let schema = match self.schema {
            None => None,
            Some(SchemaSource::Json(json)) => Some(
                Schema::from_json_value(json)
                    .map_err(|e| PolicyError::Config(format!("Cedar schema: {e}")))?,
            ),
            Some(SchemaSource::Cedar(text)) => Some(
                Schema::from_cedarschema_str(&text)
                    .map_err(|e| PolicyError::Config(format!("Cedar schema: {e}")))?
                    .0,
            ),
        };
        let entities = match self.entities {
            None => match &schema {
                Some(schema) => {
                    schema.action_entities().map_err(|e| PolicyError::Config(format!("Cedar schema: {e}")))?
                }
                None => Entities::empty(),
            },
            Some(json) => Entities::from_json_value(json, schema.as_ref())
                .map_err(|e| PolicyError::Config(format!("Cedar entities: {e}")))?,
        };

        let history_free = super::history_free(&self.policies, &self.history_free, &HISTORY_FREE);
        let mut sources = self.policies;
        for dir in &self.directories {
            sources.extend(cedar_files(dir)?);
        }
        let validator = schema.clone().map(Validator::new);
        let mut policies = HashMap::new();
        for (name, text) in sources {
            if policies.contains_key(&name) {
                return Err(PolicyError::Config(format!("Cedar policy `{name}` is defined twice")));
            }
            let set = PolicySet::from_str(&text)
                .map_err(|e| PolicyError::Compile { policy: name.clone(), message: parse_message(&e) })?;
            if let Some(validator) = &validator {
                let result = validator.validate(&set, ValidationMode::Strict);
                if !result.validation_passed() {
                    let errors: Vec<String> = result.validation_errors().map(ToString::to_string).collect();
                    return Err(PolicyError::Compile { policy: name, message: errors.join("; ") });
                }
            }
            policies.insert(name, set);
        }
        Ok(CedarEngine {
            name: self.name,
            policies,
            schema,
            entities,
            authorizer: Authorizer::new(),
            history_free,
        })
    }
}

fn parse_message(errors: &cedar_policy::ParseErrors) -> String {
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    all.join("; ")
}

/// `(file stem, text)` of every `*.cedar` file directly in `dir`, sorted.
fn cedar_files(dir: &Path) -> Result<Vec<(String, String)>, PolicyError> {
    let unreadable = |e: std::io::Error| PolicyError::Config(format!("cannot read {}: {e}", dir.display()));
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "cedar") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            return Err(PolicyError::Config(format!("{} has no UTF-8 name", path.display())));
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PolicyError::Config(format!("cannot read {}: {e}", path.display())))?;
        out.push((stem.to_owned(), text));
    }
    Ok(out)
}

fn uid(entity_type: &str, id: &str) -> Result<EntityUid, String> {
    let name =
        EntityTypeName::from_str(entity_type).map_err(|e| format!("entity type `{entity_type}`: {e}"))?;
    Ok(EntityUid::from_type_name_and_id(name, EntityId::new(id)))
}

/// The §6.1 document as a Cedar context: objects become records, arrays
/// sets, `null` members and elements are dropped (recursively). Built from
/// restricted expressions rather than Cedar's JSON format, which is several
/// times faster and never reads `__entity` / `__extn` escapes out of
/// caller-supplied attributes.
fn context(json: &Value) -> Result<Context, String> {
    let Value::Object(members) = json else {
        return Err("the context is not a JSON object".into());
    };
    let mut pairs = Vec::with_capacity(members.len());
    let mut path = String::new();
    for (key, value) in members {
        path.clear();
        path.push_str(key);
        if let Some(value) = restricted(value, &mut path)? {
            pairs.push((key.clone(), value));
        }
    }
    Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))
}

/// One JSON value as a Cedar value; `None` for `null`. `path` names the
/// value in error messages.
fn restricted(value: &Value, path: &mut String) -> Result<Option<RestrictedExpression>, String> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(n) => RestrictedExpression::new_long(n),
            None => {
                return Err(format!(
                    "context value `{path}` = {n} is not representable in Cedar (64-bit integers only)"
                ));
            }
        },
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.extend(restricted(item, path)?);
            }
            RestrictedExpression::new_set(out)
        }
        Value::Object(members) => {
            let mut out = Vec::with_capacity(members.len());
            for (key, value) in members {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                let converted = restricted(value, path)?;
                path.truncate(len);
                out.extend(converted.map(|v| (key.clone(), v)));
            }
            RestrictedExpression::new_record(out).map_err(|e| format!("context value `{path}`: {e}"))?
        }
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn context_conversion() {
        let json = serde_json::json!({"a": null, "b": {"c": null, "d": [1, null, {"e": null}]}, "f": "x"});
        assert!(context(&json).is_ok());
        let err = context(&serde_json::json!({"object": {"attributes": {"price": 1.5}}})).unwrap_err();
        assert!(err.contains("`object.attributes.price`"), "{err}");
        let err = context(&serde_json::json!({"n": u64::MAX})).unwrap_err();
        assert!(err.contains("`n`"), "{err}");
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CedarEngine>();
    }
}
