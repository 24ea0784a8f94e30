//! Signing: the `Signer` trait and an in-memory Ed25519 signer.

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey};

use crate::keyset::PublicKey;

/// A signing failure (a remote KMS or agent may fail; the in-memory signer
/// cannot).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct SignError(pub String);

/// Produces JWS signatures for one principal.
///
/// Implementations must never expose key material through `Debug`.
pub trait Signer: fmt::Debug + Send + Sync {
    /// The workload id written as `kid` and `labels.principal`.
    fn principal(&self) -> &str;
    /// The JWS `alg` of the signatures (`EdDSA`).
    fn algorithm(&self) -> &'static str;
    /// Signs the JWS signing input and returns the raw signature bytes.
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError>;
    /// The public key, when it is known locally.
    fn public_key(&self) -> Option<PublicKey>;
}

/// An Ed25519 key held in memory. The secret is zeroized on drop and never
/// printed.
///
/// ```
/// use kest_core::{Ed25519Signer, Signer};
/// let signer = Ed25519Signer::from_seed("spiffe://demo/a", [7u8; 32]);
/// assert_eq!(signer.principal(), "spiffe://demo/a");
/// assert!(!format!("{signer:?}").contains("secret"));
/// assert_eq!(signer.sign(b"x").unwrap().len(), 64);
/// ```
pub struct Ed25519Signer {
    principal: String,
    key: SigningKey,
}

impl Ed25519Signer {
    /// A signer from a 32-byte Ed25519 seed (RFC 8032 secret key).
    pub fn from_seed(principal: impl Into<String>, seed: [u8; 32]) -> Ed25519Signer {
        let mut seed = seed;
        let key = SigningKey::from_bytes(&seed);
        zeroize::Zeroize::zeroize(&mut seed);
        Ed25519Signer { principal: principal.into(), key }
    }

    /// A signer around an existing signing key.
    pub fn from_signing_key(principal: impl Into<String>, key: SigningKey) -> Ed25519Signer {
        Ed25519Signer { principal: principal.into(), key }
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate(principal: impl Into<String>) -> Result<Ed25519Signer, SignError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SignError(format!("no randomness: {e}")))?;
        Ok(Ed25519Signer::from_seed(principal, seed))
    }

    /// The underlying signing key (for exporting it to a key file).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

impl fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("principal", &self.principal)
            .field("public_key", &PublicKey::Ed25519(self.key.verifying_key()))
            .finish_non_exhaustive()
    }
}

impl Signer for Ed25519Signer {
    fn principal(&self) -> &str {
        &self.principal
    }
    fn algorithm(&self) -> &'static str {
        "EdDSA"
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        Ok(self.key.sign(signing_input).to_bytes().to_vec())
    }
    fn public_key(&self) -> Option<PublicKey> {
        Some(PublicKey::Ed25519(self.key.verifying_key()))
    }
}

impl<S: Signer + ?Sized> Signer for std::sync::Arc<S> {
    fn principal(&self) -> &str {
        (**self).principal()
    }
    fn algorithm(&self) -> &'static str {
        (**self).algorithm()
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        (**self).sign(signing_input)
    }
    fn public_key(&self) -> Option<PublicKey> {
        (**self).public_key()
    }
}
