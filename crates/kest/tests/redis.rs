//! `RedisCache` against a real `redis-server` that each test starts on a
//! free loopback port (no persistence) and kills when done. The binary is
//! `$KEST_REDIS_SERVER` or `redis-server` on `PATH`; when it is missing the
//! tests fail (`./scripts/test` installs it), they are never skipped.
//!
//! No assertion here is about time: expiry is checked through the TTL Redis
//! stored (`PTTL`) and by polling, a bounded number of times, until the key
//! is gone; an unreachable server is checked through the typed error.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kest::cache::{CacheError, CacheProvider, RedisCache};
use kest::lineage::Lineage;
use kest::propagation::{PropagationError, Propagator};
use kest_core::baggage::{Baggage, KEST_CLAIM_CHECK, claim_key, parse_claim_check};
use kest_core::{Ed25519Signer, EntryDraft, KeySet, Passport, Signer, TrustRules, Verifier};

fn redis_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KEST_REDIS_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "KEST_REDIS_SERVER={} is not a file; ./scripts/test installs redis-server",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("redis-server")).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "redis-server is not installed (not on PATH, KEST_REDIS_SERVER unset): \
                 the Redis cache tests need a real server; ./scripts/test installs it"
            )
        })
}

/// A `redis-server` child process, killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start(extra: &[&str]) -> RedisServer {
        let bin = redis_server_binary();
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let dir = tempfile::tempdir().unwrap();
            let mut child = Command::new(&bin)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(["--daemonize", "no", "--loglevel", "warning", "--dir"])
                .arg(dir.path())
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            // Waits for the server to listen (up to 500 polls, 20 ms apart).
            for poll in 0.. {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut out = String::new();
                    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
                    last_error = format!("redis-server exited with {status}: {out}");
                    break;
                }
                if ping(port) {
                    return RedisServer { child: Some(child), port, _dir: dir };
                }
                if poll >= 500 {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = "redis-server did not answer".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something answers a RESP `PING` (`+PONG`, or `-NOAUTH` when a
/// password is required) on the port.
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[0] == b'+' || buf[0] == b'-'))
}

/// The remaining TTL of `key` in milliseconds (`-2` when it does not exist).
async fn pttl(url: &str, key: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PTTL").arg(key).query_async(&mut conn).await.unwrap()
}

/// Waits until `key` has expired: polls up to 1000 times, 10 ms apart.
/// Whether it is gone.
async fn expires(cache: &RedisCache, key: &str) -> bool {
    for _ in 0..1000 {
        if cache.get(key).await.unwrap().is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn signer() -> Ed25519Signer {
    Ed25519Signer::from_seed("spiffe://acme.example/ns/prod/sa/agent", [5u8; 32])
}

fn verifier() -> Verifier {
    let mut keys = KeySet::new();
    keys.insert(signer().principal(), signer().public_key().unwrap()).unwrap();
    Verifier::new(keys).semantic(true)
}

fn passport(hops: usize) -> Passport {
    let mut p = Passport::new();
    for i in 0..hops {
        let mut d = EntryDraft::new(format!("step_{i}"));
        d.labels.insert("tenant".into(), "acme-corp".into());
        d.input_hash = format!("{:064x}", i * 7919);
        p.record(&d, &signer(), &TrustRules::default()).unwrap();
    }
    p
}

#[tokio::test]
async fn set_get_delete_and_expiry() {
    let server = RedisServer::start(&[]);
    let cache = RedisCache::connect(server.url()).await.unwrap();
    assert_eq!(cache.name(), server.url());
    let hour = Duration::from_secs(3600);

    assert_eq!(cache.get("missing").await.unwrap(), None);
    cache.set("k", "v1", hour).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v1"));
    cache.set("k", "v2 — ünïcode, \"quoted\"", hour).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v2 — ünïcode, \"quoted\""));
    cache.delete("k").await.unwrap();
    cache.delete("k").await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), None);

    let big = "x".repeat(1 << 20);
    cache.set("big", &big, hour).await.unwrap();
    assert_eq!(cache.get("big").await.unwrap().map(|v| v.len()), Some(1 << 20));

    // The TTL reaches Redis in milliseconds, and the key expires.
    cache.set("short", "v", Duration::from_millis(300)).await.unwrap();
    let ttl = pttl(&server.url(), "short").await;
    assert!((1..=300).contains(&ttl) || ttl == -2, "{ttl}");
    // Sub-millisecond TTLs round up to 1 ms rather than failing (PTTL: 1
    // or 0 while it lives, -2 once expired; never -1, no TTL).
    cache.set("tiny", "v", Duration::from_micros(10)).await.unwrap();
    let ttl = pttl(&server.url(), "tiny").await;
    assert!(matches!(ttl, -2 | 0 | 1), "{ttl}");
    assert!(expires(&cache, "short").await, "`short` never expired");
    assert!(expires(&cache, "tiny").await, "`tiny` never expired");
    assert!(matches!(cache.set("k", "v", Duration::ZERO).await, Err(CacheError::Refused { .. })));

    // A lazily connected clone shares nothing but the server.
    let lazy = RedisCache::builder(server.url()).connect_lazy().unwrap();
    assert_eq!(lazy.get("big").await.unwrap().map(|v| v.len()), Some(1 << 20));
    let clone = cache.clone();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let c = clone.clone();
            tokio::spawn(async move {
                c.set(&format!("c{i}"), &i.to_string(), hour).await.unwrap();
                c.get(&format!("c{i}")).await.unwrap()
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), Some(i.to_string()));
    }
}

