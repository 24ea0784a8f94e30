//! [`OIDCIdentity`]: the workload id is the `sub` of a platform-issued OIDC
//! token (e.g. a Kubernetes projected service-account token); entries are
//! signed with a local Ed25519 key.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use kest_core::encoding::b64url_decode;
use kest_core::json::parse_strict;
use kest_core::{Ed25519Signer, LocalSigner, PublicKey, SignError, Signer};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::local::warn_ephemeral_once;
use super::{IdentityError, IdentityProvider};

/// Environment variable naming the OIDC token file.
pub const OIDC_TOKEN_PATH_ENV: &str = "KEST_OIDC_TOKEN_PATH";
/// Environment variable naming the signing key file (PKCS#8 PEM or private
/// JWK) of an [`OIDCIdentity`]; without it the key is ephemeral.
pub const OIDC_SIGNING_KEY_ENV: &str = "KEST_OIDC_SIGNING_KEY";

/// Largest token file accepted.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;
/// Deepest JSON nesting accepted in the token's header and payload.
const MAX_JSON_DEPTH: usize = 32;

/// The key an [`OIDCIdentity`] signs entries with. Its principal is always
/// the token's `sub`.
#[non_exhaustive]
pub enum OidcSigningKey {
    /// A PKCS#8 PEM or private JWK file (a JWK's `kid`, if any, must equal
    /// the token's `sub`).
    KeyFile(PathBuf),
    /// A key already in memory.
    Key(SigningKey),
    /// A fresh key for this instance only (logs the ephemeral-key warning
    /// once per process). Not for production.
    Ephemeral,
}

impl fmt::Debug for OidcSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OidcSigningKey::KeyFile(path) => f.debug_tuple("KeyFile").field(path).finish(),
            OidcSigningKey::Key(key) => {
                f.debug_tuple("Key").field(&PublicKey::Ed25519(key.verifying_key())).finish()
            }
            OidcSigningKey::Ephemeral => f.write_str("Ephemeral"),
        }
    }
}

/// An identity whose workload id is the `sub` claim of an OIDC token (a
/// JWT) read from a file, signing with a configured local Ed25519 key.
///
/// **The token is decoded, not verified.** It is the platform-issued token
/// of this very workload (mounted by the orchestrator), read from a path the
/// operator configured, so its signature is not checked here: whoever can
/// replace that file can already act as the workload. Verifiers of
/// passports never trust the token either; they trust the key set. The
/// decoding is strict all the same: exactly three unpadded base64url
/// segments, a header and payload that are JSON objects without duplicate
/// members, a header `alg` other than `none`, a non-empty signature
/// segment, `sub` a non-empty string, `iss` a string if present, and `exp`
/// (if present) a number in the future. After `exp`, [`Signer::sign`]
/// fails: reload the identity from the refreshed token.
///
/// The raw token is read into a zeroizing buffer and not kept; errors name
/// the file and the problem, never the token's contents.
///
/// ```
/// use kest::identity::{IdentityProvider, OIDCIdentity, OidcSigningKey};
/// use kest::core::encoding::b64url_encode;
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("token");
/// let jwt = format!(
///     "{}.{}.{}",
///     b64url_encode(br#"{"alg":"RS256","typ":"JWT"}"#),
///     b64url_encode(br#"{"iss":"https://k8s.example","sub":"system:serviceaccount:ns:agent"}"#),
///     b64url_encode(b"platform signature"),
/// );
/// std::fs::write(&path, jwt).unwrap();
///
/// let id = OIDCIdentity::from_token_file(&path, OidcSigningKey::Ephemeral).unwrap();
/// assert_eq!(id.workload_id(), "system:serviceaccount:ns:agent");
/// assert_eq!(id.issuer(), Some("https://k8s.example"));
/// assert_eq!(id.kind(), "oidc");
/// ```
pub struct OIDCIdentity {
    signer: LocalSigner,
    issuer: Option<String>,
    token_path: PathBuf,
    expires_at: Option<SystemTime>,
    key_source: String,
}

/// The claims kept from a token.
struct Claims {
    subject: String,
    issuer: Option<String>,
    expires_at: Option<SystemTime>,
}

