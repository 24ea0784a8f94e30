//! The verified-entry cache (SPEC §11): multi-hop verification in
//! O(new entries).
//!
//! A [`VerifiedEntryCache`] remembers which (entry hash, public key) pairs
//! have passed `verify_strict`. The entry hash covers the whole JWS string
//! (header, payload and signature), so a hit means "these exact bytes were
//! checked against this exact key". A [`crate::Verifier`] with a cache
//! skips only that one call for a hit: decoding, structure, links, `kid`
//! and `alg`, signer resolution and the semantic rules still run on every
//! entry of every passport, and a key that the resolver no longer returns
//! makes the entry fail (`unknown_signer`) whatever the cache holds.
//!
//! ```
//! use std::sync::Arc;
//! use kest_core::{Ed25519Signer, EntryDraft, KeySet, Passport, Signer, TrustRules, VerifiedEntryCache, Verifier};
//!
//! let signer = Ed25519Signer::from_seed("spiffe://demo/a", [3u8; 32]);
//! let mut p = Passport::new();
//! p.record(&EntryDraft::new("one"), &signer, &TrustRules::default()).unwrap();
//! let mut keys = KeySet::new();
//! keys.insert("spiffe://demo/a", signer.public_key().unwrap()).unwrap();
//!
//! let cache = Arc::new(VerifiedEntryCache::new(1024));
//! let verifier = Verifier::new(keys).entry_cache(cache.clone());
//! verifier.verify_json(&p.to_json()).unwrap();
//! p.record(&EntryDraft::new("two"), &signer, &TrustRules::default()).unwrap();
//! verifier.verify_json(&p.to_json()).unwrap();
//! // Entry "one" was strictly verified once; the second call checked only "two".
//! assert_eq!((cache.misses(), cache.hits()), (2, 1));
//! ```

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::hash::EntryHash;
use crate::keyset::PublicKey;

/// Default capacity of [`VerifiedEntryCache::default`].
pub const DEFAULT_CACHE_CAPACITY: usize = 16_384;

/// Number of independently locked shards (the top 4 bits of the first hash
/// byte pick one).
const SHARDS: usize = 16;

/// (entry hash, algorithm, key bytes): what a strict verification proved.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    hash: EntryHash,
    alg: &'static str,
    key: [u8; 32],
}

impl CacheKey {
    /// The key for `hash` checked with `key`.
    pub(crate) fn new(hash: EntryHash, key: &PublicKey) -> CacheKey {
        match key {
            PublicKey::Ed25519(vk) => CacheKey { hash, alg: key.allowed_alg(), key: vk.to_bytes() },
        }
    }
}

#[derive(Default)]
struct Shard {
    set: HashSet<CacheKey>,
    order: VecDeque<CacheKey>,
}

/// A bounded, thread-safe set of entries whose signatures verified, keyed
/// by entry hash and the key (algorithm and bytes) they verified under.
/// Oldest entries are evicted first (FIFO, per shard). Share it between
/// verifiers (and threads) with an `Arc`; see the [module docs](self).
pub struct VerifiedEntryCache {
    shards: [Mutex<Shard>; SHARDS],
    per_shard: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for VerifiedEntryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedEntryCache")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish()
    }
}

impl Default for VerifiedEntryCache {
    fn default() -> Self {
        VerifiedEntryCache::new(DEFAULT_CACHE_CAPACITY)
    }
}

impl VerifiedEntryCache {
    /// A cache holding up to `capacity` entries, rounded up to a multiple
    /// of 16 (its shard count); `0` caches nothing.
    pub fn new(capacity: usize) -> VerifiedEntryCache {
        VerifiedEntryCache {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            per_shard: capacity.div_ceil(SHARDS),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The maximum number of entries held.
    pub fn capacity(&self) -> usize {
        self.per_shard.saturating_mul(SHARDS)
    }

    /// The number of entries held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|m| lock(m).set.len()).sum()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups that found the entry (strict verifications skipped).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that did not (strict verifications performed).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Forgets every entry (the counters are kept).
    pub fn clear(&self) {
        for m in &self.shards {
            let mut shard = lock(m);
            shard.set.clear();
            shard.order.clear();
        }
    }

    #[expect(clippy::indexing_slicing, reason = "a u8 shifted right by 4 is below 16 = SHARDS")]
    fn shard_of(&self, key: &CacheKey) -> MutexGuard<'_, Shard> {
        const _: () = assert!(SHARDS == 16);
        lock(&self.shards[usize::from(key.hash.as_bytes()[0] >> 4)])
    }

    /// Whether `key` is cached; counts a hit or a miss.
    pub(crate) fn check(&self, key: &CacheKey) -> bool {
        let found = self.shard_of(key).set.contains(key);
        let counter = if found { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Records a verified entry, evicting the oldest of its shard when full.
    pub(crate) fn insert(&self, key: CacheKey) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard_of(&key);
        if !shard.set.insert(key) {
            return;
        }
        shard.order.push_back(key);
        while shard.order.len() > self.per_shard {
            if let Some(old) = shard.order.pop_front() {
                shard.set.remove(&old);
            }
        }
    }
}

/// Each operation leaves a shard consistent before anything in it could
/// panic, so a poisoned lock still guards a usable shard.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}
