//! [`MemoryCache`]: a bounded in-process cache with a TTL per entry.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{CacheError, CacheProvider};
use crate::policy::BoxFuture;

/// Default [`MemoryCacheBuilder::max_entries`].
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Default [`MemoryCacheBuilder::max_value_bytes`] (16 MiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 << 20;
/// Default [`MemoryCacheBuilder::max_total_bytes`] (256 MiB).
pub const DEFAULT_MAX_TOTAL_BYTES: usize = 256 << 20;
/// Default [`MemoryCacheBuilder::max_key_bytes`].
pub const DEFAULT_MAX_KEY_BYTES: usize = 512;

/// A bounded, thread-safe in-process cache with a time-to-live per entry.
///
/// For one process, or for tests: services that claim-check passports to each
/// other need a shared cache such as `RedisCache` (feature `redis`).
///
/// - Bounds: at most [`max_entries`](MemoryCacheBuilder::max_entries)
///   entries and [`max_total_bytes`](MemoryCacheBuilder::max_total_bytes) of
///   keys and values. When a new value does not fit, expired entries are
///   dropped first, then the entries closest to expiry. A single value above
///   [`max_value_bytes`](MemoryCacheBuilder::max_value_bytes) (or a key above
///   [`max_key_bytes`](MemoryCacheBuilder::max_key_bytes)) is refused with
///   [`CacheError::Refused`], as is a zero TTL.
/// - Expiry: an expired entry is never returned; expired entries are swept
///   on every write, oldest first (amortised O(log n)).
/// - Operations complete immediately (the futures are ready at once).
///
/// ```
/// use std::time::Duration;
/// use kest::cache::{CacheProvider, MemoryCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = MemoryCache::builder().max_entries(2).build();
/// cache.set("a", "1", Duration::from_secs(60)).await.unwrap();
/// cache.set("b", "2", Duration::from_secs(30)).await.unwrap();
/// cache.set("c", "3", Duration::from_secs(90)).await.unwrap(); // evicts `b`, the closest to expiry
/// assert_eq!(cache.get("a").await.unwrap().as_deref(), Some("1"));
/// assert_eq!(cache.get("b").await.unwrap(), None);
/// cache.delete("a").await.unwrap();
/// assert_eq!(cache.len(), 1);
/// # }
/// ```
#[derive(Debug)]
pub struct MemoryCache {
    name: String,
    max_entries: usize,
    max_value_bytes: usize,
    max_total_bytes: usize,
    max_key_bytes: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Slot>,
    /// Expiry index: (deadline, sequence) → key; the first is the next to
    /// expire.
    by_expiry: BTreeMap<(Instant, u64), String>,
    next_seq: u64,
    total_bytes: usize,
}

#[derive(Debug)]
struct Slot {
    value: String,
    expires: Instant,
    seq: u64,
}

impl State {
    fn remove(&mut self, key: &str) -> Option<Slot> {
        let slot = self.entries.remove(key)?;
        self.by_expiry.remove(&(slot.expires, slot.seq));
        self.total_bytes = self.total_bytes.saturating_sub(key.len() + slot.value.len());
        Some(slot)
    }

    /// Drops every entry whose deadline is at or before `now`.
    fn sweep(&mut self, now: Instant) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(slot) = self.entries.remove(&key) {
                self.total_bytes = self.total_bytes.saturating_sub(key.len() + slot.value.len());
            }
        }
    }

    /// Drops the entry closest to expiry; `false` when empty.
    fn evict_one(&mut self) -> bool {
        match self.by_expiry.pop_first() {
            Some((_, key)) => {
                if let Some(slot) = self.entries.remove(&key) {
                    self.total_bytes = self.total_bytes.saturating_sub(key.len() + slot.value.len());
                }
                true
            }
            None => false,
        }
    }
}

/// Configures a [`MemoryCache`] (see [`MemoryCache::builder`]).
#[derive(Debug, Clone)]
pub struct MemoryCacheBuilder {
    name: String,
    max_entries: usize,
    max_value_bytes: usize,
    max_total_bytes: usize,
    max_key_bytes: usize,
}

impl Default for MemoryCacheBuilder {
    fn default() -> Self {
        MemoryCacheBuilder {
            name: "memory".into(),
            max_entries: DEFAULT_MAX_ENTRIES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
        }
    }
}

impl MemoryCacheBuilder {
    /// The name used in errors and logs (default `memory`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Most entries held at once (default 10 000; at least 1).
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n.max(1);
        self
    }

    /// Largest value accepted, in bytes (default 16 MiB).
    pub fn max_value_bytes(mut self, n: usize) -> Self {
        self.max_value_bytes = n;
        self
    }

    /// Most bytes of keys and values held at once (default 256 MiB).
    pub fn max_total_bytes(mut self, n: usize) -> Self {
        self.max_total_bytes = n;
        self
    }

    /// Largest key accepted, in bytes (default 512).
    pub fn max_key_bytes(mut self, n: usize) -> Self {
        self.max_key_bytes = n;
        self
    }

    /// The cache.
    pub fn build(self) -> MemoryCache {
        MemoryCache {
            name: self.name,
            max_entries: self.max_entries,
            max_value_bytes: self.max_value_bytes,
            max_total_bytes: self.max_total_bytes,
            max_key_bytes: self.max_key_bytes,
            state: Mutex::new(State::default()),
        }
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        MemoryCache::new()
    }
}

impl MemoryCache {
    /// A cache with the default bounds (10 000 entries, 16 MiB per value,
    /// 256 MiB in all).
    pub fn new() -> MemoryCache {
        MemoryCacheBuilder::default().build()
    }

