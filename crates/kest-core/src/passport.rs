//! The Passport: an append-only Merkle DAG of signed entries (SPEC §2.4).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::encoding::b64url_encode;
use crate::entry::{
    Classification, KestEntry, LABEL_PRINCIPAL, LABEL_SOURCE_TYPE, LABEL_TRUST_EVALUATOR,
    LABEL_TRUST_OVERRIDE, PolicyContext, ROOT_PARENT, Runtime, SCHEMA_VERSION,
};
use crate::error::PassportError;
use crate::hash::EntryHash;
use crate::jws::{JwsHeader, header_json, signing_input};
use crate::signer::{SignError, Signer};
use crate::trust::{MISSING_ROOT_ORIGIN_SCORE, MISSING_SELF_SCORE, TrustRules, accumulate_taints};

/// Size and shape limits applied before and during verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries in one passport (default 10 000).
    pub max_entries: usize,
    /// Largest JWS compact string in bytes (default 1 MiB).
    pub max_entry_bytes: usize,
    /// Largest serialized passport in bytes (default 64 MiB).
    pub max_passport_bytes: usize,
    /// Deepest array/object nesting in a header or payload (default 64).
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 10_000,
            max_entry_bytes: 1 << 20,
            max_passport_bytes: 64 << 20,
            max_json_depth: 64,
        }
    }
}

/// One signed entry whose structure is known to be valid: its JWS string,
/// hash, header and decoded payload. Obtained only from
/// [`crate::Verifier::verify`] or from [`sign_entry`].
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub(crate) jws: Arc<str>,
    pub(crate) hash: EntryHash,
    pub(crate) header: JwsHeader,
    pub(crate) payload: KestEntry,
    pub(crate) parents: Vec<EntryHash>,
}

impl Entry {
    /// The JWS compact string, as signed.
    pub fn jws(&self) -> &str {
        &self.jws
    }
    /// The JWS compact string as a shared handle: a reference count, not a
    /// copy, for consumers that keep it beyond the entry (span attributes,
    /// exporters).
    ///
    /// ```
    /// use kest_core::{Ed25519Signer, EntryDraft, Passport, TrustRules};
    /// let signer = Ed25519Signer::from_seed("spiffe://demo/a", [1u8; 32]);
    /// let mut p = Passport::new();
    /// p.record(&EntryDraft::new("step"), &signer, &TrustRules::default()).unwrap();
    /// let entry = &p.entries()[0];
    /// assert_eq!(&*entry.jws_shared(), entry.jws());
    /// ```
    pub fn jws_shared(&self) -> Arc<str> {
        Arc::clone(&self.jws)
    }
    /// SHA-256 of the JWS string: how children name this entry.
    pub fn hash(&self) -> EntryHash {
        self.hash
    }
    /// The protected header.
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }
    /// The decoded payload.
    pub fn payload(&self) -> &KestEntry {
        &self.payload
    }
    /// Parent hashes (empty for a root).
    pub fn parents(&self) -> &[EntryHash] {
        &self.parents
    }
    /// `labels.principal`.
    pub fn principal(&self) -> &str {
        self.payload.principal()
    }
    /// Whether this entry is a root.
    pub fn is_root(&self) -> bool {
        self.parents.is_empty()
    }
}

/// A freshly signed entry, ready for [`Passport::append`].
#[derive(Debug, Clone, PartialEq)]
pub struct SignedEntry(pub(crate) Entry);

impl SignedEntry {
    /// The entry.
    pub fn entry(&self) -> &Entry {
        &self.0
    }
}

