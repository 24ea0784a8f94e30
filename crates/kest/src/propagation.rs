//! Carrying a flow across a process boundary in W3C Baggage (SPEC §7.2,
//! §7.3): [`Propagator::inject`] writes a [`Lineage`]'s passport, tips and
//! identity into a [`Baggage`]; [`Propagator::extract`] reads them back,
//! resolving claim checks and **verifying** the passport.
//!
//! Packing follows the three tiers of SPEC §7.3: the passport JSON inline
//! (`kest.passport`) when it is at most the threshold (default 4096 bytes),
//! else zlib + base64url (`kest.passport_z`) when that fits, else stored in
//! the [`CacheProvider`] under `kest.claim.<uuid v4>` with a TTL (default
//! 300 s) and sent as `kest.claim_check`. A passport that needs a claim check
//! with no cache configured is an error: an oversized header is never sent.
//!
//! Extraction fails closed: a claim check missing from the cache, a cache
//! that cannot be reached, a value that does not decode or inflate (bounded),
//! a passport that does not verify — each is a [`PropagationError`] with the
//! HTTP status the server should answer ([`PropagationError::http_status`]).
//! Only a baggage without any passport key is a new flow with an empty
//! passport.
//!
//! The verified passport is then **bound** to the request (SPEC §7.5,
//! [`kest_core::ingress`]): `kest.chain_tip` must name exactly its tips (a
//! sender can neither rewind to a clean ancestor nor drop a tainted branch;
//! [`IngressRules::allow_tip_subset`] accepts a non-empty subset of the tips
//! for senders that write only one), its newest tip must be younger than the
//! maximum age (a captured passport cannot be replayed later), every tip
//! must be signed by the authenticated peer when there is one, and
//! `kest.user`/`kest.agent`/`kest.task` are kept only when they equal the
//! `kest.identity` signed into every tip — otherwise they are dropped (and
//! the drop logged), never passed to policy or signed into a new entry.
//!
//! ```
//! use std::sync::Arc;
//! use kest::cache::MemoryCache;
//! use kest::lineage::{FlowIdentity, Lineage};
//! use kest::propagation::Propagator;
//! use kest_core::baggage::Baggage;
//! use kest_core::{Ed25519Signer, EntryDraft, KeySet, Passport, Signer, TrustRules, Verifier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Upstream: two recorded steps, then an outgoing request.
//! let signer = Ed25519Signer::from_seed("spiffe://demo/agent", [7u8; 32]);
//! let mut passport = Passport::new();
//! passport.record(&EntryDraft::new("fetch"), &signer, &TrustRules::default()).unwrap();
//! passport.record(&EntryDraft::new("summarise"), &signer, &TrustRules::default()).unwrap();
//! let flow = Lineage::from_passport(passport)
//!     .with_identity(FlowIdentity { user: Some("alice".into()), ..FlowIdentity::default() });
//!
//! let propagator = Propagator::builder().cache(Arc::new(MemoryCache::new())).build();
//! let mut baggage = Baggage::parse("vendor=keep%20me").unwrap();
//! propagator.inject(&flow, &mut baggage).await.unwrap();
//! let header = baggage.to_header().unwrap();
//! assert!(header.starts_with("vendor=keep%20me,kest.passport="));
//!
//! // Downstream: verify against the upstream's public key.
//! let mut keys = KeySet::new();
//! keys.insert("spiffe://demo/agent", signer.public_key().unwrap()).unwrap();
//! let verifier = Verifier::new(keys);
//! let extracted = propagator.extract(&Baggage::parse(&header).unwrap(), &verifier).await.unwrap();
//! assert_eq!(extracted.passport.len(), 2);
//! // `alice` is only a claim: no entry signed that identity, so it is dropped.
//! assert_eq!(extracted.identity.user, None);
//! assert_eq!(extracted.dropped_claims, ["user"]);
//! let continued = extracted.into_lineage().unwrap();
//! assert_eq!(continued.tips(), flow.tips());
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kest_core::baggage::{
    Baggage, BaggageError, BaggageLimits, DEFAULT_THRESHOLD, KEST_AGENT, KEST_CHAIN_TIP, KEST_CLAIM_CHECK,
    KEST_JWT, KEST_PASSPORT, KEST_PASSPORT_Z, KEST_TASK, KEST_USER, PackOptions, Packed, PassportSource,
    claim_key, format_chain_tip, pack, parse_chain_tip, unpack, write_claim_check,
};
use kest_core::ingress::{IdentityClaims, IngressError, IngressRules, bind};
use kest_core::{DraftError, EntryHash, Limits, Passport, UnverifiedPassport, Verifier, VerifyError};
use uuid::Uuid;

