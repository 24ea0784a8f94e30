//! Baggage propagation: `inject` writes a flow into a W3C `baggage` header
//! (three tiers: inline, zlib, claim check); `extract` reads one back,
//! resolving claim checks, verifying the passport and binding it to the
//! request. Both run in Rust with the GIL released.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use kest::cache::{CacheProvider, MemoryCache as RsMemoryCache, RedisCache as RsRedisCache};
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

/// The process's Tokio runtime for Redis (its connection's I/O and timers
/// run there; callers block on it with the GIL released). One worker
/// thread: Redis calls are short and multiplexed on one connection.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("kest-rs-redis")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| errors::config(format!("cannot start the Redis runtime: {e}")))
}

/// A claim-check cache on a Redis server (`SET key value PX ttl`, `GET`,
/// `DEL`): the shared cache of a distributed deployment. `url` is
/// `redis://[:password@]host:port[/db]`; connecting happens here and fails
/// with `BaggageError(kind="cache_unavailable")` when the server cannot be
/// reached (with `lazy=True` the first use fails instead). Every operation
/// is bounded by `connection_timeout` + `command_timeout` (seconds,
/// default 1 each); a server that is down or slow is an error at the call
/// that needs it, never a silent miss.
#[pyclass(frozen, module = "kest_rs")]
#[derive(Debug, Clone)]
pub struct RedisCache {
    inner: Arc<RsRedisCache>,
}

#[pymethods]
impl RedisCache {
    #[new]
    #[pyo3(signature = (url, *, connection_timeout = None, command_timeout = None, lazy = false))]
    fn new(
        py: Python<'_>,
        url: String,
        connection_timeout: Option<f64>,
        command_timeout: Option<f64>,
        lazy: bool,
    ) -> PyResult<RedisCache> {
        let secs = |v: f64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| errors::config("timeouts must be positive numbers of seconds"))
        };
        let mut b = RsRedisCache::builder(url);
        if let Some(t) = connection_timeout {
            b = b.connection_timeout(secs(t)?);
        }
        if let Some(t) = command_timeout {
            b = b.command_timeout(secs(t)?);
        }
        let rt = runtime()?;
        let cache = py.detach(|| {
            if lazy {
                let _entered = rt.enter();
                b.connect_lazy()
            } else {
                rt.block_on(b.connect())
            }
        });
        let cache = cache.map_err(|e| {
            errors::from_propagation(&kest::propagation::PropagationError::CacheUnavailable(e))
        })?;
        Ok(RedisCache { inner: Arc::new(cache) })
    }

    /// The server's URL without credentials.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn __repr__(&self) -> String {
        format!("<RedisCache {}>", self.inner.name())
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
    /// Whether the cache needs the Tokio runtime (Redis).
    on_runtime: bool,
}

impl Propagator {
    /// Runs a propagation future: on the Tokio runtime for Redis, on this
    /// thread otherwise (the in-memory cache never waits).
    fn run<F: Future>(&self, future: F) -> F::Output {
        match self.on_runtime.then(runtime) {
            Some(Ok(rt)) => rt.block_on(future),
            // The runtime exists: a Propagator with Redis was built with it.
            Some(Err(_)) | None => block_on(future),
        }
    }
}

#[pymethods]
impl Propagator {
    /// `threshold`: largest inline / compressed value in bytes (default
    /// 4096); `cache`: where oversized passports go (a `MemoryCache` or a
    /// `RedisCache`; claim checks; none: an oversized passport is an
    /// error); `claim_ttl`: seconds;
    /// `allow_tip_subset`: accept a `kest.chain_tip` naming a subset of
    /// the tips (the reference writes only the last); `max_age`: seconds
    /// (None turns the age rule off).
    #[new]
    #[pyo3(signature = (*, threshold = None, cache = None, claim_ttl = None, allow_tip_subset = false, max_age = Some(300.0), forward_jwt = false))]
    fn new(
        threshold: Option<usize>,
        cache: Option<&Bound<'_, PyAny>>,
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
        let mut on_runtime = false;
        if let Some(c) = cache {
            let c: Arc<dyn CacheProvider> = if let Ok(m) = c.cast::<MemoryCache>() {
                m.get().inner.clone()
            } else if let Ok(r) = c.cast::<RedisCache>() {
                on_runtime = true;
                r.get().inner.clone()
            } else {
                return Err(errors::config("cache must be a MemoryCache or a RedisCache"));
            };
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
        Ok(Propagator { inner: b.build(), on_runtime })
    }

    /// Writes `flow` into `baggage` (an existing header whose other
    /// members are kept) and returns the new header value.
    #[pyo3(signature = (flow, baggage = None))]
    fn inject(&self, py: Python<'_>, flow: &Flow, baggage: Option<&str>) -> PyResult<String> {
        let lineage = flow.lineage.clone();
        py.detach(|| {
            let mut b = self.inner.parse_header(baggage)?;
            self.run(self.inner.inject(&lineage, &mut b))?;
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
            let extracted = self.run(self.inner.extract_from_peer(&b, &v, peer))?;
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
