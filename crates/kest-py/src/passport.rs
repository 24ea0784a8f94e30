//! Passports, the verifier and entry signing. Parsing, hashing,
//! canonicalization, signing and verification all run in Rust with the GIL
//! released.

use std::collections::BTreeMap;
use std::sync::Arc;

use kest_core::{
    Classification, EntryDraft, EntryHash, KeySet, Limits, OriginMap, Parents, Passport as RsPassport,
    TrustRules, UnverifiedPassport, Verifier,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use serde_json::Value;

use crate::convert::{to_json, to_py};
use crate::errors;
use crate::identity::Identity;

/// What a [`Passport`] holds: a verified DAG (from a flow, a verifier or
/// signing) or a parsed but unverified list of JWS strings.
#[derive(Debug, Clone)]
pub(crate) enum Held {
    /// Verified (or signed here): can feed decisions.
    Verified(RsPassport),
    /// Only parsed: inspect, serialize, verify.
    Unverified(UnverifiedPassport),
}

/// An ordered list of signed entries (JWS compact strings) forming a Merkle
/// DAG. A passport parsed from JSON is *unverified* until
/// `PassportVerifier.verify` returns a verified one; passports from a flow
/// or from `record` are verified.
#[pyclass(frozen, module = "kest_rs")]
#[derive(Debug, Clone)]
pub struct Passport {
    pub(crate) held: Held,
}

impl Passport {
    pub(crate) fn verified(p: RsPassport) -> Passport {
        Passport { held: Held::Verified(p) }
    }

    fn jws_list(&self) -> Vec<String> {
        match &self.held {
            Held::Verified(p) => p.entries().iter().map(|e| e.jws().to_owned()).collect(),
            Held::Unverified(u) => u.entries().to_vec(),
        }
    }

    pub(crate) fn unverified(&self) -> UnverifiedPassport {
        match &self.held {
            Held::Verified(p) => p.to_unverified(),
            Held::Unverified(u) => u.clone(),
        }
    }

    fn payload_values(&self) -> PyResult<Vec<Value>> {
        match &self.held {
            Held::Verified(p) => p
                .entries()
                .iter()
                .map(|e| serde_json::to_value(e.payload()).map_err(|e| errors::config(e.to_string())))
                .collect(),
            Held::Unverified(u) => u
                .entries()
                .iter()
                .enumerate()
                .map(|(i, jws)| {
                    kest_core::jws::decode_compact(jws, Limits::default().max_json_depth)
                        .map(|d| d.payload)
                        .map_err(|source| {
                            errors::from_verify(&kest_core::VerifyError::Entry { index: i, source })
                        })
                })
                .collect(),
        }
    }
}

#[pymethods]
impl Passport {
    /// A passport from JWS strings (unverified); empty by default.
    #[new]
    #[pyo3(signature = (entries = None))]
    fn new(entries: Option<Vec<String>>) -> Passport {
        Passport { held: Held::Unverified(UnverifiedPassport::from_entries(entries.unwrap_or_default())) }
    }

    /// Parses a serialized passport (a JSON array of strings) under the
    /// default limits. Anything else raises `VerificationError` — never an
    /// empty passport (the reference returns one).
    #[staticmethod]
    fn from_json(py: Python<'_>, text: &str) -> PyResult<Passport> {
        let parsed = py.detach(|| UnverifiedPassport::from_json(text, &Limits::default()));
        parsed
            .map(|u| Passport { held: Held::Unverified(u) })
            .map_err(|e| errors::from_verify(&kest_core::VerifyError::Passport(e)))
    }

    /// Reference name of [`Passport::from_json`].
    #[staticmethod]
    fn deserialize(py: Python<'_>, text: &str) -> PyResult<Passport> {
        Passport::from_json(py, text)
    }

    /// The passport as a JSON array of JWS strings.
    fn to_json(&self, py: Python<'_>) -> String {
        py.detach(|| match &self.held {
            Held::Verified(p) => p.to_json(),
            Held::Unverified(u) => u.to_json(),
        })
    }

    /// Reference name of [`Passport::to_json`].
    fn serialize(&self, py: Python<'_>) -> String {
        self.to_json(py)
    }

    /// The JWS compact strings, in order.
    #[getter]
    fn entries(&self) -> Vec<String> {
        self.jws_list()
    }

    /// Whether this passport was verified (or recorded) in Rust.
    #[getter]
    fn is_verified(&self) -> bool {
        matches!(self.held, Held::Verified(_))
    }

    /// The decoded payloads (dicts), in order. Unverified passports are
    /// decoded without checking signatures.
    fn payloads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let values = py.detach(|| self.payload_values())?;
        let list = PyList::empty(py);
        for v in &values {
            list.append(to_py(py, v)?)?;
        }
        Ok(list)
    }

    /// Hex SHA-256 of every entry's JWS, in order.
    fn hashes(&self, py: Python<'_>) -> Vec<String> {
        let list = self.jws_list();
        py.detach(|| list.iter().map(|j| EntryHash::of(j).to_string()).collect())
    }

    /// The tips: hashes of the entries no other entry names as a parent.
    fn tips(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        match &self.held {
            Held::Verified(p) => Ok(p.tips().iter().map(EntryHash::to_string).collect()),
            Held::Unverified(u) => {
                let payloads = py.detach(|| self.payload_values())?;
                let hashes: Vec<String> = u.entries().iter().map(|j| EntryHash::of(j).to_string()).collect();
                let named: Vec<&str> = payloads
                    .iter()
                    .filter_map(|p| p.get("parent_ids").and_then(Value::as_array))
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                Ok(hashes.into_iter().filter(|h| !named.contains(&h.as_str())).collect())
            }
        }
    }

    /// Appends a new signed entry built on this (verified) passport's tips
    /// and returns the extended passport; this one is unchanged.
    #[pyo3(signature = (identity, operation, *, source_type = None, added_taints = Vec::new(), removed_taints = Vec::new(), trust_override = None, classification = "system", labels = None, metadata = None, root = false))]
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        py: Python<'_>,
        identity: &Bound<'_, Identity>,
        operation: String,
        source_type: Option<String>,
        added_taints: Vec<String>,
        removed_taints: Vec<String>,
        trust_override: Option<i64>,
        classification: &str,
        labels: Option<BTreeMap<String, String>>,
        metadata: Option<&Bound<'_, PyAny>>,
        root: bool,
    ) -> PyResult<Passport> {
        let Held::Verified(passport) = &self.held else {
            return Err(errors::config("record needs a verified passport: verify it first"));
        };
        let mut draft =
            draft(operation, source_type, added_taints, removed_taints, trust_override, classification)?;
        draft.labels = labels.unwrap_or_default();
        draft.metadata = metadata.map(to_json).transpose()?.unwrap_or(Value::Null);
        if root {
            draft.parents = Parents::Root;
        }
        let signer = Arc::clone(&identity.get().inner);
        let mut next = passport.clone();
        py.detach(|| next.record(&draft, signer.as_ref(), &TrustRules::default()))
            .map_err(|e| errors::kest_err(errors::Family::Other, "record", e.to_string(), &[]))?;
        Ok(Passport::verified(next))
    }

    /// Merges passports (first occurrence of each entry kept, in order).
    /// Both must be verified.
    fn merge(&self, other: &Passport) -> PyResult<Passport> {
        match (&self.held, &other.held) {
            (Held::Verified(a), Held::Verified(b)) => Ok(Passport::verified(a.merge(b))),
            _ => Err(errors::config("merge needs verified passports")),
        }
    }

    fn __len__(&self) -> usize {
        match &self.held {
            Held::Verified(p) => p.len(),
            Held::Unverified(u) => u.len(),
        }
    }

    /// A passport object is always true, even when empty (a verified empty
    /// passport is a successful verification).
    fn __bool__(&self) -> bool {
        true
    }

    /// Number of entries (method form).
    fn len(&self) -> usize {
        self.__len__()
    }

    fn __repr__(&self) -> String {
        let state = if self.is_verified() { "verified" } else { "unverified" };
        format!("<Passport {} entries, {state}>", self.__len__())
    }
}

