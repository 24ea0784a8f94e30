//! The `KestEntry` payload (SPEC §2.1): model, strict decoding, validation.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::encoding::parse_hex32_lower;
use crate::error::FieldError;

/// The only payload schema version this crate reads and writes.
pub const SCHEMA_VERSION: &str = "0.3.0";
/// The `runtime.name` this implementation writes.
pub const RUNTIME_NAME: &str = "kest-rs";
/// The `runtime.version` this implementation writes.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The parent id of a root entry.
pub const ROOT_PARENT: &str = "0";

/// Label holding the signer's workload id (required).
pub const LABEL_PRINCIPAL: &str = "principal";
/// Label naming the origin used to compute the trust score.
pub const LABEL_SOURCE_TYPE: &str = "kest.source_type";
/// Label naming the trust evaluator used.
pub const LABEL_TRUST_EVALUATOR: &str = "kest.trust_evaluator";
/// Label recording a sanitizer's trust override (decimal).
pub const LABEL_TRUST_OVERRIDE: &str = "kest.trust_override";
/// Label carrying the OpenTelemetry trace id.
pub const LABEL_TRACE_ID: &str = "trace_id";
/// Label carrying `{"user","agent","task"}` as a JSON string.
pub const LABEL_IDENTITY: &str = "kest.identity";
/// Label carrying resource attributes as a JSON string.
pub const LABEL_RESOURCE_ATTR: &str = "kest.resource_attr";

/// What kind of node an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Classification {
    /// An ordinary processing step (the default).
    #[default]
    System,
    /// A data node.
    Data,
    /// A sanitizer: may remove taints and restore trust.
    Sanitizer,
    /// A critic / reviewer step.
    Critic,
    /// A snapshot of state.
    Snapshot,
}

impl Classification {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::System => "system",
            Classification::Data => "data",
            Classification::Sanitizer => "sanitizer",
            Classification::Critic => "critic",
            Classification::Snapshot => "snapshot",
        }
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Classification {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" => Ok(Classification::System),
            "data" => Ok(Classification::Data),
            "sanitizer" => Ok(Classification::Sanitizer),
            "critic" => Ok(Classification::Critic),
            "snapshot" => Ok(Classification::Snapshot),
            other => Err(format!("`{other}` is not one of system, data, sanitizer, critic, snapshot")),
        }
    }
}

/// `runtime` member: which implementation wrote the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Runtime {
    /// Implementation name (`kest-rs`, `kest-python`).
    pub name: String,
    /// Implementation version.
    pub version: String,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime { name: RUNTIME_NAME.to_owned(), version: RUNTIME_VERSION.to_owned() }
    }
}

/// A policy skipped by an approved deviation, as recorded in the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deviation {
    /// Who approved it.
    pub approver: Option<String>,
    /// The skipped policy.
    pub policy: String,
    /// Why it was approved.
    pub reason: Option<String>,
    /// Its tier (`enterprise`, `platform`, `application`, `function`).
    pub tier: String,
    /// Members written by other implementations, kept as signed.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `policy_context`: the policies actually evaluated, by tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyContext {
    /// Application tier.
    pub app_policies: Vec<String>,
    /// Active deviations.
    pub deviations: Vec<Deviation>,
    /// Enterprise tier.
    pub enterprise_policies: Vec<String>,
    /// Function tier.
    pub function_policies: Vec<String>,
    /// Platform tier.
    pub platform_policies: Vec<String>,
    /// Members written by other implementations, kept as signed.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The signed payload of one passport entry (SPEC §2.1).
