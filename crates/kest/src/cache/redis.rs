//! [`RedisCache`]: the shared cache of a distributed deployment (feature
//! `redis`).

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use zeroize::Zeroizing;

use super::{CacheError, CacheProvider};
use crate::policy::BoxFuture;

/// Default connection timeout (per connection attempt).
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// Default command timeout (per command, once connected).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// A [`CacheProvider`] on a Redis server (`SET key value PX ttl`, `GET`,
/// `DEL`).
///
/// One multiplexed connection, shared by clones and concurrent callers
/// (`redis::aio::ConnectionManager`), re-established in the background
/// after it drops. Every operation is bounded by the connection timeout plus
/// the command timeout (1 s each by default); a server that is down, slow or
/// answering with an error is a [`CacheError::Unavailable`] at that call,
/// never a silent miss. Error messages name the operation, never the key's
/// value, and never a password from the URL; [`CacheProvider::name`] is the
/// URL without credentials or query.
///
/// Needs a Tokio runtime (its futures use Tokio's I/O and timers).
///
/// ```no_run
/// use std::time::Duration;
/// use kest::cache::{CacheProvider, RedisCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), kest::cache::CacheError> {
/// let cache = RedisCache::builder("redis://:s3cret@127.0.0.1:6379/0")
///     .command_timeout(Duration::from_millis(500))
///     .connect()
///     .await?;
/// assert_eq!(cache.name(), "redis://127.0.0.1:6379/0");
/// cache.set("kest.claim.x", "[]", Duration::from_secs(300)).await?;
/// assert_eq!(cache.get("kest.claim.x").await?.as_deref(), Some("[]"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisCache {
    name: String,
    manager: ConnectionManager,
    deadline: Duration,
    /// Credentials from the URL, scrubbed from every error message.
    secrets: Secrets,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache").field("name", &self.name).field("deadline", &self.deadline).finish()
    }
}

/// Configures and connects a [`RedisCache`] (see [`RedisCache::builder`]).
pub struct RedisCacheBuilder {
    url: Zeroizing<String>,
    connection_timeout: Duration,
    command_timeout: Duration,
}

