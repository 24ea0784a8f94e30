//! The derivation of SPEC §12: a pure function from the §6.1 context to the
//! facts each model's Cedar policy reads under `context.derived` (and that
//! the Rego modules compute themselves; a property test checks they agree).
//!
//! Conventions shared by every model:
//!
//! - a JSON `null` is the same as an absent member (Cedar drops nulls);
//! - a fact that cannot be derived (a missing or malformed attribute) is
//!   *absent* from `derived`, and every rule that needs it denies;
//! - levels are integers `0..=3` or the names `unclassified` <
//!   `confidential` < `secret` < `top_secret`, normalized to integers;
//! - categories are arrays of strings, normalized to sorted, de-duplicated
//!   arrays (sets in Cedar); an array with a non-string element is malformed;
//! - integers (amounts, limits, trust scores) are JSON integers that fit in
//!   an `i64` (Cedar has 64-bit integers only);
//! - the history is `lineage.ancestors` (an array; anything else counts as
//!   no history), and only ancestors that are JSON objects take part.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::Model;

/// The level names, lowest first (index = level).
pub(crate) const LEVEL_NAMES: [&str; 4] = ["unclassified", "confidential", "secret", "top_secret"];

/// Derives the facts of `model` from `context` (see the
/// [module documentation](self)). The result is the JSON object that goes
/// under `derived`; it never depends on an existing `derived` member.
pub(crate) fn derive(model: Model, context: &Value) -> Value {
    let mut out = Map::new();
    match model {
        Model::BellLapadula => bell_lapadula(context, &mut out),
        Model::Biba => {
            put(
                &mut out,
                "subject_integrity",
                level(path(context, &["subject", "attributes", "integrity"])).map(Value::from),
            );
            put(
                &mut out,
                "object_integrity",
                level(path(context, &["object", "attributes", "integrity"])).map(Value::from),
            );
        }
        Model::BrewerNash => brewer_nash(context, &mut out),
        Model::ClarkWilson => clark_wilson(context, &mut out),
        Model::GoguenMeseguer => goguen_meseguer(context, &mut out),
        Model::Financial => financial(context, &mut out),
        Model::Security => security(context, &mut out),
    }
    Value::Object(out)
}

fn bell_lapadula(context: &Value, out: &mut Map<String, Value>) {
    put(out, "subject_level", level(path(context, &["subject", "attributes", "clearance"])).map(Value::from));
    put(
        out,
        "object_level",
        level(path(context, &["object", "attributes", "classification"])).map(Value::from),
    );
    put(
        out,
        "subject_categories",
        categories(path(context, &["subject", "attributes", "categories"])).map(set),
    );
    put(
        out,
        "object_categories",
        categories(path(context, &["object", "attributes", "categories"])).map(set),
    );

    let mut valid = true;
    let mut max_level: i64 = -1;
    let mut read_categories = BTreeSet::new();
    for attributes in classified_reads(context) {
        match level(member(attributes, "classification")) {
            Some(l) => max_level = max_level.max(l),
            None => valid = false,
        }
        match member(attributes, "categories") {
            None => {}
            Some(c) => match categories(Some(c)) {
                Some(c) => read_categories.extend(c),
                None => valid = false,
            },
        }
    }
    out.insert("max_read_level".into(), Value::from(max_level));
    out.insert("read_categories".into(), set(read_categories));
    out.insert("read_history_valid".into(), Value::Bool(valid));
}

/// The `resource_attributes` of every ancestor with `action == "read"` whose
/// `resource_attributes` carry a (non-null) `classification`.
fn classified_reads(context: &Value) -> impl Iterator<Item = &Map<String, Value>> {
    ancestors(context).filter_map(|a| {
        let attributes = a.get("resource_attributes")?.as_object()?;
        (a.get("action") == Some(&Value::from("read")) && member(attributes, "classification").is_some())
            .then_some(attributes)
    })
}

fn brewer_nash(context: &Value, out: &mut Map<String, Value>) {
    let user = user(context);
    let dataset = string(path(context, &["object", "attributes", "dataset"]));
    let class = string(path(context, &["object", "attributes", "conflict_class"]));
    let violated = match (user, dataset, class) {
        (Some(user), Some(dataset), Some(class)) => ancestors(context).any(|a| {
            let attributes = a.get("resource_attributes").and_then(Value::as_object);
            a.get("user").and_then(Value::as_str) == Some(user)
                && attributes.and_then(|r| r.get("conflict_class")).and_then(Value::as_str) == Some(class)
                && attributes
                    .and_then(|r| member(r, "dataset"))
                    .is_some_and(|other| other.as_str() != Some(dataset))
        }),
        _ => false,
    };
    put(out, "user", user.map(Value::from));
    put(out, "dataset", dataset.map(Value::from));
    put(out, "conflict_class", class.map(Value::from));
    out.insert("other_dataset_in_class".into(), Value::Bool(violated));
}