#[tokio::test]
async fn claim_check_round_trip_between_two_services() {
    let server = RedisServer::start(&[]);
    let upstream =
        Propagator::builder().cache(Arc::new(RedisCache::connect(server.url()).await.unwrap())).build();
    let downstream_cache = Arc::new(RedisCache::connect(server.url()).await.unwrap());
    let downstream = Propagator::builder().cache(downstream_cache.clone()).build();

    let sent = passport(20);
    let flow = Lineage::from_passport(sent.clone()).with_user("alice");
    let mut b = Baggage::parse("vendor=1").unwrap();
    upstream.inject(&flow, &mut b).await.unwrap();
    let header = b.to_header().unwrap();
    assert!(header.len() < 400, "{header}");
    let id = parse_claim_check(b.get(KEST_CLAIM_CHECK).unwrap()).unwrap();

    // Stored with the default 300 s TTL.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg(claim_key(&id)).query_async(&mut conn).await.unwrap();
    assert!((290_000..=300_000).contains(&pttl), "{pttl}");

    let got = downstream.extract(&Baggage::parse(&header).unwrap(), &verifier()).await.unwrap();
    assert_eq!(got.passport.to_json(), sent.to_json());
    assert_eq!(got.tips, sent.tips());
    // `alice` was never signed into the passport: a claim, dropped.
    assert_eq!(got.identity.user, None);
    assert_eq!(got.dropped_claims, ["user"]);

    // Deleted (or expired) → an error, never an empty passport.
    downstream_cache.delete(&claim_key(&id)).await.unwrap();
    let err = downstream.extract(&Baggage::parse(&header).unwrap(), &verifier()).await.unwrap_err();
    assert_eq!(err, PropagationError::ClaimCheckNotFound { id });
}

#[tokio::test]
async fn redis_stopping_mid_run_is_cache_unavailable() {
    let mut server = RedisServer::start(&[]);
    let cache = Arc::new(RedisCache::connect(server.url()).await.unwrap());
    let p = Propagator::builder().cache(cache.clone()).build();
    let flow = Lineage::from_passport(passport(20));
    let mut b = Baggage::new();
    p.inject(&flow, &mut b).await.unwrap();
    assert_eq!(p.extract(&b, &verifier()).await.unwrap().passport.len(), 20);

    server.stop();
    let err = p.extract(&b, &verifier()).await.unwrap_err();
    let PropagationError::CacheUnavailable(CacheError::Unavailable { cache: name, message }) = &err else {
        panic!("expected CacheUnavailable, got {err:?}");
    };
    assert_eq!(name, &server.url());
    assert!(message.starts_with("GET: "), "{message}");
    assert_eq!(err.http_status(), 503);

    // Writes fail the same way; the baggage is untouched.
    let before = b.clone();
    let err = p.inject(&flow, &mut b).await.unwrap_err();
    assert!(matches!(err, PropagationError::CacheUnavailable(_)), "{err:?}");
    assert_eq!(b, before);
    for _ in 0..3 {
        assert!(matches!(cache.get("k").await, Err(CacheError::Unavailable { .. })));
    }
}

#[tokio::test]
async fn unreachable_server_is_unavailable_at_connect() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = RedisCache::connect(format!("redis://127.0.0.1:{port}/")).await.unwrap_err();
    assert!(matches!(err, CacheError::Unavailable { .. }), "{err:?}");
    // Lazily: the error comes at the call that needs the cache.
    let lazy = RedisCache::builder(format!("redis://127.0.0.1:{port}/")).connect_lazy().unwrap();
    assert!(matches!(lazy.get("k").await, Err(CacheError::Unavailable { .. })));
    assert!(RedisCache::builder("not a url").connect_lazy().is_err());
}

#[tokio::test]
async fn credentials_never_appear_in_names_or_errors() {
    let server = RedisServer::start(&["--requirepass", "s3cr3t-pw"]);
    let good = format!("redis://:s3cr3t-pw@127.0.0.1:{}/0", server.port);
    let cache = RedisCache::connect(good.clone()).await.unwrap();
    assert_eq!(cache.name(), server.url());
    assert!(!format!("{cache:?}").contains("s3cr3t"));
    assert!(!format!("{:?}", RedisCache::builder(good)).contains("s3cr3t"));
    cache.set("k", "secret-value-123", Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("secret-value-123"));

    let bad = format!("redis://default:wr0ng-pw@127.0.0.1:{}/0", server.port);
    let err = RedisCache::connect(bad.clone()).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, CacheError::Unavailable { .. }), "{text}");
    assert!(!text.contains("wr0ng-pw") && text.contains(&server.url()), "{text}");

    // A type error on GET never echoes what is stored.
    let client = redis::Client::open(format!("redis://:s3cr3t-pw@127.0.0.1:{}/0", server.port)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("RPUSH").arg("list").arg("secret-value-123").query_async(&mut conn).await.unwrap();
    let err = cache.get("list").await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains("secret-value-123"), "{err:?}");
}
