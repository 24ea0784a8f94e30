//! The decision cache in front of any engine (SPEC §6.2).
//!
//! Key: the engine *instance* (never its display name: two engines can
//! never share decisions), the tier, the policy name and a digest of the
//! complete evaluation context *without* the per-call `entry_id` —
//! including the tier's policy names and active deviations — so decisions
//! are separated by user, agent, task, workload, trust score, taints,
//! resource, lineage position and plan. Sharded maps keep threads apart.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Decision, PolicyEngine, PolicyInput, Tier};

const SHARDS: usize = 16;

/// Environment variable with the TTL in seconds (default 5, `0` disables).
pub const TTL_ENV: &str = "KEST_POLICY_CACHE_TTL";

/// An engine instance, compared by identity. The key holds the engine, so
/// its address cannot be reused by another engine while a decision of it
/// is cached.
#[derive(Clone)]
struct EngineInstance(Arc<dyn PolicyEngine>);

impl EngineInstance {
    fn address(&self) -> usize {
        Arc::as_ptr(&self.0).cast::<()>() as usize
    }
}

impl PartialEq for EngineInstance {
    fn eq(&self, other: &Self) -> bool {
        self.address() == other.address()
    }
}

impl Eq for EngineInstance {}

impl Hash for EngineInstance {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.address().hash(state);
    }
}

impl std::fmt::Debug for EngineInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{:#x}", self.0.name(), self.address())
    }
}

/// What a cached decision is keyed by: the engine instance, the tier, the
/// policy and a digest of the evaluation context without per-call fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecisionKey {
    engine: EngineInstance,
    tier: Tier,
    policy: String,
    context: [u8; 32],
}

impl DecisionKey {
    /// A key from a context digest (see [`context_digest`]).
    pub fn new(engine: &Arc<dyn PolicyEngine>, tier: Tier, policy: &str, context: [u8; 32]) -> DecisionKey {
        DecisionKey { engine: EngineInstance(Arc::clone(engine)), tier, policy: policy.to_owned(), context }
    }

    /// A key for a full policy input (digest of its JSON without
    /// `environment.entry_id`).
    /// `None` when the context cannot be canonicalized (then do not cache).
    pub fn for_input(
        engine: &Arc<dyn PolicyEngine>,
        policy: &str,
        input: &PolicyInput,
    ) -> Option<DecisionKey> {
        let mut ctx = input.json().clone();
        if let Some(env) = ctx.get_mut("environment").and_then(|e| e.as_object_mut()) {
            env.remove("entry_id");
        }
        let bytes = kest_core::json::canonicalize(&ctx).ok()?;
        Some(DecisionKey::new(
            engine,
            input.context().environment.policy_tier,
            policy,
            Sha256::digest(&bytes).into(),
        ))
    }
}

/// SHA-256 of the compact JSON of a context without its per-call fields.
/// A cache key only needs a deterministic, injective encoding: `serde_json`
/// writes struct fields in declaration order and maps sorted, so the same
/// context always gives the same bytes, without the cost of RFC 8785.
/// `None` when the material cannot be serialized: the caller must then not
/// use the cache (never a shared fallback key).
pub fn context_digest<T: serde::Serialize>(material: &T) -> Option<[u8; 32]> {
    let bytes = serde_json::to_vec(material).ok()?;
    Some(Sha256::digest(&bytes).into())
}

/// A bounded TTL cache of policy decisions.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use kest::policy::{cache::DecisionKey, Decision, DecisionCache, MockPolicyEngine, PolicyEngine, PolicyInput};
/// let cache = DecisionCache::new(Duration::from_secs(5), 1024);
/// let input = PolicyInput::new(kest::policy::context::example_context());
/// let engine: Arc<dyn PolicyEngine> = Arc::new(MockPolicyEngine::allow_all());
/// let key = DecisionKey::for_input(&engine, "p", &input).unwrap();
/// assert_eq!(cache.get(&key), None);
/// cache.put(key.clone(), Decision::Allow);
/// assert_eq!(cache.get(&key), Some(Decision::Allow));
/// // Another engine with the same name never shares the decision.
/// let twin: Arc<dyn PolicyEngine> = Arc::new(MockPolicyEngine::allow_all());
/// assert_eq!(cache.get(&DecisionKey::for_input(&twin, "p", &input).unwrap()), None);
/// cache.invalidate();
/// assert_eq!(cache.get(&key), None);
/// ```
#[derive(Debug)]
pub struct DecisionCache {
    ttl: Duration,
    per_shard: usize,
    shards: Vec<RwLock<HashMap<DecisionKey, (Decision, Instant)>>>,
    hasher: std::collections::hash_map::RandomState,
}

/// Why the cache TTL could not be read from the environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{TTL_ENV}=`{0}` is not a non-negative number of seconds")]
pub struct TtlError(pub String);

impl DecisionCache {
    /// A cache keeping decisions for `ttl` (zero disables caching) and at
    /// most about `capacity` decisions.
    pub fn new(ttl: Duration, capacity: usize) -> DecisionCache {
        DecisionCache {
            ttl,
            per_shard: capacity.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The TTL from `KEST_POLICY_CACHE_TTL` (seconds, fractions allowed;
    /// default 5). A malformed value is an error, not a silent default.
    pub fn ttl_from_env() -> Result<Duration, TtlError> {
        match std::env::var(TTL_ENV) {
            Err(_) => Ok(Duration::from_secs(5)),
            Ok(raw) => parse_ttl(&raw),
        }
    }

    /// Whether caching is on.
    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn shard(&self, key: &DecisionKey) -> &RwLock<HashMap<DecisionKey, (Decision, Instant)>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        #[expect(clippy::indexing_slicing, reason = "index < SHARDS == shards.len() (built in `new`)")]
        &self.shards[index]
    }

    /// A fresh cached decision, if any.
    pub fn get(&self, key: &DecisionKey) -> Option<Decision> {
        if !self.enabled() {
            return None;
        }
        let shard = self.shard(key).read().ok()?;
        match shard.get(key) {
            Some((decision, at)) if at.elapsed() < self.ttl => Some(*decision),
            _ => None,
        }
    }

    /// Stores a decision.
    pub fn put(&self, key: DecisionKey, decision: Decision) {
        if !self.enabled() {
            return;
        }
        let Ok(mut shard) = self.shard(&key).write() else { return };
        if shard.len() >= self.per_shard {
            let ttl = self.ttl;
            shard.retain(|_, (_, at)| at.elapsed() < ttl);
            if shard.len() >= self.per_shard {
                // Still full of fresh entries: drop the oldest.
                if let Some(oldest) = shard.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone()) {
                    shard.remove(&oldest);
                }
            }
        }
        shard.insert(key, (decision, Instant::now()));
    }

    /// Forgets every decision (e.g. after a policy reload or revocation).
    pub fn invalidate(&self) {
        for shard in &self.shards {
            if let Ok(mut s) = shard.write() {
                s.clear();
            }
        }
    }

    /// Number of cached decisions.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().map(|s| s.len()).unwrap_or(0)).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses a TTL in seconds.
pub fn parse_ttl(raw: &str) -> Result<Duration, TtlError> {
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| TtlError(raw.to_owned()))
}