/// Builds a draft from the hook-style parameters.
pub(crate) fn draft(
    operation: String,
    source_type: Option<String>,
    added_taints: Vec<String>,
    removed_taints: Vec<String>,
    trust_override: Option<i64>,
    classification: &str,
) -> PyResult<EntryDraft> {
    let mut d = EntryDraft::new(operation);
    d.source_type = source_type;
    d.added_taints = added_taints;
    d.removed_taints = removed_taints;
    d.trust_override = trust_override;
    d.classification = parse_classification(classification)?;
    Ok(d)
}

/// Parses a classification name.
pub(crate) fn parse_classification(name: &str) -> PyResult<Classification> {
    name.parse::<Classification>().map_err(|_| {
        errors::config(format!("unknown classification `{name}` (system, data, sanitizer, critic, snapshot)"))
    })
}

/// Signs one entry with `identity` and returns its JWS compact string. Its
/// parents are the tips of `parents` (a verified passport), else it is a
/// root. Canonicalization and signing run in Rust; the key never leaves it.
#[pyfunction]
#[pyo3(signature = (identity, operation, *, parents = None, source_type = None, added_taints = Vec::new(), removed_taints = Vec::new(), trust_override = None, classification = "system", labels = None, metadata = None))]
#[allow(clippy::too_many_arguments)]
pub fn sign_entry(
    py: Python<'_>,
    identity: &Bound<'_, Identity>,
    operation: String,
    parents: Option<&Passport>,
    source_type: Option<String>,
    added_taints: Vec<String>,
    removed_taints: Vec<String>,
    trust_override: Option<i64>,
    classification: &str,
    labels: Option<BTreeMap<String, String>>,
    metadata: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let base = match parents.map(|p| &p.held) {
        None => RsPassport::new(),
        Some(Held::Verified(p)) => p.clone(),
        Some(Held::Unverified(_)) => return Err(errors::config("parents must be a verified passport")),
    };
    let mut d = draft(operation, source_type, added_taints, removed_taints, trust_override, classification)?;
    d.labels = labels.unwrap_or_default();
    d.metadata = metadata.map(to_json).transpose()?.unwrap_or(Value::Null);
    let signer = Arc::clone(&identity.get().inner);
    py.detach(|| {
        let entry = base.prepare(&d, signer.principal(), &TrustRules::default())?;
        let signed = kest_core::sign_entry(entry, signer.as_ref())?;
        Ok::<_, kest::KestError>(signed.entry().jws().to_owned())
    })
    .map_err(|e| errors::from_kest(&e))
}

