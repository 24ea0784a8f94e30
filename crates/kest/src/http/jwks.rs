//! JWKS documents: where they come from ([`JwksSource`]), how they are
//! fetched, and the two kinds of key set built from them — the Kest
//! [`KeySet`] that verifies passports (Ed25519 or P-256 keys named by principal) and
//! the bearer-token keys of the [`IdentityLayer`](super::IdentityLayer)
//! (RS256, ES256, EdDSA by `kid`, refetched on an unknown `kid` at most once
//! per interval).
//!
//! A JWKS URL must use `https`; plain `http` is accepted only for loopback
//! hosts (`localhost`, `127.0.0.0/8`, `::1`), so a key set cannot be
//! swapped on the network.
//!
//! ```
//! use kest::http::jwks::JwksSource;
//! assert!(JwksSource::url("https://idp.example/.well-known/jwks.json").is_ok());
//! assert!(JwksSource::url("http://127.0.0.1:8080/jwks").is_ok());
//! assert!(JwksSource::url("http://idp.example/jwks").is_err(), "plain http off loopback");
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use kest_core::KeySet;
use serde_json::Value;

use super::refresh::{RefreshPolicy, RefreshingJwks};

/// Largest JWKS document read (1 MiB).
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// How long a JWKS fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Least time between two refetches triggered by an unknown `kid`.
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Where a JWKS document comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksSource {
    /// Fetched with `GET` (https, or http on loopback only).
    Url(reqwest::Url),
    /// Read from a file.
    File(PathBuf),
    /// The document itself (never refetched).
    Json(String),
}

