//! SPIFFE X509-SVIDs (feature `spiffe`): [`SpiffeIdentity`] signs with the
//! SVID's key, its SPIFFE ID as the workload id, and
//! [`SpiffeBundleResolver`] maps SPIFFE IDs to SVID leaf keys after
//! checking each chain against the trust domain's X.509 bundle.
//!
//! The inputs are exactly what the SPIFFE Workload API hands out in an
//! `X509SVIDResponse` (`x509_svid`: the DER chain, leaf first;
//! `x509_svid_key`: the PKCS#8 DER key; `bundle`: the DER CA certificates).
//! [`SpiffeIdentity::from_workload_api`] fetches them from the Workload API
//! (gRPC over the `SPIFFE_ENDPOINT_SOCKET` Unix socket, the `FetchX509SVID`
//! stream) and rotates from the stream; [`SpiffeIdentity::new`] and
//! [`SpiffeIdentity::rotate`] take SVIDs obtained otherwise.
//! [`SpiffeBundleResolver::from_workload_api`] keeps a verifier's trust
//! bundle current from the same stream, and keeps every valid SVID key of a
//! SPIFFE ID during a rotation overlap; with the `http` feature,
//! [`SvidDirectoryResolver`](super::SvidDirectoryResolver) adds peers'
//! SVIDs from an SVID directory. Not done yet: federated bundles and CRLs.
//!
//! Key types: a P-256 SVID key signs `ES256`, an Ed25519 key `EdDSA`; RSA
//! (and every other type) is refused with [`SpiffeError::UnsupportedKey`].

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use kest_core::{
    Ed25519Signer, Es256Signer, KeyResolver, LocalSigner, PublicKey, ResolveError, SignError, Signer,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::IdentityProvider;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_ED25519: &str = "1.3.101.112";
const OID_RSA: &str = "1.2.840.113549.1.1.1";

/// Why an SVID or a bundle was refused. Messages never carry key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeError {
    /// The DER is not a certificate chain (or a key) that can be parsed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The leaf has no URI SAN `spiffe://…`, or more than one.
    #[error("the SVID must carry exactly one spiffe:// URI SAN, found {0}")]
    SpiffeId(usize),
    /// RSA or another key type Kest cannot sign or verify entries with.
    #[error("unsupported SVID key type {0} (P-256 signs ES256, Ed25519 EdDSA; RSA SVIDs are refused)")]
    UnsupportedKey(&'static str),
    /// The private key is not the leaf certificate's key.
    #[error("the SVID key does not match the leaf certificate")]
    KeyMismatch,
    /// A certificate is outside its validity period at the time of use.
    #[error("certificate `{subject}` is not valid now (expired or not yet valid)")]
    Expired {
        /// The certificate's subject.
        subject: String,
    },
    /// There is no SVID (none received yet).
    #[error("no X509-SVID available")]
    NoSvid,
    /// The chain does not lead to a CA of the bundle.
    #[error("chain of `{spiffe_id}` does not verify against the bundle of `{trust_domain}`: {reason}")]
    Chain {
        /// The SVID's SPIFFE ID.
        spiffe_id: String,
        /// The bundle's trust domain.
        trust_domain: String,
        /// The failed step.
        reason: String,
    },
    /// A lock of the resolver was poisoned by a panic elsewhere; nothing
    /// was changed.
    #[error("the SPIFFE key store is unusable (a lock was poisoned); nothing changed")]
    Poisoned,
    /// A rotated SVID names another workload.
    #[error("rotation changed the SPIFFE ID from `{from}` to `{to}`")]
    IdChanged {
        /// The identity's SPIFFE ID.
        from: String,
        /// The new SVID's.
        to: String,
    },
}

fn malformed(what: &'static str, reason: impl ToString) -> SpiffeError {
    SpiffeError::Malformed { what, reason: reason.to_string() }
}

/// Splits concatenated DER certificates (the Workload API's form).
pub(crate) fn split_der(mut der: &[u8], what: &'static str) -> Result<Vec<Vec<u8>>, SpiffeError> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der).map_err(|e| malformed(what, e))?;
        let used = der.len() - rest.len();
        out.push(der.get(..used).unwrap_or_default().to_vec());
        der = rest;
    }
    if out.is_empty() {
        return Err(malformed(what, "no certificate"));
    }
    Ok(out)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, SpiffeError> {
    x509_parser::parse_x509_certificate(der).map(|(_, c)| c).map_err(|e| malformed("certificate", e))
}

fn unix_now(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn check_time(cert: &X509Certificate<'_>, now: SystemTime) -> Result<(), SpiffeError> {
    let t = unix_now(now);
    let v = cert.validity();
    if t < v.not_before.timestamp() || t > v.not_after.timestamp() {
        return Err(SpiffeError::Expired { subject: cert.subject().to_string() });
    }
    Ok(())
}

/// The SPIFFE ID of a leaf: its one `spiffe://` URI SAN.
fn spiffe_id(cert: &X509Certificate<'_>) -> Result<String, SpiffeError> {
    let ids: Vec<&str> = match cert.subject_alternative_name().map_err(|e| malformed("SAN", e))? {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    match ids.as_slice() {
        [id] if id.starts_with("spiffe://") && id.len() > "spiffe://".len() => Ok((*id).to_owned()),
        other => Err(SpiffeError::SpiffeId(other.len())),
    }
}

/// The Kest public key of a certificate's SPKI: P-256 or Ed25519.
fn public_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, SpiffeError> {
    let alg = spki.algorithm.algorithm.to_id_string();
    let data = &spki.subject_public_key.data;
    match alg.as_str() {
        OID_EC_PUBLIC_KEY => {
            let curve =
                spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
            if curve.as_deref() != Some(OID_P256) {
                return Err(SpiffeError::UnsupportedKey("EC on a curve other than P-256"));
            }
            PublicKey::p256_from_sec1(data).map_err(|e| malformed("public key", e))
        }
        OID_ED25519 => PublicKey::ed25519_from_bytes(data).map_err(|e| malformed("public key", e)),
        OID_RSA => Err(SpiffeError::UnsupportedKey("RSA")),
        _ => Err(SpiffeError::UnsupportedKey("unknown")),
    }
}

/// One X509-SVID: SPIFFE ID, DER chain (leaf first) and its key.
pub struct X509Svid {
    spiffe_id: String,
    chain: Vec<Vec<u8>>,
    signer: Arc<LocalSigner>,
    not_before: i64,
    not_after: i64,
}

impl std::fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain_len", &self.chain.len())
            .field("signer", &self.signer)
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl X509Svid {
    /// An SVID from the Workload API's `x509_svid` (DER chain, leaf first)
    /// and `x509_svid_key` (PKCS#8 DER). The key must be the leaf's and of
    /// a supported type; the leaf must carry one `spiffe://` URI SAN and
    /// must not be a CA.
    pub fn from_der(chain_der: &[u8], key_pkcs8_der: &[u8]) -> Result<X509Svid, SpiffeError> {
        let chain = split_der(chain_der, "SVID chain")?;
        let leaf_der = chain.first().ok_or(SpiffeError::NoSvid)?;
        let leaf = parse(leaf_der)?;
        if leaf.is_ca() {
            return Err(malformed("SVID", "the leaf is a CA certificate"));
        }
        let id = spiffe_id(&leaf)?;
        let public = public_key(leaf.public_key())?;
        let signer: LocalSigner = match &public {
            PublicKey::Ed25519(_) => {
                use ed25519_dalek::pkcs8::DecodePrivateKey as _;
                let key = ed25519_dalek::SigningKey::from_pkcs8_der(key_pkcs8_der)
                    .map_err(|_| malformed("SVID key", "not an Ed25519 PKCS#8 key"))?;
                Ed25519Signer::from_signing_key(id.clone(), key).into()
            }
            _ => {
                use p256::pkcs8::DecodePrivateKey as _;
                let key = p256::ecdsa::SigningKey::from_pkcs8_der(key_pkcs8_der)
                    .map_err(|_| malformed("SVID key", "not a P-256 PKCS#8 key"))?;
                Es256Signer::from_signing_key(id.clone(), key).into()
            }
        };
        if signer.public_key().as_ref() != Some(&public) {
            return Err(SpiffeError::KeyMismatch);
        }
        let v = leaf.validity();
        let (not_before, not_after) = (v.not_before.timestamp(), v.not_after.timestamp());
        drop(leaf);
        Ok(X509Svid { spiffe_id: id, chain, signer: Arc::new(signer), not_before, not_after })
    }

    /// The SPIFFE ID (URI SAN of the leaf).
    pub fn spiffe_id(&self) -> &str {
        &self.spiffe_id
    }

    /// The DER certificates, leaf first.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The JWS algorithm its key signs with (`ES256` or `EdDSA`).
    pub fn algorithm(&self) -> &'static str {
        self.signer.algorithm()
    }

    /// Whether the leaf is within its validity period at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        let t = unix_now(now);
        self.not_before <= t && t <= self.not_after
    }
}

/// An identity backed by X509-SVIDs (SPEC §8): the workload id is the
/// SPIFFE ID, entries are signed with the current SVID's key (`ES256` for
/// P-256, `EdDSA` for Ed25519), [`SpiffeIdentity::rotate`] swaps in a new
/// SVID without restarting, and an expired or missing SVID is an error
/// before execution ([`IdentityProvider::ready`]) and at signing.
pub struct SpiffeIdentity {
    spiffe_id: String,
    current: RwLock<Option<Arc<X509Svid>>>,
}

impl std::fmt::Debug for SpiffeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.read().ok().and_then(|c| c.clone());
        f.debug_struct("SpiffeIdentity").field("spiffe_id", &self.spiffe_id).field("svid", &current).finish()
    }
}