/// Signs `entry` with `signer`: RFC 8785 payload, the reference's header,
/// EdDSA signature. The entry's `labels.principal` must be the signer's.
pub fn sign_entry(entry: KestEntry, signer: &dyn Signer) -> Result<SignedEntry, SignError> {
    if entry.principal() != signer.principal() {
        return Err(SignError(format!(
            "entry principal `{}` is not the signer's `{}`",
            entry.principal(),
            signer.principal()
        )));
    }
    if entry.trust_score > 100 {
        return Err(SignError(format!("trust_score {} is outside 0..=100", entry.trust_score)));
    }
    let parents = parse_parent_ids(&entry.parent_ids).map_err(SignError)?;
    let (payload, entry) = if entry.is_jcs_simple() {
        // Plain serde_json output is canonical here (members are declared
        // in RFC 8785 order), and nothing is rounded: the entry in memory is
        // exactly what is signed. Validate it as a verifier would.
        entry.validate().map_err(|e| SignError(format!("the entry would not verify: {e}")))?;
        let mut payload = Vec::with_capacity(1024);
        serde_json::to_writer(&mut payload, &entry).map_err(|e| SignError(e.to_string()))?;
        (payload, entry)
    } else {
        let payload = crate::json::canonicalize(&entry).map_err(|e| SignError(e.to_string()))?;
        // Keep exactly what is signed, read back the way a verifier reads
        // it: JCS writes every number as an IEEE double (integers beyond 2^53
        // in `metadata` are rounded, `5.0` becomes `5`), and an entry a
        // verifier would refuse (bad entry_id, hash, empty principal …) is
        // not signed.
        let entry = crate::json::parse_strict(&payload, Limits::default().max_json_depth)
            .map_err(|e| e.to_string())
            .and_then(|value| KestEntry::from_json(value).map_err(|e| e.to_string()))
            .map_err(|e| SignError(format!("the entry would not verify: {e}")))?;
        (payload, entry)
    };
    let alg = signer.algorithm();
    let mut jws = signing_input(&header_json(alg, signer.principal()), &payload);
    let signature = signer.sign(jws.as_bytes())?;
    // Both algorithms have 64-byte signatures (Ed25519 `R||S`, ES256 `r||s`
    // of RFC 7518 §3.4): a remote signer returning DER for ES256 is refused
    // here rather than producing an entry no verifier accepts.
    if matches!(alg, crate::keyset::ALG_EDDSA | crate::keyset::ALG_ES256)
        && signature.len() != crate::keyset::SIGNATURE_LEN
    {
        return Err(SignError(format!("signer returned {} bytes, not 64", signature.len())));
    }
    jws.push('.');
    jws.push_str(&b64url_encode(&signature));
    let hash = EntryHash::of(&jws);
    let header = JwsHeader { alg: alg.to_owned(), kid: Some(signer.principal().to_owned()) };
    Ok(SignedEntry(Entry { jws: jws.into(), hash, header, payload: entry, parents }))
}

pub(crate) fn parse_parent_ids(ids: &[String]) -> Result<Vec<EntryHash>, String> {
    if matches!(ids, [only] if only == ROOT_PARENT) {
        return Ok(Vec::new());
    }
    if ids.is_empty() {
        return Err("parent_ids is empty (a root uses [\"0\"])".into());
    }
    ids.iter().map(|id| id.parse::<EntryHash>().map_err(|e| e.to_string())).collect()
}

/// Which entries a new entry names as parents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Parents {
    /// All current tips (one for a linear flow; several make a fan-in; none
    /// makes a root).
    #[default]
    Tips,
    /// A new root, whatever the passport holds.
    Root,
    /// These entries (e.g. an earlier entry, to fan out).
    Explicit(Vec<EntryHash>),
}

/// Why an entry could not be prepared from a draft.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DraftError {
    /// `operation` is empty.
    #[error("operation must not be empty")]
    EmptyOperation,
    /// An explicit parent is not in the passport.
    #[error("parent `{0}` is not in the passport")]
    UnknownParent(EntryHash),
    /// An explicit parent list is empty or names a parent twice.
    #[error("explicit parents must be a non-empty list without repeats")]
    BadParentList,
    /// The origin is not registered.
    #[error("unknown origin `{0}`: register it in the origin map first")]
    UnknownOrigin(String),
    /// Taints can only be removed by a sanitizer or under a trust override.
    #[error("removing taints needs a trust override or the sanitizer classification")]
    RemovalNotAllowed,
    /// A caller label collides with one this crate writes.
    #[error("label `{0}` is reserved")]
    ReservedLabel(String),
}