impl JwksSource {
    /// A URL source; fails on a URL that does not parse, or that uses plain
    /// `http` to a host that is not loopback, or another scheme.
    pub fn url(url: impl AsRef<str>) -> Result<JwksSource, JwksError> {
        let text = url.as_ref();
        let parsed = reqwest::Url::parse(text).map_err(|e| JwksError::BadUrl(format!("`{text}`: {e}")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if is_loopback(&parsed) => {}
            _ => return Err(JwksError::InsecureUrl(text.to_owned())),
        }
        Ok(JwksSource::Url(parsed))
    }

    /// A file source.
    pub fn file(path: impl Into<PathBuf>) -> JwksSource {
        JwksSource::File(path.into())
    }

    /// An inline document.
    pub fn json(document: impl Into<String>) -> JwksSource {
        JwksSource::Json(document.into())
    }

    /// Reads the document (fetching a URL with `client`).
    pub async fn load(&self, client: &reqwest::Client) -> Result<String, JwksError> {
        match self {
            JwksSource::Json(text) => Ok(text.clone()),
            JwksSource::File(path) => {
                // A small file read at construction or on a (rate-limited)
                // refetch; not worth a blocking-pool hop.
                let bytes = std::fs::read(path).map_err(|e| JwksError::Read {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(JwksError::Invalid(format!("document above {MAX_JWKS_BYTES} bytes")));
                }
                String::from_utf8(bytes).map_err(|_| JwksError::Invalid("document is not UTF-8".into()))
            }
            JwksSource::Url(url) => fetch(client, url).await,
        }
    }

    pub(crate) fn refetchable(&self) -> bool {
        !matches!(self, JwksSource::Json(_))
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::Url(url) => write!(f, "{url}"),
            JwksSource::File(path) => write!(f, "{}", path.display()),
            JwksSource::Json(_) => f.write_str("inline JWKS"),
        }
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

async fn fetch(client: &reqwest::Client, url: &reqwest::Url) -> Result<String, JwksError> {
    let fail = |message: String| JwksError::Fetch { url: url.to_string(), message };
    let mut response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json, application/jwk-set+json")
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("status {}", response.status())));
    }
    if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
        return Err(fail(format!("document above {MAX_JWKS_BYTES} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.without_url().to_string()))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(fail(format!("document above {MAX_JWKS_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| JwksError::Invalid("document is not UTF-8".into()))
}

/// Why a JWKS could not be read or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The URL does not parse.
    #[error("bad JWKS URL {0}")]
    BadUrl(String),
    /// The URL is neither `https` nor `http` on loopback.
    #[error("JWKS URL `{0}` must use https (plain http only on loopback)")]
    InsecureUrl(String),
    /// The file cannot be read.
    #[error("cannot read JWKS file `{path}`: {message}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's error.
        message: String,
    },
    /// The URL cannot be fetched, or answered with an error status.
    #[error("cannot fetch JWKS from `{url}`: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// The document is not a JWKS.
    #[error("invalid JWKS: {0}")]
    Invalid(String),
    /// A key of the document is refused (private material, duplicate `kid`,
    /// malformed member).
    #[error("JWKS key `{kid}`: {reason}")]
    BadKey {
        /// The key's `kid`.
        kid: String,
        /// Why.
        reason: String,
    },
    /// The document has no key that can verify bearer tokens.
    #[error("JWKS has no usable signing key (RS256, ES256 or EdDSA, with a `kid`)")]
    NoUsableKeys,
    /// The document is not a Kest key set (Ed25519 or P-256 keys named by principal).
    #[error("JWKS is not a Kest key set: {0}")]
    KeySet(#[from] kest_core::KeySetError),
    /// The Kest key set is empty: it could verify no passport entry.
    #[error("the Kest key set is empty")]
    EmptyKeySet,
    /// No HTTP client could be built (TLS backend or resolver setup).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The given client, or a new default one (without the panic of
/// `reqwest::Client::new` when the TLS backend cannot start).
pub(crate) fn client_or_default(client: Option<reqwest::Client>) -> Result<reqwest::Client, JwksError> {
    match client {
        Some(client) => Ok(client),
        None => reqwest::Client::builder().build().map_err(|e| JwksError::Client(e.to_string())),
    }
}

/// Loads a Kest key set (SPEC §3) from a JWKS source. An empty set is an
/// error: it would verify nothing.
pub async fn load_key_set(source: &JwksSource, client: &reqwest::Client) -> Result<KeySet, JwksError> {
    let text = source.load(client).await?;
    let keys = KeySet::from_jwks_json(&text)?;
    if keys.is_empty() {
        return Err(JwksError::EmptyKeySet);
    }
    Ok(keys)
}

/// A bearer-token verification key: the algorithm its type allows, and the
/// key.
#[derive(Clone)]
pub(crate) struct TokenKey {
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// Parses the bearer-token keys of a JWKS: `RSA` → RS256, `EC` P-256 →
/// ES256, `OKP` Ed25519 → EdDSA, each fixed by the key type (a JWK `alg`,
/// when present, must name that algorithm). Keys without a `kid`, with a
/// `use` other than `sig`, or of other types are skipped; a key with
/// private material or a repeated `kid` fails the whole document.
pub(crate) fn parse_token_keys(text: &str) -> Result<HashMap<String, TokenKey>, JwksError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| JwksError::Invalid(e.to_string()))?;
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err(JwksError::Invalid("missing `keys` array".into()));
    };
    let mut out = HashMap::new();
    for jwk in keys {
        let str_member = |name: &str| jwk.get(name).and_then(Value::as_str);
        let Some(kid) = str_member("kid").filter(|k| !k.is_empty()) else {
            tracing::debug!("JWKS key without `kid` skipped");
            continue;
        };
        let bad = |reason: &str| JwksError::BadKey { kid: kid.to_owned(), reason: reason.to_owned() };
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            if jwk.get(private).is_some() {
                return Err(bad("the JWKS carries private key material"));
            }
        }
        if str_member("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let (alg, key) = match (str_member("kty"), str_member("crv")) {
            (Some("RSA"), _) => {
                let (Some(n), Some(e)) = (str_member("n"), str_member("e")) else {
                    return Err(bad("RSA key without `n` and `e`"));
                };
                (Algorithm::RS256, DecodingKey::from_rsa_components(n, e).map_err(|e| bad(&e.to_string()))?)
            }
            (Some("EC"), Some("P-256")) => {
                let (Some(x), Some(y)) = (str_member("x"), str_member("y")) else {
                    return Err(bad("EC key without `x` and `y`"));
                };
                (Algorithm::ES256, DecodingKey::from_ec_components(x, y).map_err(|e| bad(&e.to_string()))?)
            }
            (Some("OKP"), Some("Ed25519")) => {
                let Some(x) = str_member("x") else {
                    return Err(bad("OKP key without `x`"));
                };
                (Algorithm::EdDSA, DecodingKey::from_ed_components(x).map_err(|e| bad(&e.to_string()))?)
            }
            (kty, crv) => {
                tracing::debug!(kid, ?kty, ?crv, "JWKS key of an unsupported type skipped");
                continue;
            }
        };
        if let Some(declared) = str_member("alg") {
            let name = match alg {
                Algorithm::RS256 => "RS256",
                Algorithm::ES256 => "ES256",
                _ => "EdDSA",
            };
            if declared != name {
                tracing::debug!(kid, declared, "JWKS key with an unsupported `alg` skipped");
                continue;
            }
        }
        if out.insert(kid.to_owned(), TokenKey { alg, key }).is_some() {
            return Err(bad("`kid` appears twice"));
        }
    }
    if out.is_empty() {
        return Err(JwksError::NoUsableKeys);
    }
    Ok(out)
}

