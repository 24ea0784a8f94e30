//! The identity layer (SPEC §7.5): `Authorization: Bearer <JWT>` verified
//! against a JWKS, its claims written into the flow's identity.
//!
//! - Keys: RS256 (`RSA`), ES256 (`EC` P-256), EdDSA (`OKP` Ed25519), from a
//!   JWKS URL or file; the token's `alg` must be the one its key's type
//!   allows, and its `kid` must name a key. The source is refreshed on an
//!   interval (a removed key stops verifying) and refetched on an unknown
//!   `kid` (key rotation), rate-limited; keys older than the maximum
//!   staleness are refused ([`RefreshPolicy`]).
//! - Claims: `exp` required, `exp`/`nbf` checked with a 30 s leeway; `iss`
//!   checked when configured; `aud` **required** — building the layer
//!   without an audience fails unless
//!   [`allow_any_audience`](IdentityLayerBuilder::allow_any_audience) opts
//!   out (development only, logged).
//! - Identity: user = the configured claim (default `preferred_username`),
//!   else `sub`; agent = `azp`, else `client_id`; task = `scope`. For an
//!   RFC 8693 token with an `act` claim (RFC 8693 §4.1): user = `sub` (on
//!   whose behalf), agent = `act.sub` (the current actor), and nested `act`
//!   claims (prior actors) become the delegation chain, recorded as the
//!   entry label `kest.delegation`;
//!   [`reference_act_mapping`](IdentityLayerBuilder::reference_act_mapping)
//!   reproduces the reference's reverse mapping. Values with control
//!   characters are refused (400 `invalid_identity`), never recorded. The
//!   raw token becomes `kest.jwt`. The verified identity **replaces**
//!   whatever identity the caller propagated in `baggage`, in the current
//!   flow when there is one (a [`LineageLayer`](super::LineageLayer)
//!   outside) and, for a lineage layer inside, through the request's
//!   [`VerifiedIdentity`] extension — so either order is safe (and
//!   [`KestLayer`](super::KestLayer) composes them in one).
//! - A missing or invalid token is answered with 401, a JSON body
//!   `{"error": "<kind>", "message": "..."}` (see [`TokenError::kind`]) and
//!   a `WWW-Authenticate: Bearer` challenge; the inner service never runs.
//!
//! Building the layer without a JWKS fails, unless the environment has
//! `KEST_INSECURE_NO_VERIFY=true`: tokens are then decoded **without
//! signature verification** (claims are still checked) and a warning is
//! logged once.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use kest::http::IdentityLayer;
//!
//! let identity = IdentityLayer::builder()
//!     .jwks_url("https://idp.example/.well-known/jwks.json")?
//!     .issuer("https://idp.example")
//!     .audience("orders")
//!     .build()
//!     .await?;
//! let app: Router = Router::new()
//!     .route("/me", get(|| async { kest::current_user().unwrap_or_default() }))
//!     .layer(identity);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, StatusCode};
use serde_json::{Map, Value};
use tower::{Layer, Service};

use super::future::{Check, Gate, ResponseFuture};
use super::jwks::{JwksError, JwksSource, TokenKeyError, TokenKeyStore};
use super::refresh::RefreshPolicy;
use super::{HttpConfigError, Rejection};
use crate::lineage::{FlowIdentity, Lineage};

/// The environment variable that allows an identity layer without a JWKS.
pub const INSECURE_NO_VERIFY: &str = "KEST_INSECURE_NO_VERIFY";

