//! [`MockIdentityProvider`]: the reference's deterministic, insecure test
//! double.

use kest_core::{PublicKey, SignError, Signer};
use sha2::{Digest as _, Sha256};

use super::IdentityProvider;

/// The workload id of a [`MockIdentityProvider`] when none is given (the
/// reference's default).
pub const DEFAULT_MOCK_WORKLOAD_ID: &str = "spiffe://kest.internal/mock-workload";

/// The JWS `alg` written by [`MockIdentityProvider`].
pub const MOCK_ALGORITHM: &str = "mock";

/// A deterministic test double, byte-compatible with the reference's
/// `MockIdentityProvider`: JWS `alg` `"mock"` and signature
/// `SHA-256(b"mock-key" || signing_input)` (32 bytes).
///
/// **Not a signature**: anyone can compute it. Verifiers reject these
/// entries (the key set fixes the algorithm by key type, and a mock
/// signature is not a 64-byte Ed25519 signature). Use it only to exercise
/// code paths that need *a* signer without key material.
///
/// ```
/// use kest::identity::{IdentityProvider, MockIdentityProvider};
/// use kest::core::Signer;
///
/// let mock = MockIdentityProvider::new();
/// assert_eq!(mock.algorithm(), "mock");
/// assert_eq!(mock.sign(b"x").unwrap(), mock.sign(b"x").unwrap(), "deterministic");
/// assert_eq!(mock.sign(b"x").unwrap().len(), 32);
/// assert!(mock.public_key().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockIdentityProvider {
    principal: String,
}

impl MockIdentityProvider {
    /// A mock for [`DEFAULT_MOCK_WORKLOAD_ID`].
    pub fn new() -> MockIdentityProvider {
        MockIdentityProvider::with_workload_id(DEFAULT_MOCK_WORKLOAD_ID)
    }

    /// A mock for `workload_id`.
    pub fn with_workload_id(workload_id: impl Into<String>) -> MockIdentityProvider {
        MockIdentityProvider { principal: workload_id.into() }
    }
}

impl Default for MockIdentityProvider {
    fn default() -> Self {
        MockIdentityProvider::new()
    }
}

impl Signer for MockIdentityProvider {
    fn principal(&self) -> &str {
        &self.principal
    }
    fn algorithm(&self) -> &'static str {
        MOCK_ALGORITHM
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        Ok(Sha256::new().chain_update(b"mock-key").chain_update(signing_input).finalize().to_vec())
    }
    fn public_key(&self) -> Option<PublicKey> {
        None
    }
}

impl IdentityProvider for MockIdentityProvider {
    fn kind(&self) -> &'static str {
        "mock"
    }
    fn describe(&self) -> Vec<(String, String)> {
        vec![("key".into(), "none: deterministic mock signatures, rejected by verifiers".into())]
    }
}