use crate::cache::{CacheError, CacheProvider};
use crate::lineage::{FlowIdentity, Lineage};

/// Default time-to-live of a claim-checked passport in the cache (300 s).
pub const DEFAULT_CLAIM_TTL: Duration = Duration::from_secs(300);

/// Default bound on an inflated `kest.passport_z` (1 MiB). A compressed
/// value has to fit in a header of at most 8192 bytes, and real passports
/// (signatures, hashes, UUIDs) compress far less than 100:1, so anything
/// inflating beyond this is a decompression bomb, not a passport.
pub const DEFAULT_MAX_INFLATED_BYTES: usize = 1 << 20;

/// The passport keys a [`Propagator`] owns in the baggage.
const PASSPORT_KEYS: [&str; 8] = [
    KEST_PASSPORT,
    KEST_PASSPORT_Z,
    KEST_CLAIM_CHECK,
    KEST_CHAIN_TIP,
    KEST_USER,
    KEST_AGENT,
    KEST_TASK,
    KEST_JWT,
];

/// Why a flow could not be injected into or extracted from baggage.
///
/// ```
/// use kest::propagation::PropagationError;
/// use kest_core::baggage::{Baggage, BaggageError};
/// let err = PropagationError::from(Baggage::parse(&"a=1,".repeat(3000)).unwrap_err());
/// assert_eq!(err.http_status(), 431);
/// assert_eq!(PropagationError::NoCacheForClaimCheck.http_status(), 424);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PropagationError {
    /// The baggage (or a passport value in it) does not decode: bad member,
    /// bad percent-encoding, bad base64url, a value that does not inflate or
    /// inflates past the bound, not a JSON array of strings, a malformed
    /// claim check; or a header above the W3C limits.
    #[error("baggage: {0}")]
    Baggage(#[from] BaggageError),
    /// `kest.chain_tip` is not `"0"` nor comma-separated entry hashes.
    #[error("kest.chain_tip is invalid: {reason}")]
    BadChainTip {
        /// What is wrong with it.
        reason: String,
    },
    /// `kest.chain_tip` names an entry that is not in the passport.
    #[error("kest.chain_tip names `{tip}`, which is not an entry of the passport")]
    TipNotInPassport {
        /// The tip.
        tip: EntryHash,
    },
    /// The verified passport is not bound to this request (SPEC §7.5):
    /// chain tip not the passport's tips, stale, not signed by the peer, or
    /// an identity claim with control characters.
    #[error("the propagated passport is refused: {0}")]
    Ingress(IngressError),
    /// The claim-checked passport is not in the cache (expired, deleted, or
    /// never stored there). Never read as an empty passport.
    #[error("claim check `{id}` is not in the cache (expired or unknown)")]
    ClaimCheckNotFound {
        /// The claim check.
        id: Uuid,
    },
    /// A claim check is needed (to store a large passport, or to resolve
    /// one received) and no cache is configured.
    #[error("a claim check is needed but no cache is configured")]
    NoCacheForClaimCheck,
    /// The cache failed (unreachable, timed out, refused the value).
    #[error("claim-check cache: {0}")]
    CacheUnavailable(CacheError),
    /// The propagated passport does not verify.
    #[error("the propagated passport does not verify: {0}")]
    Verification(VerifyError),
}