/// Default leeway on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Why a bearer token was refused (answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// Not a JWT, or several `Authorization` headers, or another scheme.
    #[error("malformed bearer token: {0}")]
    Malformed(String),
    /// The header has no `kid`.
    #[error("the token header has no `kid`")]
    MissingKid,
    /// No key of the JWKS has the token's `kid` (even after a refetch).
    #[error("no key `{0}` in the JWKS")]
    UnknownKey(String),
    /// The token's `alg` is not the one its key allows.
    #[error("algorithm `{alg}` is not allowed for key `{kid}`")]
    AlgorithmNotAllowed {
        /// The token's `alg`.
        alg: String,
        /// The key.
        kid: String,
    },
    /// The signature does not verify.
    #[error("the token signature does not verify")]
    BadSignature,
    /// `exp` (plus leeway) is past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is missing or not a configured issuer.
    #[error("the token issuer is not accepted")]
    WrongIssuer,
    /// `aud` is missing or names no configured audience.
    #[error("the token audience is not accepted")]
    WrongAudience,
    /// A claim is missing or of the wrong type.
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    /// An identity value (user, agent, task, actor) contains a control
    /// character: refused with 400, never recorded.
    #[error("the token's `{claim}` contains a control character")]
    InvalidIdentity {
        /// The claim.
        claim: &'static str,
    },
    /// The token keys are older than the maximum staleness (the JWKS
    /// source could not be refreshed).
    #[error("the token keys are stale")]
    KeysUnavailable,
}

impl TokenError {
    /// The stable kind written as `error` in the 401 body.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing_token",
            TokenError::Malformed(_) => "malformed_token",
            TokenError::MissingKid => "missing_kid",
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::AlgorithmNotAllowed { .. } => "alg_not_allowed",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::InvalidClaims(_) => "invalid_claims",
            TokenError::InvalidIdentity { .. } => "invalid_identity",
            TokenError::KeysUnavailable => "keys_unavailable",
        }
    }

    pub(crate) fn into_rejection(self) -> Rejection {
        let status = match self {
            TokenError::InvalidIdentity { .. } => {
                return Rejection::new(StatusCode::BAD_REQUEST, self.kind(), self.to_string());
            }
            TokenError::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        let mut r = Rejection::new(status, self.kind(), self.to_string());
        r.www_authenticate = Some(match self {
            TokenError::Missing => "Bearer",
            _ => "Bearer error=\"invalid_token\"",
        });
        r
    }
}

/// A verified token: its claims and the identity they map to.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The token's claims.
    pub claims: Map<String, Value>,
    /// The flow identity they map to (with `jwt` set to the raw token).
    pub identity: FlowIdentity,
}

impl std::fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken").field("identity", &self.identity).finish_non_exhaustive()
    }
}

enum Keys {
    Jwks(Box<TokenKeyStore>),
    /// `KEST_INSECURE_NO_VERIFY=true`: signatures are not checked.
    Insecure,
}

/// Verifies bearer tokens and maps their claims to a [`FlowIdentity`]; the
/// logic of the [`IdentityLayer`], usable on its own. Built by
/// [`IdentityLayerBuilder::build_verifier`].
pub struct TokenVerifier {
    keys: Keys,
    issuers: Vec<String>,
    audiences: Vec<String>,
    any_audience: bool,
    user_claim: Option<String>,
    leeway: Duration,
    reference_act_mapping: bool,
}

/// The identity verified at this hop (a bearer token, or any other
/// authentication a service puts in front of Kest), as a request
/// extension: a [`LineageLayer`](super::LineageLayer) inside uses it over
/// the identity claims propagated in `baggage`, and an entry point needs it
/// (or an [`AuthenticatedPeer`](super::AuthenticatedPeer)) to start a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedIdentity(pub FlowIdentity);

/// Deepest RFC 8693 `act` nesting accepted.
const MAX_ACT_DEPTH: usize = 16;

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("TokenVerifier");
        match &self.keys {
            Keys::Jwks(store) => d.field("keys", store),
            Keys::Insecure => d.field("keys", &"INSECURE: not verified"),
        };
        d.field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("any_audience", &self.any_audience)
            .field("user_claim", &self.user_claim)
            .field("leeway", &self.leeway)
            .field("reference_act_mapping", &self.reference_act_mapping)
            .finish()
    }
}

fn now_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn non_empty_str<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

impl TokenVerifier {
    /// Whether signatures are checked (`false` only in the insecure mode).
    pub fn verifies_signatures(&self) -> bool {
        matches!(self.keys, Keys::Jwks(_))
    }

