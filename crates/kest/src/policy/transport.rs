//! The HTTP transport shared by the remote policy engines,
//! [`OpaEngine`](super::opa::OpaEngine) and
//! [`CedarAgentEngine`](super::cedar_agent::CedarAgentEngine) (SPEC §6.2,
//! §7.5; feature `remote`).
//!
//! **Where requests may go.** A base URL must be `https://`, except on
//! loopback (`127.0.0.0/8`, `[::1]`, `localhost`), where `http://` is
//! accepted. A plain `http://` URL to any other host is refused at
//! construction with [`RemoteConfigError::InsecureHttp`], unless the
//! builder's `danger_allow_insecure_http(true)` is set — then the engine is
//! built and a `WARN` event is logged, since contexts and decisions then
//! travel unauthenticated and in clear text. Base URLs carrying
//! credentials (`https://user:pass@…`) are refused too (use the builder's
//! token option), so no secret ever appears in a URL that is logged or
//! printed. Loopback engines are reached directly, never through a proxy
//! from `HTTP_PROXY`/`ALL_PROXY`.
//!
//! **How.** One JSON `POST` per evaluation: no automatic retry (reqwest's
//! retry policy is *never*), no redirect followed, one time limit for
//! connecting, sending and reading the whole answer ([`DEFAULT_TIMEOUT`],
//! 1 s, unless configured), answers larger than [`MAX_RESPONSE_BYTES`]
//! refused. The asynchronous path uses a shared [`reqwest::Client`] on the
//! caller's Tokio runtime; the synchronous path hands the request to a small
//! dedicated thread with its own current-thread runtime and waits for the
//! answer, so it neither panics inside a Tokio runtime (as
//! `reqwest::blocking` would) nor needs one. That thread is started on the
//! first synchronous call and ends when the engine is dropped.
//!
//! **Errors.** Construction fails with a typed [`RemoteConfigError`].
//! Evaluation fails with [`PolicyError::Remote`] carrying one typed
//! [`RemoteFailure`] (`timed out`, `HTTP 500`, …; see also
//! [`RemoteFailure::of`]). These errors never carry the engine's
//! answer, its error texts or the reqwest error chain, as they may reach an
//! HTTP response or an audit record; the details are logged instead, as
//! `WARN` events with the engine name, the policy and the URL.

use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Client, Url};
use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::PolicyError;

/// The default time limit of one request (connect, send and read the
/// answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// The largest answer read from a remote engine (1 MiB); a larger one is an
/// error.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The most of an engine's answer quoted in a log event.
const LOG_EXCERPT_CHARS: usize = 500;

/// Why a remote engine could not be built (nothing was sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteConfigError {
    /// The base URL does not parse, is not `http(s)://` with a host, or has
    /// a query, a fragment or credentials.
    #[error("remote engine URL `{url}` {reason}")]
    InvalidUrl {
        /// The URL as given (`<redacted>` when it may hold credentials).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A plain `http://` URL to a host that is not loopback, without the
    /// builder's `danger_allow_insecure_http(true)`.
    #[error(
        "remote engine URL `{url}` uses plain http to `{host}`, which is not loopback: use https (or allow \
         insecure http explicitly)"
    )]
    InsecureHttp {
        /// The URL.
        url: String,
        /// Its host.
        host: String,
    },
    /// The timeout is zero.
    #[error("a remote engine's timeout must not be zero")]
    ZeroTimeout,
    /// The authentication token cannot be sent as a header value.
    #[error("the authentication token is not a valid header value")]
    InvalidToken,
    /// An OPA decision path that does not start with `result` or has an
    /// empty segment.
    #[error("OPA decision path `{path}` must be `result` or start with `result.` and have no empty segment")]
    InvalidDecisionPath {
        /// The path as given.
        path: String,
    },
    /// The HTTP client could not be built (e.g. no TLS backend).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl From<RemoteConfigError> for PolicyError {
    fn from(error: RemoteConfigError) -> PolicyError {
        PolicyError::Config(error.to_string())
    }
}