///
/// Serializing it with [`crate::json::canonicalize`] gives the exact payload
/// bytes. Members are declared in RFC 8785 order, so for an entry whose
/// [`KestEntry::is_jcs_simple`] holds, plain `serde_json` output is already
/// canonical. Decode untrusted input with [`KestEntry::from_json`], which
/// validates every member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KestEntry {
    /// Taints declared at this node.
    pub added_taints: Vec<String>,
    /// Node classification.
    pub classification: Classification,
    /// `""` or hex SHA-256 of the JCS of the output.
    pub content_hash: String,
    /// UUID v7 (lowercase hyphenated) unique to this entry.
    pub entry_id: String,
    /// Execution environment.
    pub environment: BTreeMap<String, String>,
    /// `""` or hex SHA-256 of the JCS of the inputs.
    pub input_hash: String,
    /// Labels; `principal` is required. Values written by this crate are
    /// strings; other implementations may write other JSON values.
    pub labels: BTreeMap<String, Value>,
    /// Caller metadata, `null` when none.
    pub metadata: Value,
    /// The operation (function name or caller label).
    pub operation: String,
    /// OpenTelemetry context.
    pub otel_context: BTreeMap<String, String>,
    /// `["0"]` at a root, else hashes of the parents' JWS strings.
    pub parent_ids: Vec<String>,
    /// Policies evaluated before the operation ran.
    pub policy_context: PolicyContext,
    /// Taints removed at this node.
    pub removed_taints: Vec<String>,
    /// Writer implementation.
    pub runtime: Runtime,
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// Accumulated taints.
    pub taints: Vec<String>,
    /// Creation time, Unix epoch milliseconds.
    pub timestamp_ms: u64,
    /// Trust score 0..=100.
    pub trust_score: u8,
    /// Members beyond the ones above, tolerated on input and kept as signed.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl KestEntry {
    /// The signer's workload id (`labels.principal`).
    pub fn principal(&self) -> &str {
        match self.labels.get(LABEL_PRINCIPAL) {
            Some(Value::String(p)) => p,
            // from_json guarantees a string; a hand-built entry without one
            // has no principal.
            _ => "",
        }
    }

    /// A string label, if present and a string.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).and_then(Value::as_str)
    }

    /// Whether this entry is a root (`parent_ids == ["0"]`).
    pub fn is_root(&self) -> bool {
        matches!(self.parent_ids.as_slice(), [only] if only == ROOT_PARENT)
    }

    /// Whether plain `serde_json` output of this entry is its RFC 8785 form:
    /// no members beyond SPEC §2.1 (flattened extras would be written out of
    /// order), every object key free of characters at or above U+E000 (where
    /// UTF-8 and UTF-16 orders can differ) and every number an integer of
    /// magnitude at most 2^53 (JCS writes numbers as IEEE doubles).
    pub fn is_jcs_simple(&self) -> bool {
        let keys_ok = |m: &BTreeMap<String, String>| m.keys().all(|k| crate::json::key_is_simple(k));
        self.extra.is_empty()
            && self.policy_context.extra.is_empty()
            && self.policy_context.deviations.iter().all(|d| d.extra.is_empty())
            && keys_ok(&self.environment)
            && keys_ok(&self.otel_context)
            && self.labels.iter().all(|(k, v)| crate::json::key_is_simple(k) && crate::json::is_jcs_simple(v))
            && crate::json::is_jcs_simple(&self.metadata)
    }

    /// Checks the rules [`KestEntry::from_json`] applies to decoded input,
    /// on an entry built in memory (so nothing a verifier refuses is signed).
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(invalid("schema_version", format!("unsupported version `{}`", self.schema_version)));
        }
        check_uuid(&self.entry_id)?;
        if self.operation.is_empty() {
            return Err(invalid("operation", "must not be empty".into()));
        }
        if self.trust_score > 100 {
            return Err(invalid("trust_score", format!("{} is outside 0..=100", self.trust_score)));
        }
        for (name, hash) in [("input_hash", &self.input_hash), ("content_hash", &self.content_hash)] {
            if !hash.is_empty() && parse_hex32_lower(hash).is_none() {
                return Err(invalid(name, "must be empty or 64 lowercase hex digits".into()));
            }
        }
        check_principal(&self.labels)
    }

    /// Decodes and validates a payload object.
    ///
    /// Refuses missing members, wrong types, unknown classifications,
    /// out-of-range trust scores, non-UUID entry ids, malformed hashes and a
    /// missing or non-string `labels.principal`. Members beyond SPEC §2.1
    /// are kept in [`KestEntry::extra`].
    pub fn from_json(value: Value) -> Result<KestEntry, FieldError> {
        let Value::Object(mut obj) = value else {
            return Err(FieldError::WrongType { name: "payload".into(), expected: "an object" });
        };
        let mut take = |name: &str| obj.remove(name).ok_or_else(|| FieldError::Missing(name.into()));

        let schema_version = string("schema_version", take("schema_version")?)?;
        if schema_version != SCHEMA_VERSION {
            return Err(invalid("schema_version", format!("unsupported version `{schema_version}`")));
        }
        let runtime = runtime(take("runtime")?)?;
        let entry_id = string("entry_id", take("entry_id")?)?;
        check_uuid(&entry_id)?;
        let operation = string("operation", take("operation")?)?;
        if operation.is_empty() {
            return Err(invalid("operation", "must not be empty".into()));
        }
        let classification = string("classification", take("classification")?)?
            .parse()
            .map_err(|reason| invalid("classification", reason))?;
        let trust_score = trust(take("trust_score")?)?;
        let parent_ids = strings("parent_ids", take("parent_ids")?)?;
        let added_taints = strings("added_taints", take("added_taints")?)?;
        let removed_taints = strings("removed_taints", take("removed_taints")?)?;
        let taints = strings("taints", take("taints")?)?;
        let labels = labels(take("labels")?)?;
        let policy_context = policy_context(take("policy_context")?)?;
        let environment = string_map("environment", take("environment")?)?;
        let otel_context = string_map("otel_context", take("otel_context")?)?;
        let metadata = take("metadata")?;
        let input_hash = digest_or_empty("input_hash", take("input_hash")?)?;
        let content_hash = digest_or_empty("content_hash", take("content_hash")?)?;
        let timestamp_ms = take("timestamp_ms")?.as_u64().ok_or(FieldError::WrongType {
            name: "timestamp_ms".into(),
            expected: "a non-negative integer",
        })?;
        Ok(KestEntry {
            schema_version,
            runtime,
            entry_id,
            operation,
            classification,
            trust_score,
            parent_ids,
            added_taints,
            removed_taints,
            taints,
            labels,
            policy_context,
            environment,
            otel_context,
            metadata,
            input_hash,
            content_hash,
            timestamp_ms,
            extra: obj,
        })
    }
}