    /// Verifies `token` (the part after `Bearer `) and maps its claims.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let claims: Map<String, Value> = match &self.keys {
            Keys::Insecure => {
                jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token)
                    .map_err(|e| TokenError::Malformed(e.to_string()))?
                    .claims
            }
            Keys::Jwks(store) => {
                let kid = header.kid.clone().ok_or(TokenError::MissingKid)?;
                let key = store.key(&kid).await.map_err(|e| match e {
                    TokenKeyError::Unknown => TokenError::UnknownKey(kid.clone()),
                    TokenKeyError::Stale => TokenError::KeysUnavailable,
                })?;
                if header.alg != key.alg {
                    return Err(TokenError::AlgorithmNotAllowed { alg: format!("{:?}", header.alg), kid });
                }
                // Signature only: the claims are checked below, the same way
                // in both modes.
                let mut validation = jsonwebtoken::Validation::new(key.alg);
                validation.required_spec_claims.clear();
                validation.validate_exp = false;
                validation.validate_nbf = false;
                validation.validate_aud = false;
                validation.leeway = 0;
                jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
                    .map_err(|e| match e.kind() {
                        jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                        _ => TokenError::Malformed(e.to_string()),
                    })?
                    .claims
            }
        };
        self.check_claims(&claims, now_seconds())?;
        let identity = self.identity(&claims, token)?;
        Ok(VerifiedToken { claims, identity })
    }

    fn check_claims(&self, claims: &Map<String, Value>, now: f64) -> Result<(), TokenError> {
        let leeway = self.leeway.as_secs_f64();
        let number = |name: &str| -> Result<Option<f64>, TokenError> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| TokenError::InvalidClaims(format!("`{name}` is not a number"))),
            }
        };
        let exp = number("exp")?.ok_or_else(|| TokenError::InvalidClaims("`exp` is required".into()))?;
        if now > exp + leeway {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = number("nbf")?
            && now + leeway < nbf
        {
            return Err(TokenError::NotYetValid);
        }
        if !self.issuers.is_empty() {
            let iss = claims.get("iss").and_then(Value::as_str).ok_or(TokenError::WrongIssuer)?;
            if !self.issuers.iter().any(|i| i == iss) {
                return Err(TokenError::WrongIssuer);
            }
        }
        if !self.any_audience {
            let accepted = |a: &str| self.audiences.iter().any(|x| x == a);
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => accepted(a),
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(accepted),
                _ => false,
            };
            if !ok {
                return Err(TokenError::WrongAudience);
            }
        }
        Ok(())
    }

    fn identity(&self, claims: &Map<String, Value>, token: &str) -> Result<FlowIdentity, TokenError> {
        let task = match claims.get("scope") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Array(list)) => {
                let scopes: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
                (!scopes.is_empty()).then(|| scopes.join(" "))
            }
            _ => None,
        };
        let mut delegation = Vec::new();
        let (user, agent) = match claims.get("act") {
            Some(act) => {
                // RFC 8693 §4.1: `act.sub` is the current actor; nested
                // `act` members are the prior actors, outermost first.
                let mut actors = Vec::new();
                let mut next = Some(act);
                while let Some(level) = next {
                    let obj = level
                        .as_object()
                        .ok_or_else(|| TokenError::InvalidClaims("`act` is not an object".into()))?;
                    let sub = non_empty_str(obj, "sub")
                        .ok_or_else(|| TokenError::InvalidClaims("`act` has no `sub`".into()))?;
                    actors.push(sub.to_owned());
                    if actors.len() > MAX_ACT_DEPTH {
                        return Err(TokenError::InvalidClaims(format!(
                            "`act` nested deeper than {MAX_ACT_DEPTH}"
                        )));
                    }
                    next = obj.get("act");
                }
                let subject = non_empty_str(claims, "sub").map(str::to_owned);
                let mut actors = actors.into_iter();
                let actor = actors.next();
                delegation = actors.collect();
                if self.reference_act_mapping { (actor, subject) } else { (subject, actor) }
            }
            None => {
                let user_claim = self.user_claim.as_deref().unwrap_or("preferred_username");
                let user = non_empty_str(claims, user_claim).or_else(|| non_empty_str(claims, "sub"));
                let agent = non_empty_str(claims, "azp").or_else(|| non_empty_str(claims, "client_id"));
                (user.map(str::to_owned), agent.map(str::to_owned))
            }
        };
        for (claim, value) in [("user", &user), ("agent", &agent), ("task", &task)] {
            if value.as_deref().is_some_and(has_control) {
                return Err(TokenError::InvalidIdentity { claim });
            }
        }
        if delegation.iter().any(|a| has_control(a)) {
            return Err(TokenError::InvalidIdentity { claim: "act" });
        }
        Ok(FlowIdentity { user, agent, task, jwt: Some(token.to_owned()), delegation })
    }
}