fn clark_wilson(context: &Value, out: &mut Map<String, Value>) {
    let user = user(context);
    put(out, "cdi", string(path(context, &["object", "attributes", "cdi"])).map(Value::from));
    put(out, "certified_cdis", strings(path(context, &["attributes", "certified_cdis"])).map(set));
    put(out, "operation", string(path(context, &["environment", "operation"])).map(Value::from));
    put(out, "authorized_tps", strings(path(context, &["subject", "attributes", "authorized_tps"])).map(set));
    put(out, "user", user.map(Value::from));
    if let Some(separate) = path(context, &["attributes", "separate_from"]).and_then(Value::as_array) {
        let violated = user.is_some_and(|user| {
            ancestors(context).any(|a| {
                a.get("user").and_then(Value::as_str) == Some(user)
                    && a.get("operation").is_some_and(|op| separate.contains(op))
            })
        });
        out.insert("separation_violated".into(), Value::Bool(violated));
    }
}

fn goguen_meseguer(context: &Value, out: &mut Map<String, Value>) {
    let domain = string(path(context, &["object", "attributes", "domain"]));
    let influences = match path(context, &["object", "attributes", "may_be_influenced_by"]) {
        None => Some(BTreeSet::new()),
        Some(Value::Array(items)) => {
            Some(items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        }
        Some(_) => None,
    };
    let taint_domains: BTreeSet<String> = path(context, &["subject", "taints"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str()?.strip_prefix("domain:"))
        .map(str::to_owned)
        .collect();
    put(out, "domain", domain.map(Value::from));
    if let (Some(domain), Some(mut allowed)) = (domain, influences) {
        allowed.insert(domain.to_owned());
        out.insert("allowed_domains".into(), set(allowed));
    }
    out.insert("taint_domains".into(), set(taint_domains));
}

fn financial(context: &Value, out: &mut Map<String, Value>) {
    let user = user(context);
    let id = string(path(context, &["object", "id"]));
    let approved = match (user, id) {
        (Some(user), Some(id)) => ancestors(context).any(|a| {
            let approver = a.get("user").and_then(Value::as_str);
            a.get("action") == Some(&Value::from("approve"))
                && a.get("resource_id").and_then(Value::as_str) == Some(id)
                && approver.is_some_and(|u| !u.is_empty() && u != user)
        }),
        _ => false,
    };
    put(out, "user", user.map(Value::from));
    put(out, "risk_score", string(path(context, &["attributes", "risk_score"])).map(Value::from));
    let mfa = path(context, &["attributes", "mfa_present"]) == Some(&Value::Bool(true));
    out.insert("mfa_present".into(), Value::Bool(mfa));
    put(out, "amount", integer(path(context, &["attributes", "amount"])).map(Value::from));
    put(out, "limit", integer(path(context, &["subject", "attributes", "limit"])).map(Value::from));
    out.insert("approved_by_other_user".into(), Value::Bool(approved));
}

fn security(context: &Value, out: &mut Map<String, Value>) {
    put(out, "subject_level", level(path(context, &["subject", "attributes", "clearance"])).map(Value::from));
    put(
        out,
        "object_level",
        level(path(context, &["object", "attributes", "classification"])).map(Value::from),
    );
    let suspended =
        !matches!(path(context, &["subject", "attributes", "suspended"]), None | Some(Value::Bool(false)));
    out.insert("suspended".into(), Value::Bool(suspended));
    put(out, "trust_score", integer(path(context, &["subject", "trust_score"])).map(Value::from));
    let min_trust = match path(context, &["object", "attributes", "min_trust"]) {
        None => Some(50),
        Some(m) => integer(Some(m)),
    };
    put(out, "min_trust", min_trust.map(Value::from));
}

// ------------------------------------------------------------------ helpers

/// The value at `path` (object members only); `None` when absent or null.
fn path<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut current = value;
    for key in path {
        current = current.as_object()?.get(*key)?;
    }
    (!current.is_null()).then_some(current)
}

/// A member of an object; `None` when absent or null.
fn member<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}

/// The ancestors that are JSON objects (`lineage.ancestors`, an array).
fn ancestors(context: &Value) -> impl Iterator<Item = &Map<String, Value>> {
    path(context, &["lineage", "ancestors"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// `subject.user` when it is a non-empty string.
fn user(context: &Value) -> Option<&str> {
    string(path(context, &["subject", "user"])).filter(|u| !u.is_empty())
}

fn string(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str)
}

/// A JSON integer that fits in an `i64`.
fn integer(value: Option<&Value>) -> Option<i64> {
    value.and_then(Value::as_i64)
}

/// A level: an integer `0..=3` or one of [`LEVEL_NAMES`], as an integer.
pub(crate) fn level(value: Option<&Value>) -> Option<i64> {
    let level = match value? {
        Value::Number(n) => n.as_i64().filter(|l| (0..=3).contains(l))?,
        Value::String(s) => i64::try_from(LEVEL_NAMES.iter().position(|name| name == s)?).ok()?,
        _ => return None,
    };
    Some(level)
}

/// A category set: an array whose elements are all strings.
fn categories(value: Option<&Value>) -> Option<BTreeSet<String>> {
    value?.as_array()?.iter().map(|c| c.as_str().map(str::to_owned)).collect()
}

/// The string elements of an array (other elements ignored).
fn strings(value: Option<&Value>) -> Option<BTreeSet<String>> {
    Some(value?.as_array()?.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

fn set(items: BTreeSet<String>) -> Value {
    Value::Array(items.into_iter().map(Value::String).collect())
}

fn put(out: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        out.insert(key.to_owned(), value);
    }
}
