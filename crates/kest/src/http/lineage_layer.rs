//! The lineage layer (SPEC §7.5), outermost: restores the caller's flow
//! from the `baggage` header, **verifies** its passport, and runs the inner
//! service inside it.
//!
//! For every request the layer
//!
//! 1. joins the `baggage` header lines and parses them under the W3C limits
//!    (8192 bytes, 64 members);
//! 2. extracts the flow with its [`Propagator`] — claim checks resolved in
//!    the propagator's cache, compressed values inflated (bounded) — and
//!    verifies the passport with its [`Verifier`] (a key set or
//!    [`KeyResolver`] is required: building the layer without one is an
//!    error, because the history a hop acts on must be verified; semantic
//!    checks and unknown-origin refusal are on unless explicitly turned
//!    off, which is logged; signatures already verified with the same key
//!    are not checked again — a bounded [`VerifiedEntryCache`]);
//! 3. binds it to the request (SPEC §7.5): the chain tip names exactly the
//!    tips (`tip_mismatch`), the newest tip is younger than the maximum age
//!    (`stale_passport`), every tip is signed by the authenticated peer
//!    when there is one ([`AuthenticatedPeer`], `tip_not_signed_by_peer`),
//!    and baggage identity claims are kept only when signed into the tips;
//!    identity verified at this hop ([`VerifiedIdentity`], or the bearer
//!    token of a [`KestLayer`](super::KestLayer)) replaces them;
//! 4. a request without a passport: an **inner service** (the default)
//!    refuses it (403 `missing_lineage`); an **entry point**
//!    ([`LineageLayerBuilder::entry_point`]) starts a new flow scored with
//!    its ingress origin (default `user_input`), and only for a verified
//!    identity (401 `missing_token` otherwise);
//! 5. continues a valid `traceparent` (W3C Trace Context) as the remote
//!    parent of the OpenTelemetry context the inner service runs in, unless
//!    an outer layer already made a span current (an invalid `traceparent`
//!    is ignored, as the W3C recommends), and puts the parsed
//!    [`TraceParent`] into the request's extensions;
//! 6. runs the inner service inside the flow ([`Lineage::scope`]), so hooked
//!    functions append to the caller's passport, and the
//!    [`KestPropagationMiddleware`](super::KestPropagationMiddleware)
//!    carries it on.
//!
//! Every failure is answered by the layer — the inner service never runs —
//! with a JSON body `{"error": "<kind>", "message": "..."}`:
//!
//! | status | `error` |
//! |---|---|
//! | 400 | `malformed_baggage`, `bad_chain_tip`, `invalid_identity` |
//! | 401 | `missing_token` (an entry point without a verified identity), token kinds |
//! | 431 | `baggage_too_large` (above 8192 bytes or 64 members) |
//! | 424 | `claim_check_not_found`, `no_cache_for_claim_check` |
//! | 503 | `cache_unavailable`, `key_unavailable` (stale key source) |
//! | 403 | `missing_lineage`, `tip_mismatch`, `stale_passport`, `tip_not_signed_by_peer`, and the verification kinds: `bad_signature`, `unknown_signer`, `trust_escalation`, `unknown_origin`, … |
//!
//! A handler can send the final passport back to its caller with
//! [`respond_with_passport`](super::respond_with_passport).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use kest::cache::MemoryCache;
//! use kest::http::{LineageLayer, respond_with_passport};
//! use kest::propagation::Propagator;
//! use axum::response::IntoResponse;
//!
//! let layer = LineageLayer::builder()
//!     .jwks_url("https://keys.example/kest/jwks.json")?
//!     .sanitizers(["spiffe://example/sanitizer"])
//!     .propagator(Propagator::builder().cache(Arc::new(MemoryCache::new())).build())
//!     .build()
//!     .await?;
//! let app: Router = Router::new()
//!     .route(
//!         "/",
//!         get(|| async {
//!             let entries = kest::current_passport().map_or(0, |p| p.len());
//!             respond_with_passport(format!("{entries} entries so far").into_response())
//!         }),
//!     )
//!     .layer(layer);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, StatusCode};
use kest_core::baggage::{Baggage, KEST_JWT};
use kest_core::{ErrorKind, KeyResolver, KeySet, OriginMap, VerifiedEntryCache, Verifier, VerifyError};
use opentelemetry::trace::TraceContextExt as _;
use tower::{Layer, Service};