/// Bearer-token keys from a source, kept fresh by a [`RefreshPolicy`]:
/// refreshed on an interval (so a removed key stops verifying), refetched
/// when a token names an unknown `kid` (rate-limited), refused when stale.
#[derive(Debug)]
pub(crate) struct TokenKeyStore {
    jwks: RefreshingJwks<HashMap<String, TokenKey>>,
}

/// Why no key could be found for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKeyError {
    /// No key with that `kid`, even after a refetch.
    Unknown,
    /// The keys are older than the maximum staleness.
    Stale,
}

impl TokenKeyStore {
    /// Loads the keys now; fails when the source cannot be read or holds no
    /// usable key.
    pub(crate) async fn load(
        source: JwksSource,
        client: reqwest::Client,
        policy: RefreshPolicy,
    ) -> Result<TokenKeyStore, JwksError> {
        Ok(TokenKeyStore { jwks: RefreshingJwks::load(source, client, parse_token_keys, policy).await? })
    }

    /// The key named `kid`.
    pub(crate) async fn key(&self, kid: &str) -> Result<TokenKey, TokenKeyError> {
        self.jwks.refresh_if_due().await;
        let lookup = || -> Result<Option<TokenKey>, TokenKeyError> {
            let loaded = self.jwks.snapshot().map_err(|stale| {
                tracing::warn!(source = %self.jwks.source(), age = ?stale.age, "token JWKS is stale; refusing tokens");
                TokenKeyError::Stale
            })?;
            Ok(loaded.value.get(kid).cloned())
        };
        if let Some(key) = lookup()? {
            return Ok(key);
        }
        if self.jwks.refetch("unknown kid").await
            && let Some(key) = lookup()?
        {
            return Ok(key);
        }
        Err(TokenKeyError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn url_rules() {
        assert!(JwksSource::url("http://localhost:1/j").is_ok());
        assert!(JwksSource::url("http://[::1]:1/j").is_ok());
        assert!(JwksSource::url("http://127.8.0.1/j").is_ok());
        assert!(matches!(JwksSource::url("http://10.0.0.1/j"), Err(JwksError::InsecureUrl(_))));
        assert!(matches!(JwksSource::url("file:///etc/jwks"), Err(JwksError::InsecureUrl(_))));
        assert!(matches!(JwksSource::url("not a url"), Err(JwksError::BadUrl(_))));
    }

    #[test]
    fn token_keys() {
        let ed =
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"}"#;
        let doc = format!(
            r#"{{"keys":[{ed},
            {{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}},
            {{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"enc","use":"enc"}},
            {{"kty":"oct","k":"","kid":"hmac-skipped-no"}}]}}"#
        );
        // A symmetric key is private material: the document is refused.
        assert!(matches!(parse_token_keys(&doc), Err(JwksError::BadKey { .. })));
        let doc =
            format!(r#"{{"keys":[{ed},{{"kty":"RSA","kid":"ps","alg":"PS256","n":"AQAB","e":"AQAB"}}]}}"#);
        let keys = parse_token_keys(&doc).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["ed"]);
        assert_eq!(keys["ed"].alg, Algorithm::EdDSA);
        assert!(matches!(
            parse_token_keys(&format!(r#"{{"keys":[{ed},{ed}]}}"#)),
            Err(JwksError::BadKey { .. })
        ));
        assert_eq!(parse_token_keys(r#"{"keys":[]}"#).unwrap_err(), JwksError::NoUsableKeys);
        assert!(matches!(parse_token_keys("[]"), Err(JwksError::Invalid(_))));
    }
}