impl SpiffeIdentity {
    /// An identity for this SVID's SPIFFE ID.
    pub fn new(svid: X509Svid) -> SpiffeIdentity {
        SpiffeIdentity { spiffe_id: svid.spiffe_id.clone(), current: RwLock::new(Some(Arc::new(svid))) }
    }

    /// Replaces the SVID (rotation). The SPIFFE ID must not change.
    pub fn rotate(&self, svid: X509Svid) -> Result<(), SpiffeError> {
        if svid.spiffe_id != self.spiffe_id {
            return Err(SpiffeError::IdChanged { from: self.spiffe_id.clone(), to: svid.spiffe_id });
        }
        let mut current = self.current.write().map_err(|_| SpiffeError::NoSvid)?;
        *current = Some(Arc::new(svid));
        Ok(())
    }

    /// Drops the SVID (e.g. the Workload API withdrew it): signing fails
    /// until the next [`rotate`](Self::rotate).
    pub fn clear(&self) {
        if let Ok(mut current) = self.current.write() {
            *current = None;
        }
    }

    /// The current SVID if it is valid now.
    fn svid_now(&self) -> Result<Arc<X509Svid>, SpiffeError> {
        let svid = self.current.read().ok().and_then(|c| c.clone()).ok_or(SpiffeError::NoSvid)?;
        if !svid.is_valid_at(SystemTime::now()) {
            return Err(SpiffeError::Expired { subject: svid.spiffe_id.clone() });
        }
        Ok(svid)
    }
}