pub use super::RemoteFailure;

/// A checked base URL.
#[derive(Debug, Clone)]
pub(crate) struct BaseUrl {
    /// Without a trailing slash.
    pub(crate) url: String,
    /// Whether the host is loopback.
    loopback: bool,
}

/// Checks a base URL (see the [module documentation](self)).
pub(crate) fn base_url(raw: &str, allow_insecure_http: bool) -> Result<BaseUrl, RemoteConfigError> {
    let shown = || if raw.contains('@') { "<redacted>".to_owned() } else { raw.to_owned() };
    let invalid = |reason| RemoteConfigError::InvalidUrl { url: shown(), reason };
    let parsed = Url::parse(raw).map_err(|_| invalid("is not a URL"))?;
    let host = parsed.host_str().unwrap_or("");
    if !matches!(parsed.scheme(), "http" | "https") || host.is_empty() {
        return Err(invalid("must be https:// (or http:// on loopback) with a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("must not carry credentials (use the builder's token option)"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    let loopback = is_loopback(host);
    let url = parsed.as_str().trim_end_matches('/').to_owned();
    if parsed.scheme() == "http" && !loopback {
        if !allow_insecure_http {
            return Err(RemoteConfigError::InsecureHttp { url, host: host.to_owned() });
        }
        tracing::warn!(
            url = %url,
            "remote policy engine over plain http to a host that is not loopback \
             (danger_allow_insecure_http): policy contexts and decisions travel unauthenticated and in \
             clear text; use https"
        );
    }
    Ok(BaseUrl { url, loopback })
}

/// `localhost`, `127.0.0.0/8` or `[::1]` (as the URL parser writes hosts:
/// lower case, IPv4 in dotted decimal, IPv6 in brackets).
fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let ip = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A header value that is never printed.
pub(crate) fn sensitive(value: &str) -> Result<HeaderValue, RemoteConfigError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| RemoteConfigError::InvalidToken)?;
    value.set_sensitive(true);
    Ok(value)
}

/// One HTTP answer: status and body.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The HTTP status code.
    pub(crate) status: u16,
    /// The body (at most [`MAX_RESPONSE_BYTES`]).
    pub(crate) body: Vec<u8>,
}

/// A failed request: the kind (shown) and the details (logged).
#[derive(Debug)]
struct Failed {
    kind: RemoteFailure,
    detail: String,
}

impl Failed {
    fn new(kind: RemoteFailure, detail: impl Into<String>) -> Failed {
        Failed { kind, detail: detail.into() }
    }
}

/// What the HTTP client is built from (again on the dedicated thread).
#[derive(Clone)]
struct ClientConfig {
    timeout: Duration,
    headers: HeaderMap,
    /// Loopback: never through a proxy.
    direct: bool,
}

impl ClientConfig {
    fn build(&self) -> Result<Client, reqwest::Error> {
        let mut builder = Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .retry(reqwest::retry::never())
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(self.headers.clone());
        if self.direct {
            builder = builder.no_proxy();
        }
        builder.build()
    }
}

/// Sends JSON POSTs for one remote engine, from async code (the caller's
/// runtime) or from sync code (a dedicated thread with its own runtime),
/// and turns failures into concise [`PolicyError`]s, logging the details.
pub(crate) struct Transport {
    /// The engine name (errors and logs).
    engine: String,
    config: ClientConfig,
    /// For the caller's runtime.
    client: Client,
    /// The dedicated thread's queue, started on first use; `None` when it
    /// could not be started.
    worker: OnceLock<Option<UnboundedSender<Job>>>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("engine", &self.engine)
            .field("timeout", &self.config.timeout)
            .finish_non_exhaustive()
    }
}

/// One request for the dedicated thread, and where its answer goes.
struct Job {
    url: Url,
    body: Vec<u8>,
    reply: Box<dyn FnOnce(Result<Reply, Failed>) + Send>,
}