/// Everything the caller decides about a new entry; trust, taints, parents,
/// ids and timestamps are computed by [`Passport::prepare`].
#[derive(Debug, Clone, Default)]
pub struct EntryDraft {
    /// Operation name (required, non-empty).
    pub operation: String,
    /// Classification (default `system`).
    pub classification: Classification,
    /// Origin of the data this step brings in (see [`crate::OriginMap`]).
    pub source_type: Option<String>,
    /// Taints added here.
    pub added_taints: Vec<String>,
    /// Taints removed here (needs `trust_override` or a sanitizer).
    pub removed_taints: Vec<String>,
    /// Sanitizer override: replaces the computed score (clamped to 0..=100).
    pub trust_override: Option<i64>,
    /// Which parents to link.
    pub parents: Parents,
    /// Extra labels (the reserved ones are refused).
    pub labels: BTreeMap<String, String>,
    /// Policies evaluated.
    pub policy_context: PolicyContext,
    /// Execution environment.
    pub environment: BTreeMap<String, String>,
    /// OpenTelemetry context.
    pub otel_context: BTreeMap<String, String>,
    /// Caller metadata (`null` when none).
    pub metadata: Value,
    /// Hex SHA-256 of the JCS of the inputs, or empty.
    pub input_hash: String,
    /// Hex SHA-256 of the JCS of the output, or empty.
    pub content_hash: String,
}

impl EntryDraft {
    /// A draft for `operation` with every other member at its default.
    pub fn new(operation: impl Into<String>) -> EntryDraft {
        EntryDraft { operation: operation.into(), ..EntryDraft::default() }
    }
}

const RESERVED_LABELS: [&str; 4] =
    [LABEL_PRINCIPAL, LABEL_SOURCE_TYPE, LABEL_TRUST_EVALUATOR, LABEL_TRUST_OVERRIDE];

/// Parses a serialized passport without verifying anything but its shape
/// (a JSON array of strings within the limits). It can be inspected and
/// printed; only [`crate::Verifier::verify`] turns it into a [`Passport`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnverifiedPassport {
    entries: Vec<String>,
}

impl UnverifiedPassport {
    /// Parses `["h.p.s", ...]` (any JSON whitespace), enforcing the size
    /// and count limits.
    pub fn from_json(text: &str, limits: &Limits) -> Result<UnverifiedPassport, PassportError> {
        if text.len() > limits.max_passport_bytes {
            return Err(PassportError::TooLarge { size: text.len(), limit: limits.max_passport_bytes });
        }
        let entries: Vec<String> =
            serde_json::from_str(text).map_err(|e| PassportError::Malformed(e.to_string()))?;
        if entries.len() > limits.max_entries {
            return Err(PassportError::TooManyEntries { count: entries.len(), limit: limits.max_entries });
        }
        Ok(UnverifiedPassport { entries })
    }

    /// Wraps JWS strings as they are.
    pub fn from_entries(entries: Vec<String>) -> UnverifiedPassport {
        UnverifiedPassport { entries }
    }

    /// The JWS strings.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `["h.p.s",...]`, compact.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.entries).unwrap_or_else(|_| "[]".into())
    }
}

/// A passport whose every entry is signature-checked and linked (from
/// [`crate::Verifier::verify`]) or signed here (via [`Passport::append`]).
///
/// ```
/// use kest_core::{Ed25519Signer, EntryDraft, KeySet, Passport, Signer, TrustRules, Verifier};
/// let signer = Ed25519Signer::from_seed("spiffe://demo/agent", [1u8; 32]);
/// let rules = TrustRules::default();
/// let mut passport = Passport::new();
/// let mut draft = EntryDraft::new("ingest");
/// draft.source_type = Some("user_input".into());
/// passport.record(&draft, &signer, &rules).unwrap();
/// passport.record(&EntryDraft::new("answer"), &signer, &rules).unwrap();
/// assert_eq!(passport.len(), 2);
/// assert_eq!(passport.tips().len(), 1);
///
/// let mut keys = KeySet::new();
/// keys.insert("spiffe://demo/agent", signer.public_key().unwrap()).unwrap();
/// let verified = Verifier::new(keys).semantic(true).verify_json(&passport.to_json()).unwrap();
/// assert_eq!(verified.entries()[1].payload().trust_score, 40);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Passport {
    entries: Vec<Arc<Entry>>,
    index: HashMap<EntryHash, usize>,
    tips: Vec<EntryHash>,
}

/// Why an entry could not be appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The entry is already in the passport.
    #[error("entry `{0}` is already in the passport")]
    Duplicate(EntryHash),
    /// A parent is not in the passport.
    #[error("parent `{0}` is not in the passport")]
    UnknownParent(EntryHash),
}