impl Signer for SpiffeIdentity {
    fn principal(&self) -> &str {
        &self.spiffe_id
    }
    fn algorithm(&self) -> &'static str {
        // The algorithm of the current key; a rotation keeps the key type
        // in practice (SPIRE's CA key type), and entries carry their own.
        self.current.read().ok().and_then(|c| c.as_ref().map(|s| s.algorithm())).unwrap_or("ES256")
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        let svid = self.svid_now().map_err(|e| SignError(e.to_string()))?;
        svid.signer.sign(signing_input)
    }
    fn public_key(&self) -> Option<PublicKey> {
        self.current.read().ok().and_then(|c| c.as_ref().and_then(|s| s.signer.public_key()))
    }
}

/// A [`SpiffeIdentity`] fed by the Workload API from a thread of its own
/// (a current-thread Tokio runtime that keeps the `FetchX509SVID` stream
/// open), for synchronous callers such as [`AutoDetector`]. The thread
/// stops once the last handle to the identity is dropped.
///
/// [`AutoDetector`]: super::AutoDetector
#[derive(Debug, Clone)]
pub struct WorkloadApiIdentity {
    identity: Arc<SpiffeIdentity>,
    socket: String,
}

impl WorkloadApiIdentity {
    /// Connects to `socket` (`unix:///path` or a path) and waits at most
    /// `timeout` for a usable X509-SVID.
    pub fn connect(
        socket: &str,
        timeout: std::time::Duration,
    ) -> Result<WorkloadApiIdentity, WorkloadApiError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| WorkloadApiError::Connect { socket: socket.to_owned(), reason: e.to_string() })?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let target = socket.to_owned();
        std::thread::Builder::new()
            .name("kest-spiffe".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let identity = match SpiffeIdentity::from_workload_api(&target, timeout).await {
                        Ok(identity) => identity,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let weak = Arc::downgrade(&identity);
                    let _ = tx.send(Ok(identity));
                    // Keep the runtime (and the stream task on it) alive while
                    // the identity is used.
                    while weak.strong_count() > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                });
            })
            .map_err(|e| WorkloadApiError::Connect { socket: socket.to_owned(), reason: e.to_string() })?;
        let identity = rx
            .recv_timeout(timeout + std::time::Duration::from_secs(1))
            .map_err(|_| WorkloadApiError::Stream("no X509-SVID before the timeout".into()))??;
        Ok(WorkloadApiIdentity { identity, socket: socket.to_owned() })
    }

    /// The identity (rotated in place by the stream).
    pub fn identity(&self) -> &Arc<SpiffeIdentity> {
        &self.identity
    }
}

impl Signer for WorkloadApiIdentity {
    fn principal(&self) -> &str {
        self.identity.principal()
    }
    fn algorithm(&self) -> &'static str {
        self.identity.algorithm()
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.identity.sign(signing_input)
    }
    fn public_key(&self) -> Option<PublicKey> {
        self.identity.public_key()
    }
}

impl IdentityProvider for WorkloadApiIdentity {
    fn kind(&self) -> &'static str {
        "spiffe"
    }
    fn describe(&self) -> Vec<(String, String)> {
        let mut facts = self.identity.describe();
        facts.push(("workload_api".to_owned(), self.socket.clone()));
        facts
    }
    fn ready(&self) -> Result<(), SignError> {
        self.identity.ready()
    }
}

impl IdentityProvider for SpiffeIdentity {
    fn kind(&self) -> &'static str {
        "spiffe"
    }
    fn describe(&self) -> Vec<(String, String)> {
        let mut facts = vec![("spiffe_id".to_owned(), self.spiffe_id.clone())];
        if let Some(svid) = self.current.read().ok().and_then(|c| c.clone()) {
            facts.push(("algorithm".to_owned(), svid.algorithm().to_owned()));
            facts.push(("svid_not_after_unix".to_owned(), svid.not_after.to_string()));
        }
        facts
    }
    fn ready(&self) -> Result<(), SignError> {
        self.svid_now().map(|_| ()).map_err(|e| SignError(e.to_string()))
    }
}

/// A leaf key whose chain was checked against the bundle, with the period
/// in which the whole chain is valid.
#[derive(Clone)]
pub(crate) struct CheckedSvid {
    pub(crate) spiffe_id: String,
    pub(crate) key: PublicKey,
    /// Latest `notBefore` of the chain (Unix seconds).
    pub(crate) not_before: i64,
    /// Earliest `notAfter` of the chain (Unix seconds).
    pub(crate) not_after: i64,
    /// The DER certificates, leaf first (checked again on a bundle update).
    pub(crate) chain: Vec<Vec<u8>>,
}

impl CheckedSvid {
    pub(crate) fn valid_at(&self, t: i64) -> bool {
        self.not_before <= t && t <= self.not_after
    }
}

