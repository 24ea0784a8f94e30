//! Identity providers (SPEC §8): who signs, and how.
//!
//! Every provider is a [`kest_core::Signer`] (workload id, algorithm,
//! signature, public key) plus a description for `kest whoami`. Key
//! material never appears in `Debug`, logs or errors, and is zeroized on
//! drop.

use kest_core::Signer;

/// A workload identity that can sign passport entries.
pub trait IdentityProvider: Signer {
    /// What kind of provider this is (`local`, `static`, `mock`, `oidc`, …).
    fn kind(&self) -> &'static str;

    /// Facts for `kest whoami` and logs (never secrets): e.g. the key id,
    /// the token issuer.
    fn describe(&self) -> Vec<(String, String)> {
        Vec::new()
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
    /// Anything else (randomness, backend failures).
    #[error("{0}")]
    Other(String),
}
