//! Peers' SVID keys from an SVID directory (features `spiffe` and `http`).
//!
//! The SPIFFE Workload API gives a workload its own X509-SVID and the
//! trust bundle, not its peers' SVIDs, and a Kest entry carries no
//! certificate: its header is `{"alg","kid","typ"}` (SPEC §8), fixed by
//! wire compatibility with the reference implementation, so an `x5c`
//! member cannot be added. A verifier therefore learns peers' leaf
//! certificates from an **SVID directory**: a document that publishes the
//! public SVID chains of the trust domain,
//!
//! ```json
//! {"svids": [{"spiffe_id": "spiffe://example.org/a", "x509_svid": "<base64 DER chain, leaf first>"}]}
//! ```
//!
//! fetched from an `https` URL (plain `http` on loopback only) or a file.
//! The directory is **not trusted**: every chain is checked against the
//! trust bundle of a [`SpiffeBundleResolver`] (the CAs from the local
//! Workload API) before its key is used, so a compromised directory can
//! hide keys (entries then fail to verify) but cannot inject one. Chains
//! that do not verify are skipped and counted ([`SvidDirectoryResolver::refused`]).
//!
//! The document is kept fresh by a [`RefreshPolicy`] like a JWKS key
//! source: refetched when older than the refresh interval and, rate
//! limited, when a passport names a signer it does not know or whose keys
//! do not verify an entry (an SVID rotated after the last fetch); a chain
//! missing from the latest listing is dropped at that refresh, so a key
//! rotated out stops verifying within the refresh interval; an unreachable
//! directory is refused once older than the maximum staleness
//! ([`ResolveError::Stale`]), and every entry then fails closed
//! (`key_unavailable`). Keys whose chains expire stop verifying at once.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use base64::Engine as _;
use kest_core::{KeyResolver, PublicKey, ResolveError};

use super::spiffe::{CheckedSvid, SpiffeBundleResolver, keys_valid_at, merge_svid, split_der};
use crate::http::refresh::{Loaded, RefreshingJwks};
use crate::http::{JwksError, JwksSource, RefreshPolicy, RefreshingKeyResolver};

/// Most SVIDs one directory document may list.
pub const MAX_DIRECTORY_SVIDS: usize = 10_000;

/// One listed SVID: the SPIFFE ID it claims and its DER chain, leaf first
/// (not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    spiffe_id: String,
    chain: Vec<Vec<u8>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    svids: Vec<Entry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    spiffe_id: String,
    x509_svid: String,
}

/// Parses a directory document (syntax only: chains are checked against
/// the bundle when their keys are first needed).
fn parse_directory(text: &str) -> Result<Vec<Listed>, JwksError> {
    let doc: Document =
        serde_json::from_str(text).map_err(|e| JwksError::Invalid(format!("SVID directory: {e}")))?;
    if doc.svids.len() > MAX_DIRECTORY_SVIDS {
        return Err(JwksError::Invalid(format!(
            "SVID directory lists more than {MAX_DIRECTORY_SVIDS} SVIDs"
        )));
    }
    doc.svids
        .into_iter()
        .map(|e| {
            let der = base64::engine::general_purpose::STANDARD
                .decode(e.x509_svid.as_bytes())
                .map_err(|_| JwksError::Invalid(format!("SVID directory: `{}`: not base64", e.spiffe_id)))?;
            let chain = split_der(&der, "SVID chain")
                .map_err(|err| JwksError::Invalid(format!("SVID directory: `{}`: {err}", e.spiffe_id)))?;
            Ok(Listed { spiffe_id: e.spiffe_id, chain })
        })
        .collect()
}

/// Why an SVID directory could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidDirectoryError {
    /// The document could not be fetched, read or parsed.
    #[error("SVID directory: {0}")]
    Source(#[from] JwksError),
}

/// The checked keys of one listing, for one bundle generation.
struct Checked {
    listing: Arc<Loaded<Vec<Listed>>>,
    generation: u64,
    keys: BTreeMap<String, Vec<CheckedSvid>>,
    refused: usize,
}