/// Checks an SVID chain (DER certificates, leaf first) at `now` against
/// the CAs of `trust_domain`'s bundle: every certificate within its
/// validity period, each signed by the next, intermediates CAs, the last
/// signed by a bundle CA valid now, the leaf not a CA and its one
/// `spiffe://` URI SAN in the trust domain, its key P-256 or Ed25519.
pub(crate) fn check_chain(
    trust_domain: &str,
    bundle: &[Vec<u8>],
    chain: Vec<Vec<u8>>,
    now: SystemTime,
) -> Result<CheckedSvid, SpiffeError> {
    let certs: Vec<X509Certificate<'_>> = chain.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
    let leaf = certs.first().ok_or(SpiffeError::NoSvid)?;
    let id = spiffe_id(leaf)?;
    let fail = |reason: String| SpiffeError::Chain {
        spiffe_id: id.clone(),
        trust_domain: trust_domain.to_owned(),
        reason,
    };
    if trust_domain_of(&id) != Some(trust_domain) {
        return Err(fail("the SPIFFE ID is not in this trust domain".into()));
    }
    if leaf.is_ca() {
        return Err(fail("the leaf is a CA certificate".into()));
    }
    let key = public_key(leaf.public_key())?;
    for cert in &certs {
        check_time(cert, now)?;
    }
    // Each certificate is signed by the next; intermediates are CAs.
    for pair in certs.windows(2) {
        let (child, issuer) = match pair {
            [c, i] => (c, i),
            _ => continue,
        };
        if !issuer.is_ca() {
            return Err(fail(format!("`{}` is not a CA", issuer.subject())));
        }
        child.verify_signature(Some(issuer.public_key())).map_err(|e| {
            fail(format!("`{}` is not signed by `{}`: {e}", child.subject(), issuer.subject()))
        })?;
    }
    // The last one is signed by a bundle CA (valid now).
    let last = certs.last().ok_or(SpiffeError::NoSvid)?;
    let mut anchored = false;
    for ca_der in bundle {
        let ca = parse(ca_der)?;
        if ca.subject() == last.issuer()
            && check_time(&ca, now).is_ok()
            && last.verify_signature(Some(ca.public_key())).is_ok()
        {
            anchored = true;
            break;
        }
    }
    if !anchored {
        return Err(fail("no CA of the bundle signed the chain".into()));
    }
    let not_before = certs.iter().map(|c| c.validity().not_before.timestamp()).max().unwrap_or(i64::MAX);
    let not_after = certs.iter().map(|c| c.validity().not_after.timestamp()).min().unwrap_or(i64::MIN);
    drop(certs);
    Ok(CheckedSvid { spiffe_id: id, key, not_before, not_after, chain })
}

/// Parses and checks a bundle: concatenated DER CA certificates.
fn parse_bundle(bundle_der: &[u8]) -> Result<Vec<Vec<u8>>, SpiffeError> {
    let bundle = split_der(bundle_der, "bundle")?;
    for ca in &bundle {
        if !parse(ca)?.is_ca() {
            return Err(malformed("bundle", "a bundle certificate is not a CA"));
        }
    }
    Ok(bundle)
}

/// Adds `svid` to `list` unless its key is there already (then keeps the
/// longer validity); drops the entries expired at `t`.
pub(crate) fn merge_svid(list: &mut Vec<CheckedSvid>, svid: CheckedSvid, t: i64) {
    list.retain(|k| k.not_after >= t);
    match list.iter_mut().find(|k| k.key == svid.key) {
        Some(known) => {
            if svid.not_after > known.not_after {
                *known = svid;
            }
        }
        None => list.push(svid),
    }
}

/// The keys of `list` valid at `t`, newest first, without duplicates.
pub(crate) fn keys_valid_at<'a>(list: impl IntoIterator<Item = &'a CheckedSvid>, t: i64) -> Vec<PublicKey> {
    let mut valid: Vec<&CheckedSvid> = list.into_iter().filter(|k| k.valid_at(t)).collect();
    valid.sort_by_key(|k| std::cmp::Reverse(k.not_after));
    let mut keys: Vec<PublicKey> = Vec::with_capacity(valid.len());
    for k in valid {
        if !keys.contains(&k.key) {
            keys.push(k.key.clone());
        }
    }
    keys
}

