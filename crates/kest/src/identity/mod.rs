//! Identity providers (SPEC §8): who signs, and how.
//!
//! Every provider is a [`kest_core::Signer`] (workload id, algorithm,
//! signature, public key) plus a description for `kest whoami`. Key
//! material never appears in `Debug`, logs or errors, and is zeroized on
//! drop.

use kest_core::{SignError, Signer};

mod auto;
mod local;
mod mock;
mod oidc;
#[cfg(feature = "spiffe")]
pub mod spiffe;
mod static_identity;
#[cfg(all(feature = "spiffe", feature = "http"))]
pub mod svid_directory;

pub use auto::{
    AWS_BEDROCK_AGENT_ID_ENV, AWS_REGION_ENVS, AutoDetector, Detection, EnvLookup, KEST_AWS_KMS_KEY_ID_ENV,
    SPIFFE_ENDPOINT_SOCKET_ENV,
};
pub use local::{DEFAULT_LOCAL_WORKLOAD_ID, LocalEd25519Provider};
pub use mock::{DEFAULT_MOCK_WORKLOAD_ID, MOCK_ALGORITHM, MockIdentityProvider};
pub use oidc::{OIDC_SIGNING_KEY_ENV, OIDC_TOKEN_PATH_ENV, OIDCIdentity, OidcSigningKey};
#[cfg(feature = "spiffe")]
pub use spiffe::{
    SpiffeBundleResolver, SpiffeError, SpiffeIdentity, WorkloadApiError, WorkloadApiIdentity, X509Svid,
};
pub use static_identity::StaticIdentity;
#[cfg(all(feature = "spiffe", feature = "http"))]
pub use svid_directory::{SvidDirectoryError, SvidDirectoryResolver};

/// A workload identity that can sign passport entries.
pub trait IdentityProvider: Signer {
    /// What kind of provider this is (`local`, `static`, `mock`, `oidc`, …).
    fn kind(&self) -> &'static str;

    /// Facts for `kest whoami` and logs (never secrets): e.g. the key id,
    /// the token issuer.
    fn describe(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Whether this identity can sign *now* (SPEC §5, no execution without
    /// lineage): the hook asks before the operation runs, so an expired
    /// token or a missing key is an error before execution, not after. The
    /// default is ready; providers with expiring credentials override it.
    fn ready(&self) -> Result<(), SignError> {
        Ok(())
    }

    /// The workload id (same as [`Signer::principal`]).
    fn workload_id(&self) -> &str {
        self.principal()
    }
}

/// Why an identity could not be established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No provider is configured (SPEC §5 step 1).
    #[error("no IdentityProvider configured")]
    NotConfigured,
    /// The detected environment needs a backend this build does not have.
    #[error("{backend} identity detected ({reason}) but the `{feature}` feature is not compiled in")]
    NotCompiledIn {
        /// The backend (`SPIFFE`, `AWS KMS`, …).
        backend: &'static str,
        /// What was detected.
        reason: String,
        /// The Cargo feature that enables it.
        feature: &'static str,
    },
    /// A key file could not be used.
    #[error(transparent)]
    KeyFile(#[from] crate::keyfile::KeyFileError),
    /// A token could not be used.
    #[error("token {source_name}: {reason}")]
    Token {
        /// Where the token came from (path or variable).
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// No usable X509-SVID from the SPIFFE Workload API.
    #[cfg(feature = "spiffe")]
    #[error("SPIFFE Workload API: {0}")]
    Spiffe(#[from] spiffe::WorkloadApiError),
    /// An AWS identity (STS, KMS) could not be established.
    #[cfg(feature = "aws")]
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
    /// Anything else (randomness, backend failures).
    #[error("{0}")]
    Other(String),
}
