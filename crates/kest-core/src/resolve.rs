//! Key resolution (SPEC §8): where a verifier finds a principal's key.
//!
//! A [`KeyResolver`] maps a principal (the JWK `kid`, `labels.principal`)
//! to its public key. It is implemented for a static [`KeySet`], for
//! `Arc<T>` and for closures, so a simple setup passes a key set and a
//! rotating one (a refreshed JWKS URL, a SPIFFE trust bundle) passes a
//! function or its own type.
//!
//! `Ok(None)` means "no key for this principal" and the verifier rejects
//! the entry (`unknown_signer`); `Err(_)` means the source could not answer
//! (unreachable, too stale) and the verifier rejects the entry too
//! (`key_unavailable`). Neither ever skips a signature.
//!
//! ```
//! use std::sync::Arc;
//! use kest_core::{KeyResolver, ResolveError};
//! use kest_core::{Ed25519Signer, EntryDraft, ErrorKind, KeySet, Passport, PublicKey, Signer, TrustRules, Verifier};
//!
//! let signer = Ed25519Signer::from_seed("spiffe://demo/a", [3u8; 32]);
//! let mut p = Passport::new();
//! p.record(&EntryDraft::new("step"), &signer, &TrustRules::default()).unwrap();
//!
//! let key = signer.public_key().unwrap();
//! let resolver = move |principal: &str| -> Result<Option<PublicKey>, ResolveError> {
//!     Ok((principal == "spiffe://demo/a").then(|| key.clone()))
//! };
//! let verifier = Verifier::with_resolver(Arc::new(resolver));
//! assert!(verifier.verify_json(&p.to_json()).is_ok());
//!
//! // A source that cannot answer fails closed.
//! let down = |_: &str| -> Result<Option<PublicKey>, ResolveError> {
//!     Err(ResolveError::Stale { age_secs: 900, max_secs: 600 })
//! };
//! let err = Verifier::with_resolver(Arc::new(down)).verify_json(&p.to_json()).unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::KeyUnavailable);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::keyset::{KeySet, KeySetError, PublicKey};

/// Why a key source could not answer. Messages never carry key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The source's keys are older than the maximum staleness allowed.
    #[error("key source is stale: last refreshed {age_secs} s ago, maximum {max_secs} s")]
    Stale {
        /// Seconds since the last successful refresh.
        age_secs: u64,
        /// The maximum staleness configured.
        max_secs: u64,
    },
    /// The source could not be reached or read.
    #[error("key source `{source_name}` is unavailable: {message}")]
    Unavailable {
        /// Which source (a URL, a socket path, a name).
        source_name: String,
        /// What went wrong.
        message: String,
    },
}

/// Finds the public key of a principal (SPEC §8). One required method, so
/// closures and shared handles implement it.
///
/// A source that knows several valid keys for one principal at once — a
/// rotation overlap, where entries signed with the previous key are still
/// in flight (the `kid` is the principal, so both keys share it) — also
/// overrides [`KeyResolver::resolve_all`]; the verifier accepts an entry
/// when any of them of the entry's algorithm verifies it.
///
/// ```
/// use kest_core::{KeyResolver, PublicKey, ResolveError};
/// # fn key(seed: u8) -> PublicKey {
/// #     let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
/// #     PublicKey::ed25519_from_bytes(sk.verifying_key().as_bytes()).unwrap()
/// # }
/// /// The current and the previous key of one workload.
/// struct Overlap { current: PublicKey, previous: PublicKey }
///
/// impl KeyResolver for Overlap {
///     fn resolve(&self, principal: &str) -> Result<Option<PublicKey>, ResolveError> {
///         Ok((principal == "spiffe://demo/a").then(|| self.current.clone()))
///     }
///     fn resolve_all(&self, principal: &str) -> Result<Vec<PublicKey>, ResolveError> {
///         Ok(if principal == "spiffe://demo/a" {
///             vec![self.current.clone(), self.previous.clone()]
///         } else {
///             Vec::new()
///         })
///     }
/// }
/// let overlap = Overlap { current: key(1), previous: key(2) };
/// assert_eq!(overlap.resolve_all("spiffe://demo/a").unwrap().len(), 2);
/// // A resolver that only implements `resolve` answers with 0 or 1 key.
/// let one = |_: &str| -> Result<Option<PublicKey>, ResolveError> { Ok(Some(key(1))) };
/// assert_eq!(one.resolve_all("x").unwrap(), vec![key(1)]);
/// ```
pub trait KeyResolver: Send + Sync {
    /// The key of `principal`: `Ok(None)` when the source has none, `Err`
    /// when the source cannot answer.
    fn resolve(&self, principal: &str) -> Result<Option<PublicKey>, ResolveError>;

    /// Every key currently valid for `principal` (several during a key
    /// rotation overlap): empty when the source has none, `Err` when the
    /// source cannot answer. The default is [`KeyResolver::resolve`] as
    /// zero or one key.
    fn resolve_all(&self, principal: &str) -> Result<Vec<PublicKey>, ResolveError> {
        Ok(self.resolve(principal)?.into_iter().collect())
    }
}

impl KeyResolver for KeySet {
    fn resolve(&self, principal: &str) -> Result<Option<PublicKey>, ResolveError> {
        Ok(self.get(principal).cloned())
    }
}

impl<T: KeyResolver + ?Sized> KeyResolver for Arc<T> {
    fn resolve(&self, principal: &str) -> Result<Option<PublicKey>, ResolveError> {
        (**self).resolve(principal)
    }
    fn resolve_all(&self, principal: &str) -> Result<Vec<PublicKey>, ResolveError> {
        (**self).resolve_all(principal)
    }
}

