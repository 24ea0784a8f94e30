//! [`LocalEd25519Provider`]: a fresh in-memory Ed25519 key per instance,
//! for development and tests.

use std::sync::Once;

use kest_core::{Ed25519Signer, PublicKey, SignError, Signer};
use serde_json::Value;

use super::{IdentityError, IdentityProvider};

/// The workload id of a [`LocalEd25519Provider`] when none is given (the
/// reference's default).
pub const DEFAULT_LOCAL_WORKLOAD_ID: &str = "spiffe://kest.internal/local-workload";

/// Guards the process-wide "ephemeral key" warning.
static EPHEMERAL_WARNING: Once = Once::new();

/// Logs, at most once per `once`, that `who` signs with an ephemeral key.
fn warn_ephemeral_with(once: &Once, who: &str) {
    once.call_once(|| {
        tracing::warn!(
            provider = who,
            "Kest is signing with an ephemeral Ed25519 key generated for this process: \
             signatures cannot be verified after it exits and its identity is not attested. \
             Not for production; configure a StaticIdentity, OIDC, SPIFFE or KMS identity."
        );
    });
}

/// Logs the ephemeral-key warning once per process (shared by every
/// provider that falls back to an ephemeral key).
pub(crate) fn warn_ephemeral_once(who: &str) {
    warn_ephemeral_with(&EPHEMERAL_WARNING, who);
}

/// An identity with a fresh, random Ed25519 key generated when the provider
/// is created and held only in memory (never written to disk, zeroized on
/// drop).
///
/// Each instance has its own key, so its signatures can be verified only
/// with the public key it reports ([`Signer::public_key`]) while the process
/// runs. Creating one logs a warning (once per process) that the key is
/// ephemeral and not for production.
///
/// ```
/// use kest::identity::{IdentityProvider, LocalEd25519Provider, DEFAULT_LOCAL_WORKLOAD_ID};
/// use kest::core::Signer;
///
/// let local = LocalEd25519Provider::new().unwrap();
/// assert_eq!(local.workload_id(), DEFAULT_LOCAL_WORKLOAD_ID);
/// assert_eq!(local.kind(), "local");
/// assert_eq!(local.algorithm(), "EdDSA");
/// assert_eq!(local.sign(b"input").unwrap().len(), 64);
///
/// let named = LocalEd25519Provider::with_workload_id("spiffe://dev/agent").unwrap();
/// assert_eq!(named.principal(), "spiffe://dev/agent");
/// assert_ne!(local.public_key(), named.public_key(), "a fresh key per instance");
/// ```
pub struct LocalEd25519Provider {
    signer: Ed25519Signer,
}

impl LocalEd25519Provider {
    /// A provider for [`DEFAULT_LOCAL_WORKLOAD_ID`] with a fresh key.
    pub fn new() -> Result<LocalEd25519Provider, IdentityError> {
        LocalEd25519Provider::with_workload_id(DEFAULT_LOCAL_WORKLOAD_ID)
    }

    /// A provider for `workload_id` with a fresh key.
    ///
    /// Fails only if the operating system has no randomness, or if
    /// `workload_id` is empty.
    pub fn with_workload_id(workload_id: impl Into<String>) -> Result<LocalEd25519Provider, IdentityError> {
        let workload_id = workload_id.into();
        if workload_id.is_empty() {
            return Err(IdentityError::Other("the workload id must not be empty".into()));
        }
        let signer = Ed25519Signer::generate(workload_id).map_err(|e| IdentityError::Other(e.0))?;
        warn_ephemeral_once("local");
        Ok(LocalEd25519Provider { signer })
    }

    /// The public JWK of this instance's key (`kid` = the workload id).
    pub fn public_jwk(&self) -> Value {
        PublicKey::Ed25519(self.signer.signing_key().verifying_key()).to_jwk(self.signer.principal())
    }
}

impl std::fmt::Debug for LocalEd25519Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEd25519Provider").field("signer", &self.signer).finish()
    }
}

impl Signer for LocalEd25519Provider {
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

impl IdentityProvider for LocalEd25519Provider {
    fn kind(&self) -> &'static str {
        "local"
    }
    fn describe(&self) -> Vec<(String, String)> {
        vec![("key".into(), "ephemeral Ed25519 key, new in each process (not for production)".into())]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    use super::*;

    /// Counts WARN events on the current thread.
    struct CountWarnings(Arc<AtomicUsize>);

    impl Subscriber for CountWarnings {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if *event.metadata().level() == Level::WARN {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn the_ephemeral_warning_is_logged_once() {
        let count = Arc::new(AtomicUsize::new(0));
        let once = Once::new();
        tracing::subscriber::with_default(CountWarnings(count.clone()), || {
            for who in ["local", "local", "oidc"] {
                warn_ephemeral_with(&once, who);
            }
        });
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