/// Verifier keys from SPIFFE SVIDs (SPEC §8): each SVID chain is checked
/// against the trust domain's X.509 bundle (signatures up to a bundle CA,
/// validity periods, intermediates must be CAs, the SPIFFE ID in the trust
/// domain), then its SPIFFE ID maps to its leaf public key. A [`KeyResolver`].
///
/// **Several keys per SPIFFE ID.** The `kid` of an entry is its principal,
/// so an SVID rotation gives one principal two keys while entries signed
/// with the previous SVID are still in flight. The resolver keeps every
/// SVID key recorded for a SPIFFE ID ([`KeyResolver::resolve_all`], newest
/// first, one per distinct key) until its chain expires: a key whose chain
/// is outside its validity period at resolution time is not returned, so
/// the entries it signed stop verifying. [`SpiffeBundleResolver::set_bundle`]
/// replaces the CAs (a Workload API bundle update) and drops every key whose
/// chain no longer leads to one of them.
///
/// [`SpiffeBundleResolver::from_workload_api`] keeps the bundle current
/// from the Workload API stream; peers' SVIDs come from
/// [`add_svid`](Self::add_svid) or, with the `http` feature, from an SVID
/// directory ([`SvidDirectoryResolver`](super::SvidDirectoryResolver)).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::SystemTime;
/// use kest::identity::SpiffeBundleResolver;
/// use kest_core::KeyResolver as _;
/// use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
///
/// // A trust domain CA (the Workload API's `bundle`), minted here with rcgen.
/// let ca_cert = |name: &str| -> Result<(CertificateParams, KeyPair), rcgen::Error> {
///     let mut params = CertificateParams::new(Vec::<String>::new())?;
///     params.distinguished_name.push(DnType::CommonName, name);
///     params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
///     Ok((params, KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?))
/// };
/// let (params, key) = ca_cert("example.org CA")?;
/// let ca_der = params.self_signed(&key)?.der().to_vec();
/// let ca = Issuer::new(params, key);
/// // Two X509-SVIDs of one workload: before and after a rotation.
/// let svid = || -> Result<Vec<u8>, rcgen::Error> {
///     let mut params = CertificateParams::new(Vec::<String>::new())?;
///     params.subject_alt_names = vec![SanType::URI("spiffe://example.org/web".try_into()?)];
///     let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
///     Ok(params.signed_by(&key, &ca)?.der().to_vec())
/// };
/// let resolver = SpiffeBundleResolver::new("example.org", &ca_der)?;
/// resolver.add_svid(&svid()?, SystemTime::now())?;
/// resolver.add_svid(&svid()?, SystemTime::now())?;
/// // Both keys are valid during the overlap.
/// assert_eq!(resolver.resolve_all("spiffe://example.org/web")?.len(), 2);
/// // A chain from another CA is refused.
/// let (params, key) = ca_cert("another CA")?;
/// let other_der = params.self_signed(&key)?.der().to_vec();
/// let other = SpiffeBundleResolver::new("example.org", &other_der)?;
/// assert!(other.add_svid(&svid()?, SystemTime::now()).is_err());
/// // A bundle update without the CA drops both keys.
/// assert_eq!(resolver.set_bundle(&other_der, SystemTime::now())?, 2);
/// assert!(resolver.resolve_all("spiffe://example.org/web")?.is_empty());
/// # Ok(()) }
/// ```
pub struct SpiffeBundleResolver {
    trust_domain: String,
    bundle: RwLock<Arc<Vec<Vec<u8>>>>,
    generation: std::sync::atomic::AtomicU64,
    keys: RwLock<BTreeMap<String, Vec<CheckedSvid>>>,
    /// For a resolver following the Workload API: since when its stream has
    /// been lost (`None` while it is open). Past
    /// [`MAX_BUNDLE_STALENESS`] the resolver fails closed.
    stream_lost_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// The staleness allowed after the stream is lost, in milliseconds.
    max_staleness_ms: std::sync::atomic::AtomicU64,
}

/// How long, by default, a resolver following the Workload API keeps
/// answering after its stream was lost (it reconnects meanwhile): past
/// this, a CA removed upstream might still be trusted here, so every
/// resolution is refused as stale until the stream is back
/// ([`SpiffeBundleResolver::set_max_staleness`]).
pub const MAX_BUNDLE_STALENESS: std::time::Duration = std::time::Duration::from_secs(300);

impl std::fmt::Debug for SpiffeBundleResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self.keys.read().map(|k| k.keys().cloned().collect()).unwrap_or_default();
        f.debug_struct("SpiffeBundleResolver")
            .field("trust_domain", &self.trust_domain)
            .field("bundle_cas", &self.bundle().len())
            .field("principals", &keys)
            .finish()
    }
}

impl SpiffeBundleResolver {
    /// A resolver for `trust_domain` (e.g. `example.org`) whose CAs are the
    /// concatenated DER certificates `bundle_der` (the Workload API's
    /// `bundle`). Fails when the bundle is empty, malformed or holds a
    /// certificate that is not a CA.
    pub fn new(
        trust_domain: impl Into<String>,
        bundle_der: &[u8],
    ) -> Result<SpiffeBundleResolver, SpiffeError> {
        Ok(SpiffeBundleResolver {
            trust_domain: trust_domain.into(),
            bundle: RwLock::new(Arc::new(parse_bundle(bundle_der)?)),
            generation: std::sync::atomic::AtomicU64::new(0),
            keys: RwLock::new(BTreeMap::new()),
            stream_lost_at: std::sync::Mutex::new(None),
            max_staleness_ms: std::sync::atomic::AtomicU64::new(
                u64::try_from(MAX_BUNDLE_STALENESS.as_millis()).unwrap_or(u64::MAX),
            ),
        })
    }

