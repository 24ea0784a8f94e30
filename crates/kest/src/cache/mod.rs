//! Cache providers (SPEC §7.6): where claim-checked passports live between
//! hops. `get`/`set(key, value, ttl)`/`delete`, asynchronous; an unreachable
//! cache is an error at the call that needs it, never a silent miss.

use std::fmt;
use std::time::Duration;

use crate::policy::BoxFuture;

/// Why a cache operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The backend could not be reached or answered with an error.
    #[error("cache `{cache}` unavailable: {message}")]
    Unavailable {
        /// The provider's name.
        cache: String,
        /// What happened (never the cached value).
        message: String,
    },
    /// The value or key was refused (size, encoding).
    #[error("cache `{cache}` refused the value: {message}")]
    Refused {
        /// The provider's name.
        cache: String,
        /// Why.
        message: String,
    },
}

/// A key/value store with expiry, shared by the services of a deployment.
pub trait CacheProvider: fmt::Debug + Send + Sync {
    /// A name for errors and logs (e.g. `memory`, `redis://127.0.0.1:6379`
    /// without credentials).
    fn name(&self) -> &str;
    /// The value under `key`, `None` when absent or expired.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, CacheError>>;
    /// Stores `value` under `key` for `ttl`.
    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>>;
    /// Removes `key` (absent is not an error).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>>;
}

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "redis")]
pub use self::redis::{RedisCache, RedisCacheBuilder};
pub use memory::{MemoryCache, MemoryCacheBuilder};
