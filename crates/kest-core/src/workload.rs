//! Workload tokens: how one service proves to the next *which workload is
//! calling* when there is no mTLS (SPEC §7.5, "a verified workload token").
//!
//! The caller (the `kest` crate's HTTP propagation middleware) mints, per
//! request, a short-lived compact JWS signed by its Kest identity
//! — header `{"alg":"EdDSA","kid":<principal>,"typ":"kest-workload+jwt"}`
//! (`"alg":"ES256"` for a P-256 identity: tokens support both algorithms,
//! the verifier fixing it by the signer's key type as for passport entries),
//! claims `sub` (the principal), `aud` (the destination's origin,
//! `scheme://host:port`), `iat`, `exp` — sent in the `kest-workload` header.
//! The callee's lineage layer verifies it against the same keys as the
//! passports and makes `sub` the authenticated peer: every tip of the
//! incoming passport must then be signed by that workload, so a stolen or
//! truncated passport cannot be presented by anyone else.
//!
//! The token type is distinct from passport entries (`typ`), so neither
//! can be passed off as the other.
//!
//! ```
//! use std::time::Duration;
//! use kest_core::workload::{mint_workload_token, verify_workload_token};
//! use kest_core::{Ed25519Signer, KeySet, Signer};
//! let caller = Ed25519Signer::from_seed("spiffe://demo/agent", [3; 32]);
//! let mut keys = KeySet::new();
//! keys.insert("spiffe://demo/agent", caller.public_key().unwrap()).unwrap();
//! let token = mint_workload_token(&caller, "http://127.0.0.1:8080", Duration::from_secs(60), 1_000).unwrap();
//! let peer = verify_workload_token(&token, &keys, "http://127.0.0.1:8080", 1_010).unwrap();
//! assert_eq!(peer, "spiffe://demo/agent");
//! assert_eq!(verify_workload_token(&token, &keys, "http://127.0.0.1:9", 1_010).unwrap_err().kind(), "wrong_audience");
//! ```

use std::time::Duration;

use serde_json::{Value, json};

use crate::encoding::{b64url_decode, b64url_encode};
use crate::json::parse_strict;
use crate::{KeyResolver, SignError, Signer};

/// The `typ` of a workload token.
pub const TOKEN_TYPE: &str = "kest-workload+jwt";

/// Default lifetime of a minted token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);

/// Longest lifetime (`exp - iat`) a verifier accepts: a token is a replay
/// window, so a minter cannot widen it.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// Clock skew tolerated on `iat`/`exp`.
const LEEWAY_SECS: u64 = 30;

/// Largest token accepted.
const MAX_TOKEN_BYTES: usize = 4096;

/// Why a workload token was refused (answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadTokenError {
    /// No `kest-workload` header where one is required.
    #[error("no workload token")]
    Missing,
    /// Not a workload token (segments, encoding, JSON, `typ`, claims).
    #[error("malformed workload token: {0}")]
    Malformed(&'static str),
    /// The signer is not a known workload.
    #[error("workload `{0}` is not in the key set")]
    UnknownSigner(String),
    /// The key source is stale or unavailable.
    #[error("the workload keys are unavailable")]
    KeyUnavailable,
    /// The signature does not verify.
    #[error("the workload token signature does not verify")]
    BadSignature,
    /// Expired, or issued in the future.
    #[error("the workload token has expired or is not valid yet")]
    Expired,
    /// Minted for another service.
    #[error("the workload token is for another audience")]
    WrongAudience,
}

impl WorkloadTokenError {
    /// The stable kind written as `error` in the 401 body.
    pub fn kind(&self) -> &'static str {
        match self {
            WorkloadTokenError::Missing => "missing_workload_token",
            WorkloadTokenError::Malformed(_) => "malformed_workload_token",
            WorkloadTokenError::UnknownSigner(_) => "unknown_workload",
            WorkloadTokenError::KeyUnavailable => "key_unavailable",
            WorkloadTokenError::BadSignature => "bad_workload_signature",
            WorkloadTokenError::Expired => "workload_token_expired",
            WorkloadTokenError::WrongAudience => "wrong_audience",
        }
    }
}