    /// How long a resolver following the Workload API keeps answering
    /// after its stream was lost (default [`MAX_BUNDLE_STALENESS`]).
    ///
    /// ```
    /// # let ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    /// # let mut ca = ca; ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    /// # let der = ca.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().to_vec();
    /// let resolver = kest::identity::SpiffeBundleResolver::new("example.org", &der).unwrap();
    /// resolver.set_max_staleness(std::time::Duration::from_secs(60));
    /// ```
    pub fn set_max_staleness(&self, max: std::time::Duration) {
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        self.max_staleness_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records that the Workload API stream was lost (`true`) or is open.
    fn stream_lost(&self, lost: bool) {
        if let Ok(mut at) = self.stream_lost_at.lock() {
            match (lost, at.is_some()) {
                (true, false) => *at = Some(std::time::Instant::now()),
                (false, _) => *at = None,
                (true, true) => {}
            }
        }
    }

    /// Refuses to answer once the Workload API stream has been lost for
    /// longer than the maximum staleness.
    fn check_fresh(&self) -> Result<(), ResolveError> {
        let lost = self.stream_lost_at.lock().map_err(|_| self.poisoned())?;
        let max = std::time::Duration::from_millis(
            self.max_staleness_ms.load(std::sync::atomic::Ordering::Relaxed),
        );
        match *lost {
            Some(at) if at.elapsed() > max => {
                Err(ResolveError::Stale { age_secs: at.elapsed().as_secs(), max_secs: max.as_secs() })
            }
            _ => Ok(()),
        }
    }

    /// The trust domain (e.g. `example.org`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The current CA certificates (DER).
    pub(crate) fn bundle(&self) -> Arc<Vec<Vec<u8>>> {
        self.bundle.read().map(|b| b.clone()).unwrap_or_default()
    }

    /// Increases on every bundle update (cached checks made against an
    /// older bundle are redone).
    #[cfg_attr(not(feature = "http"), expect(dead_code, reason = "used by the SVID directory (http)"))]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Checks a chain (DER certificates, leaf first) against the current
    /// bundle at `now`.
    pub(crate) fn check(&self, chain: Vec<Vec<u8>>, now: SystemTime) -> Result<CheckedSvid, SpiffeError> {
        check_chain(&self.trust_domain, &self.bundle(), chain, now)
    }

    /// Replaces the trust bundle (concatenated DER CA certificates, e.g. a
    /// new `bundle` from the Workload API stream) and checks every recorded
    /// SVID again at `now`: a key whose chain does not lead to a CA of the
    /// new bundle is dropped (its entries stop verifying). Returns how many
    /// keys were dropped. A malformed bundle is refused and the old one kept.
    pub fn set_bundle(&self, bundle_der: &[u8], now: SystemTime) -> Result<usize, SpiffeError> {
        let bundle = Arc::new(parse_bundle(bundle_der)?);
        // Under the key lock: `add_svid` checks and records under it too, so
        // no key checked against the old bundle is recorded after the swap.
        let mut keys = self.keys.write().map_err(|_| SpiffeError::Poisoned)?;
        let mut current = self.bundle.write().map_err(|_| SpiffeError::Poisoned)?;
        if **current == *bundle {
            // The same CAs (the stream repeats the bundle with every SVID).
            return Ok(0);
        }
        *current = bundle.clone();
        drop(current);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let mut dropped = 0;
        for list in keys.values_mut() {
            let before = list.len();
            list.retain(|k| check_chain(&self.trust_domain, &bundle, k.chain.clone(), now).is_ok());
            dropped += before - list.len();
        }
        keys.retain(|_, list| !list.is_empty());
        Ok(dropped)
    }

    /// Checks an SVID chain (DER, leaf first) at `now` and records its leaf
    /// key for its SPIFFE ID, beside the keys already recorded for it (a
    /// rotation: entries signed with the previous SVID keep verifying until
    /// its chain expires). Returns the SPIFFE ID.
    pub fn add_svid(&self, chain_der: &[u8], now: SystemTime) -> Result<String, SpiffeError> {
        let chain = split_der(chain_der, "SVID chain")?;
        // Checked and recorded under the key lock, which `set_bundle` holds
        // while it swaps the bundle: a key is never recorded on the word of
        // a CA that was just removed.
        let mut keys = self.keys.write().map_err(|_| SpiffeError::Poisoned)?;
        let checked = self.check(chain, now)?;
        let id = checked.spiffe_id.clone();
        merge_svid(keys.entry(id.clone()).or_default(), checked, unix_now(now));
        Ok(id)
    }

    /// Forgets every key of a SPIFFE ID (its entries stop verifying).
    pub fn remove(&self, spiffe_id: &str) {
        if let Ok(mut keys) = self.keys.write() {
            keys.remove(spiffe_id);
        }
    }

    /// The keys recorded for `principal` whose chains are valid at `now`,
    /// newest first.
    pub fn keys_at(&self, principal: &str, now: SystemTime) -> Vec<PublicKey> {
        self.keys
            .read()
            .map(|k| k.get(principal).map(|list| keys_valid_at(list, unix_now(now))).unwrap_or_default())
            .unwrap_or_default()
    }

    fn poisoned(&self) -> ResolveError {
        ResolveError::Unavailable {
            source_name: format!("SPIFFE bundle of {}", self.trust_domain),
            message: "lock poisoned".into(),
        }
    }
}

impl KeyResolver for SpiffeBundleResolver {
    /// The newest key valid now.
    fn resolve(&self, principal: &str) -> Result<Option<PublicKey>, ResolveError> {
        Ok(self.resolve_all(principal)?.into_iter().next())
    }

    /// Every key valid now, newest first.
    fn resolve_all(&self, principal: &str) -> Result<Vec<PublicKey>, ResolveError> {
        self.check_fresh()?;
        let keys = self.keys.read().map_err(|_| self.poisoned())?;
        let t = unix_now(SystemTime::now());
        Ok(keys.get(principal).map(|list| keys_valid_at(list, t)).unwrap_or_default())
    }
}

/// The messages of the SPIFFE Workload API (`workload.proto` of the SPIFFE
/// specification, X.509 part), written with `prost` derives instead of
/// generated (no `protoc` needed). Field numbers are the proto's.
pub mod proto {
    /// `X509SVIDRequest` (empty).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct X509SvidRequest {}

    /// `X509SVIDResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct X509SvidResponse {
        /// The SVIDs of the workload; the first is the default.
        #[prost(message, repeated, tag = "1")]
        pub svids: Vec<X509Svid>,
        /// CRLs (DER).
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub crl: Vec<Vec<u8>>,
        /// Bundles of federated trust domains (DER certificates).
        #[prost(map = "string, bytes", tag = "3")]
        pub federated_bundles: std::collections::HashMap<String, Vec<u8>>,
    }

