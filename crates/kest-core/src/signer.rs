//! Signing: the `Signer` trait and in-memory Ed25519 and P-256 signers.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer as _, SigningKey};

use crate::keyset::{ALG_EDDSA, ALG_ES256, KeyError, PublicKey};

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
    /// The JWS `alg` of the signatures (`EdDSA` or `ES256`).
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
        ALG_EDDSA
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

/// An ECDSA P-256 key held in memory, signing `ES256` (RFC 7518 §3.4): the
/// signature is the 64-byte `r||s`, deterministic (RFC 6979). The secret
/// scalar is zeroized on drop and never printed.
///
/// ```
/// use kest_core::{Es256Signer, Signer};
/// let signer = Es256Signer::from_scalar("spiffe://demo/ec", [7u8; 32]).unwrap();
/// assert_eq!(signer.algorithm(), "ES256");
/// let sig = signer.sign(b"x").unwrap();
/// assert_eq!(sig.len(), 64);
/// assert!(signer.public_key().unwrap().verify(b"x", &sig).is_ok());
/// assert!(!format!("{signer:?}").contains("0707"));
/// // Zero is not a private key.
/// assert!(Es256Signer::from_scalar("p", [0u8; 32]).is_err());
/// ```
pub struct Es256Signer {
    principal: String,
    key: p256::ecdsa::SigningKey,
}

impl Es256Signer {
    /// A signer from a 32-byte big-endian private scalar (a JWK's `d`),
    /// refusing zero and values not below the group order.
    pub fn from_scalar(principal: impl Into<String>, scalar: [u8; 32]) -> Result<Es256Signer, KeyError> {
        let mut scalar = scalar;
        let key = p256::ecdsa::SigningKey::from_slice(&scalar);
        zeroize::Zeroize::zeroize(&mut scalar);
        let key = key.map_err(|_| KeyError::InvalidPrivateScalar)?;
        Ok(Es256Signer { principal: principal.into(), key })
    }

    /// A signer around an existing P-256 signing key.
    pub fn from_signing_key(principal: impl Into<String>, key: p256::ecdsa::SigningKey) -> Es256Signer {
        Es256Signer { principal: principal.into(), key }
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate(principal: impl Into<String>) -> Result<Es256Signer, SignError> {
        let principal = principal.into();
        // A uniformly random 256-bit value is below the group order except
        // with probability ~2^-32; draw again in that case.
        for _ in 0..64 {
            let mut scalar = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(scalar.as_mut_slice()).map_err(|e| SignError(format!("no randomness: {e}")))?;
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(scalar.as_slice()) {
                return Ok(Es256Signer { principal, key });
            }
        }
        Err(SignError("could not draw a P-256 private key".into()))
    }

    /// The underlying signing key (for exporting it to a key file).
    pub fn signing_key(&self) -> &p256::ecdsa::SigningKey {
        &self.key
    }
}

impl fmt::Debug for Es256Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Es256Signer")
            .field("principal", &self.principal)
            .field("public_key", &PublicKey::P256(*self.key.verifying_key()))
            .finish_non_exhaustive()
    }
}

impl Signer for Es256Signer {
    fn principal(&self) -> &str {
        &self.principal
    }
    fn algorithm(&self) -> &'static str {
        ALG_ES256
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        use p256::ecdsa::signature::Signer as _;
        let signature: p256::ecdsa::Signature =
            self.key.try_sign(signing_input).map_err(|_| SignError("ECDSA signing failed".into()))?;
        Ok(signature.to_bytes().to_vec())
    }
    fn public_key(&self) -> Option<PublicKey> {
        Some(PublicKey::P256(*self.key.verifying_key()))
    }
}

/// A JWS signature algorithm Kest signs and verifies with; the key type
/// fixes it (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// Ed25519 (`EdDSA`, RFC 8037), the default.
    #[default]
    EdDsa,
    /// ECDSA P-256 SHA-256 (`ES256`, RFC 7518 §3.4).
    Es256,
}

impl Algorithm {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDsa => ALG_EDDSA,
            Algorithm::Es256 => ALG_ES256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;
    /// `EdDSA` or `ES256` (exact JWS names).
    fn from_str(s: &str) -> Result<Algorithm, String> {
        match s {
            ALG_EDDSA => Ok(Algorithm::EdDsa),
            ALG_ES256 => Ok(Algorithm::Es256),
            other => Err(format!("unsupported algorithm `{other}` (EdDSA or ES256)")),
        }
    }
}

/// A signer whose private key is held in memory: Ed25519 or P-256. Key
/// files and static identities load into it, whatever the key type.
///
/// ```
/// use kest_core::{Algorithm, LocalSigner, Signer};
/// let es = LocalSigner::generate("spiffe://demo/ec", Algorithm::Es256).unwrap();
/// assert_eq!(es.algorithm(), "ES256");
/// let ed = LocalSigner::generate("spiffe://demo/ed", Algorithm::EdDsa).unwrap();
/// assert_eq!(ed.algorithm(), "EdDSA");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum LocalSigner {
    /// An Ed25519 key.
    Ed25519(Ed25519Signer),
    /// A P-256 key.
    Es256(Es256Signer),
}

impl LocalSigner {
    /// A fresh random key for `algorithm`.
    pub fn generate(principal: impl Into<String>, algorithm: Algorithm) -> Result<LocalSigner, SignError> {
        Ok(match algorithm {
            Algorithm::EdDsa => LocalSigner::Ed25519(Ed25519Signer::generate(principal)?),
            Algorithm::Es256 => LocalSigner::Es256(Es256Signer::generate(principal)?),
        })
    }

    /// The algorithm of this key.
    pub fn alg(&self) -> Algorithm {
        match self {
            LocalSigner::Ed25519(_) => Algorithm::EdDsa,
            LocalSigner::Es256(_) => Algorithm::Es256,
        }
    }

    fn inner(&self) -> &dyn Signer {
        match self {
            LocalSigner::Ed25519(s) => s,
            LocalSigner::Es256(s) => s,
        }
    }
}

impl From<Ed25519Signer> for LocalSigner {
    fn from(s: Ed25519Signer) -> LocalSigner {
        LocalSigner::Ed25519(s)
    }
}

impl From<Es256Signer> for LocalSigner {
    fn from(s: Es256Signer) -> LocalSigner {
        LocalSigner::Es256(s)
    }
}

impl Signer for LocalSigner {
    fn principal(&self) -> &str {
        self.inner().principal()
    }
    fn algorithm(&self) -> &'static str {
        self.inner().algorithm()
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.inner().sign(signing_input)
    }
    fn public_key(&self) -> Option<PublicKey> {
        self.inner().public_key()
    }
}
