//! The verified-entry cache (SPEC §11): multi-hop verification in
//! O(new entries).
//!
//! A [`VerifiedEntryCache`] remembers, for each entry of a passport that
//! passed verification, its decoded form and the key its signature passed
//! `verify_strict` under. An entry is found by its signature segment and
//! then compared with the cached one byte for byte over the whole JWS
//! string (header, payload and signature) — so it also has the same entry
//! hash, which is not recomputed — and a hit means "these exact bytes were
//! decoded and checked, and their signature checked against this exact
//! key". Decoding is a pure function of the bytes and of the size and depth
//! [`Limits`], so a [`crate::Verifier`] with a cache:
//!
//! - reuses the decoded entry only when it was decoded under the same
//!   limits (otherwise it decodes again);
//! - skips the `verify_strict` call only when the key resolved *now* for
//!   the entry's principal is the key it was checked with;
//! - still runs everything else on every entry of every passport: links
//!   (parents earlier in *this* passport, duplicates), signer resolution,
//!   `alg` and `kid` against the key resolved now, and the semantic rules.
//!   A key that the resolver no longer returns makes the entry fail
//!   (`unknown_signer`) whatever the cache holds.
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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::keyset::PublicKey;
use crate::passport::{Entry, Limits};

/// Default capacity of [`VerifiedEntryCache::default`].
pub const DEFAULT_CACHE_CAPACITY: usize = 16_384;

/// Default bound on the bytes held by a cache (see
/// [`VerifiedEntryCache::with_max_bytes`]): 64 MiB.
pub const DEFAULT_CACHE_MAX_BYTES: usize = 64 << 20;

/// Number of independently locked shards.
const SHARDS: usize = 16;

/// Length of the base64url signature segment of an Ed25519 JWS (64 bytes).
const SIGNATURE_SEGMENT: usize = 86;

/// Where to look an entry up: its signature segment. Only a lookup key; a
/// hit is confirmed by comparing the whole JWS.
type SlotKey = [u8; SIGNATURE_SEGMENT];

fn slot_key(jws: &str) -> Option<SlotKey> {
    let (_, signature) = jws.rsplit_once('.')?;
    signature.as_bytes().try_into().ok()
}

/// (algorithm, key bytes): the key a strict verification used.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyId {
    alg: &'static str,
    /// The key's bytes (Ed25519: 32 bytes then zeros; P-256: `x||y`).
    key: [u8; 64],
}

impl KeyId {
    /// The identity of `key`.
    pub(crate) fn of(key: &PublicKey) -> KeyId {
        let mut bytes = [0u8; 64];
        let raw = key.raw_bytes();
        let n = raw.len().min(64);
        if let (Some(dst), Some(src)) = (bytes.get_mut(..n), raw.get(..n)) {
            dst.copy_from_slice(src);
        }
        KeyId { alg: key.allowed_alg(), key: bytes }
    }
}

/// The limits decoding depends on.
#[derive(Clone, Copy, PartialEq, Eq)]
struct DecodeLimits {
    max_entry_bytes: usize,
    max_json_depth: usize,
}

impl From<&Limits> for DecodeLimits {
    fn from(l: &Limits) -> Self {
        DecodeLimits { max_entry_bytes: l.max_entry_bytes, max_json_depth: l.max_json_depth }
    }
}

/// What one verification proved about an entry.
struct Slot {
    entry: Arc<Entry>,
    key: KeyId,
    limits: DecodeLimits,
    /// Estimated memory held (JWS string plus decoded form).
    bytes: usize,
}

/// A cache hit on the decoded form: the entry, and the key its signature
/// was verified under.
pub(crate) struct Cached {
    pub(crate) entry: Arc<Entry>,
    pub(crate) key: KeyId,
}

#[derive(Default)]
struct Shard {
    map: HashMap<SlotKey, Slot>,
    order: VecDeque<SlotKey>,
    bytes: usize,
}