use super::future::{Check, Finish, Gate, ResponseFuture};
use super::identity_layer::{TokenError, TokenVerifier, VerifiedIdentity, bearer_token};
use super::jwks::{JwksError, JwksSource};
use super::key_resolver::{JwksKeyResolver, RefreshingKeyResolver};
use super::refresh::RefreshPolicy;
use super::traceparent::{TRACEPARENT, TraceParent};
use super::workload::{WorkloadTokenError, verify_workload_token};
use super::{BAGGAGE, HttpConfigError, Rejection};
use crate::lineage::Lineage;
use crate::propagation::{PropagationError, Propagator};

/// The calling workload, authenticated by the transport (a SPIFFE ID from
/// mTLS, a verified workload token), as a request extension set by
/// whatever authenticated it. With it, every tip of the incoming passport
/// must be signed by that workload (`tip_not_signed_by_peer`), and an entry
/// point may start a flow for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedPeer(pub String);

/// Default number of verified entries remembered per layer.
pub const DEFAULT_ENTRY_CACHE_CAPACITY: usize = 4096;

/// Default memory bound of a layer's verified-entry cache (estimated).
pub const DEFAULT_ENTRY_CACHE_BYTES: usize = 16 << 20;

fn extraction_rejection(error: PropagationError) -> Rejection {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let kind = error.kind();
    if status == StatusCode::FORBIDDEN {
        tracing::warn!(kind, error = %error, "kest: propagated passport refused");
    } else {
        tracing::debug!(kind, status = status.as_u16(), error = %error, "kest: baggage refused");
    }
    Rejection::new(status, kind, error.to_string())
}

/// Building the response `baggage` failed after the handler ran: the
/// server's problem (503 when the cache is down, else 500).
fn response_rejection(error: PropagationError) -> Rejection {
    let status = match error {
        PropagationError::CacheUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    tracing::warn!(error = %error, "kest: cannot return the passport in the response");
    Rejection::new(status, error.kind(), format!("cannot return the passport: {error}"))
}

/// Whether a service may start flows (SPEC §7.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Requests must carry a passport (`missing_lineage` otherwise).
    InnerService,
    /// Requests without a passport start a new flow, for a verified
    /// identity only, whose root is scored with this origin at most.
    EntryPoint {
        /// The ingress origin (default `user_input`).
        origin: String,
    },
}

struct Config {
    propagator: Propagator,
    verifier: Verifier,
    /// A key source that is refetched (a JWKS, an SVID directory).
    jwks: Option<Arc<dyn RefreshingKeyResolver>>,
    role: Role,
    peer_audience: Option<String>,
    tokens: Option<Arc<TokenVerifier>>,
    require_token: bool,
    finish: Finish,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("propagator", &self.propagator)
            .field("verifier", &self.verifier)
            .field("role", &self.role)
            .field("tokens", &self.tokens)
            .field("require_token", &self.require_token)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum KeySource {
    Set(KeySet),
    Jwks(JwksSource),
    Resolver(Arc<dyn KeyResolver>),
    Refreshing(Arc<dyn KeyResolver>, Arc<dyn RefreshingKeyResolver>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Set(keys) => f.debug_tuple("Set").field(&keys.len()).finish(),
            KeySource::Jwks(source) => f.debug_tuple("Jwks").field(&source.to_string()).finish(),
            KeySource::Resolver(_) => f.write_str("Resolver"),
            KeySource::Refreshing(..) => f.write_str("RefreshingResolver"),
        }
    }
}

/// Configures a [`LineageLayer`]. A key set is required.
#[derive(Debug, Clone)]
pub struct LineageLayerBuilder {
    keys: Option<KeySource>,
    refresh: RefreshPolicy,
    semantic: bool,
    strict_origins: bool,
    origins: Option<OriginMap>,
    sanitizers: Option<Vec<String>>,
    propagator: Option<Propagator>,
    client: Option<reqwest::Client>,
    role: Role,
    allow_tip_subset: bool,
    max_age: Option<Duration>,
    entry_cache: usize,
    peer_audience: Option<String>,
}

impl Default for LineageLayerBuilder {
    fn default() -> Self {
        LineageLayerBuilder {
            keys: None,
            refresh: RefreshPolicy::default(),
            semantic: true,
            strict_origins: true,
            origins: None,
            sanitizers: None,
            propagator: None,
            client: None,
            role: Role::InnerService,
            allow_tip_subset: false,
            max_age: kest_core::ingress::IngressRules::default().max_age,
            entry_cache: DEFAULT_ENTRY_CACHE_CAPACITY,
            peer_audience: None,
        }
    }
}