impl PropagationError {
    /// The status an HTTP server should answer when extraction fails this
    /// way: 400 for malformed baggage or chain tips, 431 for a header above
    /// the W3C limits, 424 for a claim check that cannot be resolved, 503
    /// when the cache is unavailable, 403 when the passport does not verify.
    pub fn http_status(&self) -> u16 {
        match self {
            PropagationError::Baggage(
                BaggageError::TooLarge { .. } | BaggageError::TooManyMembers { .. },
            ) => 431,
            PropagationError::Baggage(_)
            | PropagationError::BadChainTip { .. }
            | PropagationError::TipNotInPassport { .. } => 400,
            PropagationError::ClaimCheckNotFound { .. } | PropagationError::NoCacheForClaimCheck => 424,
            PropagationError::CacheUnavailable(_) => 503,
            PropagationError::Verification(VerifyError::Entry { source, .. })
                if source.kind() == kest_core::ErrorKind::KeyUnavailable =>
            {
                503
            }
            PropagationError::Verification(_) => 403,
            PropagationError::Ingress(e) if e.kind() == kest_core::ErrorKind::InvalidIdentity => 400,
            PropagationError::Ingress(_) => 403,
        }
    }

    /// The stable kind written as `error` in HTTP bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            PropagationError::Baggage(
                BaggageError::TooLarge { .. } | BaggageError::TooManyMembers { .. },
            ) => "baggage_too_large",
            PropagationError::Baggage(_) => "malformed_baggage",
            PropagationError::BadChainTip { .. } => "bad_chain_tip",
            PropagationError::TipNotInPassport { .. } => "tip_not_in_passport",
            PropagationError::ClaimCheckNotFound { .. } => "claim_check_not_found",
            PropagationError::NoCacheForClaimCheck => "no_cache_for_claim_check",
            PropagationError::CacheUnavailable(_) => "cache_unavailable",
            PropagationError::Verification(e) => e.kind().as_str(),
            PropagationError::Ingress(e) => e.kind().as_str(),
        }
    }
}

/// A flow read from baggage by [`Propagator::extract`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Extracted {
    /// The verified passport (empty only when the baggage held no passport
    /// key: a new flow).
    pub passport: Passport,
    /// Where the next entry attaches: the passport's tips (all of them, or
    /// the subset `kest.chain_tip` named when the rules allow a subset).
    pub tips: Vec<EntryHash>,
    /// `kest.user`, `kest.agent`, `kest.task` — only those equal to the
    /// `kest.identity` signed into every tip (and `kest.jwt` when the
    /// propagator forwards tokens). Identity verified at this hop (the
    /// identity layer) overwrites them.
    pub identity: FlowIdentity,
    /// The identity claims of the baggage that were dropped because no
    /// signed entry vouches for them (`user`, `agent`, `task`).
    pub dropped_claims: Vec<&'static str>,
}

impl Extracted {
    /// Whether the baggage held no passport (a new flow).
    pub fn is_new_flow(&self) -> bool {
        self.passport.is_empty()
    }

    /// The flow to run the request in: the passport, positioned at
    /// [`tips`](Extracted::tips), with the identity. Fails only if `tips`
    /// was changed to name an entry outside the passport or to repeat one.
    pub fn into_lineage(self) -> Result<Lineage, PropagationError> {
        let Extracted { passport, tips, identity, .. } = self;
        let shown = format_chain_tip(&tips);
        match Lineage::from_passport_at(passport, tips) {
            Ok(lineage) => Ok(lineage.with_identity(identity)),
            Err(DraftError::UnknownParent(tip)) => Err(PropagationError::TipNotInPassport { tip }),
            Err(_) => Err(PropagationError::BadChainTip { reason: format!("`{shown}` repeats a tip") }),
        }
    }
}

/// Writes flows into baggage and reads them back (see the [module
/// documentation](self)). Cheap to clone; share one per service.
#[derive(Clone)]
pub struct Propagator {
    cache: Option<Arc<dyn CacheProvider>>,
    threshold: usize,
    claim_ttl: Duration,
    limits: Limits,
    max_inflated_bytes: usize,
    baggage_limits: BaggageLimits,
    forward_jwt: bool,
    ingress: IngressRules,
}

impl fmt::Debug for Propagator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Propagator")
            .field("cache", &self.cache.as_ref().map(|c| c.name().to_owned()))
            .field("threshold", &self.threshold)
            .field("claim_ttl", &self.claim_ttl)
            .field("limits", &self.limits)
            .field("max_inflated_bytes", &self.max_inflated_bytes)
            .field("baggage_limits", &self.baggage_limits)
            .field("forward_jwt", &self.forward_jwt)
            .field("ingress", &self.ingress)
            .finish()
    }
}