    /// Configures a cache.
    pub fn builder() -> MemoryCacheBuilder {
        MemoryCacheBuilder::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the maps consistent before it can panic (no
        // user code runs under the lock), so poisoning is recovered from.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of entries held, expired ones included until swept.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired entry now.
    pub fn purge_expired(&self) {
        self.lock().sweep(Instant::now());
    }

    fn refused(&self, message: String) -> CacheError {
        CacheError::Refused { cache: self.name.clone(), message }
    }

    fn get_now(&self, key: &str) -> Option<String> {
        let now = Instant::now();
        let mut state = self.lock();
        let expired = match state.entries.get(key) {
            None => return None,
            Some(slot) if slot.expires > now => return Some(slot.value.clone()),
            Some(_) => true,
        };
        if expired {
            state.remove(key);
        }
        None
    }

    fn set_now(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        if key.len() > self.max_key_bytes {
            return Err(self.refused(format!(
                "key is {} bytes, above the limit of {}",
                key.len(),
                self.max_key_bytes
            )));
        }
        if value.len() > self.max_value_bytes {
            return Err(self.refused(format!(
                "value is {} bytes, above the limit of {}",
                value.len(),
                self.max_value_bytes
            )));
        }
        let size = key.len() + value.len();
        if size > self.max_total_bytes {
            return Err(self.refused(format!(
                "entry is {size} bytes, above the cache's total of {}",
                self.max_total_bytes
            )));
        }
        if ttl.is_zero() {
            return Err(self.refused("the time-to-live must not be zero".into()));
        }
        let now = Instant::now();
        // A TTL too large for the clock is as good as forever.
        let expires = now.checked_add(ttl).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        let mut state = self.lock();
        state.remove(key);
        state.sweep(now);
        while state.entries.len() >= self.max_entries || state.total_bytes + size > self.max_total_bytes {
            if !state.evict_one() {
                break;
            }
        }
        let seq = state.next_seq;
        state.next_seq = state.next_seq.wrapping_add(1);
        state.by_expiry.insert((expires, seq), key.to_owned());
        state.entries.insert(key.to_owned(), Slot { value: value.to_owned(), expires, seq });
        state.total_bytes += size;
        Ok(())
    }
}

impl CacheProvider for MemoryCache {
    fn name(&self) -> &str {
        &self.name
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, CacheError>> {
        Box::pin(std::future::ready(Ok(self.get_now(key))))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(std::future::ready(self.set_now(key, value, ttl)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        self.lock().remove(key);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn now<F: std::future::Future>(f: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::pin!(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => unreachable!("memory cache futures are ready"),
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn set_get_delete() {
        let c = MemoryCache::new();
        assert_eq!(now(c.get("k")).unwrap(), None);
        now(c.set("k", "v", MIN)).unwrap();
        assert_eq!(now(c.get("k")).unwrap().as_deref(), Some("v"));
        now(c.set("k", "w", MIN)).unwrap();
        assert_eq!(now(c.get("k")).unwrap().as_deref(), Some("w"));
        assert_eq!(c.len(), 1);
        now(c.delete("k")).unwrap();
        now(c.delete("k")).unwrap();
        assert_eq!(now(c.get("k")).unwrap(), None);
        assert!(c.is_empty());
        assert_eq!(c.lock().total_bytes, 0);
    }

    #[test]
    fn expiry() {
        let c = MemoryCache::new();
        now(c.set("short", "v", Duration::from_millis(30))).unwrap();
        now(c.set("long", "v", MIN)).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(now(c.get("short")).unwrap(), None);
        assert_eq!(c.len(), 1, "removed on read");
        now(c.set("short2", "v", Duration::from_millis(1))).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        c.purge_expired();
        assert_eq!(c.len(), 1);
        assert_eq!(now(c.get("long")).unwrap().as_deref(), Some("v"));
    }

    #[test]
    fn bounds() {
        let c =
            MemoryCache::builder().name("m").max_entries(2).max_value_bytes(4).max_total_bytes(10).build();
        let err = now(c.set("k", "12345", MIN)).unwrap_err();
        assert!(matches!(&err, CacheError::Refused { cache, .. } if cache == "m"), "{err}");
        assert!(!err.to_string().contains("12345"), "never the value: {err}");
        assert!(now(c.set("k", "1", Duration::ZERO)).is_err());
        now(c.set("a", "1", Duration::from_secs(30))).unwrap();
        now(c.set("b", "2", MIN)).unwrap();
        now(c.set("c", "3", Duration::from_secs(90))).unwrap();
        assert_eq!(now(c.get("a")).unwrap(), None, "closest to expiry evicted");
        assert_eq!(c.len(), 2);
        // Total bytes: b(2) + c(2) + dddd(5) > 10 → evict b.
        now(c.set("d", "dddd", Duration::from_secs(120))).unwrap();
        assert_eq!(now(c.get("b")).unwrap(), None);
        assert_eq!(now(c.get("c")).unwrap().as_deref(), Some("3"));
        assert!(c.lock().total_bytes <= 10);
        let long_key = "k".repeat(DEFAULT_MAX_KEY_BYTES + 1);
        assert!(now(MemoryCache::new().set(&long_key, "v", MIN)).is_err());
    }

    #[test]
    fn concurrent_use() {
        let c = std::sync::Arc::new(MemoryCache::builder().max_entries(50).build());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let k = format!("{t}-{i}");
                        now(c.set(&k, "v", MIN)).unwrap();
                        let _ = now(c.get(&k)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.len(), 50);
    }
}
