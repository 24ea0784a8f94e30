//! The outbound propagator (SPEC §7.5): a `reqwest-middleware` middleware
//! that carries the current flow into every request.
//!
//! For each request it
//!
//! - packs the passport of the current flow ([`Lineage::current`]) with its
//!   [`Propagator`] (inline, compressed, or claim-checked into the cache),
//!   and writes it with `kest.chain_tip` and the identity keys into the
//!   `baggage` header, **merged** with the request's existing `baggage`:
//!   unrelated members are kept byte for byte, earlier `kest.*` values
//!   replaced. Outside any flow the `baggage` header is left as it is;
//! - writes a `traceparent`: a valid one already on the request is kept,
//!   else the current OpenTelemetry context's when valid, else a fresh
//!   random one.
//!
//! A flow that cannot be packed (a claim check needed with no cache, or the
//! cache down) fails the request before it is sent: an oversized header or
//! an empty passport is never sent instead.
//!
//! By default the flow goes to every host; with
//! [`KestPropagationMiddleware::allow_destinations`] only requests to the
//! listed origins (scheme, host, port) carry it — a request elsewhere gets
//! only a `traceparent`, never the passport or the identity keys.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use kest::Lineage;
//! use kest::http::KestPropagationMiddleware;
//! use kest::propagation::Propagator;
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(KestPropagationMiddleware::new(Propagator::new()))
//!     .build();
//! // Inside a flow (a handler behind `LineageLayer`, or an explicit scope):
//! let flow = Lineage::new().with_user("alice");
//! let response = flow.scope(client.get("http://127.0.0.1:8080/next").send()).await?;
//! # let _ = response; Ok(()) }
//! ```

use http::{Extensions, HeaderMap, HeaderValue};
use kest_core::baggage::BaggageError;
use reqwest_middleware::{Middleware, Next};

use super::BAGGAGE;
use super::traceparent::{TRACEPARENT, TraceParent};
use crate::lineage::Lineage;
use crate::propagation::{PropagationError, Propagator};

/// Writes the current flow's passport, identity keys and a `traceparent`
/// into every request (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct KestPropagationMiddleware {
    propagator: Propagator,
    destinations: Option<Vec<reqwest::Url>>,
    workload: Option<std::sync::Arc<dyn crate::identity::IdentityProvider>>,
}

/// A destination URL that does not parse (see
/// [`KestPropagationMiddleware::allow_destinations`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination `{url}` is not an absolute URL: {reason}")]
pub struct DestinationError {
    /// The URL given.
    pub url: String,
    /// Why it was refused.
    pub reason: String,
}

fn not_ascii() -> PropagationError {
    PropagationError::Baggage(BaggageError::BadMember {
        index: 0,
        reason: "the request's baggage header is not visible ASCII".into(),
    })
}

impl KestPropagationMiddleware {
    /// A middleware packing with this propagator.
    pub fn new(propagator: Propagator) -> KestPropagationMiddleware {
        KestPropagationMiddleware { propagator, destinations: None, workload: None }
    }

    /// Also proves which workload is calling: each request that carries the
    /// flow gets a short-lived workload token signed by `identity`, for the
    /// destination's origin ([`super::workload`]), which a lineage layer
    /// with [`authenticate_peers`](super::LineageLayerBuilder::authenticate_peers)
    /// verifies.
    pub fn workload_identity(
        mut self,
        identity: std::sync::Arc<dyn crate::identity::IdentityProvider>,
    ) -> Self {
        self.workload = Some(identity);
        self
    }

    /// Carries the flow only to these origins (scheme, host and port of
    /// each URL); requests elsewhere get only a `traceparent`.
    ///
    /// ```
    /// use kest::http::KestPropagationMiddleware;
    /// let m = KestPropagationMiddleware::default().allow_destinations(["https://orders.internal:8443/"]).unwrap();
    /// assert!(m.carries_flow_to(&"https://orders.internal:8443/v1/x".parse().unwrap()));
    /// assert!(!m.carries_flow_to(&"https://evil.example/".parse().unwrap()));
    /// assert!(KestPropagationMiddleware::default().allow_destinations(["not a url"]).is_err());
    /// ```
    pub fn allow_destinations<I, S>(mut self, urls: I) -> Result<Self, DestinationError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for url in urls {
            let text = url.as_ref();
            let parsed = reqwest::Url::parse(text)
                .map_err(|e| DestinationError { url: text.to_owned(), reason: e.to_string() })?;
            list.push(parsed);
        }
        self.destinations = Some(list);
        Ok(self)
    }

    /// Whether a request to `url` carries the flow.
    pub fn carries_flow_to(&self, url: &reqwest::Url) -> bool {
        match &self.destinations {
            None => true,
            Some(list) => list.iter().any(|allowed| allowed.origin() == url.origin()),
        }
    }

    /// The propagator.
    pub fn propagator(&self) -> &Propagator {
        &self.propagator
    }

    /// Writes `lineage` (when given) and a `traceparent` into `headers`, as
    /// the middleware does for each request; for clients other than
    /// reqwest. On error `headers` is left unchanged.
    pub async fn write_headers(
        &self,
        lineage: Option<&Lineage>,
        headers: &mut HeaderMap,
    ) -> Result<(), PropagationError> {
        let baggage_value = match lineage {
            None => None,
            Some(lineage) => {
                let mut existing: Option<String> = None;
                for value in headers.get_all(BAGGAGE) {
                    let text = value.to_str().map_err(|_| not_ascii())?;
                    match &mut existing {
                        None => existing = Some(text.to_owned()),
                        Some(all) => {
                            all.push(',');
                            all.push_str(text);
                        }
                    }
                }
                let mut baggage = self.propagator.parse_header(existing.as_deref())?;
                self.propagator.inject(lineage, &mut baggage).await?;
                let header = baggage.to_header()?;
                Some(HeaderValue::from_str(&header).map_err(|_| not_ascii())?)
            }
        };
        if let Some(value) = baggage_value {
            headers.insert(BAGGAGE, value);
        }
        let mut existing = headers.get_all(TRACEPARENT).iter();
        let keep = match (existing.next(), existing.next()) {
            (Some(one), None) => one.to_str().ok().is_some_and(|v| TraceParent::parse(v).is_ok()),
            _ => false,
        };
        if !keep {
            let traceparent = TraceParent::current_or_random().to_string();
            if let Ok(value) = HeaderValue::from_str(&traceparent) {
                headers.insert(TRACEPARENT, value);
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Middleware for KestPropagationMiddleware {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let lineage = Lineage::current().filter(|_| self.carries_flow_to(request.url()));
        if let (Some(identity), Some(_)) = (&self.workload, &lineage) {
            let audience = request.url().origin().ascii_serialization();
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let token = super::workload::mint_workload_token(
                identity.as_ref(),
                &audience,
                super::workload::DEFAULT_TOKEN_TTL,
                now,
            )
            .map_err(|e| reqwest_middleware::Error::middleware(std::io::Error::other(e.to_string())))?;
            let value = HeaderValue::from_str(&token).map_err(reqwest_middleware::Error::middleware)?;
            request.headers_mut().insert(super::workload::WORKLOAD_TOKEN_HEADER, value);
        }
        self.write_headers(lineage.as_ref(), request.headers_mut())
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        next.run(request, extensions).await
    }
}