/// Mints a workload token for `audience` (the destination's origin), valid
/// for `ttl` from `now_s` (Unix seconds). The identity signs; its key never
/// leaves it.
pub fn mint_workload_token(
    identity: &dyn Signer,
    audience: &str,
    ttl: Duration,
    now_s: u64,
) -> Result<String, SignError> {
    let header =
        json!({"alg": identity.algorithm(), "kid": identity.principal(), "typ": TOKEN_TYPE}).to_string();
    let claims = json!({
        "aud": audience,
        "exp": now_s.saturating_add(ttl.as_secs()),
        "iat": now_s,
        "sub": identity.principal(),
    })
    .to_string();
    let signing_input = format!("{}.{}", b64url_encode(header.as_bytes()), b64url_encode(claims.as_bytes()));
    let signature = identity.sign(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", b64url_encode(&signature)))
}

fn object(segment: &str, what: &'static str) -> Result<serde_json::Map<String, Value>, WorkloadTokenError> {
    let bytes = b64url_decode(segment).map_err(|_| WorkloadTokenError::Malformed(what))?;
    match parse_strict(&bytes, 8) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(WorkloadTokenError::Malformed(what)),
    }
}

/// Verifies a workload token for `audience` at `now_s` and returns the
/// calling workload (`sub`, equal to the signing key's principal).
pub fn verify_workload_token(
    token: &str,
    keys: &dyn KeyResolver,
    audience: &str,
    now_s: u64,
) -> Result<String, WorkloadTokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(WorkloadTokenError::Malformed("too large"));
    }
    let (signing_input, signature) =
        token.rsplit_once('.').ok_or(WorkloadTokenError::Malformed("segments"))?;
    let (header, claims) = signing_input.split_once('.').ok_or(WorkloadTokenError::Malformed("segments"))?;
    let header = object(header, "header")?;
    let claims = object(claims, "claims")?;
    let text = |map: &serde_json::Map<String, Value>, name: &str| {
        map.get(name).and_then(Value::as_str).map(str::to_owned)
    };
    if text(&header, "typ").as_deref() != Some(TOKEN_TYPE) {
        return Err(WorkloadTokenError::Malformed("typ"));
    }
    let kid = text(&header, "kid").ok_or(WorkloadTokenError::Malformed("kid"))?;
    let alg = text(&header, "alg").ok_or(WorkloadTokenError::Malformed("alg"))?;
    if text(&claims, "sub").as_deref() != Some(kid.as_str()) {
        return Err(WorkloadTokenError::Malformed("sub is not the signer"));
    }
    let keys = keys.resolve_all(&kid).map_err(|_| WorkloadTokenError::KeyUnavailable)?;
    if keys.is_empty() {
        return Err(WorkloadTokenError::UnknownSigner(kid));
    }
    // The key type fixes the algorithm (EdDSA or ES256): only keys of the
    // token's algorithm are candidates (several during a rotation overlap).
    let candidates: Vec<_> = keys.iter().filter(|key| alg == key.allowed_alg()).collect();
    if candidates.is_empty() {
        return Err(WorkloadTokenError::Malformed("alg"));
    }
    let signature = b64url_decode(signature).map_err(|_| WorkloadTokenError::Malformed("signature"))?;
    // The verification rules are the key type's (PublicKey::verify).
    if !candidates.iter().any(|key| key.verify(signing_input.as_bytes(), &signature).is_ok()) {
        return Err(WorkloadTokenError::BadSignature);
    }
    let number =
        |name: &str| claims.get(name).and_then(Value::as_u64).ok_or(WorkloadTokenError::Malformed("iat/exp"));
    let (iat, exp) = (number("iat")?, number("exp")?);
    if exp.saturating_sub(iat) > MAX_TOKEN_LIFETIME.as_secs() {
        return Err(WorkloadTokenError::Malformed("lifetime above the maximum"));
    }
    if now_s > exp.saturating_add(LEEWAY_SECS) || iat > now_s.saturating_add(LEEWAY_SECS) {
        return Err(WorkloadTokenError::Expired);
    }
    if text(&claims, "aud").as_deref() != Some(audience) {
        return Err(WorkloadTokenError::WrongAudience);
    }
    Ok(kid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Ed25519Signer, KeySet};

    fn keys(ids: &[&Ed25519Signer]) -> KeySet {
        let mut keys = KeySet::new();
        for id in ids {
            keys.insert(id.principal(), id.public_key().unwrap()).unwrap();
        }
        keys
    }

    #[test]
    fn any_key_of_a_rotation_overlap_verifies_a_token() {
        use crate::{Es256Signer, KeyRing};
        let old = Ed25519Signer::from_seed("spiffe://t/a", [1; 32]);
        let new = Ed25519Signer::from_seed("spiffe://t/a", [3; 32]);
        let token = mint_workload_token(&old, "http://svc", DEFAULT_TOKEN_TTL, 1000).unwrap();
        let mut ring = KeyRing::new();
        ring.insert("spiffe://t/a", new.public_key().unwrap());
        assert_eq!(
            verify_workload_token(&token, &ring, "http://svc", 1000),
            Err(WorkloadTokenError::BadSignature)
        );
        ring.insert("spiffe://t/a", old.public_key().unwrap());
        assert_eq!(verify_workload_token(&token, &ring, "http://svc", 1000).unwrap(), "spiffe://t/a");
        // Only keys of another type: the algorithm is refused.
        let mut p256 = KeyRing::new();
        p256.insert(
            "spiffe://t/a",
            Es256Signer::from_scalar("spiffe://t/a", [7; 32]).unwrap().public_key().unwrap(),
        );
        assert_eq!(
            verify_workload_token(&token, &p256, "http://svc", 1000),
            Err(WorkloadTokenError::Malformed("alg"))
        );
        assert_eq!(
            verify_workload_token(&token, &KeyRing::new(), "http://svc", 1000).unwrap_err().kind(),
            "unknown_workload"
        );
    }

    #[test]
    fn every_defect_is_refused() {
        let a = Ed25519Signer::from_seed("spiffe://t/a", [1; 32]);
        let b = Ed25519Signer::from_seed("spiffe://t/b", [2; 32]);
        let ks = keys(&[&a, &b]);
        let token = mint_workload_token(&a, "http://svc", DEFAULT_TOKEN_TTL, 1000).unwrap();
        assert_eq!(verify_workload_token(&token, &ks, "http://svc", 1000).unwrap(), "spiffe://t/a");
        assert_eq!(
            verify_workload_token(&token, &ks, "http://svc", 1100).unwrap_err(),
            WorkloadTokenError::Expired
        );
        assert_eq!(
            verify_workload_token(&token, &ks, "http://svc", 900).unwrap_err(),
            WorkloadTokenError::Expired
        );
        assert_eq!(
            verify_workload_token(&token, &keys(&[&b]), "http://svc", 1000).unwrap_err().kind(),
            "unknown_workload"
        );
        // Signed by b but claiming to be a.
        let (input, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{input}.{}", b64url_encode(&b.sign(input.as_bytes()).unwrap()));
        assert_eq!(
            verify_workload_token(&forged, &ks, "http://svc", 1000).unwrap_err(),
            WorkloadTokenError::BadSignature
        );
        // A passport entry (typ JWS) is not a workload token.
        let entry_like = format!(
            "{}.{}.{}",
            b64url_encode(crate::jws::header_json("EdDSA", "spiffe://t/a").as_bytes()),
            token.split('.').nth(1).unwrap(),
            token.rsplit('.').next().unwrap()
        );
        assert_eq!(
            verify_workload_token(&entry_like, &ks, "http://svc", 1000).unwrap_err().kind(),
            "malformed_workload_token"
        );
        assert_eq!(
            verify_workload_token("x", &ks, "http://svc", 1000).unwrap_err().kind(),
            "malformed_workload_token"
        );
    }
}