fn invalid(name: &str, reason: String) -> FieldError {
    FieldError::Invalid { name: name.into(), reason }
}

fn string(name: &str, value: Value) -> Result<String, FieldError> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(FieldError::WrongType { name: name.into(), expected: "a string" }),
    }
}

fn opt_string(name: &str, value: Option<Value>) -> Result<Option<String>, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => string(name, v).map(Some),
    }
}

fn strings(name: &str, value: Value) -> Result<Vec<String>, FieldError> {
    let Value::Array(items) = value else {
        return Err(FieldError::WrongType { name: name.into(), expected: "an array of strings" });
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => Ok(s),
            _ => Err(FieldError::WrongType { name: name.into(), expected: "an array of strings" }),
        })
        .collect()
}

fn object(name: &str, value: Value) -> Result<Map<String, Value>, FieldError> {
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(FieldError::WrongType { name: name.into(), expected: "an object" }),
    }
}

fn string_map(name: &str, value: Value) -> Result<BTreeMap<String, String>, FieldError> {
    object(name, value)?
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(v) => Ok((k, v)),
            _ => Err(FieldError::WrongType { name: format!("{name}.{k}"), expected: "a string" }),
        })
        .collect()
}

fn runtime(value: Value) -> Result<Runtime, FieldError> {
    let mut obj = object("runtime", value)?;
    let name = string(
        "runtime.name",
        obj.remove("name").ok_or_else(|| FieldError::Missing("runtime.name".into()))?,
    )?;
    let version = string(
        "runtime.version",
        obj.remove("version").ok_or_else(|| FieldError::Missing("runtime.version".into()))?,
    )?;
    Ok(Runtime { name, version })
}