/// Whether an identity value contains a control character.
pub(crate) fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

type EnvReader = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Configures an [`IdentityLayer`] (see the [module docs](self)).
#[derive(Clone)]
pub struct IdentityLayerBuilder {
    source: Option<JwksSource>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    any_audience: bool,
    user_claim: Option<String>,
    leeway: Duration,
    refresh: RefreshPolicy,
    reference_act_mapping: bool,
    client: Option<reqwest::Client>,
    env: EnvReader,
}

impl std::fmt::Debug for IdentityLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityLayerBuilder")
            .field("source", &self.source.as_ref().map(ToString::to_string))
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("user_claim", &self.user_claim)
            .field("leeway", &self.leeway)
            .field("any_audience", &self.any_audience)
            .field("refresh", &self.refresh)
            .field("reference_act_mapping", &self.reference_act_mapping)
            .finish_non_exhaustive()
    }
}

impl Default for IdentityLayerBuilder {
    fn default() -> Self {
        IdentityLayerBuilder {
            source: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            any_audience: false,
            user_claim: None,
            leeway: DEFAULT_LEEWAY,
            refresh: RefreshPolicy::default(),
            reference_act_mapping: false,
            client: None,
            env: Arc::new(|name| std::env::var(name).ok()),
        }
    }
}

static INSECURE_WARNING: Once = Once::new();

impl IdentityLayerBuilder {
    /// Verifies tokens against the JWKS at `url` (fetched when the layer is
    /// built, refetched on an unknown `kid`). Fails on a URL that is not
    /// `https` (or `http` on loopback).
    pub fn jwks_url(mut self, url: impl AsRef<str>) -> Result<Self, JwksError> {
        self.source = Some(JwksSource::url(url)?);
        Ok(self)
    }