impl<F> KeyResolver for F
where
    F: Fn(&str) -> Result<Option<PublicKey>, ResolveError> + Send + Sync,
{
    fn resolve(&self, principal: &str) -> Result<Option<PublicKey>, ResolveError> {
        self(principal)
    }
}

/// Several public keys per principal: a key history (e.g. every SVID a
/// SPIFFE workload was issued, or a rotated KMS key beside its successor).
/// A [`KeyResolver`] whose [`resolve_all`](KeyResolver::resolve_all)
/// returns every key of a principal, in insertion order without
/// duplicates: an entry verifies when any of them (of its algorithm) does.
/// A [`KeySet`] refuses a second key under one `kid`; a ring is built from
/// several key sets.
///
/// ```
/// use kest_core::{KeyResolver, KeyRing, KeySet, PublicKey};
/// # fn key(seed: u8) -> PublicKey {
/// #     let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
/// #     PublicKey::ed25519_from_bytes(sk.verifying_key().as_bytes()).unwrap()
/// # }
/// let (mut before, mut after) = (KeySet::new(), KeySet::new());
/// before.insert("spiffe://demo/a", key(1)).unwrap();
/// after.insert("spiffe://demo/a", key(2)).unwrap();
/// let mut ring = KeyRing::new();
/// ring.extend(&before);
/// ring.extend(&after);
/// ring.extend(&after); // duplicates count once
/// assert_eq!(ring.resolve_all("spiffe://demo/a").unwrap(), vec![key(1), key(2)]);
/// assert_eq!(ring.resolve("spiffe://demo/a").unwrap(), Some(key(1)));
/// assert!(ring.resolve_all("spiffe://demo/b").unwrap().is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<String, Vec<PublicKey>>,
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> KeyRing {
        KeyRing::default()
    }

    /// Adds a key for `principal` (a key already there is not added twice).
    pub fn insert(&mut self, principal: impl Into<String>, key: PublicKey) {
        let list = self.keys.entry(principal.into()).or_default();
        if !list.contains(&key) {
            list.push(key);
        }
    }

    /// Adds every key of a key set.
    pub fn extend(&mut self, keys: &KeySet) {
        for (principal, key) in keys.iter() {
            self.insert(principal, key.clone());
        }
    }

    /// Adds every key of a JWKS document (see [`KeySet::from_jwks_json`]).
    pub fn extend_from_jwks_json(&mut self, text: &str) -> Result<(), KeySetError> {
        self.extend(&KeySet::from_jwks_json(text)?);
        Ok(())
    }

    /// How many principals have keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no principal has a key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl KeyResolver for KeyRing {
    fn resolve(&self, principal: &str) -> Result<Option<PublicKey>, ResolveError> {
        Ok(self.keys.get(principal).and_then(|l| l.first().cloned()))
    }
    fn resolve_all(&self, principal: &str) -> Result<Vec<PublicKey>, ResolveError> {
        Ok(self.keys.get(principal).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        PublicKey::ed25519_from_bytes(sk.verifying_key().as_bytes()).unwrap()
    }

    #[test]
    fn key_set_arc_and_closure_resolve() {
        let mut set = KeySet::new();
        set.insert("a", key(1)).unwrap();
        assert_eq!(set.resolve("a"), Ok(Some(key(1))));
        assert_eq!(set.resolve("b"), Ok(None));
        let shared: Arc<dyn KeyResolver> = Arc::new(set);
        assert_eq!(shared.resolve("a"), Ok(Some(key(1))));
        let nested: Arc<Arc<dyn KeyResolver>> = Arc::new(shared);
        assert_eq!(nested.resolve("b"), Ok(None));
        let closure = |p: &str| {
            if p == "x" {
                Err(ResolveError::Unavailable { source_name: "jwks".into(), message: "timeout".into() })
            } else {
                Ok(None)
            }
        };
        assert!(matches!(closure.resolve("x"), Err(ResolveError::Unavailable { .. })));
        assert_eq!(closure.resolve("y"), Ok(None));
        assert_eq!(closure.resolve_all("y"), Ok(Vec::new()));
        assert!(matches!(closure.resolve_all("x"), Err(ResolveError::Unavailable { .. })));
    }

    /// Two keys for one principal.
    struct Two(PublicKey, PublicKey);
    impl KeyResolver for Two {
        fn resolve(&self, _: &str) -> Result<Option<PublicKey>, ResolveError> {
            Ok(Some(self.0.clone()))
        }
        fn resolve_all(&self, _: &str) -> Result<Vec<PublicKey>, ResolveError> {
            Ok(vec![self.0.clone(), self.1.clone()])
        }
    }

    #[test]
    fn arc_forwards_resolve_all() {
        let shared: Arc<dyn KeyResolver> = Arc::new(Two(key(1), key(2)));
        assert_eq!(shared.resolve_all("a"), Ok(vec![key(1), key(2)]));
        let nested: Arc<Arc<dyn KeyResolver>> = Arc::new(shared);
        assert_eq!(nested.resolve_all("a"), Ok(vec![key(1), key(2)]));
        let mut set = KeySet::new();
        set.insert("a", key(1)).unwrap();
        assert_eq!(set.resolve_all("a"), Ok(vec![key(1)]));
        assert_eq!(set.resolve_all("b"), Ok(Vec::new()));
    }
}
