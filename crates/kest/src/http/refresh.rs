//! A JWKS document kept fresh (SPEC §8, key resolution and rotation):
//! refetched when it is older than the refresh interval and when a key it
//! does not hold is asked for — at most once per minimum refetch interval,
//! concurrent callers waiting for the one fetch in flight — and refused
//! once it is older than the maximum staleness (the source could not be
//! reached for too long), so a key removed from the source stops verifying
//! within the refresh interval and a dead source fails closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::jwks::{JwksError, JwksSource};

/// How a JWKS source is kept fresh.
///
/// ```
/// use std::time::Duration;
/// use kest::http::RefreshPolicy;
/// let policy = RefreshPolicy::default().refresh_interval(Duration::from_secs(30));
/// assert_eq!(policy.max_staleness_value(), Duration::from_secs(600));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    refresh_interval: Duration,
    min_refetch_interval: Duration,
    max_staleness: Duration,
}

impl Default for RefreshPolicy {
    /// Refresh every 60 s, refetch for an unknown key at most every 30 s,
    /// refuse keys older than 10 minutes.
    fn default() -> Self {
        RefreshPolicy {
            refresh_interval: Duration::from_secs(60),
            min_refetch_interval: super::jwks::DEFAULT_REFETCH_INTERVAL,
            max_staleness: Duration::from_secs(600),
        }
    }
}

impl RefreshPolicy {
    /// Refetch when the keys are older than this (a removed key stops
    /// verifying within it).
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }
    /// Least time between two refetches (rate limit, also for unknown keys).
    /// Keep it well above zero in production: any caller presenting an
    /// unknown signer or a bad signature can trigger a refetch.
    pub fn min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }
    /// Keys older than this are refused (the source could not be reached).
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.max_staleness = staleness;
        self
    }
    /// The refresh interval.
    pub fn refresh_interval_value(&self) -> Duration {
        self.refresh_interval
    }
    /// The maximum staleness.
    pub fn max_staleness_value(&self) -> Duration {
        self.max_staleness
    }
}

/// A parsed document and when it was fetched.
#[derive(Debug)]
pub(crate) struct Loaded<T> {
    pub(crate) value: T,
    pub(crate) fetched_at: Instant,
}

/// The keys are older than the maximum staleness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stale {
    pub(crate) age: Duration,
    pub(crate) max: Duration,
}

/// A JWKS document of type `T`, refreshed by [`RefreshPolicy`].
pub(crate) struct RefreshingJwks<T> {
    source: JwksSource,
    client: reqwest::Client,
    parse: fn(&str) -> Result<T, JwksError>,
    current: ArcSwap<Loaded<T>>,
    /// When the last refetch was attempted (none yet: the first one is
    /// never rate-limited); held while one is in flight.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    policy: RefreshPolicy,
}

impl<T> std::fmt::Debug for RefreshingJwks<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshingJwks")
            .field("source", &self.source.to_string())
            .field("age", &self.current.load().fetched_at.elapsed())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<T> RefreshingJwks<T> {
    /// Loads the document now; fails when it cannot be read or parsed.
    pub(crate) async fn load(
        source: JwksSource,
        client: reqwest::Client,
        parse: fn(&str) -> Result<T, JwksError>,
        policy: RefreshPolicy,
    ) -> Result<RefreshingJwks<T>, JwksError> {
        let value = parse(&source.load(&client).await?)?;
        let now = Instant::now();
        Ok(RefreshingJwks {
            source,
            client,
            parse,
            current: ArcSwap::from_pointee(Loaded { value, fetched_at: now }),
            last_attempt: tokio::sync::Mutex::new(None),
            policy,
        })
    }

    /// The source.
    pub(crate) fn source(&self) -> &JwksSource {
        &self.source
    }

    /// The current keys, unless they are older than the maximum staleness
    /// (an inline document never goes stale).
    pub(crate) fn snapshot(&self) -> Result<Arc<Loaded<T>>, Stale> {
        let loaded = self.current.load_full();
        let age = loaded.fetched_at.elapsed();
        if self.source.refetchable() && age > self.policy.max_staleness {
            return Err(Stale { age, max: self.policy.max_staleness });
        }
        Ok(loaded)
    }

    /// Refetches when the keys are older than the refresh interval.
    pub(crate) async fn refresh_if_due(&self) {
        if self.current.load().fetched_at.elapsed() >= self.policy.refresh_interval {
            self.refetch("refresh interval").await;
        }
    }

    /// Refetches now unless the last attempt is more recent than the
    /// minimum refetch interval (or the source is inline). Returns whether
    /// new keys were loaded.
    pub(crate) async fn refetch(&self, why: &'static str) -> bool {
        if !self.source.refetchable() {
            return false;
        }
        let seen = self.current.load().fetched_at;
        let mut last = self.last_attempt.lock().await;
        if self.current.load().fetched_at != seen {
            return true; // another caller refetched while we waited
        }
        if last.is_some_and(|t| t.elapsed() < self.policy.min_refetch_interval) {
            return false;
        }
        *last = Some(Instant::now());
        match self.source.load(&self.client).await.and_then(|text| (self.parse)(&text)) {
            Ok(value) => {
                tracing::debug!(source = %self.source, why, "JWKS refetched");
                self.current.store(Arc::new(Loaded { value, fetched_at: Instant::now() }));
                true
            }
            Err(e) => {
                tracing::warn!(source = %self.source, why, error = %e, "JWKS refetch failed; keeping the old keys");
                false
            }
        }
    }
}