    /// Verifies tokens against the JWKS in this file (read when the layer is
    /// built, reread on an unknown `kid`).
    pub fn jwks_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Some(JwksSource::file(path));
        self
    }

    /// Verifies tokens against this JWKS document.
    pub fn jwks_json(mut self, document: impl Into<String>) -> Self {
        self.source = Some(JwksSource::json(document));
        self
    }

    /// Verifies tokens against this source.
    pub fn jwks(mut self, source: JwksSource) -> Self {
        self.source = Some(source);
        self
    }

    /// Accepts tokens from this issuer (`iss`); may be repeated. With none,
    /// `iss` is not checked.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Accepts tokens for this audience (`aud`); may be repeated. At least
    /// one is required unless [`allow_any_audience`](Self::allow_any_audience).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Development only: accepts tokens for any audience (a token minted
    /// for another service is then accepted here). Logged when built.
    pub fn allow_any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// Maps RFC 8693 `act` tokens as the reference does (user = `act.sub`,
    /// agent = `sub`) instead of RFC 8693 §4.1 (user = `sub`, agent =
    /// `act.sub`), for deployments whose policies were written for it.
    pub fn reference_act_mapping(mut self, on: bool) -> Self {
        self.reference_act_mapping = on;
        self
    }

    /// How the JWKS source is kept fresh (refresh interval, rate limit,
    /// maximum staleness; default [`RefreshPolicy::default`]).
    pub fn refresh(mut self, policy: RefreshPolicy) -> Self {
        self.refresh = policy;
        self
    }

    /// The claim naming the user (default `preferred_username`); `sub` is
    /// the fallback either way.
    pub fn user_claim(mut self, claim: impl Into<String>) -> Self {
        self.user_claim = Some(claim.into());
        self
    }

    /// Leeway on `exp` and `nbf` (default 30 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Least time between two refetches (default 30 s; see
    /// [`refresh`](Self::refresh)).
    pub fn refetch_interval(mut self, interval: Duration) -> Self {
        self.refresh = self.refresh.min_refetch_interval(interval);
        self
    }

    /// The HTTP client that fetches the JWKS URL.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// How environment variables are read (default: the process
    /// environment); for tests of `KEST_INSECURE_NO_VERIFY`.
    pub fn env(mut self, reader: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        self.env = Arc::new(reader);
        self
    }

    /// Builds the verifier alone: loads the JWKS now. Without a JWKS this
    /// fails with [`HttpConfigError::NoJwks`] unless
    /// `KEST_INSECURE_NO_VERIFY=true` (any case).
    pub async fn build_verifier(self) -> Result<TokenVerifier, HttpConfigError> {
        if self.audiences.is_empty() && !self.any_audience {
            return Err(HttpConfigError::NoAudience);
        }
        if self.any_audience {
            tracing::warn!(
                "kest identity layer: `aud` is not checked (allow_any_audience); development only"
            );
        }
        let keys = match self.source {
            Some(source) => {
                let client = super::jwks::client_or_default(self.client)?;
                Keys::Jwks(Box::new(TokenKeyStore::load(source, client, self.refresh).await?))
            }
            None => {
                let insecure =
                    (self.env)(INSECURE_NO_VERIFY).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
                if !insecure {
                    return Err(HttpConfigError::NoJwks);
                }
                INSECURE_WARNING.call_once(|| {
                    tracing::warn!(
                        "{INSECURE_NO_VERIFY}=true: bearer tokens are decoded WITHOUT signature verification; \
                         never use this in production"
                    );
                });
                Keys::Insecure
            }
        };
        Ok(TokenVerifier {
            keys,
            issuers: self.issuers,
            audiences: self.audiences,
            any_audience: self.any_audience,
            user_claim: self.user_claim,
            leeway: self.leeway,
            reference_act_mapping: self.reference_act_mapping,
        })
    }

    /// Builds the layer (see [`build_verifier`](Self::build_verifier)).
    pub async fn build(self) -> Result<IdentityLayer, HttpConfigError> {
        Ok(IdentityLayer { verifier: Arc::new(self.build_verifier().await?) })
    }
}

/// Verifies bearer tokens and writes the caller's identity into the flow
/// (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct IdentityLayer {
    verifier: Arc<TokenVerifier>,
}

impl IdentityLayer {
    /// A builder.
    pub fn builder() -> IdentityLayerBuilder {
        IdentityLayerBuilder::default()
    }

    /// A layer using this verifier.
    pub fn new(verifier: TokenVerifier) -> IdentityLayer {
        IdentityLayer { verifier: Arc::new(verifier) }
    }

    /// The verifier.
    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }
}

impl<S> Layer<S> for IdentityLayer {
    type Service = IdentityService<S>;
    fn layer(&self, inner: S) -> IdentityService<S> {
        IdentityService { inner, verifier: self.verifier.clone() }
    }
}

/// The service of an [`IdentityLayer`].
#[derive(Debug, Clone)]
pub struct IdentityService<S> {
    inner: S,
    verifier: Arc<TokenVerifier>,
}

/// The bearer token of a request.
pub(crate) fn bearer_token<B>(request: &Request<B>) -> Result<String, TokenError> {
    let mut values = request.headers().get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(TokenError::Missing);
    };
    if values.next().is_some() {
        return Err(TokenError::Malformed("more than one Authorization header".into()));
    }
    let value = value.to_str().map_err(|_| TokenError::Malformed("Authorization is not ASCII".into()))?;
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Malformed("empty bearer token".into()));
    }
    Ok(token.to_owned())
}

