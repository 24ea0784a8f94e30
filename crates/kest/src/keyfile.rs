//! Key files: Ed25519 private keys as PKCS#8 PEM or private JWK, public
//! keys as JWK or JWKS.
//!
//! Private key material is read into zeroizing buffers, never printed, and
//! written only with mode `0600` to a file that did not exist before.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use kest_core::encoding::{b64url_decode, b64url_encode};
use kest_core::parse_jwk;
use kest_core::{Ed25519Signer, KeySet, KeySetError, PublicKey};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

/// Why a key file could not be read or written. Messages name the file and
/// the problem, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The content is not a key in a supported form.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key set could not be assembled.
    #[error("{path}: {source}")]
    KeySet {
        /// The file.
        path: PathBuf,
        /// The key set error.
        source: KeySetError,
    },
    /// The principal is missing or contradicts the file.
    #[error("{0}")]
    Principal(String),
}

/// On-disk form of a private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrivateKeyFormat {
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`); carries no principal.
    #[default]
    Pem,
    /// A private JWK `{"kty":"OKP","crv":"Ed25519","x","d","kid"}`.
    Jwk,
}

fn format_err(path: &Path, reason: impl Into<String>) -> KeyFileError {
    KeyFileError::Format { path: path.to_owned(), reason: reason.into() }
}

fn read_secret(path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| KeyFileError::Io { path: path.to_owned(), source })
}

/// Loads a signer from a private key file (PEM or private JWK).
///
/// The principal comes from `principal` or, for a JWK, from its `kid`; a
/// JWK whose `kid` differs from an explicit `principal` is an error, and a
/// PEM file needs an explicit principal.
pub fn load_signer(path: &Path, principal: Option<&str>) -> Result<Ed25519Signer, KeyFileError> {
    let text = read_secret(path)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with("-----BEGIN") {
        let key = SigningKey::from_pkcs8_pem(trimmed)
            .map_err(|_| format_err(path, "not an Ed25519 PKCS#8 private key (PEM)"))?;
        let principal = principal.ok_or_else(|| {
            KeyFileError::Principal(format!(
                "{}: a PEM key carries no principal; pass --principal",
                path.display()
            ))
        })?;
        return Ok(Ed25519Signer::from_signing_key(principal, key));
    }
    let mut jwk: Value = serde_json::from_str(&text)
        .map_err(|_| format_err(path, "neither a PEM private key nor a JSON JWK"))?;
    let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
    let Some(Value::String(mut d)) = jwk.as_object_mut().and_then(|o| o.remove("d")) else {
        return Err(format_err(path, "JWK has no private member `d` (is this a public key?)"));
    };
    let decoded = b64url_decode(&d).map(Zeroizing::new);
    d.zeroize();
    let decoded = decoded.map_err(|_| format_err(path, "`d` is not unpadded base64url"))?;
    let mut seed: [u8; 32] =
        decoded.as_slice().try_into().map_err(|_| format_err(path, "`d` must be 32 bytes"))?;
    // The public half must be present and consistent with `d`.
    let (file_kid, public) = parse_jwk(&with_kid(jwk, kid.as_deref().or(principal)))
        .map_err(|source| KeyFileError::KeySet { path: path.to_owned(), source })?;
    let name = match (principal, kid.as_deref()) {
        (Some(p), Some(k)) if p != k => {
            return Err(KeyFileError::Principal(format!(
                "{}: --principal `{p}` differs from the key's kid `{k}`",
                path.display()
            )));
        }
        _ => file_kid,
    };
    let signer = Ed25519Signer::from_seed(name, seed);
    seed.zeroize();
    if kest_core::Signer::public_key(&signer).as_ref() != Some(&public) {
        return Err(format_err(path, "`x` does not match the private key `d`"));
    }
    Ok(signer)
}

fn with_kid(mut jwk: Value, kid: Option<&str>) -> Value {
    if let (Some(obj), Some(kid)) = (jwk.as_object_mut(), kid) {
        obj.insert("kid".into(), Value::String(kid.to_owned()));
    }
    jwk
}

/// Writes `key` to a new file with mode `0600` (refusing to overwrite).
pub fn write_private_key(
    path: &Path,
    principal: &str,
    key: &SigningKey,
    format: PrivateKeyFormat,
) -> Result<(), KeyFileError> {
    let content: Zeroizing<String> = match format {
        PrivateKeyFormat::Pem => key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| format_err(path, "could not encode the key as PKCS#8"))?,
        PrivateKeyFormat::Jwk => {
            let d = Zeroizing::new(b64url_encode(key.as_bytes()));
            let x = b64url_encode(key.verifying_key().as_bytes());
            Zeroizing::new(format!(
                "{{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":{},\"x\":\"{x}\",\"d\":\"{}\"}}\n",
                Value::String(principal.to_owned()),
                d.as_str()
            ))
        }
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let io = |source| KeyFileError::Io { path: path.to_owned(), source };
    let mut file = options.open(path).map_err(io)?;
    file.write_all(content.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Loads public keys from a JWKS document, a single public JWK or a private
/// JWK (only its public half is kept).
pub fn load_public_keys(path: &Path) -> Result<KeySet, KeyFileError> {
    let text = read_secret(path)?;
    let mut doc: Value =
        serde_json::from_str(&text).map_err(|_| format_err(path, "not JSON (expected a JWKS or a JWK)"))?;
    let keyset_err = |source| KeyFileError::KeySet { path: path.to_owned(), source };
    if doc.get("keys").is_some() {
        return KeySet::from_jwks_json(&text).map_err(keyset_err);
    }
    if let Some(Value::String(mut d)) = doc.as_object_mut().and_then(|o| o.remove("d")) {
        d.zeroize();
    }
    let (kid, key) = parse_jwk(&doc).map_err(keyset_err)?;
    let mut set = KeySet::new();
    set.insert(kid, key).map_err(keyset_err)?;
    Ok(set)
}

/// The public key of a PKCS#8 PEM private key file.
pub fn pem_public_key(path: &Path) -> Result<PublicKey, KeyFileError> {
    let text = read_secret(path)?;
    let key = SigningKey::from_pkcs8_pem(text.trim_start())
        .map_err(|_| format_err(path, "not an Ed25519 PKCS#8 private key (PEM)"))?;
    PublicKey::ed25519_from_bytes(key.verifying_key().as_bytes())
        .map_err(|source| KeyFileError::KeySet { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kest_core::Signer as _;

    #[test]
    fn pem_and_jwk_round_trip_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[5u8; 32]);
        for (name, format) in [("k.pem", PrivateKeyFormat::Pem), ("k.jwk", PrivateKeyFormat::Jwk)] {
            let path = dir.path().join(name);
            write_private_key(&path, "spiffe://t/a", &key, format).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            }
            let signer = load_signer(&path, Some("spiffe://t/a")).unwrap();
            assert_eq!(signer.signing_key().as_bytes(), key.as_bytes());
            assert!(!format!("{signer:?}").contains(&b64url_encode(key.as_bytes())));
            assert!(write_private_key(&path, "spiffe://t/a", &key, format).is_err(), "no overwrite");
        }
        let jwk = dir.path().join("k.jwk");
        assert_eq!(load_signer(&jwk, None).unwrap().principal(), "spiffe://t/a");
        assert!(matches!(load_signer(&jwk, Some("other")), Err(KeyFileError::Principal(_))));
        assert!(matches!(load_signer(&dir.path().join("k.pem"), None), Err(KeyFileError::Principal(_))));
        let set = load_public_keys(&jwk).unwrap();
        assert!(set.get("spiffe://t/a").is_some());
    }

    #[test]
    fn mismatched_private_jwk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = SigningKey::from_bytes(&[6u8; 32]);
        let path = dir.path().join("bad.jwk");
        let text = format!(
            r#"{{"kty":"OKP","crv":"Ed25519","kid":"p","x":"{}","d":"{}"}}"#,
            b64url_encode(other.verifying_key().as_bytes()),
            b64url_encode(&[5u8; 32])
        );
        fs::write(&path, text).unwrap();
        let err = load_signer(&path, None).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert!(!err.contains(&b64url_encode(&[5u8; 32])));
    }
}
