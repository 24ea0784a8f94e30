//! [`StaticIdentity`]: an explicit workload id with a configured Ed25519 or
//! P-256 key.

use std::path::{Path, PathBuf};

use kest_core::{Ed25519Signer, LocalSigner, PublicKey, SignError, Signer};
use serde_json::Value;

use super::{IdentityError, IdentityProvider};

/// Where a [`StaticIdentity`]'s key came from (for `describe`).
#[derive(Debug, Clone)]
enum KeySource {
    File(PathBuf),
    Seed,
    Signer,
}

/// An identity with an explicit workload id and a configured key — Ed25519
/// (signs `EdDSA` entries) or P-256 (signs `ES256` entries): a PKCS#8 PEM or
/// private JWK key file, a 32-byte Ed25519 seed, or an existing
/// [`Ed25519Signer`], [`kest_core::Es256Signer`] or [`LocalSigner`].
///
/// The key stays in memory (zeroized on drop) and never appears in `Debug`,
/// `describe` or errors.
///
/// ```
/// use kest::identity::{IdentityProvider, StaticIdentity};
/// use kest::core::Signer;
///
/// let id = StaticIdentity::from_seed("spiffe://prod/billing", [42u8; 32]);
/// assert_eq!(id.workload_id(), "spiffe://prod/billing");
/// assert_eq!(id.kind(), "static");
/// // The same seed always gives the same key.
/// assert_eq!(id.public_key(), StaticIdentity::from_seed("x", [42u8; 32]).public_key());
/// // Debug shows the public key, never the secret.
/// assert!(!format!("{id:?}").contains(&kest::core::encoding::b64url_encode(&[42u8; 32])));
///
/// // A P-256 key signs ES256 entries.
/// let ec = StaticIdentity::from_signer(kest::core::Es256Signer::from_scalar("spiffe://prod/ec", [7u8; 32]).unwrap());
/// assert_eq!(ec.algorithm(), "ES256");
/// assert_eq!(ec.public_jwk()["crv"], "P-256");
/// ```
pub struct StaticIdentity {
    signer: LocalSigner,
    source: KeySource,
}

impl StaticIdentity {
    /// Loads the key (Ed25519 or P-256) from a PKCS#8 PEM or private JWK
    /// file ([`crate::keyfile::load_key`]).
    ///
    /// The workload id is `principal` or, for a JWK, its `kid`. A PEM file
    /// needs an explicit `principal`; a JWK whose `kid` differs from an
    /// explicit `principal` is refused. Errors name the file, never the key.
    pub fn from_key_file(
        path: impl AsRef<Path>,
        principal: Option<&str>,
    ) -> Result<StaticIdentity, IdentityError> {
        let path = path.as_ref();
        let signer = crate::keyfile::load_key(path, principal)?;
        if signer.principal().is_empty() {
            return Err(IdentityError::Other(format!(
                "{}: the workload id must not be empty",
                path.display()
            )));
        }
        Ok(StaticIdentity { signer, source: KeySource::File(path.to_owned()) })
    }

    /// An identity from a 32-byte Ed25519 seed (RFC 8032 secret key).
    ///
    /// The provider's copy is zeroized on drop; zeroizing the caller's
    /// `seed` is the caller's responsibility.
    pub fn from_seed(workload_id: impl Into<String>, seed: [u8; 32]) -> StaticIdentity {
        StaticIdentity { signer: Ed25519Signer::from_seed(workload_id, seed).into(), source: KeySource::Seed }
    }

    /// An identity around an existing in-memory signer, Ed25519 or P-256
    /// (its principal is the workload id).
    pub fn from_signer(signer: impl Into<LocalSigner>) -> StaticIdentity {
        StaticIdentity { signer: signer.into(), source: KeySource::Signer }
    }

    /// The public JWK of the key (`kid` = the workload id).
    pub fn public_jwk(&self) -> Value {
        self.signer.public_key().map(|k| k.to_jwk(self.signer.principal())).unwrap_or(Value::Null)
    }
}

impl std::fmt::Debug for StaticIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticIdentity").field("signer", &self.signer).field("source", &self.source).finish()
    }
}

impl Signer for StaticIdentity {
    fn principal(&self) -> &str {
        self.signer.principal()
    }
    fn algorithm(&self) -> &'static str {
        self.signer.algorithm()
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.signer.sign(signing_input)
    }
    fn public_key(&self) -> Option<PublicKey> {
        self.signer.public_key()
    }
}

impl IdentityProvider for StaticIdentity {
    fn kind(&self) -> &'static str {
        "static"
    }
    fn describe(&self) -> Vec<(String, String)> {
        let source = match &self.source {
            KeySource::File(path) => format!("key file {}", path.display()),
            KeySource::Seed => "seed".to_owned(),
            KeySource::Signer => "in-memory signer".to_owned(),
        };
        vec![("key".into(), source), ("algorithm".into(), self.signer.algorithm().to_owned())]
    }
}