    /// `X509SVID`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct X509Svid {
        /// The SPIFFE ID.
        #[prost(string, tag = "1")]
        pub spiffe_id: String,
        /// DER certificate chain, leaf first.
        #[prost(bytes = "vec", tag = "2")]
        pub x509_svid: Vec<u8>,
        /// PKCS#8 DER private key.
        #[prost(bytes = "vec", tag = "3")]
        pub x509_svid_key: Vec<u8>,
        /// The trust domain's CA certificates (DER).
        #[prost(bytes = "vec", tag = "4")]
        pub bundle: Vec<u8>,
        /// Operator hint.
        #[prost(string, tag = "5")]
        pub hint: String,
    }

    /// The gRPC method path (the proto declares no package).
    pub const FETCH_X509_SVID: &str = "/SpiffeWorkloadAPI/FetchX509SVID";
    /// The metadata every Workload API request carries.
    pub const SECURITY_HEADER: &str = "workload.spiffe.io";
}

/// The first and the longest wait before reopening a lost Workload API
/// stream.
const RECONNECT_MIN: std::time::Duration = std::time::Duration::from_secs(1);
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Why the Workload API could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadApiError {
    /// Connecting to the socket failed.
    #[error("cannot reach the SPIFFE Workload API at `{socket}`: {reason}")]
    Connect {
        /// The socket.
        socket: String,
        /// Why.
        reason: String,
    },
    /// The stream ended, failed or sent nothing in time.
    #[error("SPIFFE Workload API stream: {0}")]
    Stream(String),
    /// The SVID it sent is unusable.
    #[error(transparent)]
    Svid(#[from] SpiffeError),
}

/// Opens the `FetchX509SVID` stream on a Unix socket (`unix:///path` or a
/// bare path, as in `SPIFFE_ENDPOINT_SOCKET`).
async fn fetch_stream(socket: &str) -> Result<tonic::Streaming<proto::X509SvidResponse>, WorkloadApiError> {
    let path = socket.strip_prefix("unix://").unwrap_or(socket).to_owned();
    let connect_err = |reason: String| WorkloadApiError::Connect { socket: socket.to_owned(), reason };
    let endpoint = tonic::transport::Endpoint::from_static("http://localhost");
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| connect_err(e.to_string()))?;
    let mut request = tonic::Request::new(proto::X509SvidRequest {});
    request
        .metadata_mut()
        .insert(proto::SECURITY_HEADER, tonic::metadata::MetadataValue::from_static("true"));
    let codec = tonic_prost::ProstCodec::<proto::X509SvidRequest, proto::X509SvidResponse>::default();
    let path = http::uri::PathAndQuery::from_static(proto::FETCH_X509_SVID);
    let response = grpc
        .server_streaming(request, path, codec)
        .await
        .map_err(|e| WorkloadApiError::Stream(e.to_string()))?;
    Ok(response.into_inner())
}

/// Opens the `FetchX509SVID` stream and waits up to `timeout` for its
/// first response.
async fn open_stream(
    socket: &str,
    timeout: std::time::Duration,
) -> Result<(tonic::Streaming<proto::X509SvidResponse>, proto::X509SvidResponse), WorkloadApiError> {
    let mut stream = fetch_stream(socket).await?;
    let first = tokio::time::timeout(timeout, stream.message())
        .await
        .map_err(|_| WorkloadApiError::Stream("no X509-SVID response before the timeout".into()))?
        .map_err(|e| WorkloadApiError::Stream(e.to_string()))?
        .ok_or_else(|| WorkloadApiError::Stream("the stream ended before the first response".into()))?;
    Ok((stream, first))
}

/// The trust domain of a SPIFFE ID (`spiffe://<trust domain>/…`).
fn trust_domain_of(id: &str) -> Option<&str> {
    id.strip_prefix("spiffe://").and_then(|rest| rest.split('/').next())
}

fn default_svid(response: &proto::X509SvidResponse) -> Result<X509Svid, WorkloadApiError> {
    let svid = response.svids.first().ok_or(SpiffeError::NoSvid)?;
    let parsed = X509Svid::from_der(&svid.x509_svid, &svid.x509_svid_key)?;
    if !svid.spiffe_id.is_empty() && svid.spiffe_id != parsed.spiffe_id {
        return Err(WorkloadApiError::Stream("the response's spiffe_id is not the SVID's URI SAN".into()));
    }
    Ok(parsed)
}

impl SpiffeIdentity {
    /// Connects to the SPIFFE Workload API at `socket` (`unix:///path`,
    /// e.g. the value of `SPIFFE_ENDPOINT_SOCKET`), waits up to `timeout`
    /// for the first X509-SVID, and keeps rotating from the stream in a
    /// background Tokio task: every new default SVID replaces the current
    /// one; an unusable one (RSA, other SPIFFE ID, expired) is logged and
    /// ignored. When the stream ends or fails, the identity keeps its SVID
    /// until it expires, then is not ready (no execution without lineage).
    ///
    /// Must be called inside a Tokio runtime.
    pub async fn from_workload_api(
        socket: &str,
        timeout: std::time::Duration,
    ) -> Result<Arc<SpiffeIdentity>, WorkloadApiError> {
        let (mut stream, first) = open_stream(socket, timeout).await?;
        let svid = default_svid(&first)?;
        if !svid.is_valid_at(SystemTime::now()) {
            return Err(SpiffeError::Expired { subject: svid.spiffe_id.clone() }.into());
        }
        let identity = Arc::new(SpiffeIdentity::new(svid));
        let weak = Arc::downgrade(&identity);
        let socket = socket.to_owned();
        tokio::spawn(async move {
            loop {
                let next = stream.message().await;
                let Some(identity) = weak.upgrade() else { return };
                match next {
                    Ok(Some(response)) => match default_svid(&response).and_then(|s| Ok(identity.rotate(s)?))
                    {
                        Ok(()) => tracing::info!(spiffe_id = %identity.spiffe_id, "X509-SVID rotated"),
                        Err(e) => {
                            tracing::warn!(socket = %socket, error = %e, "ignored an unusable X509-SVID")
                        }
                    },
                    Ok(None) => {
                        tracing::warn!(socket = %socket, "SPIFFE Workload API stream ended");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(socket = %socket, error = %e, "SPIFFE Workload API stream failed");
                        return;
                    }
                }
            }
        });
        Ok(identity)
    }
}