/// Extra time the synchronous path waits for the dedicated thread beyond
/// the request timeout (which the thread enforces itself).
const GRACE: Duration = Duration::from_millis(500);

impl Transport {
    /// A transport for engine `engine` at `base`, sending `headers` with
    /// every request.
    pub(crate) fn new(
        engine: &str,
        base: &BaseUrl,
        timeout: Duration,
        headers: HeaderMap,
    ) -> Result<Transport, RemoteConfigError> {
        if timeout.is_zero() {
            return Err(RemoteConfigError::ZeroTimeout);
        }
        let config = ClientConfig { timeout, headers, direct: base.loopback };
        let client = config.build().map_err(|e| RemoteConfigError::Client(chain(&e)))?;
        Ok(Transport { engine: engine.to_owned(), config, client, worker: OnceLock::new() })
    }

    /// The time limit of one request.
    pub(crate) fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// The [`PolicyError::Remote`] for `kind`.
    pub(crate) fn unavailable(&self, kind: RemoteFailure) -> PolicyError {
        kind.into_error(&self.engine)
    }

    /// POSTs `body` (JSON) to `url` for `policy`; on the caller's Tokio
    /// runtime when there is one, else through the dedicated thread.
    pub(crate) async fn post(&self, policy: &str, url: Url, body: Vec<u8>) -> Result<Reply, PolicyError> {
        let reply = if tokio::runtime::Handle::try_current().is_ok() {
            send(&self.client, url.clone(), body).await
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            match self.submit(url.clone(), body, Box::new(move |reply| drop(tx.send(reply)))) {
                Ok(()) => {
                    rx.await.unwrap_or_else(|_| Err(Failed::new(RemoteFailure::Worker, "request dropped")))
                }
                Err(failed) => Err(failed),
            }
        };
        reply.map_err(|failed| self.failed(policy, &url, failed))
    }

    /// POSTs `body` (JSON) to `url` for `policy` and blocks until the
    /// answer, the timeout or an error. Safe inside and outside a Tokio
    /// runtime.
    pub(crate) fn post_blocking(&self, policy: &str, url: Url, body: Vec<u8>) -> Result<Reply, PolicyError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let reply = self.submit(url.clone(), body, Box::new(move |reply| drop(tx.send(reply)))).and_then(
            |()| match rx.recv_timeout(self.config.timeout + GRACE) {
                Ok(reply) => reply,
                Err(RecvTimeoutError::Timeout) => {
                    Err(Failed::new(RemoteFailure::Timeout, "no answer from the HTTP thread in time"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    Err(Failed::new(RemoteFailure::Worker, "request dropped"))
                }
            },
        );
        reply.map_err(|failed| self.failed(policy, &url, failed))
    }

    /// Logs a failed request and returns its concise error.
    fn failed(&self, policy: &str, url: &Url, failed: Failed) -> PolicyError {
        tracing::warn!(
            engine = %self.engine,
            policy,
            url = %url,
            failure = %failed.kind,
            timeout = ?self.config.timeout,
            error = %failed.detail,
            "remote policy engine request failed"
        );
        self.unavailable(failed.kind)
    }

    /// Logs a bad answer (with an excerpt of its body) and returns its
    /// concise error.
    pub(crate) fn bad_answer(
        &self,
        policy: &str,
        kind: RemoteFailure,
        reply: &Reply,
        what: &str,
    ) -> PolicyError {
        tracing::warn!(
            engine = %self.engine,
            policy,
            status = reply.status,
            failure = %kind,
            body = %excerpt(&reply.body),
            "remote policy engine answered badly: {what}"
        );
        self.unavailable(kind)
    }

    /// The answer as a JSON object: HTTP 200 with a JSON object body, else
    /// [`PolicyError::Remote`] ([`RemoteFailure::Status`],
    /// [`NotJson`](RemoteFailure::NotJson) or
    /// [`UnexpectedAnswer`](RemoteFailure::UnexpectedAnswer)).
    pub(crate) fn json_object(&self, policy: &str, reply: &Reply) -> Result<Map<String, Value>, PolicyError> {
        if reply.status != 200 {
            return Err(self.bad_answer(policy, RemoteFailure::Status(reply.status), reply, "status"));
        }
        match serde_json::from_slice::<Value>(&reply.body) {
            Ok(Value::Object(answer)) => Ok(answer),
            Ok(_) => {
                Err(self.bad_answer(policy, RemoteFailure::UnexpectedAnswer, reply, "not a JSON object"))
            }
            Err(_) => Err(self.bad_answer(policy, RemoteFailure::NotJson, reply, "not JSON")),
        }
    }

    fn submit(
        &self,
        url: Url,
        body: Vec<u8>,
        reply: Box<dyn FnOnce(Result<Reply, Failed>) + Send>,
    ) -> Result<(), Failed> {
        let worker = self.worker.get_or_init(|| spawn_worker(self.config.clone()));
        let Some(worker) = worker else {
            return Err(Failed::new(
                RemoteFailure::Worker,
                "cannot start the HTTP thread of the synchronous path",
            ));
        };
        worker.send(Job { url, body, reply }).map_err(|_| {
            Failed::new(RemoteFailure::Worker, "the HTTP thread of the synchronous path has stopped")
        })
    }
}

/// Starts the dedicated thread: a current-thread runtime running every
/// queued request concurrently, until the queue's sender (the transport) is
/// dropped.
fn spawn_worker(config: ClientConfig) -> Option<UnboundedSender<Job>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let spawned = std::thread::Builder::new().name("kest-policy-http".into()).spawn(move || {
        runtime.block_on(async move {
            // Built here: its connections belong to this runtime.
            let client = config.build().map_err(|e| chain(&e));
            while let Some(job) = rx.recv().await {
                match &client {
                    Ok(client) => {
                        let client = client.clone();
                        tokio::spawn(async move {
                            (job.reply)(send(&client, job.url, job.body).await);
                        });
                    }
                    Err(e) => (job.reply)(Err(Failed::new(
                        RemoteFailure::Worker,
                        format!("cannot build the HTTP client: {e}"),
                    ))),
                }
            }
        });
    });
    spawned.ok().map(|_| tx)
}

