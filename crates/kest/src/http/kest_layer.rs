//! [`KestLayer`]: identity and lineage in one layer, in the only correct
//! order (SPEC §7.5), so a service cannot get it wrong.
//!
//! For every request it verifies the bearer token when there is one (401 on
//! any defect; required at an entry point that must start flows for users),
//! then restores, verifies and binds the incoming passport exactly as a
//! [`LineageLayer`] does, and lets the identity verified at this hop — never
//! the `baggage` claims — stand for the caller. An inner service refuses
//! requests without a passport; an entry point starts a flow for a verified
//! identity only, scored with its ingress origin.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::post};
//! use kest::http::{IdentityLayer, KestLayer, LineageLayer};
//!
//! // The gateway: users come in with tokens and start flows.
//! let gateway = KestLayer::builder()
//!     .lineage(LineageLayer::builder().jwks_file("/etc/kest/jwks.json").entry_point("user_input"))
//!     .identity(
//!         IdentityLayer::builder()
//!             .jwks_url("https://idp.example/.well-known/jwks.json")?
//!             .issuer("https://idp.example")
//!             .audience("orders"),
//!     )
//!     .build()
//!     .await?;
//! // An inner service: only requests carrying a verified passport.
//! let inner = KestLayer::builder().lineage(LineageLayer::builder().jwks_file("/etc/kest/jwks.json")).build().await?;
//! let app: Router = Router::new().route("/", post(|| async { "ok" })).layer(gateway);
//! # let _ = (app, inner); Ok(()) }
//! ```

use std::sync::Arc;

use tower::Layer;

use super::HttpConfigError;
use super::identity_layer::IdentityLayerBuilder;
use super::lineage_layer::{LineageLayer, LineageLayerBuilder, LineageService, Role};
use crate::propagation::Propagator;
use kest_core::Verifier;

/// Configures a [`KestLayer`].
#[derive(Debug, Default)]
pub struct KestLayerBuilder {
    lineage: Option<LineageLayerBuilder>,
    identity: Option<IdentityLayerBuilder>,
    require_token: Option<bool>,
}

impl KestLayerBuilder {
    /// The lineage part: keys, role (entry point or inner service), ingress
    /// rules, sanitizers, propagator. Required.
    pub fn lineage(mut self, lineage: LineageLayerBuilder) -> Self {
        self.lineage = Some(lineage);
        self
    }

    /// The bearer-token part (JWKS, issuer, audience, claim mapping). Without
    /// it, only an outer [`VerifiedIdentity`](super::VerifiedIdentity) or
    /// [`AuthenticatedPeer`](super::AuthenticatedPeer) counts as verified.
    pub fn identity(mut self, identity: IdentityLayerBuilder) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Whether every request must carry a bearer token (default: yes at an
    /// entry point with token verification, no at an inner service, whose
    /// callers are identified by the signed lineage).
    pub fn require_token(mut self, required: bool) -> Self {
        self.require_token = Some(required);
        self
    }

    /// Loads the key sets and builds the layer.
    pub async fn build(self) -> Result<KestLayer, HttpConfigError> {
        let lineage = self.lineage.ok_or(HttpConfigError::NoKeySet)?;
        let tokens = match self.identity {
            Some(identity) => Some(Arc::new(identity.build_verifier().await?)),
            None => None,
        };
        let entry_point = matches!(lineage.role_ref(), Role::EntryPoint { .. });
        let require_token = self.require_token.unwrap_or(entry_point && tokens.is_some());
        if require_token && tokens.is_none() {
            return Err(HttpConfigError::NoJwks);
        }
        Ok(KestLayer { inner: lineage.build_with_tokens(tokens, require_token).await? })
    }
}

/// Identity and lineage in one layer (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct KestLayer {
    inner: LineageLayer,
}

impl KestLayer {
    /// A builder.
    pub fn builder() -> KestLayerBuilder {
        KestLayerBuilder::default()
    }

    /// The propagator.
    pub fn propagator(&self) -> &Propagator {
        self.inner.propagator()
    }

    /// The passport verifier.
    pub fn verifier(&self) -> &Verifier {
        self.inner.verifier()
    }
}

impl<S> Layer<S> for KestLayer {
    type Service = LineageService<S>;
    fn layer(&self, inner: S) -> LineageService<S> {
        self.inner.layer(inner)
    }
}
