//! [`JwksKeyResolver`]: the Kest verifier keys (Ed25519 and P-256 JWKS, `kid` = the
//! principal) from a URL or file, kept fresh by a [`RefreshPolicy`] (SPEC
//! §8): refreshed on an interval, refetched (rate-limited) when a passport
//! names an unknown signer, refused once stale. A key removed from the
//! source stops verifying within the refresh interval.
//!
//! Resolution itself is synchronous ([`KeyResolver`]); the lineage layer
//! drives the refreshes before it verifies ([`JwksKeyResolver::refresh_if_due`])
//! and, when a passport names a signer it does not know, once more
//! ([`JwksKeyResolver::refetch_for_unknown`]) before refusing it.

use kest_core::{KeyResolver, KeySet, PublicKey, ResolveError};

use super::jwks::{JwksError, JwksSource, client_or_default};
use super::refresh::{RefreshPolicy, RefreshingJwks};

/// Kest verifier keys from a JWKS source, refreshed and rate-limited.
///
/// ```no_run
/// # async fn run() -> Result<(), kest::http::JwksError> {
/// use std::time::Duration;
/// use kest::http::{JwksKeyResolver, JwksSource, RefreshPolicy};
/// let keys = JwksKeyResolver::load(
///     JwksSource::url("https://keys.example/kest/jwks.json")?,
///     RefreshPolicy::default().refresh_interval(Duration::from_secs(30)),
///     None,
/// )
/// .await?;
/// # let _ = keys; Ok(()) }
/// ```
#[derive(Debug)]
pub struct JwksKeyResolver {
    jwks: RefreshingJwks<KeySet>,
}

fn parse_key_set(text: &str) -> Result<KeySet, JwksError> {
    let keys = KeySet::from_jwks_json(text).map_err(|e| JwksError::Invalid(e.to_string()))?;
    if keys.is_empty() {
        return Err(JwksError::EmptyKeySet);
    }
    Ok(keys)
}

impl JwksKeyResolver {
    /// Loads the key set now (fails when it cannot be read, is invalid or
    /// empty); `client` fetches URLs (default: a rustls client).
    pub async fn load(
        source: JwksSource,
        policy: RefreshPolicy,
        client: Option<reqwest::Client>,
    ) -> Result<JwksKeyResolver, JwksError> {
        let client = client_or_default(client)?;
        Ok(JwksKeyResolver { jwks: RefreshingJwks::load(source, client, parse_key_set, policy).await? })
    }

    /// Refetches when the keys are older than the refresh interval.
    pub async fn refresh_if_due(&self) {
        self.jwks.refresh_if_due().await;
    }

    /// Refetches for a signer the keys do not know (rate-limited); returns
    /// whether new keys were loaded.
    pub async fn refetch_for_unknown(&self) -> bool {
        self.jwks.refetch("unknown signer").await
    }

    /// The principals currently known.
    pub fn principals(&self) -> Vec<String> {
        self.jwks.snapshot().map(|l| l.value.iter().map(|(p, _)| p.to_owned()).collect()).unwrap_or_default()
    }
}

/// A [`KeyResolver`] whose source is refetched: the lineage layers
/// ([`LineageLayerBuilder::refreshing_key_resolver`]) call
/// [`refresh_if_due`](Self::refresh_if_due) once per request before any key
/// is resolved, and [`refetch_for_unknown`](Self::refetch_for_unknown) when
/// a passport names a signer the keys do not know or whose keys do not
/// verify its entry (a key rotated after the last fetch), then verify once
/// more. Implemented by [`JwksKeyResolver`] and, with the `spiffe` feature,
/// by the SVID directory resolver.
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use kest::http::{JwksKeyResolver, JwksSource, LineageLayer, RefreshPolicy, RefreshingKeyResolver};
/// # let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"spiffe://demo/a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
/// let keys = Arc::new(JwksKeyResolver::load(JwksSource::json(jwks), RefreshPolicy::default(), None).await?);
/// keys.refresh_if_due().await; // an inline document is never refetched
/// let layer = LineageLayer::builder().refreshing_key_resolver(keys).build().await?;
/// # let _ = layer; Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
/// ```
///
/// [`LineageLayerBuilder::refreshing_key_resolver`]: super::LineageLayerBuilder::refreshing_key_resolver
#[async_trait::async_trait]
pub trait RefreshingKeyResolver: KeyResolver {
    /// Refetches when the keys are older than the refresh interval.
    async fn refresh_if_due(&self);
    /// Refetches now (rate-limited); returns whether new keys were loaded.
    async fn refetch_for_unknown(&self) -> bool;
}

#[async_trait::async_trait]
impl RefreshingKeyResolver for JwksKeyResolver {
    async fn refresh_if_due(&self) {
        self.jwks.refresh_if_due().await;
    }
    async fn refetch_for_unknown(&self) -> bool {
        self.jwks.refetch("unknown signer").await
    }
}

impl KeyResolver for JwksKeyResolver {
    fn resolve(&self, principal: &str) -> Result<Option<PublicKey>, ResolveError> {
        let loaded = self.jwks.snapshot().map_err(|stale| ResolveError::Stale {
            age_secs: stale.age.as_secs(),
            max_secs: stale.max.as_secs(),
        })?;
        Ok(loaded.value.get(principal).cloned())
    }
}