/// One POST, answer read up to [`MAX_RESPONSE_BYTES`].
async fn send(client: &Client, url: Url, body: Vec<u8>) -> Result<Reply, Failed> {
    let failed = |e: reqwest::Error| {
        let kind = if e.is_timeout() {
            RemoteFailure::Timeout
        } else if e.is_connect() {
            RemoteFailure::Connect
        } else {
            RemoteFailure::Request
        };
        Failed::new(kind, chain(&e))
    };
    // The client's timeout covers the whole exchange, body included.
    let mut response =
        client.post(url).header(CONTENT_TYPE, "application/json").body(body).send().await.map_err(failed)?;
    let status = response.status().as_u16();
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Failed::new(
                RemoteFailure::TooLarge,
                format!("HTTP {status}: the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Reply { status, body: out })
}

/// At most [`LOG_EXCERPT_CHARS`] characters of a body, for logs.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(LOG_EXCERPT_CHARS).collect();
    if text.chars().nth(LOG_EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// An error and its sources, `a: b: c` (reqwest's own message alone says
/// little). For logs only.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    use super::*;

    /// Collects the WARN events on the current thread, each as its fields.
    #[derive(Clone, Default)]
    pub(crate) struct Warnings(pub(crate) Arc<Mutex<Vec<String>>>);

    struct Fields(String);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.push_str(&format!("{}={value:?} ", field.name()));
        }
    }

    impl Subscriber for Warnings {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if *event.metadata().level() == Level::WARN {
                let mut fields = Fields(String::new());
                event.record(&mut fields);
                self.0.lock().unwrap().push(fields.0);
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    impl Warnings {
        /// Runs `f` and returns what it logged at WARN.
        pub(crate) fn during<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
            let warnings = Warnings::default();
            let out = tracing::subscriber::with_default(warnings.clone(), f);
            let logged = warnings.0.lock().unwrap().clone();
            (out, logged)
        }
    }

    #[test]
    fn base_urls() {
        let ok = |raw: &str| base_url(raw, false).unwrap();
        assert_eq!(ok("http://127.0.0.1:8181/").url, "http://127.0.0.1:8181");
        assert_eq!(ok("https://opa.example/prefix/").url, "https://opa.example/prefix");
        assert!(!ok("https://opa.example").loopback);
        for raw in
            ["127.0.0.1:8181", "ftp://x", "https://x/?a=1", "https://x/#f", "unix:/tmp/s", "", "https://"]
        {
            assert!(matches!(base_url(raw, true), Err(RemoteConfigError::InvalidUrl { .. })), "{raw:?}");
        }
        let err = base_url("https://alice:pw@opa.example", true).unwrap_err();
        assert!(
            matches!(err, RemoteConfigError::InvalidUrl { .. }) && !err.to_string().contains("pw"),
            "{err}"
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        for raw in [
            "http://127.0.0.1:8181",
            "http://127.1.2.3",
            "http://localhost:8181",
            "http://LOCALHOST",
            "http://[::1]:8181",
            "http://0x7f.0.0.1",
        ] {
            let base = base_url(raw, false).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert!(base.loopback, "{raw}");
        }
        for (raw, host) in [
            ("http://opa.example:8181", "opa.example"),
            ("http://10.0.0.1", "10.0.0.1"),
            ("http://0.0.0.0:8181", "0.0.0.0"),
            ("http://localhost.example.com", "localhost.example.com"),
            ("http://127.0.0.1.nip.io", "127.0.0.1.nip.io"),
        ] {
            let err = base_url(raw, false).unwrap_err();
            assert_eq!(err, RemoteConfigError::InsecureHttp { url: raw.to_owned(), host: host.to_owned() });
        }
        // IPv4-mapped loopback is not in the list.
        assert!(matches!(
            base_url("http://[::ffff:127.0.0.1]", false),
            Err(RemoteConfigError::InsecureHttp { .. })
        ));
        assert!(base_url("https://opa.example", false).is_ok());
    }

    #[test]
    fn insecure_http_is_logged_when_allowed() {
        let (base, logged) = Warnings::during(|| base_url("http://opa.example:8181", true));
        assert!(!base.unwrap().loopback);
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].contains("danger_allow_insecure_http"), "{logged:?}");
        // Loopback and https need no warning.
        let (_, logged) = Warnings::during(|| {
            base_url("http://127.0.0.1:8181", true).unwrap();
            base_url("https://opa.example", true).unwrap();
        });
        assert!(logged.is_empty(), "{logged:?}");
    }

    #[test]
    fn failures_round_trip_through_policy_errors() {
        for kind in [
            RemoteFailure::Timeout,
            RemoteFailure::Connect,
            RemoteFailure::Request,
            RemoteFailure::TooLarge,
            RemoteFailure::NotJson,
            RemoteFailure::UnexpectedAnswer,
            RemoteFailure::Worker,
            RemoteFailure::Status(500),
            RemoteFailure::Status(401),
        ] {
            assert_eq!(RemoteFailure::of(&kind.into_error("opa")), Some(kind), "{kind}");
        }
        let other = PolicyError::Unavailable { engine: "x".into(), message: "HTTP five hundred".into() };
        assert_eq!(RemoteFailure::of(&other), None);
        assert_eq!(RemoteFailure::of(&PolicyError::Config("timed out".into())), None);
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt(b"short"), "short");
        let long = "é".repeat(LOG_EXCERPT_CHARS + 1);
        let out = excerpt(long.as_bytes());
        assert!(out.ends_with('…') && out.chars().count() == LOG_EXCERPT_CHARS + 1);
    }

    #[test]
    fn config_errors_are_policy_config_errors() {
        let error: PolicyError = RemoteConfigError::ZeroTimeout.into();
        assert!(matches!(error, PolicyError::Config(_)));
    }
}
