//! Baggage propagation: `inject` writes a flow into a W3C `baggage` header
//! (three tiers: inline, zlib, claim check); `extract` reads one back,
//! resolving claim checks, verifying the passport and binding it to the
//! request. Both run in Rust with the GIL released.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use kest::cache::{CacheProvider, MemoryCache as RsMemoryCache};
use kest::propagation::Propagator as RsPropagator;
use kest_core::baggage::Baggage;
use kest_core::ingress::IngressRules;
use pyo3::prelude::*;

use crate::errors;
use crate::flow::Flow;
use crate::passport::PassportVerifier;

/// An in-memory, bounded cache with TTLs for claim-checked passports.
#[pyclass(frozen, module = "kest_rs")]
#[derive(Debug, Clone)]
pub struct MemoryCache {
    inner: Arc<RsMemoryCache>,
}

#[pymethods]
impl MemoryCache {
    /// A new, empty cache.
    #[new]
    fn new() -> MemoryCache {
        MemoryCache { inner: Arc::new(RsMemoryCache::new()) }
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}

/// Wakes the thread that blocks on a future.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future that needs no reactor (in-memory cache) to completion.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(5));
    }
}

/// Packs and unpacks flows in `baggage` headers.
#[pyclass(frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct Propagator {
    inner: RsPropagator,
}

#[pymethods]
impl Propagator {
    /// `threshold`: largest inline / compressed value in bytes (default
    /// 4096); `cache`: where oversized passports go (claim checks; none:
    /// an oversized passport is an error); `claim_ttl`: seconds;
    /// `allow_tip_subset`: accept a `kest.chain_tip` naming a subset of
    /// the tips (the reference writes only the last); `max_age`: seconds
    /// (None turns the age rule off).
    #[new]
    #[pyo3(signature = (*, threshold = None, cache = None, claim_ttl = None, allow_tip_subset = false, max_age = Some(300.0), forward_jwt = false))]
    fn new(
        threshold: Option<usize>,
        cache: Option<&MemoryCache>,
        claim_ttl: Option<f64>,
        allow_tip_subset: bool,
        max_age: Option<f64>,
        forward_jwt: bool,
    ) -> PyResult<Propagator> {
        let secs = |v: f64| {
            Duration::try_from_secs_f64(v).map_err(|_| errors::config("durations must be non-negative"))
        };
        let mut b = RsPropagator::builder().forward_jwt(forward_jwt);
        if let Some(t) = threshold {
            b = b.threshold(t);
        }
        if let Some(c) = cache {
            let c: Arc<dyn CacheProvider> = c.inner.clone();
            b = b.cache(c);
        }
        if let Some(t) = claim_ttl {
            b = b.claim_ttl(secs(t)?);
        }
        let rules = IngressRules {
            allow_tip_subset,
            max_age: max_age.map(secs).transpose()?,
            ..IngressRules::default()
        };
        b = b.ingress(rules);
        Ok(Propagator { inner: b.build() })
    }

    /// Writes `flow` into `baggage` (an existing header whose other
    /// members are kept) and returns the new header value.
    #[pyo3(signature = (flow, baggage = None))]
    fn inject(&self, py: Python<'_>, flow: &Flow, baggage: Option<&str>) -> PyResult<String> {
        let lineage = flow.lineage.clone();
        py.detach(|| {
            let mut b = self.inner.parse_header(baggage)?;
            block_on(self.inner.inject(&lineage, &mut b))?;
            b.to_header().map_err(kest::propagation::PropagationError::from)
        })
        .map_err(|e| errors::from_propagation(&e))
    }

    /// Reads a flow from a `baggage` header, verifying its passport with
    /// `verifier`. A header without any passport key is a new, empty flow;
    /// anything that does not decode, resolve, verify or bind raises
    /// `BaggageError` (never an empty passport).
    #[pyo3(signature = (baggage, verifier, *, peer = None))]
    fn extract(
        &self,
        py: Python<'_>,
        baggage: Option<&str>,
        verifier: &PassportVerifier,
        peer: Option<&str>,
    ) -> PyResult<Flow> {
        let v = Arc::clone(&verifier.inner);
        py.detach(|| {
            let b = self.inner.parse_header(baggage)?;
            let extracted = block_on(self.inner.extract_from_peer(&b, &v, peer))?;
            extracted.into_lineage()
        })
        .map(|lineage| Flow { lineage })
        .map_err(|e| errors::from_propagation(&e))
    }
}

/// Parses a baggage header and returns its members (for inspection).
#[pyfunction]
pub fn parse_baggage(header: &str) -> PyResult<Vec<(String, String)>> {
    let b = Baggage::parse(header).map_err(|e| errors::from_propagation(&e.into()))?;
    Ok(b.members().iter().map(|m| (m.key().to_owned(), m.value().to_owned())).collect())
}