impl Default for Propagator {
    fn default() -> Self {
        Propagator {
            cache: None,
            threshold: DEFAULT_THRESHOLD,
            claim_ttl: DEFAULT_CLAIM_TTL,
            limits: Limits::default(),
            max_inflated_bytes: DEFAULT_MAX_INFLATED_BYTES,
            baggage_limits: BaggageLimits::default(),
            forward_jwt: false,
            ingress: IngressRules::default(),
        }
    }
}

/// Configures a [`Propagator`] (see [`Propagator::builder`]).
#[derive(Debug, Clone, Default)]
pub struct PropagatorBuilder {
    inner: Propagator,
}

impl PropagatorBuilder {
    /// The cache for claim checks (none by default: a passport too large
    /// for the header is then an error, and so is a received claim check).
    pub fn cache(mut self, cache: Arc<dyn CacheProvider>) -> Self {
        self.inner.cache = Some(cache);
        self
    }

    /// Largest inline or compressed passport value in bytes (default 4096).
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.inner.threshold = bytes;
        self
    }

    /// How long a claim-checked passport stays in the cache (default 300 s).
    pub fn claim_ttl(mut self, ttl: Duration) -> Self {
        self.inner.claim_ttl = ttl;
        self
    }

    /// How a received passport is bound to the request (default: the chain
    /// tip names exactly the tips, newest tip at most 300 s old).
    pub fn ingress(mut self, rules: IngressRules) -> Self {
        self.inner.ingress = rules;
        self
    }

    /// Size limits applied to a received passport before it is verified
    /// (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.inner.limits = limits;
        self
    }

    /// Bound on an inflated `kest.passport_z` (default 1 MiB, see
    /// [`DEFAULT_MAX_INFLATED_BYTES`]); never above
    /// [`Limits::max_passport_bytes`].
    pub fn max_inflated_bytes(mut self, bytes: usize) -> Self {
        self.inner.max_inflated_bytes = bytes;
        self
    }

    /// W3C size limits the written header must respect (default 8192
    /// bytes, 64 members). A packed passport that would push the header
    /// past them goes to the cache instead, or is an error without one.
    pub fn baggage_limits(mut self, limits: BaggageLimits) -> Self {
        self.inner.baggage_limits = limits;
        self
    }

    /// Forwards the raw bearer token (`kest.jwt`) downstream and reads it
    /// on extraction (default off: the token is removed from outgoing
    /// baggage and ignored in incoming baggage).
    pub fn forward_jwt(mut self, on: bool) -> Self {
        self.inner.forward_jwt = on;
        self
    }

    /// The propagator.
    pub fn build(self) -> Propagator {
        let mut p = self.inner;
        p.max_inflated_bytes = p.max_inflated_bytes.min(p.limits.max_passport_bytes);
        p
    }
}

impl Propagator {
    /// A propagator with the defaults and no cache.
    pub fn new() -> Propagator {
        Propagator::default()
    }

    /// Configures a propagator.
    pub fn builder() -> PropagatorBuilder {
        PropagatorBuilder::default()
    }

    /// The claim-check cache, if any.
    pub fn cache(&self) -> Option<&Arc<dyn CacheProvider>> {
        self.cache.as_ref()
    }

    fn pack_options(&self) -> PackOptions {
        PackOptions { threshold: self.threshold, max_inflated_bytes: self.max_inflated_bytes }
    }

    /// Parses an incoming `baggage` header under this propagator's W3C
    /// limits (an absent header is an empty baggage).
    pub fn parse_header(&self, header: Option<&str>) -> Result<Baggage, PropagationError> {
        Ok(Baggage::parse_with(header.unwrap_or_default(), &self.baggage_limits)?)
    }