/// A bounded, thread-safe cache of verified entries: the decoded entry and
/// the key (algorithm and bytes) its signature verified under, by exact
/// JWS bytes and the limits it was decoded under. Bounded both in entries and in
/// bytes; oldest entries are evicted first (FIFO, per shard). Share it
/// between verifiers (and threads) with an `Arc`; see the
/// [module docs](self).
pub struct VerifiedEntryCache {
    shards: [Mutex<Shard>; SHARDS],
    per_shard: usize,
    per_shard_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for VerifiedEntryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedEntryCache")
            .field("capacity", &self.capacity())
            .field("max_bytes", &self.max_bytes())
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
    /// of 16 (its shard count), and at most [`DEFAULT_CACHE_MAX_BYTES`];
    /// `0` caches nothing.
    pub fn new(capacity: usize) -> VerifiedEntryCache {
        VerifiedEntryCache {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            per_shard: capacity.div_ceil(SHARDS),
            per_shard_bytes: DEFAULT_CACHE_MAX_BYTES.div_ceil(SHARDS),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Bounds the memory held to about `max_bytes` (rounded up to a
    /// multiple of 16), estimated per entry as twice its JWS length (the
    /// string plus its decoded form).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> VerifiedEntryCache {
        self.per_shard_bytes = max_bytes.div_ceil(SHARDS);
        self
    }

    /// The maximum number of entries held.
    pub fn capacity(&self) -> usize {
        self.per_shard.saturating_mul(SHARDS)
    }

    /// The (estimated) maximum number of bytes held.
    pub fn max_bytes(&self) -> usize {
        self.per_shard_bytes.saturating_mul(SHARDS)
    }

    /// The number of entries held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|m| lock(m).map.len()).sum()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups that found the entry verified under the same key (strict
    /// verifications skipped).
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
            shard.map.clear();
            shard.order.clear();
            shard.bytes = 0;
        }
    }

    #[expect(clippy::indexing_slicing, reason = "a value masked with 15 is below 16 = SHARDS")]
    fn shard_of(&self, key: &SlotKey) -> MutexGuard<'_, Shard> {
        const _: () = assert!(SHARDS == 16);
        // Two characters of the signature's `R`: uniform for real entries.
        let pick = usize::from(key[0]).wrapping_mul(31).wrapping_add(usize::from(key[1]));
        lock(&self.shards[pick & (SHARDS - 1)])
    }

    /// The entry whose JWS is exactly `jws`, if it was decoded under the
    /// same decoding limits. Counts nothing (see
    /// [`VerifiedEntryCache::count`]).
    pub(crate) fn get(&self, jws: &str, limits: &Limits) -> Option<Cached> {
        if self.per_shard == 0 {
            return None;
        }
        let key = slot_key(jws)?;
        let shard = self.shard_of(&key);
        let slot = shard.map.get(&key)?;
        (slot.entry.jws() == jws && slot.limits == DecodeLimits::from(limits))
            .then(|| Cached { entry: slot.entry.clone(), key: slot.key })
    }

    /// Counts a signature skipped (`hit`) or checked.
    pub(crate) fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an entry whose structure was checked under `limits` and
    /// whose signature verified under `key`, replacing what the cache held
    /// for it and evicting the oldest entries of its shard when full.
    pub(crate) fn insert(&self, entry: Arc<Entry>, key: KeyId, limits: &Limits) {
        // The JWS and its decoded form (header, payload tree, parents):
        // measured at about six times the JWS bytes for typical entries.
        let bytes = entry.jws().len().saturating_mul(6);
        let Some(at) = slot_key(entry.jws()) else { return };
        if self.per_shard == 0 || bytes > self.per_shard_bytes {
            return;
        }
        let mut shard = self.shard_of(&at);
        let slot = Slot { entry, key, limits: limits.into(), bytes };
        shard.bytes += bytes;
        if let Some(old) = shard.map.insert(at, slot) {
            shard.bytes -= old.bytes;
        } else {
            shard.order.push_back(at);
        }
        while shard.order.len() > self.per_shard || shard.bytes > self.per_shard_bytes {
            let Some(old) = shard.order.pop_front() else { break };
            if let Some(slot) = shard.map.remove(&old) {
                shard.bytes -= slot.bytes;
            }
        }
    }
}

/// Each operation leaves a shard consistent before anything in it could
/// panic, so a poisoned lock still guards a usable shard.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}