impl LineageLayerBuilder {
    /// Verifies passports with this key set.
    pub fn key_set(mut self, keys: KeySet) -> Self {
        self.keys = Some(KeySource::Set(keys));
        self
    }

    /// Verifies passports with keys from this resolver (SPEC §8).
    pub fn key_resolver(mut self, resolver: Arc<dyn KeyResolver>) -> Self {
        self.keys = Some(KeySource::Resolver(resolver));
        self
    }

    /// Verifies passports with keys from this resolver, kept fresh by the
    /// layer (SPEC §8): [`RefreshingKeyResolver::refresh_if_due`] once per
    /// request before any key is resolved, and one
    /// [`RefreshingKeyResolver::refetch_for_unknown`] (rate-limited by the
    /// resolver) when a passport names a signer it does not know or whose
    /// keys do not verify its entry, then the passport is verified once
    /// more. E.g. a [`JwksKeyResolver`] or, with the `spiffe` feature, a
    /// `kest::identity::SvidDirectoryResolver`.
    pub fn refreshing_key_resolver<R: RefreshingKeyResolver + 'static>(mut self, resolver: Arc<R>) -> Self {
        self.keys = Some(KeySource::Refreshing(resolver.clone(), resolver));
        self
    }

    /// Verifies passports with the Kest key set (Ed25519 and P-256 JWKS, `kid` = the
    /// principal) in this file, read when the layer is built and reread as
    /// the [refresh policy](Self::refresh) says.
    pub fn jwks_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.keys = Some(KeySource::Jwks(JwksSource::file(path)));
        self
    }

    /// Verifies passports with the Kest key set at this URL, fetched when
    /// the layer is built and refreshed as the [refresh
    /// policy](Self::refresh) says. Fails on a URL that is not `https` (or
    /// `http` on loopback).
    pub fn jwks_url(mut self, url: impl AsRef<str>) -> Result<Self, JwksError> {
        self.keys = Some(KeySource::Jwks(JwksSource::url(url)?));
        Ok(self)
    }

    /// Verifies passports with the Kest key set from this source.
    pub fn jwks(mut self, source: JwksSource) -> Self {
        self.keys = Some(KeySource::Jwks(source));
        self
    }

    /// How a JWKS key source is kept fresh (default
    /// [`RefreshPolicy::default`]).
    pub fn refresh(mut self, policy: RefreshPolicy) -> Self {
        self.refresh = policy;
        self
    }

    /// Semantic (lineage over assertion) checks, **on by default**; turning
    /// them off is logged when the layer is built.
    pub fn semantic(mut self, on: bool) -> Self {
        self.semantic = on;
        self
    }

    /// Refuses roots whose origin this service does not know
    /// (`unknown_origin`), **on by default**; turning it off is logged.
    pub fn strict_origins(mut self, on: bool) -> Self {
        self.strict_origins = on;
        self
    }

    /// Origins known to the semantic checks (defaults plus deployment ones).
    pub fn origins(mut self, origins: OriginMap) -> Self {
        self.origins = Some(origins);
        self
    }

    /// The principals allowed to raise trust (sanitizers): an escalation
    /// signed by anyone else is refused (`trust_escalation`).
    pub fn sanitizers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, principals: I) -> Self {
        self.sanitizers = Some(principals.into_iter().map(Into::into).collect());
        self
    }

    /// The propagator (cache for claim checks, packing threshold, limits);
    /// default [`Propagator::new`], without a cache. Its ingress rules are
    /// replaced by this builder's.
    pub fn propagator(mut self, propagator: Propagator) -> Self {
        self.propagator = Some(propagator);
        self
    }

    /// This service is an entry point: a request without a passport starts
    /// a new flow (for a verified identity only) whose root is scored with
    /// `origin` at most — typically `user_input`, never `internal`.
    pub fn entry_point(mut self, origin: impl Into<String>) -> Self {
        self.role = Role::EntryPoint { origin: origin.into() };
        self
    }

    /// Compatibility with senders that write only some tips (the reference
    /// writes the last entry): `kest.chain_tip` may name a non-empty subset
    /// of the tips, never an ancestor. Logged when built.
    pub fn allow_tip_subset(mut self, on: bool) -> Self {
        self.allow_tip_subset = on;
        self
    }

    /// The newest tip must be younger than this (default 300 s); `None`
    /// turns the age rule off (logged).
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// Requires every request to prove its calling workload: an
    /// [`AuthenticatedPeer`] put there by the transport (mTLS), or a
    /// workload token ([`super::workload`], header `kest-workload`) signed
    /// by a key of this layer's key set for `audience` — this service's
    /// origin as callers address it (`scheme://host:port`). Missing or
    /// invalid: 401. Every tip of the incoming passport must then be signed
    /// by that workload (`tip_not_signed_by_peer`).
    pub fn authenticate_peers(mut self, audience: impl Into<String>) -> Self {
        self.peer_audience = Some(audience.into());
        self
    }

    /// How many verified entries the layer remembers (default
    /// [`DEFAULT_ENTRY_CACHE_CAPACITY`], and at most about
    /// [`DEFAULT_ENTRY_CACHE_BYTES`] of them); `0` re-verifies and
    /// re-decodes every entry of every passport.
    pub fn verified_entry_cache(mut self, capacity: usize) -> Self {
        self.entry_cache = capacity;
        self
    }

    /// The HTTP client that fetches a key set URL.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Loads the key set (fetching a URL now) and builds the layer. Fails
    /// without a key set ([`HttpConfigError::NoKeySet`]), or when it cannot
    /// be loaded or is empty, or when the ingress origin is unknown.
    pub async fn build(self) -> Result<LineageLayer, HttpConfigError> {
        self.build_with_tokens(None, false).await
    }

    pub(crate) fn role_ref(&self) -> &Role {
        &self.role
    }

    pub(crate) async fn build_with_tokens(
        self,
        tokens: Option<Arc<TokenVerifier>>,
        require_token: bool,
    ) -> Result<LineageLayer, HttpConfigError> {
        let (resolver, jwks): (Arc<dyn KeyResolver>, Option<Arc<dyn RefreshingKeyResolver>>) = match self.keys
        {
            None => return Err(HttpConfigError::NoKeySet),
            Some(KeySource::Set(keys)) => {
                if keys.is_empty() {
                    return Err(HttpConfigError::Jwks(JwksError::EmptyKeySet));
                }
                (Arc::new(keys), None)
            }
            Some(KeySource::Resolver(resolver)) => (resolver, None),
            Some(KeySource::Refreshing(resolver, refreshing)) => (resolver, Some(refreshing)),
            Some(KeySource::Jwks(source)) => {
                let jwks = Arc::new(JwksKeyResolver::load(source, self.refresh, self.client).await?);
                (jwks.clone(), Some(jwks as Arc<dyn RefreshingKeyResolver>))
            }
        };
        let origins = self.origins.unwrap_or_default();
        if let Role::EntryPoint { origin } = &self.role
            && origins.score(origin).is_none()
        {
            return Err(HttpConfigError::UnknownOrigin(origin.clone()));
        }
        if !self.semantic {
            tracing::warn!("kest lineage layer: semantic checks are OFF (explicit opt-out)");
        }
        if !self.strict_origins {
            tracing::warn!("kest lineage layer: roots with unknown origins are accepted (explicit opt-out)");
        }
        if self.allow_tip_subset {
            tracing::warn!(
                "kest lineage layer: kest.chain_tip may name a subset of the tips (compatibility)"
            );
        }
        if self.max_age.is_none() {
            tracing::warn!("kest lineage layer: passports are accepted at any age (explicit opt-out)");
        }
        let mut verifier = Verifier::with_resolver(resolver)
            .semantic(self.semantic)
            .strict_origins(self.strict_origins)
            .origins(origins);
        if let Some(sanitizers) = self.sanitizers {
            verifier = verifier.sanitizers(sanitizers);
        }
        if self.entry_cache > 0 {
            verifier = verifier.entry_cache(Arc::new(
                VerifiedEntryCache::new(self.entry_cache).with_max_bytes(DEFAULT_ENTRY_CACHE_BYTES),
            ));
        }
        let rules = kest_core::ingress::IngressRules {
            allow_tip_subset: self.allow_tip_subset,
            max_age: self.max_age,
            ..kest_core::ingress::IngressRules::default()
        };
        let propagator = self.propagator.unwrap_or_default().with_ingress(rules);
        let finish = finish(propagator.clone());
        Ok(LineageLayer {
            config: Arc::new(Config {
                propagator,
                verifier,
                jwks,
                role: self.role,
                peer_audience: self.peer_audience,
                tokens,
                require_token,
                finish,
            }),
        })
    }
}