    /// Writes `lineage` into `baggage`: its passport (inline, compressed, or
    /// claim-checked into the cache), `kest.chain_tip` (its tips, `"0"` for
    /// none) and `kest.user`/`kest.agent`/`kest.task` (and `kest.jwt` only
    /// with [`PropagatorBuilder::forward_jwt`]). Earlier values of these keys
    /// are removed first; other members are kept, in order and byte for
    /// byte. On error `baggage` is left unchanged.
    pub async fn inject(&self, lineage: &Lineage, baggage: &mut Baggage) -> Result<(), PropagationError> {
        let passport = lineage.passport();
        let tips = lineage.tips();
        let identity = lineage.identity();
        let json = passport.to_json();

        let mut out = baggage.clone();
        for key in PASSPORT_KEYS {
            out.remove(key);
        }
        let packed = pack(&json, &self.pack_options());
        let mut claim: Option<Uuid> = None;
        match &packed {
            Packed::Inline(_) | Packed::Compressed(_) => packed.write_to(&mut out)?,
            Packed::NeedsClaimCheck => {
                let id = self.store_claim(&json).await?;
                write_claim_check(&mut out, &id);
                claim = Some(id);
            }
        }
        self.write_keys(&mut out, &tips, &identity)?;

        match out.to_header_with(&self.baggage_limits) {
            Ok(_) => {}
            // The packed value fits the threshold but not the header with
            // everything else in it: claim-check it if we can.
            Err(BaggageError::TooLarge { .. }) if claim.is_none() && self.cache.is_some() => {
                let id = self.store_claim(&json).await?;
                write_claim_check(&mut out, &id);
                claim = Some(id);
                if let Err(e) = out.to_header_with(&self.baggage_limits) {
                    self.forget_claim(claim).await;
                    return Err(e.into());
                }
            }
            Err(e) => {
                self.forget_claim(claim).await;
                return Err(e.into());
            }
        }
        *baggage = out;
        Ok(())
    }

    async fn store_claim(&self, json: &str) -> Result<Uuid, PropagationError> {
        let cache = self.cache.as_ref().ok_or(PropagationError::NoCacheForClaimCheck)?;
        let id = Uuid::new_v4();
        cache.set(&claim_key(&id), json, self.claim_ttl).await.map_err(PropagationError::CacheUnavailable)?;
        Ok(id)
    }

    /// Best effort: removes a claim stored for a header that was not sent.
    async fn forget_claim(&self, claim: Option<Uuid>) {
        if let (Some(id), Some(cache)) = (claim, &self.cache) {
            let _ = cache.delete(&claim_key(&id)).await;
        }
    }

