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
//!    verifies the passport with its [`Verifier`] (a key set is required:
//!    building the layer without one is an error, because the history a
//!    hop acts on must be verified; semantic checks are opt-in);
//! 3. continues a valid `traceparent` (W3C Trace Context) as the remote
//!    parent of the OpenTelemetry context the inner service runs in, unless
//!    an outer layer already made a span current (an invalid `traceparent`
//!    is ignored, as the W3C recommends), and puts the parsed
//!    [`TraceParent`] into the request's extensions;
//! 4. runs the inner service inside the flow ([`Lineage::scope`]), so hooked
//!    functions append to the caller's passport, and the
//!    [`KestPropagationMiddleware`](super::KestPropagationMiddleware)
//!    carries it on.
//!
//! A request without `baggage` (or without passport keys in it) starts a
//! new flow. Every failure is answered by the layer — the inner service
//! never runs — with a JSON body `{"error": "<kind>", "message": "..."}`:
//!
//! | status | `error` |
//! |---|---|
//! | 400 | `malformed_baggage`, `bad_chain_tip`, `tip_not_in_passport` |
//! | 431 | `baggage_too_large` (above 8192 bytes or 64 members) |
//! | 424 | `claim_check_not_found`, `no_cache_for_claim_check` |
//! | 503 | `cache_unavailable` |
//! | 403 | the verification error kind: `bad_signature`, `unknown_signer`, `dangling_parent`, … |
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
//!     .semantic(true)
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

use http::{HeaderValue, Request, StatusCode};
use kest_core::baggage::{Baggage, KEST_JWT};
use kest_core::{KeySet, OriginMap, Verifier};
use opentelemetry::trace::TraceContextExt as _;
use tower::{Layer, Service};

use super::future::{Check, Finish, Gate, ResponseFuture};
use super::jwks::{JwksError, JwksSource, load_key_set};
use super::traceparent::{TRACEPARENT, TraceParent};
use super::{BAGGAGE, HttpConfigError, Rejection};
use crate::lineage::Lineage;
use crate::propagation::{PropagationError, Propagator};

/// The stable `error` kind of a propagation failure.
pub fn propagation_error_kind(error: &PropagationError) -> &'static str {
    use kest_core::baggage::BaggageError;
    match error {
        PropagationError::Baggage(BaggageError::TooLarge { .. } | BaggageError::TooManyMembers { .. }) => {
            "baggage_too_large"
        }
        PropagationError::Baggage(_) => "malformed_baggage",
        PropagationError::BadChainTip { .. } => "bad_chain_tip",
        PropagationError::TipNotInPassport { .. } => "tip_not_in_passport",
        PropagationError::ClaimCheckNotFound { .. } => "claim_check_not_found",
        PropagationError::NoCacheForClaimCheck => "no_cache_for_claim_check",
        PropagationError::CacheUnavailable(_) => "cache_unavailable",
        PropagationError::Verification(e) => e.kind().as_str(),
    }
}

fn extraction_rejection(error: PropagationError) -> Rejection {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let kind = propagation_error_kind(&error);
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
    Rejection::new(status, propagation_error_kind(&error), format!("cannot return the passport: {error}"))
}

struct Config {
    propagator: Propagator,
    verifier: Verifier,
    finish: Finish,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("propagator", &self.propagator)
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
enum KeySource {
    Set(KeySet),
    Jwks(JwksSource),
}

/// Configures a [`LineageLayer`]. A key set is required.
#[derive(Debug, Clone, Default)]
pub struct LineageLayerBuilder {
    keys: Option<KeySource>,
    semantic: bool,
    origins: Option<OriginMap>,
    propagator: Option<Propagator>,
    client: Option<reqwest::Client>,
}

impl LineageLayerBuilder {
    /// Verifies passports with this key set.
    pub fn key_set(mut self, keys: KeySet) -> Self {
        self.keys = Some(KeySource::Set(keys));
        self
    }