impl OIDCIdentity {
    /// Reads the token at `path` and signs with `signer_key`.
    pub fn from_token_file(
        path: impl AsRef<Path>,
        signer_key: OidcSigningKey,
    ) -> Result<OIDCIdentity, IdentityError> {
        let token_path = path.as_ref().to_owned();
        let claims = read_claims(&token_path)?;
        let (signer, key_source) = match signer_key {
            OidcSigningKey::KeyFile(key_path) => {
                let signer = crate::keyfile::load_key(&key_path, Some(&claims.subject))?;
                (signer, format!("key file {}", key_path.display()))
            }
            OidcSigningKey::Key(key) => (
                Ed25519Signer::from_signing_key(claims.subject.clone(), key).into(),
                "in-memory key".to_owned(),
            ),
            OidcSigningKey::Ephemeral => {
                let signer =
                    Ed25519Signer::generate(claims.subject.clone()).map_err(|e| IdentityError::Other(e.0))?;
                warn_ephemeral_once("oidc");
                (signer.into(), "ephemeral Ed25519 key, new in each process (not for production)".to_owned())
            }
        };
        Ok(OIDCIdentity {
            signer,
            issuer: claims.issuer,
            token_path,
            expires_at: claims.expires_at,
            key_source,
        })
    }

    /// Configures itself from the process environment: the token file from
    /// `KEST_OIDC_TOKEN_PATH`, the key file from `KEST_OIDC_SIGNING_KEY` (or
    /// an ephemeral key).
    pub fn from_env() -> Result<OIDCIdentity, IdentityError> {
        OIDCIdentity::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`OIDCIdentity::from_env`], reading variables through `lookup`
    /// (empty values count as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<OIDCIdentity, IdentityError> {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let token_path = get(OIDC_TOKEN_PATH_ENV).ok_or_else(|| IdentityError::Token {
            source_name: OIDC_TOKEN_PATH_ENV.to_owned(),
            reason: "not set".to_owned(),
        })?;
        let key = match get(OIDC_SIGNING_KEY_ENV) {
            Some(path) => OidcSigningKey::KeyFile(PathBuf::from(path)),
            None => OidcSigningKey::Ephemeral,
        };
        OIDCIdentity::from_token_file(token_path, key)
    }

    /// The token's `iss`, if it has one.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The token's `sub`: the workload id.
    pub fn subject(&self) -> &str {
        self.signer.principal()
    }

    /// The file the token was read from.
    pub fn token_path(&self) -> &Path {
        &self.token_path
    }

    /// The token's `exp`, if it has one.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The public JWK of the signing key (`kid` = the workload id).
    pub fn public_jwk(&self) -> Value {
        self.signer.public_key().map(|k| k.to_jwk(self.signer.principal())).unwrap_or(Value::Null)
    }

    fn check_not_expired(&self) -> Result<(), SignError> {
        if self.expires_at.is_some_and(|exp| exp <= SystemTime::now()) {
            return Err(SignError(format!(
                "the OIDC token {} has expired; reload the identity",
                self.token_path.display()
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for OIDCIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OIDCIdentity")
            .field("signer", &self.signer)
            .field("issuer", &self.issuer)
            .field("token_path", &self.token_path)
            .field("expires_at", &self.expires_at)
            .field("key_source", &self.key_source)
            .finish()
    }
}

impl Signer for OIDCIdentity {
    fn principal(&self) -> &str {
        self.signer.principal()
    }
    fn algorithm(&self) -> &'static str {
        self.signer.algorithm()
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.check_not_expired()?;
        self.signer.sign(signing_input)
    }
    fn public_key(&self) -> Option<PublicKey> {
        self.signer.public_key()
    }
}

impl IdentityProvider for OIDCIdentity {
    fn kind(&self) -> &'static str {
        "oidc"
    }
    fn ready(&self) -> Result<(), SignError> {
        self.check_not_expired()
    }
    fn describe(&self) -> Vec<(String, String)> {
        let mut facts = vec![
            ("iss".to_owned(), self.issuer.clone().unwrap_or_else(|| "(none)".to_owned())),
            ("sub".to_owned(), self.subject().to_owned()),
            ("token_file".to_owned(), self.token_path.display().to_string()),
        ];
        if let Some(exp) = self.expires_at {
            let secs = exp.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            facts.push(("exp".to_owned(), secs.to_string()));
        }
        facts.push(("key".to_owned(), self.key_source.clone()));
        facts
    }
}

/// Reads and decodes the token file. Error reasons are fixed texts (plus
/// I/O errors), never token contents.
fn read_claims(path: &Path) -> Result<Claims, IdentityError> {
    let fail = |reason: &str| IdentityError::Token {
        source_name: path.display().to_string(),
        reason: reason.to_owned(),
    };
    let file = std::fs::File::open(path).map_err(|e| IdentityError::Token {
        source_name: path.display().to_string(),
        reason: format!("cannot read: {e}"),
    })?;
    let mut raw = Zeroizing::new(Vec::new());
    file.take(MAX_TOKEN_BYTES + 1).read_to_end(&mut raw).map_err(|e| IdentityError::Token {
        source_name: path.display().to_string(),
        reason: format!("cannot read: {e}"),
    })?;
    if raw.len() as u64 > MAX_TOKEN_BYTES {
        return Err(fail("larger than 64 KiB; not a token"));
    }
    let text = std::str::from_utf8(&raw).map_err(|_| fail("not UTF-8 text"))?;
    decode_claims(text.trim(), SystemTime::now()).map_err(fail)
}

/// Decodes a JWT's claims without verifying its signature (see
/// [`OIDCIdentity`]).
fn decode_claims(token: &str, now: SystemTime) -> Result<Claims, &'static str> {
    if token.is_empty() {
        return Err("the file is empty");
    }
    let segments: Vec<&str> = token.split('.').collect();
    let (header_b64, payload_b64, signature_b64) = match segments.as_slice() {
        [h, p, s] => (*h, *p, *s),
        [_, _, _, _, _] => return Err("an encrypted JWT (JWE) is not supported; expected a signed JWT"),
        _ => return Err("not a JWT (expected three dot-separated segments)"),
    };
    let header = decode_object(
        header_b64,
        (
            "the header is not unpadded base64url",
            "the header is not a JSON object (or has duplicate members)",
        ),
    )?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg.eq_ignore_ascii_case("none") => {
            return Err("an unsigned JWT (alg `none`) is not accepted");
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err("the header's `alg` is not a string"),
        None => return Err("the header has no `alg`"),
    }
    let claims = decode_object(
        payload_b64,
        (
            "the payload is not unpadded base64url",
            "the payload is not a JSON object (or has duplicate members)",
        ),
    )?;
    if signature_b64.is_empty() {
        return Err("the JWT has an empty signature segment");
    }
    b64url_decode(signature_b64).map_err(|_| "the signature segment is not unpadded base64url")?;

    let subject = match claims.get("sub") {
        Some(Value::String(s)) if s.is_empty() => return Err("the `sub` claim is empty"),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("the `sub` claim is not a string"),
        None => return Err("the token has no `sub` claim"),
    };
    let issuer = match claims.get("iss") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("the `iss` claim is not a string"),
    };
    let expires_at = match claims.get("exp") {
        None => None,
        Some(Value::Number(n)) => {
            let secs =
                n.as_f64().filter(|s| s.is_finite() && *s >= 0.0).ok_or("the `exp` claim is out of range")?;
            let exp = Duration::try_from_secs_f64(secs)
                .ok()
                .and_then(|d| UNIX_EPOCH.checked_add(d))
                .ok_or("the `exp` claim is out of range")?;
            if exp <= now {
                return Err("the token has expired (`exp` is in the past)");
            }
            Some(exp)
        }
        Some(_) => return Err("the `exp` claim is not a number"),
    };
    Ok(Claims { subject, issuer, expires_at })
}

/// Decodes one base64url segment holding a JSON object; `errors` are the
/// messages for bad base64url and for anything but a strict JSON object.
fn decode_object(
    segment: &str,
    errors: (&'static str, &'static str),
) -> Result<Map<String, Value>, &'static str> {
    let bytes = Zeroizing::new(b64url_decode(segment).map_err(|_| errors.0)?);
    match parse_strict(&bytes, MAX_JSON_DEPTH) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) | Err(_) => Err(errors.1),
    }
}