/// Restores, verifies and binds the caller's flow from `baggage` and runs
/// the inner service inside it (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct LineageLayer {
    config: Arc<Config>,
}

impl LineageLayer {
    /// A builder (an inner service with semantic checks on).
    pub fn builder() -> LineageLayerBuilder {
        LineageLayerBuilder::default()
    }

    /// The propagator.
    pub fn propagator(&self) -> &Propagator {
        &self.config.propagator
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.config.verifier
    }

    /// Whether this service is an entry point or an inner service.
    pub fn role(&self) -> &Role {
        &self.config.role
    }
}

impl<S> Layer<S> for LineageLayer {
    type Service = LineageService<S>;
    fn layer(&self, inner: S) -> LineageService<S> {
        LineageService { inner, config: self.config.clone() }
    }
}

/// The service of a [`LineageLayer`].
#[derive(Debug, Clone)]
pub struct LineageService<S> {
    inner: S,
    config: Arc<Config>,
}

fn read_baggage<B>(request: &Request<B>, propagator: &Propagator) -> Result<Baggage, Rejection> {
    let mut joined: Option<String> = None;
    for value in request.headers().get_all(BAGGAGE) {
        let text = value.to_str().map_err(|_| {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                "malformed_baggage",
                "the baggage header is not visible ASCII",
            )
        })?;
        match &mut joined {
            None => joined = Some(text.to_owned()),
            Some(all) => {
                all.push(',');
                all.push_str(text);
            }
        }
    }
    propagator.parse_header(joined.as_deref()).map_err(extraction_rejection)
}