impl SpiffeBundleResolver {
    /// A resolver whose trust bundle comes from the SPIFFE Workload API at
    /// `socket` (`unix:///path`, e.g. the value of `SPIFFE_ENDPOINT_SOCKET`):
    /// waits up to `timeout` for the first `X509SVIDResponse`, takes the
    /// trust domain and the `bundle` of its default SVID, and records that
    /// SVID's own key (so the workload verifies its own entries). A
    /// background Tokio task keeps following the stream: every response
    /// replaces the bundle ([`set_bundle`](Self::set_bundle): keys whose
    /// chains no longer lead to one of its CAs are dropped) and records the
    /// workload's new SVID. An unusable response is logged and ignored. When
    /// the stream ends or fails, the task reconnects (backoff from 1 s to
    /// 30 s) and the last bundle is kept, keys still expiring with their
    /// chains — for at most [`MAX_BUNDLE_STALENESS`]: past that, every
    /// resolution is refused as stale ([`ResolveError::Stale`], so entries
    /// are rejected as `key_unavailable`) until the stream is back. The task
    /// stops once the resolver is dropped.
    ///
    /// Must be called inside a Tokio runtime.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), kest::identity::WorkloadApiError> {
    /// use std::time::Duration;
    /// use kest::identity::SpiffeBundleResolver;
    /// let bundle = SpiffeBundleResolver::from_workload_api(
    ///     "unix:///run/spire/agent.sock",
    ///     Duration::from_secs(5),
    /// )
    /// .await?;
    /// assert_eq!(bundle.trust_domain(), "example.org");
    /// # Ok(()) }
    /// ```
    pub async fn from_workload_api(
        socket: &str,
        timeout: std::time::Duration,
    ) -> Result<Arc<SpiffeBundleResolver>, WorkloadApiError> {
        let (stream, first) = open_stream(socket, timeout).await?;
        let svid = first.svids.first().ok_or(SpiffeError::NoSvid)?;
        let chain = split_der(&svid.x509_svid, "SVID chain")?;
        let leaf = chain.first().ok_or(SpiffeError::NoSvid)?;
        let id = spiffe_id(&parse(leaf)?)?;
        let trust_domain = trust_domain_of(&id)
            .filter(|td| !td.is_empty())
            .ok_or_else(|| malformed("SVID", "the SPIFFE ID has no trust domain"))?
            .to_owned();
        let resolver = Arc::new(SpiffeBundleResolver::new(trust_domain, &svid.bundle)?);
        resolver.add_svid(&svid.x509_svid, SystemTime::now())?;
        let weak = Arc::downgrade(&resolver);
        let socket = socket.to_owned();
        tokio::spawn(async move {
            let mut stream = Some(stream);
            let mut backoff = RECONNECT_MIN;
            loop {
                let Some(open) = stream.as_mut() else {
                    // Lost: reconnect with backoff while the resolver lives.
                    tokio::time::sleep(backoff).await;
                    if weak.strong_count() == 0 {
                        return;
                    }
                    match fetch_stream(&socket).await {
                        Ok(reopened) => {
                            tracing::info!(socket = %socket, "SPIFFE Workload API stream reopened");
                            stream = Some(reopened);
                            backoff = RECONNECT_MIN;
                        }
                        Err(e) => {
                            tracing::warn!(socket = %socket, error = %e, "SPIFFE Workload API still unreachable");
                            backoff = (backoff * 2).min(RECONNECT_MAX);
                        }
                    }
                    continue;
                };
                let next = open.message().await;
                let Some(resolver) = weak.upgrade() else { return };
                match next {
                    Ok(Some(response)) => {
                        resolver.stream_lost(false);
                        let Some(svid) = response.svids.first() else {
                            tracing::warn!(socket = %socket, "ignored a Workload API response without an SVID");
                            continue;
                        };
                        let now = SystemTime::now();
                        match resolver.set_bundle(&svid.bundle, now) {
                            Ok(dropped) => {
                                tracing::info!(trust_domain = %resolver.trust_domain, dropped, "SPIFFE bundle updated")
                            }
                            Err(e) => {
                                tracing::warn!(socket = %socket, error = %e, "ignored an unusable bundle")
                            }
                        }
                        if let Err(e) = resolver.add_svid(&svid.x509_svid, now) {
                            tracing::warn!(socket = %socket, error = %e, "ignored an unusable X509-SVID");
                        }
                    }
                    Ok(None) => {
                        tracing::warn!(socket = %socket, "SPIFFE Workload API stream ended; reconnecting");
                        resolver.stream_lost(true);
                        stream = None;
                    }
                    Err(e) => {
                        tracing::warn!(socket = %socket, error = %e, "SPIFFE Workload API stream failed; reconnecting");
                        resolver.stream_lost(true);
                        stream = None;
                    }
                }
            }
        });
        Ok(resolver)
    }
}