/// Verifies passports against a key set: strict structure, signatures by
/// key type, Merkle links, order, and (with `semantic=True`) trust and
/// taints recomputed. Raises `VerificationError` with `kind` and `index`.
#[pyclass(frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct PassportVerifier {
    pub(crate) inner: Arc<Verifier>,
}

/// Reads keys from a JWKS (JSON text or dict), or from identities.
fn key_set(py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<KeySet> {
    let bad = |e: kest_core::KeySetError| {
        errors::kest_err(errors::Family::Verification, "bad_key", e.to_string(), &[])
    };
    if let Ok(text) = keys.cast::<PyString>() {
        let text = text.to_cow()?.into_owned();
        return py.detach(|| KeySet::from_jwks_json(&text)).map_err(bad);
    }
    if keys.cast::<PyDict>().is_ok() {
        let json = to_json(keys)?.to_string();
        return py.detach(|| KeySet::from_jwks_json(&json)).map_err(bad);
    }
    let mut set = KeySet::new();
    for item in keys.try_iter()? {
        let item = item?;
        let identity = item.cast::<Identity>()?;
        let id = &identity.get().inner;
        let key = id.public_key().ok_or_else(|| errors::identity("this identity has no local public key"))?;
        set.insert(id.workload_id(), key).map_err(bad)?;
    }
    Ok(set)
}

#[pymethods]
impl PassportVerifier {
    /// `keys`: a JWKS (JSON text or dict) or a list of identities.
    /// `semantic`: also recompute trust scores and taints. `sanitizers`:
    /// principals allowed to remove taints. `origins`: extra origins.
    #[new]
    #[pyo3(signature = (keys, *, semantic = false, sanitizers = None, origins = None, strict_origins = false, max_entries = None))]
    fn new(
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        semantic: bool,
        sanitizers: Option<Vec<String>>,
        origins: Option<BTreeMap<String, i64>>,
        strict_origins: bool,
        max_entries: Option<usize>,
    ) -> PyResult<PassportVerifier> {
        let set = key_set(py, keys)?;
        let mut v = Verifier::new(set).semantic(semantic).strict_origins(strict_origins);
        if let Some(s) = sanitizers {
            v = v.sanitizers(s);
        }
        if let Some(o) = origins {
            let mut map = OriginMap::default();
            for (name, score) in o {
                map.register(&name, score).map_err(|e| errors::config(e.to_string()))?;
            }
            v = v.origins(map);
        }
        if let Some(n) = max_entries {
            v = v.limits(Limits { max_entries: n, ..Limits::default() });
        }
        Ok(PassportVerifier { inner: Arc::new(v) })
    }

    /// Verifies a passport (a `Passport` or its JSON text) and returns the
    /// verified passport; raises `VerificationError` otherwise.
    fn verify(&self, py: Python<'_>, passport: &Bound<'_, PyAny>) -> PyResult<Passport> {
        let verifier = Arc::clone(&self.inner);
        let result = if let Ok(text) = passport.cast::<PyString>() {
            let text = text.to_cow()?.into_owned();
            py.detach(|| verifier.verify_json(&text))
        } else {
            let unverified = passport.cast::<Passport>()?.get().unverified();
            py.detach(|| verifier.verify(&unverified))
        };
        result.map(Passport::verified).map_err(|e| errors::from_verify(&e))
    }

    /// Verifies a serialized passport.
    fn verify_json(&self, py: Python<'_>, text: &str) -> PyResult<Passport> {
        let verifier = Arc::clone(&self.inner);
        py.detach(|| verifier.verify_json(text)).map(Passport::verified).map_err(|e| errors::from_verify(&e))
    }
}