fn read_traceparent<B>(request: &Request<B>) -> Option<TraceParent> {
    let mut values = request.headers().get_all(TRACEPARENT).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None; // ambiguous: start a new trace
    }
    TraceParent::parse(value.to_str().ok()?).ok()
}

fn finish(propagator: Propagator) -> Finish {
    Arc::new(move |lineage: Lineage, existing: Option<String>| {
        let propagator = propagator.clone();
        Box::pin(async move {
            let mut baggage = propagator.parse_header(existing.as_deref()).map_err(response_rejection)?;
            propagator.inject(&lineage, &mut baggage).await.map_err(response_rejection)?;
            baggage.remove(KEST_JWT);
            let header = baggage.to_header().map_err(|e| response_rejection(e.into()))?;
            HeaderValue::from_str(&header).map_err(|e| {
                Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, "malformed_baggage", e.to_string())
            })
        })
    })
}

/// What the request brings before the layer decides.
struct Incoming {
    baggage: Result<Baggage, Rejection>,
    token: Result<String, TokenError>,
    workload_token: Option<Result<String, ()>>,
    verified: Option<VerifiedIdentity>,
    peer: Option<AuthenticatedPeer>,
}

impl Config {
    /// The calling workload proven by its workload token.
    async fn authenticate_workload(
        &self,
        audience: &str,
        token: Option<Result<String, ()>>,
    ) -> Result<String, Rejection> {
        let refuse = |e: WorkloadTokenError| {
            tracing::warn!(kind = e.kind(), error = %e, "kest: workload token refused");
            let mut r = Rejection::new(StatusCode::UNAUTHORIZED, e.kind(), e.to_string());
            r.www_authenticate = Some("Kest-Workload");
            r
        };
        let token = match token {
            None => return Err(refuse(WorkloadTokenError::Missing)),
            Some(Err(())) => return Err(refuse(WorkloadTokenError::Malformed("not visible ASCII"))),
            Some(Ok(token)) => token,
        };
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let verified = verify_workload_token(&token, self.verifier.resolver().as_ref(), audience, now);
        // A signer unknown to a refreshed key source, or whose known keys do
        // not verify (rotated since the last fetch): one rate-limited refetch.
        let verified = match (verified, &self.jwks) {
            (Err(WorkloadTokenError::UnknownSigner(_) | WorkloadTokenError::BadSignature), Some(jwks))
                if jwks.refetch_for_unknown().await =>
            {
                verify_workload_token(&token, self.verifier.resolver().as_ref(), audience, now)
            }
            (verified, _) => verified,
        };
        verified.map_err(refuse)
    }