/// Verifier keys for the SPIFFE IDs of a trust domain: peers' SVID chains
/// from an SVID directory ([module docs](self)), each checked against the
/// bundle of a [`SpiffeBundleResolver`], plus the keys that resolver holds
/// itself (e.g. the workload's own SVID). A [`KeyResolver`] with several
/// keys per SPIFFE ID during a rotation overlap, and a
/// [`RefreshingKeyResolver`] that the lineage layers keep fresh
/// ([`LineageLayerBuilder::refreshing_key_resolver`]).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use kest::http::{JwksSource, LineageLayer, RefreshPolicy};
/// use kest::identity::{SpiffeBundleResolver, SvidDirectoryResolver};
///
/// // The trust bundle from the local Workload API, kept current from its stream.
/// let bundle =
///     SpiffeBundleResolver::from_workload_api("unix:///run/spire/agent.sock", Duration::from_secs(5)).await?;
/// // Peers' SVIDs from the directory, checked against that bundle.
/// let keys = Arc::new(
///     SvidDirectoryResolver::load(
///         JwksSource::url("https://svids.example.org/directory.json")?,
///         bundle,
///         RefreshPolicy::default().refresh_interval(Duration::from_secs(30)),
///         None,
///     )
///     .await?,
/// );
/// let layer = LineageLayer::builder().refreshing_key_resolver(keys).build().await?;
/// # let _ = layer; Ok(()) }
/// ```
///
/// [`LineageLayerBuilder::refreshing_key_resolver`]: crate::http::LineageLayerBuilder::refreshing_key_resolver
pub struct SvidDirectoryResolver {
    bundle: Arc<SpiffeBundleResolver>,
    directory: RefreshingJwks<Vec<Listed>>,
    checked: RwLock<Option<Checked>>,
}