    /// Verifies passports with the Kest key set (Ed25519 JWKS, `kid` = the
    /// principal) in this file, read when the layer is built.
    pub fn jwks_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.keys = Some(KeySource::Jwks(JwksSource::file(path)));
        self
    }

    /// Verifies passports with the Kest key set at this URL, fetched when
    /// the layer is built. Fails on a URL that is not `https` (or `http`
    /// on loopback).
    pub fn jwks_url(mut self, url: impl AsRef<str>) -> Result<Self, JwksError> {
        self.keys = Some(KeySource::Jwks(JwksSource::url(url)?));
        Ok(self)
    }

    /// Verifies passports with the Kest key set from this source.
    pub fn jwks(mut self, source: JwksSource) -> Self {
        self.keys = Some(KeySource::Jwks(source));
        self
    }

    /// Turns the semantic (lineage over assertion) checks on (default off).
    pub fn semantic(mut self, on: bool) -> Self {
        self.semantic = on;
        self
    }

    /// Origins known to the semantic checks (defaults plus deployment ones).
    pub fn origins(mut self, origins: OriginMap) -> Self {
        self.origins = Some(origins);
        self
    }

    /// The propagator (cache for claim checks, packing threshold, limits);
    /// default [`Propagator::new`], without a cache.
    pub fn propagator(mut self, propagator: Propagator) -> Self {
        self.propagator = Some(propagator);
        self
    }

    /// The HTTP client that fetches a key set URL.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Loads the key set (fetching a URL now) and builds the layer. Fails
    /// without a key set ([`HttpConfigError::NoKeySet`]), or when it cannot
    /// be loaded or is empty.
    pub async fn build(self) -> Result<LineageLayer, HttpConfigError> {
        let keys = match self.keys {
            None => return Err(HttpConfigError::NoKeySet),
            Some(KeySource::Set(keys)) => keys,
            Some(KeySource::Jwks(source)) => {
                load_key_set(&source, &super::jwks::client_or_default(self.client)?).await?
            }
        };
        let mut verifier = Verifier::new(keys).semantic(self.semantic);
        if let Some(origins) = self.origins {
            verifier = verifier.origins(origins);
        }
        LineageLayer::new(self.propagator.unwrap_or_default(), verifier)
    }
}

/// Restores and verifies the caller's flow from `baggage` and runs the
/// inner service inside it (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct LineageLayer {
    config: Arc<Config>,
}

impl LineageLayer {
    /// A builder.
    pub fn builder() -> LineageLayerBuilder {
        LineageLayerBuilder::default()
    }

    /// A layer with this propagator and verifier. Fails when the verifier's
    /// key set is empty (it would verify nothing).
    pub fn new(propagator: Propagator, verifier: Verifier) -> Result<LineageLayer, HttpConfigError> {
        if verifier.key_set().is_some_and(KeySet::is_empty) {
            return Err(HttpConfigError::Jwks(JwksError::EmptyKeySet));
        }
        let finish = finish(propagator.clone());
        Ok(LineageLayer { config: Arc::new(Config { propagator, verifier, finish }) })
    }

    /// The propagator.
    pub fn propagator(&self) -> &Propagator {
        &self.config.propagator
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.config.verifier
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
        let baggage = read_baggage(&request, &self.config.propagator);
        let otel = read_traceparent(&request).and_then(|tp| {
            request.extensions_mut().insert(tp);
            // An outer tracing layer that already continued the trace (a
            // valid current span) is left in charge.
            let current = opentelemetry::Context::current();
            (!current.span().span_context().is_valid())
                .then(|| current.with_remote_span_context(tp.to_span_context()))
        });
        let config = self.config.clone();
        let check: Check = Box::pin(async move {
            let baggage = baggage?;
            let extracted =
                config.propagator.extract(&baggage, &config.verifier).await.map_err(extraction_rejection)?;
            let lineage = extracted.into_lineage().map_err(extraction_rejection)?;
            Ok(Gate { lineage, otel })
        });
        let finish = self.config.finish.clone();
        ResponseFuture::new(check, service, request, Some(finish))
    }
}