    /// Extracts and verifies, refetching a refreshed key source once more
    /// for a signer it does not know or whose keys do not verify an entry
    /// (rotated since the last fetch).
    async fn extract(
        &self,
        baggage: &Baggage,
        peer: Option<&str>,
    ) -> Result<crate::propagation::Extracted, PropagationError> {
        let result = self.propagator.extract_from_peer(baggage, &self.verifier, peer).await;
        match (&result, &self.jwks) {
            (Err(PropagationError::Verification(VerifyError::Entry { source, .. })), Some(jwks))
                if matches!(source.kind(), ErrorKind::UnknownSigner | ErrorKind::BadSignature)
                    && jwks.refetch_for_unknown().await =>
            {
                self.propagator.extract_from_peer(baggage, &self.verifier, peer).await
            }
            _ => result,
        }
    }

    async fn check(
        &self,
        incoming: Incoming,
        otel: Option<opentelemetry::Context>,
    ) -> Result<Gate, Rejection> {
        let Incoming { baggage, token, workload_token, verified, peer } = incoming;
        let baggage = baggage?;
        // One refresh of a JWKS key source per request, before any key is
        // resolved (workload token, passport).
        if let Some(jwks) = &self.jwks {
            jwks.refresh_if_due().await;
        }
        let peer = match (&self.peer_audience, peer) {
            (_, Some(peer)) => Some(peer),
            (None, None) => None,
            (Some(audience), None) => {
                Some(AuthenticatedPeer(self.authenticate_workload(audience, workload_token).await?))
            }
        };
        // Identity verified at this hop: an outer layer's, or our token's.
        let mut verified = verified;
        if let Some(tokens) = &self.tokens {
            match token {
                Ok(token) => {
                    let checked = tokens.verify(&token).await.map_err(TokenError::into_rejection)?;
                    verified = Some(VerifiedIdentity(checked.identity));
                }
                Err(TokenError::Missing) if !self.require_token => {}
                Err(e) => return Err(e.into_rejection()),
            }
        }
        let peer = peer.map(|p| p.0);
        let extracted = self.extract(&baggage, peer.as_deref()).await.map_err(extraction_rejection)?;
        let lineage = if extracted.is_new_flow() {
            match &self.role {
                Role::InnerService => {
                    tracing::warn!("kest: request without lineage refused by an inner service");
                    return Err(Rejection::new(
                        StatusCode::FORBIDDEN,
                        "missing_lineage",
                        "this service is not an entry point: requests must carry a passport",
                    ));
                }
                Role::EntryPoint { origin } => {
                    if verified.is_none() && peer.is_none() {
                        let mut r = Rejection::new(
                            StatusCode::UNAUTHORIZED,
                            "missing_token",
                            "an entry point starts a flow only for a verified identity",
                        );
                        r.www_authenticate = Some("Bearer");
                        return Err(r);
                    }
                    Lineage::entry_point(origin.clone())
                }
            }
        } else {
            extracted.into_lineage().map_err(extraction_rejection)?
        };
        if let Some(VerifiedIdentity(identity)) = &verified {
            lineage.set_identity(identity.clone());
        }
        Ok(Gate { lineage, otel, extension: verified })
    }
}

impl<S, B, ResBody> Service<Request<B>> for LineageService<S>
where
    S: Service<Request<B>, Response = http::Response<ResBody>> + Clone,
{
    type Response = http::Response<super::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The ready service runs this request; a clone takes its place.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let incoming = Incoming {
            baggage: read_baggage(&request, &self.config.propagator),
            token: bearer_token(&request),
            workload_token: {
                let mut values = request.headers().get_all(super::workload::WORKLOAD_TOKEN_HEADER).iter();
                match (values.next(), values.next()) {
                    (None, _) => None,
                    (Some(v), None) => Some(v.to_str().map(str::to_owned).map_err(|_| ())),
                    (Some(_), Some(_)) => Some(Err(())),
                }
            },
            verified: request.extensions().get::<VerifiedIdentity>().cloned(),
            peer: request.extensions().get::<AuthenticatedPeer>().cloned(),
        };
        let otel = read_traceparent(&request).and_then(|tp| {
            request.extensions_mut().insert(tp);
            // An outer tracing layer that already continued the trace (a
            // valid current span) is left in charge.
            let current = opentelemetry::Context::current();
            (!current.span().span_context().is_valid())
                .then(|| current.with_remote_span_context(tp.to_span_context()))
        });
        let config = self.config.clone();
        let check: Check = Box::pin(async move { config.check(incoming, otel).await });
        let finish = self.config.finish.clone();
        ResponseFuture::new(check, service, request, Some(finish))
    }
}