impl std::fmt::Debug for SvidDirectoryResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvidDirectoryResolver")
            .field("bundle", &self.bundle)
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl SvidDirectoryResolver {
    /// Loads the directory now (fails when it cannot be fetched or read,
    /// or is not a directory document); `bundle` holds the trust bundle its
    /// chains are checked against; `client` fetches URLs (default: a
    /// rustls client).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use kest::http::{JwksSource, RefreshPolicy};
    /// use kest::identity::svid_directory::directory_document;
    /// use kest::identity::{SpiffeBundleResolver, SvidDirectoryResolver};
    /// use kest_core::KeyResolver as _;
    /// use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    ///
    /// // The trust domain's CA and a peer's SVID chain, minted with rcgen.
    /// let mut ca = CertificateParams::new(Vec::<String>::new())?;
    /// ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    /// let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    /// let ca_der = ca.self_signed(&ca_key)?.der().to_vec();
    /// let ca = Issuer::new(ca, ca_key);
    /// let mut leaf = CertificateParams::new(Vec::<String>::new())?;
    /// leaf.subject_alt_names = vec![SanType::URI("spiffe://example.org/peer".try_into()?)];
    /// let peer_chain = leaf.signed_by(&KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?, &ca)?.der().to_vec();
    ///
    /// // A directory document in a file (usually an https URL).
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("svids.json");
    /// std::fs::write(&path, directory_document([("spiffe://example.org/peer", peer_chain.as_slice())]).to_string())?;
    ///
    /// let bundle = Arc::new(SpiffeBundleResolver::new("example.org", &ca_der)?);
    /// let runtime = tokio::runtime::Runtime::new()?;
    /// let keys = runtime.block_on(SvidDirectoryResolver::load(
    ///     JwksSource::file(&path),
    ///     bundle,
    ///     RefreshPolicy::default(),
    ///     None,
    /// ))?;
    /// assert_eq!(keys.resolve_all("spiffe://example.org/peer")?.len(), 1);
    /// assert_eq!(keys.refused(), 0);
    /// # Ok(()) }
    /// ```
    pub async fn load(
        directory: JwksSource,
        bundle: Arc<SpiffeBundleResolver>,
        policy: RefreshPolicy,
        client: Option<reqwest::Client>,
    ) -> Result<SvidDirectoryResolver, SvidDirectoryError> {
        let client = crate::http::jwks::client_or_default(client)?;
        let directory = RefreshingJwks::load(directory, client, parse_directory, policy).await?;
        Ok(SvidDirectoryResolver { bundle, directory, checked: RwLock::new(None) })
    }

    /// The bundle resolver the chains are checked against.
    pub fn bundle(&self) -> &Arc<SpiffeBundleResolver> {
        &self.bundle
    }

    /// Refetches when the listing is older than the refresh interval.
    pub async fn refresh_if_due(&self) {
        self.directory.refresh_if_due().await;
    }

    /// Refetches now (rate-limited by the minimum refetch interval);
    /// returns whether a new listing was loaded.
    pub async fn refetch(&self) -> bool {
        self.directory.refetch("unknown or rotated signer").await
    }

    /// The SPIFFE IDs of the directory's listing with a key valid now.
    /// Empty when the directory is stale.
    pub fn principals(&self) -> Vec<String> {
        let t = unix_now();
        let mut ids: Vec<String> = self
            .with_checked(|keys| {
                keys.iter()
                    .filter(|(_, l)| l.iter().any(|k| k.valid_at(t)))
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids.dedup();
        ids
    }

    /// How many chains of the current listing were refused (not signed by
    /// the bundle, expired, another SPIFFE ID than listed, …).
    pub fn refused(&self) -> usize {
        let _ = self.with_checked(|_| ());
        self.checked.read().ok().and_then(|c| c.as_ref().map(|c| c.refused)).unwrap_or(0)
    }

    /// Runs `f` on the checked keys of the current listing (checking it
    /// against the bundle first when the listing or the bundle changed).
    fn with_checked<R>(
        &self,
        f: impl FnOnce(&BTreeMap<String, Vec<CheckedSvid>>) -> R,
    ) -> Result<R, ResolveError> {
        let listing = self.directory.snapshot().map_err(|stale| ResolveError::Stale {
            age_secs: stale.age.as_secs(),
            max_secs: stale.max.as_secs(),
        })?;
        let generation = self.bundle.generation();
        let current = |c: &Option<Checked>| {
            c.as_ref().is_some_and(|c| Arc::ptr_eq(&c.listing, &listing) && c.generation == generation)
        };
        {
            let checked = self.checked.read().map_err(|_| self.poisoned())?;
            if current(&checked)
                && let Some(c) = checked.as_ref()
            {
                return Ok(f(&c.keys));
            }
        }
        let mut checked = self.checked.write().map_err(|_| self.poisoned())?;
        if !current(&checked) {
            // A refetch that brought the same listing (the usual case: every
            // refresh, and every refetch a bad signature triggers) under the
            // same bundle reuses the checks when none was refused; the keys
            // still expire with their chains at resolution. Only a changed
            // listing or bundle is checked again, chain by chain.
            let unchanged = checked
                .as_mut()
                .filter(|c| c.generation == generation && c.refused == 0 && c.listing.value == listing.value);
            match unchanged {
                Some(c) => c.listing = listing,
                None => *checked = Some(self.check_listing(listing, generation)),
            }
        }
        match checked.as_ref() {
            Some(c) => Ok(f(&c.keys)),
            None => Err(self.poisoned()),
        }
    }

    /// Checks every listed chain against the bundle, now.
    fn check_listing(&self, listing: Arc<Loaded<Vec<Listed>>>, generation: u64) -> Checked {
        let now = SystemTime::now();
        let t = unix_now();
        let mut keys: BTreeMap<String, Vec<CheckedSvid>> = BTreeMap::new();
        let mut refused = 0;
        for listed in &listing.value {
            match self.bundle.check(listed.chain.clone(), now) {
                Ok(svid) if svid.spiffe_id == listed.spiffe_id => {
                    merge_svid(keys.entry(svid.spiffe_id.clone()).or_default(), svid, t);
                }
                Ok(svid) => {
                    refused += 1;
                    tracing::warn!(listed = %listed.spiffe_id, found = %svid.spiffe_id, "SVID directory: a chain is listed under another SPIFFE ID; refused");
                }
                Err(e) => {
                    refused += 1;
                    tracing::warn!(listed = %listed.spiffe_id, error = %e, "SVID directory: a chain does not verify against the bundle; refused");
                }
            }
        }
        Checked { listing, generation, keys, refused }
    }

    fn poisoned(&self) -> ResolveError {
        ResolveError::Unavailable {
            source_name: self.directory.source().to_string(),
            message: "lock poisoned".into(),
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl KeyResolver for SvidDirectoryResolver {
    /// The newest key valid now.
    fn resolve(&self, principal: &str) -> Result<Option<PublicKey>, ResolveError> {
        Ok(self.resolve_all(principal)?.into_iter().next())
    }

    /// Every key valid now for `principal`, from the directory (checked
    /// against the bundle) and from the bundle resolver, newest first;
    /// [`ResolveError::Stale`] once the directory is older than the
    /// maximum staleness.
    fn resolve_all(&self, principal: &str) -> Result<Vec<PublicKey>, ResolveError> {
        let t = unix_now();
        let mut keys =
            self.with_checked(|keys| keys.get(principal).map(|l| keys_valid_at(l, t)))?.unwrap_or_default();
        for key in self.bundle.resolve_all(principal)? {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(keys)
    }
}

#[async_trait::async_trait]
impl RefreshingKeyResolver for SvidDirectoryResolver {
    async fn refresh_if_due(&self) {
        SvidDirectoryResolver::refresh_if_due(self).await;
    }
    async fn refetch_for_unknown(&self) -> bool {
        self.refetch().await
    }
}

/// Writes a directory document listing `chains` (each a DER chain, leaf
/// first, with its SPIFFE ID): what an SVID directory serves.
///
/// ```
/// let doc = kest::identity::svid_directory::directory_document([("spiffe://example.org/a", &[0x30u8, 0x00][..])]);
/// assert_eq!(doc["svids"][0]["spiffe_id"], "spiffe://example.org/a");
/// assert_eq!(doc["svids"][0]["x509_svid"], "MAA=");
/// ```
pub fn directory_document<'a>(chains: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> serde_json::Value {
    let svids: Vec<serde_json::Value> = chains
        .into_iter()
        .map(|(id, der)| {
            serde_json::json!({
                "spiffe_id": id,
                "x509_svid": base64::engine::general_purpose::STANDARD.encode(der),
            })
        })
        .collect();
    serde_json::json!({ "svids": svids })
}