fn trust(value: Value) -> Result<u8, FieldError> {
    let expected = "an integer from 0 to 100";
    let n = value.as_u64().ok_or(FieldError::WrongType { name: "trust_score".into(), expected })?;
    u8::try_from(n)
        .ok()
        .filter(|n| *n <= 100)
        .ok_or_else(|| invalid("trust_score", format!("{n} is outside 0..=100")))
}

/// A UUID in its lowercase hyphenated form (what `Uuid::try_parse` accepts
/// and writes back unchanged): 8-4-4-4-12 lowercase hex digits.
fn check_uuid(id: &str) -> Result<(), FieldError> {
    let ok = id.len() == 36
        && id.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => matches!(c, b'0'..=b'9' | b'a'..=b'f'),
        });
    if ok { Ok(()) } else { Err(invalid("entry_id", format!("`{id}` is not a lowercase hyphenated UUID"))) }
}

fn digest_or_empty(name: &str, value: Value) -> Result<String, FieldError> {
    let s = string(name, value)?;
    if s.is_empty() || parse_hex32_lower(&s).is_some() {
        Ok(s)
    } else {
        Err(invalid(name, "must be empty or 64 lowercase hex digits".into()))
    }
}

fn labels(value: Value) -> Result<BTreeMap<String, Value>, FieldError> {
    let labels: BTreeMap<String, Value> = object("labels", value)?.into_iter().collect();
    check_principal(&labels)?;
    Ok(labels)
}

fn check_principal(labels: &BTreeMap<String, Value>) -> Result<(), FieldError> {
    match labels.get(LABEL_PRINCIPAL) {
        None => Err(FieldError::Missing("labels.principal".into())),
        Some(Value::String(p)) if p.is_empty() => {
            Err(invalid("labels.principal", "must not be empty".into()))
        }
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(FieldError::WrongType { name: "labels.principal".into(), expected: "a string" }),
    }
}

fn policy_context(value: Value) -> Result<PolicyContext, FieldError> {
    let mut obj = object("policy_context", value)?;
    // Paths are spelled out only for an error.
    let mut list = |name: &'static str| {
        obj.remove(name).ok_or_else(|| FieldError::Missing(format!("policy_context.{name}")))
    };
    let enterprise_policies = strings("policy_context.enterprise_policies", list("enterprise_policies")?)?;
    let platform_policies = strings("policy_context.platform_policies", list("platform_policies")?)?;
    let app_policies = strings("policy_context.app_policies", list("app_policies")?)?;
    let function_policies = strings("policy_context.function_policies", list("function_policies")?)?;
    let Value::Array(items) = list("deviations")? else {
        return Err(FieldError::WrongType {
            name: "policy_context.deviations".into(),
            expected: "an array of objects",
        });
    };
    let deviations = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| deviation(&format!("policy_context.deviations[{i}]"), item))
        .collect::<Result<_, _>>()?;
    Ok(PolicyContext {
        enterprise_policies,
        platform_policies,
        app_policies,
        function_policies,
        deviations,
        extra: obj,
    })
}

fn deviation(path: &str, value: Value) -> Result<Deviation, FieldError> {
    let mut obj = object(path, value)?;
    let mut req = |name: &str| {
        let member = format!("{path}.{name}");
        let v = obj.remove(name).ok_or_else(|| FieldError::Missing(member.clone()))?;
        string(&member, v)
    };
    let policy = req("policy")?;
    let tier = req("tier")?;
    let reason = opt_string(&format!("{path}.reason"), obj.remove("reason"))?;
    let approver = opt_string(&format!("{path}.approver"), obj.remove("approver"))?;
    Ok(Deviation { policy, tier, reason, approver, extra: obj })
}