/// Why [`Passport::record`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The draft is invalid.
    #[error(transparent)]
    Draft(#[from] DraftError),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The signed entry does not fit.
    #[error(transparent)]
    Append(#[from] AppendError),
}

impl Passport {
    /// The empty passport.
    pub fn new() -> Passport {
        Passport::default()
    }

    /// Entries in topological order (every parent before its children).
    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry with this hash.
    pub fn get(&self, hash: &EntryHash) -> Option<&Arc<Entry>> {
        self.index.get(hash).and_then(|i| self.entries.get(*i))
    }

    /// Whether the entry is present.
    pub fn contains(&self, hash: &EntryHash) -> bool {
        self.index.contains_key(hash)
    }

    /// Hashes of the entries no other entry names as parent, in order of
    /// appearance.
    pub fn tips(&self) -> &[EntryHash] {
        &self.tips
    }

    /// The root entries.
    pub fn roots(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.entries.iter().filter(|e| e.is_root())
    }

    /// The parents of an entry (empty for a root or an unknown hash).
    pub fn parents_of(&self, hash: &EntryHash) -> Vec<&Arc<Entry>> {
        self.get(hash).map(|e| e.parents.iter().filter_map(|p| self.get(p)).collect()).unwrap_or_default()
    }

    /// The children of an entry.
    pub fn children_of(&self, hash: &EntryHash) -> Vec<&Arc<Entry>> {
        self.entries.iter().filter(|e| e.parents.contains(hash)).collect()
    }

    /// Appends a signed entry whose parents are all present. O(1) amortized
    /// apart from the tip update (O(parents × tips)).
    pub fn append(&mut self, signed: SignedEntry) -> Result<EntryHash, AppendError> {
        self.push(Arc::new(signed.0))
    }

    pub(crate) fn push(&mut self, entry: Arc<Entry>) -> Result<EntryHash, AppendError> {
        let hash = entry.hash;
        if self.index.contains_key(&hash) {
            return Err(AppendError::Duplicate(hash));
        }
        if let Some(missing) = entry.parents.iter().find(|p| !self.index.contains_key(p)) {
            return Err(AppendError::UnknownParent(*missing));
        }
        self.tips.retain(|t| !entry.parents.contains(t));
        self.tips.push(hash);
        self.index.insert(hash, self.entries.len());
        self.entries.push(entry);
        Ok(hash)
    }

    /// The union of passports: first occurrence of each entry kept, in
    /// order (SPEC §2.4).
    pub fn merge(&self, other: &Passport) -> Passport {
        let mut merged = self.clone();
        for entry in &other.entries {
            if !merged.contains(&entry.hash) {
                // Parents precede children in `other`, and every parent is in
                // `merged` already or was pushed just before.
                let _ = merged.push(Arc::clone(entry));
            }
        }
        merged
    }

    /// Serializes as a compact JSON array of JWS strings.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.entries.iter().map(|e| e.jws.len() + 3).sum::<usize>() + 2);
        out.push('[');
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // JWS compact strings are base64url and dots: nothing to escape.
            out.push('"');
            out.push_str(&e.jws);
            out.push('"');
        }
        out.push(']');
        out
    }

    /// The unverified form (for re-serialization or re-verification).
    pub fn to_unverified(&self) -> UnverifiedPassport {
        UnverifiedPassport::from_entries(self.entries.iter().map(|e| e.jws.to_string()).collect())
    }

    /// Computes the payload of the next entry from a draft: parents, trust
    /// (SPEC §4), accumulated taints, labels, a UUID v7 and the timestamp.
    pub fn prepare(
        &self,
        draft: &EntryDraft,
        principal: &str,
        rules: &TrustRules,
    ) -> Result<KestEntry, DraftError> {
        if draft.operation.is_empty() {
            return Err(DraftError::EmptyOperation);
        }
        let parents: Vec<&Arc<Entry>> = match &draft.parents {
            Parents::Tips => self.tips.iter().filter_map(|t| self.get(t)).collect(),
            Parents::Root => Vec::new(),
            Parents::Explicit(list) => {
                let mut seen = Vec::with_capacity(list.len());
                for hash in list {
                    if seen.contains(hash) {
                        return Err(DraftError::BadParentList);
                    }
                    seen.push(*hash);
                }
                if list.is_empty() {
                    return Err(DraftError::BadParentList);
                }
                list.iter()
                    .map(|h| self.get(h).ok_or(DraftError::UnknownParent(*h)))
                    .collect::<Result<_, _>>()?
            }
        };
        let parents: Vec<&Entry> = parents.into_iter().map(|p| p.as_ref()).collect();
        prepare_entry(&parents, draft, principal, rules)
    }
    /// Prepares, signs and appends one entry: the only way to extend a
    /// passport with a new step.
    pub fn record(
        &mut self,
        draft: &EntryDraft,
        signer: &dyn Signer,
        rules: &TrustRules,
    ) -> Result<EntryHash, RecordError> {
        let entry = self.prepare(draft, signer.principal(), rules)?;
        let signed = sign_entry(entry, signer)?;
        Ok(self.append(signed)?)
    }
}

