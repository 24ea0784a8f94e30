//! Public keys by principal, loaded from a JWKS document (RFC 7517, RFC 8037).

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::VerifyingKey;
use serde_json::Value;

use crate::encoding::{b64url_decode, b64url_encode};
use crate::json::parse_strict;

/// One verification key. The key type fixes the only JWS `alg` it accepts,
/// so algorithm confusion (`none`, `mock`, `HS256` …) cannot happen.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublicKey {
    /// An Ed25519 key (OKP, RFC 8037): `alg` must be `EdDSA`.
    Ed25519(VerifyingKey),
}

impl PublicKey {
    /// The only JWS algorithm this key verifies.
    pub fn allowed_alg(&self) -> &'static str {
        match self {
            PublicKey::Ed25519(_) => "EdDSA",
        }
    }

    /// An Ed25519 key from its 32-byte encoding, refusing non-canonical
    /// encodings, weak (small-order) keys and keys outside the prime-order
    /// subgroup.
    pub fn ed25519_from_bytes(bytes: &[u8]) -> Result<PublicKey, KeySetError> {
        let raw: [u8; 32] = bytes.try_into().map_err(|_| KeySetError::BadKey {
            kid: None,
            reason: format!("Ed25519 key must be 32 bytes, found {}", bytes.len()),
        })?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| KeySetError::BadKey {
            kid: None,
            reason: "not a point on the Ed25519 curve".into(),
        })?;
        if key.to_edwards().compress().to_bytes() != raw {
            return Err(KeySetError::BadKey { kid: None, reason: "non-canonical point encoding".into() });
        }
        if key.is_weak() {
            return Err(KeySetError::BadKey { kid: None, reason: "weak (small-order) key".into() });
        }
        // An honest key is a multiple of the base point. A torsion component
        // lets its holder make signatures whose validity depends on the
        // verification equation (cofactored, cofactorless, batched).
        if !key.to_edwards().is_torsion_free() {
            return Err(KeySetError::BadKey { kid: None, reason: "key has a small-order component".into() });
        }
        Ok(PublicKey::Ed25519(key))
    }

    /// The public JWK of this key with `kid` set to `principal`.
    pub fn to_jwk(&self, principal: &str) -> Value {
        match self {
            PublicKey::Ed25519(key) => serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64url_encode(key.as_bytes()),
                "kid": principal,
                "alg": "EdDSA",
                "use": "sig",
            }),
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKey::Ed25519(key) => write!(f, "Ed25519({})", b64url_encode(key.as_bytes())),
        }
    }
}

/// Why a key set could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySetError {
    /// The document is not a JWKS.
    #[error("not a JWKS document: {0}")]
    NotJwks(String),
    /// A key is unusable.
    #[error("key {}: {reason}", kid.as_deref().map(|k| format!("`{k}`")).unwrap_or_else(|| "without kid".into()))]
    BadKey {
        /// The key's `kid`, if it had one.
        kid: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// Two keys claim the same principal.
    #[error("two keys have kid `{0}`")]
    DuplicateKid(String),
}

/// Public keys by principal (the JWK `kid`). Weak and malformed keys are
/// refused when the set is built, so verification never sees them.
///
/// ```
/// let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"spiffe://demo/a",
///   "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
/// let keys = kest_core::KeySet::from_jwks_json(jwks).unwrap();
/// assert!(keys.get("spiffe://demo/a").is_some());
/// assert!(keys.get("spiffe://demo/b").is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: BTreeMap<String, PublicKey>,
}

impl KeySet {
    /// An empty key set (verifies only the empty passport).
    pub fn new() -> KeySet {
        KeySet::default()
    }

    /// Adds a key for `principal`; a second key for the same principal is
    /// an error (ambiguous).
    pub fn insert(&mut self, principal: impl Into<String>, key: PublicKey) -> Result<(), KeySetError> {
        let principal = principal.into();
        if self.keys.contains_key(&principal) {
            return Err(KeySetError::DuplicateKid(principal));
        }
        self.keys.insert(principal, key);
        Ok(())
    }

    /// The key of `principal`.
    pub fn get(&self, principal: &str) -> Option<&PublicKey> {
        self.keys.get(principal)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Principals and keys, ordered by principal.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PublicKey)> {
        self.keys.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Adds every key of `other`; a principal present in both is an error
    /// unless the keys are identical.
    pub fn extend(&mut self, other: KeySet) -> Result<(), KeySetError> {
        for (principal, key) in other.keys {
            match self.keys.get(&principal) {
                Some(existing) if *existing == key => {}
                Some(_) => return Err(KeySetError::DuplicateKid(principal)),
                None => {
                    self.keys.insert(principal, key);
                }
            }
        }
        Ok(())
    }

    /// Parses a JWKS document `{"keys":[...]}`. Every key must be an OKP
    /// Ed25519 public key with a `kid` (the principal); `alg`, when present,
    /// must be `EdDSA` and `use`, when present, `sig`. A key carrying
    /// private material (`d`) is refused rather than silently used.
    pub fn from_jwks_json(text: &str) -> Result<KeySet, KeySetError> {
        let doc = parse_strict(text.as_bytes(), 16).map_err(|e| KeySetError::NotJwks(e.to_string()))?;
        let Some(Value::Array(keys)) = doc.get("keys") else {
            return Err(KeySetError::NotJwks("missing `keys` array".into()));
        };
        let mut set = KeySet::new();
        for jwk in keys {
            let (kid, key) = parse_jwk(jwk)?;
            set.insert(kid, key)?;
        }
        Ok(set)
    }

    /// The JWKS document of this set.
    pub fn to_jwks(&self) -> Value {
        serde_json::json!({ "keys": self.keys.iter().map(|(p, k)| k.to_jwk(p)).collect::<Vec<_>>() })
    }
}

/// Parses one public JWK into its `kid` and key.
pub fn parse_jwk(jwk: &Value) -> Result<(String, PublicKey), KeySetError> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kid = member("kid").map(str::to_owned);
    let bad = |reason: String| KeySetError::BadKey { kid: kid.clone(), reason };
    if !jwk.is_object() {
        return Err(bad("a JWK must be an object".into()));
    }
    let Some(kid_str) = kid.clone() else {
        return Err(bad("`kid` (the principal) is required".into()));
    };
    if kid_str.is_empty() {
        return Err(bad("`kid` must not be empty".into()));
    }
    if jwk.get("d").is_some() {
        return Err(bad("contains private key material `d`; publish only public keys".into()));
    }
    match (member("kty"), member("crv")) {
        (Some("OKP"), Some("Ed25519")) => {}
        (kty, crv) => {
            return Err(bad(format!(
                "unsupported key type kty={} crv={} (only OKP Ed25519)",
                kty.unwrap_or("none"),
                crv.unwrap_or("none")
            )));
        }
    }
    if let Some(alg) = jwk.get("alg")
        && alg.as_str() != Some("EdDSA")
    {
        return Err(bad(format!("`alg` {alg} is not EdDSA")));
    }
    if let Some(usage) = jwk.get("use")
        && usage.as_str() != Some("sig")
    {
        return Err(bad(format!("`use` {usage} is not sig")));
    }
    let x = member("x").ok_or_else(|| bad("`x` is required".into()))?;
    let bytes = b64url_decode(x).map_err(|_| bad("`x` is not unpadded base64url".into()))?;
    let key = PublicKey::ed25519_from_bytes(&bytes).map_err(|e| match e {
        KeySetError::BadKey { reason, .. } => bad(reason),
        other => other,
    })?;
    Ok((kid_str, key))
}