impl fmt::Debug for RedisCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCacheBuilder")
            .field("url", &redact_url(&self.url))
            .field("connection_timeout", &self.connection_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

impl RedisCacheBuilder {
    /// Timeout of one connection attempt (default 1 s).
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Timeout of one command once connected (default 1 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    fn prepare(&self) -> Result<(redis::Client, ConnectionManagerConfig, String, Secrets), CacheError> {
        let name = redact_url(&self.url);
        let secrets = Secrets::from_url(&self.url);
        let client = redis::Client::open(self.url.as_str()).map_err(|e| CacheError::Unavailable {
            cache: name.clone(),
            message: format!("invalid URL: {}", secrets.scrub(&e.to_string())),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(self.connection_timeout);
        Ok((client, config, name, secrets))
    }

    fn finish(&self, name: String, manager: ConnectionManager, secrets: Secrets) -> RedisCache {
        RedisCache { name, manager, deadline: self.connection_timeout + self.command_timeout, secrets }
    }

    /// Connects now: fails if the server cannot be reached within the
    /// connection timeout (with up to two retries).
    pub async fn connect(self) -> Result<RedisCache, CacheError> {
        let (client, config, name, secrets) = self.prepare()?;
        // Up to three attempts with short back-off in between.
        let deadline = self.connection_timeout * 3 + self.command_timeout;
        let unavailable = |message: String| CacheError::Unavailable { cache: name.clone(), message };
        let manager =
            match tokio::time::timeout(deadline, ConnectionManager::new_with_config(client, config)).await {
                Ok(Ok(manager)) => manager,
                Ok(Err(e)) => return Err(unavailable(format!("connect: {}", secrets.scrub(&e.to_string())))),
                Err(_) => return Err(unavailable(format!("connect: no connection within {deadline:?}"))),
            };
        Ok(self.finish(name, manager, secrets))
    }

    /// Connects on first use, so a service can start while Redis is still
    /// coming up; until then each operation fails with
    /// [`CacheError::Unavailable`]. Must be called inside a Tokio runtime
    /// (an error otherwise).
    pub fn connect_lazy(self) -> Result<RedisCache, CacheError> {
        let (client, config, name, secrets) = self.prepare()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(CacheError::Unavailable {
                cache: name,
                message: "connect_lazy must be called inside a Tokio runtime".into(),
            });
        }
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| CacheError::Unavailable {
                cache: name.clone(),
                message: format!("connect: {}", secrets.scrub(&e.to_string())),
            })?;
        Ok(self.finish(name, manager, secrets))
    }
}

impl RedisCache {
    /// Configures a cache on `url` (`redis://[:password@]host:port/[db]`,
    /// `rediss://` for TLS where the `redis` crate supports it).
    pub fn builder(url: impl Into<String>) -> RedisCacheBuilder {
        RedisCacheBuilder {
            url: Zeroizing::new(url.into()),
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// Connects to `url` with the default timeouts (see
    /// [`RedisCacheBuilder::connect`]).
    pub async fn connect(url: impl Into<String>) -> Result<RedisCache, CacheError> {
        RedisCache::builder(url).connect().await
    }

    fn unavailable(&self, message: String) -> CacheError {
        CacheError::Unavailable { cache: self.name.clone(), message }
    }

    /// Runs one command under the per-operation deadline.
    async fn run<T: redis::FromRedisValue>(&self, op: &str, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let mut conn = self.manager.clone();
        match tokio::time::timeout(self.deadline, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.unavailable(format!("{op}: {}", self.secrets.scrub(&describe(&e))))),
            Err(_) => Err(self.unavailable(format!("{op}: no answer within {:?}", self.deadline))),
        }
    }
}

/// A redis error's description without any response payload (which, for a
/// type error, could echo a stored value).
fn describe(e: &redis::RedisError) -> String {
    if e.kind() == redis::ErrorKind::UnexpectedReturnType {
        return "unexpected response type".into();
    }
    e.to_string()
}

impl CacheProvider for RedisCache {
    fn name(&self) -> &str {
        &self.name
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, CacheError>> {
        Box::pin(async move {
            let bytes: Option<Vec<u8>> = self.run("GET", redis::cmd("GET").arg(key)).await?;
            bytes
                .map(|b| {
                    String::from_utf8(b)
                        .map_err(|_| self.unavailable("GET: the stored value is not UTF-8".into()))
                })
                .transpose()
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            if ttl.is_zero() {
                return Err(CacheError::Refused {
                    cache: self.name.clone(),
                    message: "the time-to-live must not be zero".into(),
                });
            }
            // Redis counts in whole milliseconds: round up, never to 0.
            let millis = u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX).max(1);
            self.run::<()>("SET", redis::cmd("SET").arg(key).arg(value).arg("PX").arg(millis)).await
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move { self.run::<i64>("DEL", redis::cmd("DEL").arg(key)).await.map(drop) })
    }
}

/// Passwords and other credentials found in a URL.
#[derive(Clone, Default)]
struct Secrets(Vec<Zeroizing<String>>);

impl Secrets {
    fn from_url(url: &str) -> Secrets {
        let mut found = Vec::new();
        let mut add = |s: &str| {
            if !s.is_empty() {
                found.push(Zeroizing::new(s.to_owned()));
                if let Ok(decoded) = percent_encoding::percent_decode_str(s).decode_utf8()
                    && decoded != s
                {
                    found.push(Zeroizing::new(decoded.into_owned()));
                }
            }
        };
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let (authority, tail) = split_authority(rest);
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            add(userinfo);
            if let Some((_user, password)) = userinfo.split_once(':') {
                add(password);
            }
        }
        // `redis+unix:///path?pass=...` and similar.
        if let Some((_, query)) = tail.split_once('?') {
            for pair in query.split(['&', '#']) {
                if let Some((key, value)) = pair.split_once('=')
                    && ["pass", "password", "passwd", "pwd", "token", "auth"]
                        .contains(&key.to_ascii_lowercase().as_str())
                {
                    add(value);
                }
            }
        }
        // Longest first, so a password is removed before a part of it.
        found.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Secrets(found)
    }

    fn scrub(&self, message: &str) -> String {
        let mut out = message.to_owned();
        for secret in &self.0 {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }
}

/// `host:port` (and any userinfo) and the rest (path, query, fragment).
fn split_authority(rest: &str) -> (&str, &str) {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.split_at(end)
}

/// The URL without userinfo, query or fragment: `redis://host:port/db`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "redis (unparsable URL)".into();
    };
    let (authority, tail) = split_authority(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let path = tail.split(['?', '#']).next().unwrap_or_default();
    format!("{scheme}://{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hide_credentials() {
        assert_eq!(redact_url("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://h:1/0");
        assert_eq!(redact_url("redis://user:p%40ss@h:1"), "redis://h:1");
        assert_eq!(redact_url("redis+unix:///run/r.sock?pass=pw&db=1"), "redis+unix:///run/r.sock");
        assert_eq!(redact_url("nonsense:pw"), "redis (unparsable URL)");
        let s = Secrets::from_url("redis://bob:p%40ss@h:1/0?password=tok&db=1");
        assert_eq!(s.scrub("auth bob:p%40ss p@ss tok db 1 failed"), "auth *** *** *** db 1 failed");
    }
}