/// Computes the payload of an entry whose parents are `parents` (empty for
/// a root): trust (SPEC §4), accumulated taints, labels, a UUID v7 and the
/// timestamp. [`Passport::prepare`] resolves the parents from a passport;
/// callers that snapshot parents themselves (the hook) use this directly.
pub fn prepare_entry(
    parents: &[&Entry],
    draft: &EntryDraft,
    principal: &str,
    rules: &TrustRules,
) -> Result<KestEntry, DraftError> {
    if draft.operation.is_empty() {
        return Err(DraftError::EmptyOperation);
    }
    if !draft.removed_taints.is_empty()
        && draft.trust_override.is_none()
        && draft.classification != Classification::Sanitizer
    {
        return Err(DraftError::RemovalNotAllowed);
    }
    if let Some(label) = draft.labels.keys().find(|k| RESERVED_LABELS.contains(&k.as_str())) {
        return Err(DraftError::ReservedLabel(label.clone()));
    }

    let is_root = parents.is_empty();
    let origin = match (&draft.source_type, is_root) {
        (Some(name), _) => Some(name.as_str()),
        (None, true) => rules.default_root_origin.as_deref(),
        (None, false) => None,
    };
    let origin_score = match origin {
        Some(name) => {
            Some(rules.origins.score(name).ok_or_else(|| DraftError::UnknownOrigin(name.to_owned()))?)
        }
        None => None,
    };
    let computed = if is_root {
        origin_score.unwrap_or(MISSING_ROOT_ORIGIN_SCORE)
    } else {
        let scores: Vec<u8> = parents.iter().map(|p| p.payload.trust_score).collect();
        rules.evaluator.calculate(origin_score.unwrap_or(MISSING_SELF_SCORE), &scores).min(100)
    };
    let override_score = draft.trust_override.map(|v| u8::try_from(v.clamp(0, 100)).unwrap_or(0));
    let trust_score = override_score.unwrap_or(computed);
    let taints = accumulate_taints(
        parents.iter().map(|p| p.payload.taints.as_slice()),
        &draft.added_taints,
        &draft.removed_taints,
    );

    let mut labels: BTreeMap<String, Value> =
        draft.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    labels.insert(LABEL_PRINCIPAL.into(), Value::String(principal.to_owned()));
    labels.insert(LABEL_TRUST_EVALUATOR.into(), Value::String(rules.evaluator.name().to_owned()));
    if let Some(name) = origin {
        labels.insert(LABEL_SOURCE_TYPE.into(), Value::String(name.to_owned()));
    }
    if let Some(score) = override_score {
        labels.insert(LABEL_TRUST_OVERRIDE.into(), Value::String(score.to_string()));
    }
    let parent_ids = if is_root {
        vec![ROOT_PARENT.to_owned()]
    } else {
        parents.iter().map(|p| p.hash.to_string()).collect()
    };
    Ok(KestEntry {
        schema_version: SCHEMA_VERSION.to_owned(),
        runtime: Runtime::default(),
        entry_id: uuid::Uuid::now_v7().hyphenated().to_string(),
        operation: draft.operation.clone(),
        classification: draft.classification,
        trust_score,
        parent_ids,
        added_taints: draft.added_taints.clone(),
        removed_taints: draft.removed_taints.clone(),
        taints,
        labels,
        policy_context: draft.policy_context.clone(),
        environment: draft.environment.clone(),
        otel_context: draft.otel_context.clone(),
        metadata: draft.metadata.clone(),
        input_hash: draft.input_hash.clone(),
        content_hash: draft.content_hash.clone(),
        timestamp_ms: now_ms(),
        extra: serde_json::Map::new(),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