    fn write_keys(
        &self,
        out: &mut Baggage,
        tips: &[EntryHash],
        identity: &FlowIdentity,
    ) -> Result<(), BaggageError> {
        out.set(KEST_CHAIN_TIP, format_chain_tip(tips))?;
        let jwt = if self.forward_jwt { identity.jwt.as_deref() } else { None };
        for (key, value) in [
            (KEST_USER, identity.user.as_deref()),
            (KEST_AGENT, identity.agent.as_deref()),
            (KEST_TASK, identity.task.as_deref()),
            (KEST_JWT, jwt),
        ] {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                out.set(key, value)?;
            }
        }
        Ok(())
    }

    /// The rules binding a received passport to its request.
    pub fn ingress_rules(&self) -> &IngressRules {
        &self.ingress
    }

    /// This propagator with other ingress rules.
    pub fn with_ingress(mut self, rules: IngressRules) -> Propagator {
        self.ingress = rules;
        self
    }

    /// Reads a flow from `baggage`, verifies its passport with `verifier`
    /// and binds it to the request (see [`Propagator::extract_from_peer`];
    /// no authenticated peer).
    pub async fn extract(
        &self,
        baggage: &Baggage,
        verifier: &Verifier,
    ) -> Result<Extracted, PropagationError> {
        self.extract_from_peer(baggage, verifier, None).await
    }

    /// Reads a flow from `baggage`, verifies its passport with `verifier`
    /// and binds it to the request.
    ///
    /// Order: `kest.chain_tip` is parsed; the passport comes from the claim
    /// check (resolved in the cache), else `kest.passport_z` (inflation
    /// bounded), else `kest.passport`; it is parsed under the
    /// [limits](PropagatorBuilder::limits) and verified; then the
    /// [ingress rules](PropagatorBuilder::ingress) apply, with `peer` — the
    /// authenticated calling workload, when there is one — required to
    /// have signed every tip. No passport key at all is a new flow: an
    /// empty passport, no tips, no identity claims. Any other failure is an
    /// error, never an empty passport.
    pub async fn extract_from_peer(
        &self,
        baggage: &Baggage,
        verifier: &Verifier,
        peer: Option<&str>,
    ) -> Result<Extracted, PropagationError> {
        let chain_tip = match baggage.get(KEST_CHAIN_TIP) {
            None => None,
            Some(value) => Some(parse_chain_tip(value).map_err(|e| match e {
                BaggageError::BadChainTip { reason, .. } => PropagationError::BadChainTip { reason },
                other => PropagationError::Baggage(other),
            })?),
        };
        let json = match unpack(baggage, &self.pack_options())? {
            PassportSource::None => None,
            PassportSource::Json(json) => Some(json),
            PassportSource::ClaimCheck(id) => {
                let cache = self.cache.as_ref().ok_or(PropagationError::NoCacheForClaimCheck)?;
                match cache.get(&claim_key(&id)).await {
                    Ok(Some(json)) => Some(json),
                    Ok(None) => return Err(PropagationError::ClaimCheckNotFound { id }),
                    Err(e) => return Err(PropagationError::CacheUnavailable(e)),
                }
            }
        };
        let passport = match json {
            None => Passport::new(),
            Some(json) => {
                let unverified = UnverifiedPassport::from_json(&json, &self.limits)
                    .map_err(|e| PropagationError::Verification(VerifyError::from(e)))?;
                verifier.verify(&unverified).map_err(PropagationError::Verification)?
            }
        };
        let get = |key: &str| baggage.get(key).filter(|v| !v.is_empty()).map(str::to_owned);
        let claims = IdentityClaims { user: get(KEST_USER), agent: get(KEST_AGENT), task: get(KEST_TASK) };
        let mut rules = self.ingress.clone();
        if let Some(peer) = peer {
            rules.peer = Some(peer.to_owned());
        }
        let bound = bind(&passport, chain_tip.as_deref(), &claims, &rules, now_ms())
            .map_err(PropagationError::Ingress)?;
        if !bound.dropped.is_empty() {
            tracing::warn!(
                dropped = ?bound.dropped,
                "kest: baggage identity claims not signed into the passport's tips were dropped"
            );
        }
        let identity = FlowIdentity {
            user: bound.identity.user,
            agent: bound.identity.agent,
            task: bound.identity.task,
            jwt: if self.forward_jwt { get(KEST_JWT) } else { None },
            ..FlowIdentity::default()
        };
        Ok(Extracted { passport, tips: bound.tips, identity, dropped_claims: bound.dropped })
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it, which
/// makes every passport look stale: fail closed).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn futures_are_send_and_types_are_shareable() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<Propagator>();
        shareable::<Extracted>();
        let p = Propagator::new();
        let lineage = Lineage::new();
        let mut baggage = Baggage::new();
        let verifier = Verifier::new(kest_core::KeySet::new());
        let inject = p.inject(&lineage, &mut baggage);
        assert_send(&inject);
        drop(inject);
        let extract = p.extract(&baggage, &verifier);
        assert_send(&extract);
    }

    #[test]
    fn statuses() {
        use PropagationError as E;
        let tip = EntryHash::of("a.b.c");
        assert_eq!(E::Baggage(BaggageError::TooLarge { size: 9000, limit: 8192 }).http_status(), 431);
        assert_eq!(E::Baggage(BaggageError::TooManyMembers { count: 65, limit: 64 }).http_status(), 431);
        assert_eq!(E::Baggage(BaggageError::Inflate("x".into())).http_status(), 400);
        assert_eq!(E::BadChainTip { reason: "x".into() }.http_status(), 400);
        assert_eq!(E::TipNotInPassport { tip }.http_status(), 400);
        assert_eq!(E::ClaimCheckNotFound { id: Uuid::nil() }.http_status(), 424);
        assert_eq!(E::NoCacheForClaimCheck.http_status(), 424);
        let cache = CacheError::Unavailable { cache: "memory".into(), message: "down".into() };
        assert_eq!(E::CacheUnavailable(cache).http_status(), 503);
        let verify = VerifyError::from(kest_core::PassportError::Malformed("x".into()));
        assert_eq!(E::Verification(verify).http_status(), 403);
    }

    #[test]
    fn inflation_bound_never_exceeds_passport_limit() {
        let limits = Limits { max_passport_bytes: 1000, ..Limits::default() };
        let p = Propagator::builder().limits(limits).max_inflated_bytes(1 << 30).build();
        assert_eq!(p.max_inflated_bytes, 1000);
        assert!(format!("{p:?}").contains("threshold: 4096"));
    }
}
