//! HTTP integration (SPEC §7.4–§7.5), behind the `http` feature: tower
//! layers for servers (usable from axum or any tower service) and a
//! `reqwest-middleware` propagator for clients.
//!
//! - [`LineageLayer`] (outermost) restores the caller's passport from the
//!   `baggage` header, **verifies it** against a key set (required), and runs
//!   the inner service inside that flow ([`Lineage::scope`]).
//! - [`IdentityLayer`] (inside it) verifies `Authorization: Bearer <JWT>`
//!   against a JWKS and writes the caller's identity into the flow.
//! - [`KestPropagationMiddleware`] writes the current flow's packed
//!   passport, identity keys and a `traceparent` into outgoing requests.
//!
//! A rejection is an ordinary HTTP response with a JSON body
//! `{"error": "<kind>", "message": "..."}`; the inner service never runs:
//!
//! | status | `error` | cause |
//! |---|---|---|
//! | 400 | `malformed_baggage` / propagation kinds | `baggage` does not decode |
//! | 431 | `baggage_too_large` | `baggage` above 8192 bytes or 64 members |
//! | 424 | propagation kind | a claim check that cannot be resolved |
//! | 503 | propagation kind | the cache is unavailable |
//! | 403 | verify kind (`bad_signature`, …) | the passport does not verify |
//! | 401 | token kind (`missing_token`, `token_expired`, …) | bearer token missing or invalid |
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use kest::http::{IdentityLayer, LineageLayer};
//! use tower::ServiceBuilder;
//!
//! let lineage = LineageLayer::builder().jwks_file("/etc/kest/jwks.json").build().await?;
//! let identity = IdentityLayer::builder()
//!     .jwks_url("https://idp.example/.well-known/jwks.json")?
//!     .issuer("https://idp.example")
//!     .audience("orders")
//!     .build()
//!     .await?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { kest::current_user().unwrap_or_default() }))
//!     .layer(ServiceBuilder::new().layer(lineage).layer(identity));
//! # let _ = app; Ok(()) }
//! ```
//!
//! [`Lineage::scope`]: crate::Lineage::scope

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};

mod body;
pub mod client;
mod future;
pub mod identity_layer;
pub mod jwks;
pub mod kest_layer;
pub mod key_resolver;
pub mod lineage_layer;
pub(crate) mod refresh;
pub mod traceparent;
pub mod workload;

pub use body::ResponseBody;
pub use client::{DestinationError, KestPropagationMiddleware};
pub use future::ResponseFuture;
pub use identity_layer::{
    IdentityLayer, IdentityLayerBuilder, IdentityService, TokenError, TokenVerifier, VerifiedIdentity,
};
pub use jwks::{JwksError, JwksSource};
pub use kest_layer::{KestLayer, KestLayerBuilder};
pub use key_resolver::{JwksKeyResolver, RefreshingKeyResolver};
pub use lineage_layer::{AuthenticatedPeer, LineageLayer, LineageLayerBuilder, LineageService, Role};
pub use refresh::RefreshPolicy;
pub use traceparent::{TraceParent, TraceParentError};
pub use workload::{WorkloadTokenError, mint_workload_token, verify_workload_token};

/// The `baggage` header name.
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// Why a layer could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpConfigError {
    /// A [`LineageLayer`] was built without a key set: the history a hop
    /// acts on must be verified.
    #[error("a lineage layer needs a key set to verify passports (jwks_file, jwks_url or key_set)")]
    NoKeySet,
    /// An [`IdentityLayer`] was built without a JWKS and without
    /// `KEST_INSECURE_NO_VERIFY=true`.
    #[error("an identity layer needs a JWKS to verify bearer tokens (jwks_file, jwks_url or jwks_json)")]
    NoJwks,
    /// An [`IdentityLayer`] was built without an audience and without
    /// [`IdentityLayerBuilder::allow_any_audience`]: a token minted for
    /// another service would be accepted.
    #[error("an identity layer needs an audience (`aud` is required; allow_any_audience is for development)")]
    NoAudience,
    /// An entry point's ingress origin is not a known origin.
    #[error("unknown ingress origin `{0}`")]
    UnknownOrigin(String),
    /// The JWKS or key set could not be loaded.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// A refused request (or response): status, stable kind and message.
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) kind: Cow<'static, str>,
    pub(crate) message: String,
    pub(crate) www_authenticate: Option<&'static str>,
}

impl Rejection {
    pub(crate) fn new(
        status: StatusCode,
        kind: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Rejection { status, kind: kind.into(), message: message.into(), www_authenticate: None }
    }

    pub(crate) fn into_response<B>(self) -> Response<ResponseBody<B>> {
        let body = serde_json::json!({ "error": self.kind, "message": self.message }).to_string();
        let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(challenge) = self.www_authenticate {
            headers.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// A response extension asking the [`LineageLayer`] to write the flow's
/// final passport into the response's `baggage` header (packed by the
/// layer's propagator). Insert it with [`respond_with_passport`], or from
/// axum as `axum::Extension(ReturnPassport)` in a response tuple.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReturnPassport;

/// Marks `response` so the enclosing [`LineageLayer`] adds the current
/// flow's packed passport (after everything the handler appended) as a
/// `baggage` response header, merged with any `baggage` the handler set.
/// `kest.jwt` is never written into a response. If the passport cannot be
/// packed (e.g. a claim check with the cache down), the layer answers with
/// that error's status instead.
///
/// ```
/// let response = kest::http::respond_with_passport(http::Response::new(()));
/// assert!(response.extensions().get::<kest::http::ReturnPassport>().is_some());
/// ```
pub fn respond_with_passport<B>(mut response: Response<B>) -> Response<B> {
    response.extensions_mut().insert(ReturnPassport);
    response
}

/// The HTTP answer for a hooked call that Kest refused or could not record:
/// 403 `{"error":"policy_denied"|"policy_failed","policy","tier","message"}`
/// when a policy denied the operation or could not be evaluated (the
/// operation did not run), 403 `no_policy_evaluated`, 500 with the error's
/// kind otherwise. Bodies name the kind and the denying policy and tier,
/// never engine internals (those are logged).
///
/// ```
/// use kest::policy::Tier;
/// let denied = kest::KestError::Denied {
///     policy: "send_email".into(),
///     tier: Tier::Function,
///     operation: "send".into(),
///     entry_id: "e".into(),
///     workload: "w".into(),
/// };
/// let response = kest::http::kest_error_response(&denied);
/// assert_eq!(response.status(), 403);
/// assert!(response.body().contains("\"policy\":\"send_email\""));
/// ```
pub fn kest_error_response(error: &crate::KestError) -> Response<String> {
    let (status, body) = match (error, error.policy()) {
        (crate::KestError::Denied { .. }, Some((policy, tier))) => (
            StatusCode::FORBIDDEN,
            serde_json::json!({ "error": "policy_denied", "policy": policy, "tier": tier.as_str(), "message": error.to_string() }),
        ),
        (_, Some((policy, tier))) => (
            StatusCode::FORBIDDEN,
            serde_json::json!({
                "error": "policy_failed",
                "policy": policy,
                "tier": tier.as_str(),
                "message": format!("policy `{policy}` ({tier} tier) could not be evaluated; the operation did not run"),
            }),
        ),
        (crate::KestError::NoPolicyEvaluated { .. }, None) => (
            StatusCode::FORBIDDEN,
            serde_json::json!({ "error": error.kind(), "message": error.to_string() }),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": error.kind(), "message": "the operation was refused or could not be recorded" }),
        ),
    };
    let mut response = Response::new(body.to_string());
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