impl<S, B, ResBody> Service<Request<B>> for IdentityService<S>
where
    S: Service<Request<B>, Response = http::Response<ResBody>> + Clone,
{
    type Response = http::Response<super::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The ready service runs this request; a clone takes its place.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let token = bearer_token(&request);
        let lineage = Lineage::current();
        let verifier = self.verifier.clone();
        let check: Check = Box::pin(async move {
            let token = token.map_err(TokenError::into_rejection)?;
            let verified = verifier.verify(&token).await.map_err(TokenError::into_rejection)?;
            let lineage = lineage.unwrap_or_default();
            lineage.set_identity(verified.identity.clone());
            Ok(Gate { lineage, otel: None, extension: Some(VerifiedIdentity(verified.identity)) })
        });
        ResponseFuture::new(check, service, request, None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn verifier(issuers: &[&str], audiences: &[&str]) -> TokenVerifier {
        TokenVerifier {
            keys: Keys::Insecure,
            issuers: issuers.iter().map(|s| s.to_string()).collect(),
            audiences: audiences.iter().map(|s| s.to_string()).collect(),
            any_audience: audiences.is_empty(),
            user_claim: None,
            leeway: DEFAULT_LEEWAY,
            reference_act_mapping: false,
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claim_checks() {
        let v = verifier(&["https://idp"], &["orders"]);
        let ok = json!({"exp": 1000, "iss": "https://idp", "aud": ["x", "orders"]});
        assert_eq!(v.check_claims(&claims(ok.clone()), 1029.0), Ok(()));
        assert_eq!(v.check_claims(&claims(ok), 1031.0), Err(TokenError::Expired));
        let nbf = json!({"exp": 2000, "nbf": 1000, "iss": "https://idp", "aud": "orders"});
        assert_eq!(v.check_claims(&claims(nbf.clone()), 971.0), Ok(()));
        assert_eq!(v.check_claims(&claims(nbf), 969.0), Err(TokenError::NotYetValid));
        let no_exp = json!({"iss": "https://idp", "aud": "orders"});
        assert!(matches!(v.check_claims(&claims(no_exp), 0.0), Err(TokenError::InvalidClaims(_))));
        let bad_exp = json!({"exp": "soon", "iss": "https://idp", "aud": "orders"});
        assert!(matches!(v.check_claims(&claims(bad_exp), 0.0), Err(TokenError::InvalidClaims(_))));
        let no_iss = json!({"exp": 10, "aud": "orders"});
        assert_eq!(v.check_claims(&claims(no_iss), 0.0), Err(TokenError::WrongIssuer));
        let no_aud = json!({"exp": 10, "iss": "https://idp"});
        assert_eq!(v.check_claims(&claims(no_aud), 0.0), Err(TokenError::WrongAudience));
        let wrong_aud = json!({"exp": 10, "iss": "https://idp", "aud": ["a", 3]});
        assert_eq!(v.check_claims(&claims(wrong_aud), 0.0), Err(TokenError::WrongAudience));
        // Nothing configured: iss and aud are not checked.
        assert_eq!(verifier(&[], &[]).check_claims(&claims(json!({"exp": 10, "aud": "x"})), 0.0), Ok(()));
    }

    #[test]
    fn identity_mapping() {
        let mut v = verifier(&[], &[]);
        let id = v
            .identity(
                &claims(
                    json!({"sub": "u1", "preferred_username": "alice", "azp": "web", "scope": "read write"}),
                ),
                "t",
            )
            .unwrap();
        assert_eq!(id.user.as_deref(), Some("alice"));
        assert_eq!(id.agent.as_deref(), Some("web"));
        assert_eq!(id.task.as_deref(), Some("read write"));
        assert_eq!(id.jwt.as_deref(), Some("t"));
        let id =
            v.identity(&claims(json!({"sub": "u1", "client_id": "cli", "scope": ["a", "b"]})), "t").unwrap();
        assert_eq!(
            (id.user.as_deref(), id.agent.as_deref(), id.task.as_deref()),
            (Some("u1"), Some("cli"), Some("a b"))
        );
        v.user_claim = Some("email".into());
        let id = v
            .identity(&claims(json!({"sub": "u1", "email": "a@x", "preferred_username": "alice"})), "t")
            .unwrap();
        assert_eq!(id.user.as_deref(), Some("a@x"));
        let id = v.identity(&claims(json!({"sub": "u1", "preferred_username": "alice"})), "t").unwrap();
        assert_eq!(id.user.as_deref(), Some("u1"));
    }

    #[test]
    fn rfc8693_act_maps_user_to_sub_agent_to_actor_and_records_delegation() {
        let mut v = verifier(&[], &[]);
        // bob's token exchanged by agent-7, which was itself acting for svc-a.
        let token = json!({"sub": "bob", "act": {"sub": "agent-7", "act": {"sub": "svc-a"}}});
        let id = v.identity(&claims(token.clone()), "t").unwrap();
        assert_eq!((id.user.as_deref(), id.agent.as_deref()), (Some("bob"), Some("agent-7")));
        assert_eq!(id.delegation, ["svc-a"]);
        v.reference_act_mapping = true;
        let id = v.identity(&claims(token), "t").unwrap();
        assert_eq!(
            (id.user.as_deref(), id.agent.as_deref()),
            (Some("agent-7"), Some("bob")),
            "reference order"
        );
        assert!(matches!(
            v.identity(&claims(json!({"sub": "b", "act": "x"})), "t"),
            Err(TokenError::InvalidClaims(_))
        ));
        let mut deep = json!({"sub": "last"});
        for i in 0..20 {
            deep = json!({"sub": format!("a{i}"), "act": deep});
        }
        assert!(matches!(
            v.identity(&claims(json!({"sub": "b", "act": deep})), "t"),
            Err(TokenError::InvalidClaims(_))
        ));
    }

    #[test]
    fn identity_values_with_control_characters_are_refused() {
        let v = verifier(&[], &[]);
        for token in [
            json!({"sub": "mallory\u{0}"}),
            json!({"sub": "alice", "azp": "web\r\nx-admin: 1"}),
            json!({"sub": "alice", "scope": "read\n"}),
            json!({"sub": "alice", "act": {"sub": "a\u{7f}"}}),
        ] {
            let err = v.identity(&claims(token), "t").unwrap_err();
            assert_eq!(err.kind(), "invalid_identity");
            assert_eq!(err.into_rejection().status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn bearer_parsing() {
        let req = |values: &[&str]| {
            let mut r = Request::new(());
            for v in values {
                r.headers_mut().append(http::header::AUTHORIZATION, v.parse().unwrap());
            }
            r
        };
        assert_eq!(bearer_token(&req(&[])), Err(TokenError::Missing));
        assert_eq!(bearer_token(&req(&["Basic abc"])), Err(TokenError::Missing));
        assert_eq!(bearer_token(&req(&["bearer a.b.c"])).unwrap(), "a.b.c");
        assert!(matches!(bearer_token(&req(&["Bearer "])), Err(TokenError::Malformed(_))));
        assert!(matches!(bearer_token(&req(&["Bearer a", "Bearer b"])), Err(TokenError::Malformed(_))));
    }

    #[tokio::test]
    async fn build_requires_an_audience_unless_explicitly_opted_out() {
        let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k"}]}"#;
        let err = IdentityLayer::builder().jwks_json(jwks).build().await.unwrap_err();
        assert_eq!(err, HttpConfigError::NoAudience);
        assert!(IdentityLayer::builder().jwks_json(jwks).audience("orders").build().await.is_ok());
        assert!(IdentityLayer::builder().jwks_json(jwks).allow_any_audience().build().await.is_ok());
    }

    #[tokio::test]
    async fn build_requires_jwks_unless_insecure() {
        let err = IdentityLayer::builder().allow_any_audience().env(|_| None).build().await.unwrap_err();
        assert_eq!(err, HttpConfigError::NoJwks);
        let err = IdentityLayer::builder()
            .allow_any_audience()
            .env(|_| Some("1".into()))
            .build()
            .await
            .unwrap_err();
        assert_eq!(err, HttpConfigError::NoJwks);
        let layer = IdentityLayer::builder()
            .allow_any_audience()
            .env(|name| (name == INSECURE_NO_VERIFY).then(|| "true".into()))
            .build()
            .await
            .unwrap();
        assert!(!layer.verifier().verifies_signatures());
    }
}
